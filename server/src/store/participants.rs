//! Adding, removing and listing participants: each mutation loads what the rules read (the
//! conversation locked first, with the caller's row), asks [`crate::domain::roster`] for the
//! plan, and applies it, in a bounded number of statements whatever the batch size.

use super::{EachRow, WriteTx};
use std::collections::HashMap;

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::entities::participants;
use super::writes::Writes;
use super::{
    Locked, append_items, directory, get_participant, invitations, lock_with_caller, outbox,
    participant_from, save_conversation,
};
use crate::domain::model::{
    Candidate, Conversation, Participant, ParticipantKind, ParticipantState, Role, now_micros,
};
use crate::domain::principal::Principal;
use crate::domain::roster::{
    self, AddRequest, AddResult, AddState, Invitee, TargetPlan, TargetState,
};
use crate::domain::visibility::RosterScope;
use crate::error::Error;

/// AddParticipants (rules 1-11, 21-23): a bounded number of statements whatever the batch size.
/// `links` derives the link token whose hash a new invitation stores (rule 23).
pub async fn add(
    tx: &WriteTx,
    principal: &Principal,
    conversation_id: &str,
    request: AddRequest,
    links: &invitations::LinkKey,
) -> Result<Vec<AddResult>, Error> {
    let tenant_id = principal.tenant_id.as_str();
    let actor = &principal.actor();
    // A call that names people by id alone reads them right after the lock, in one message with
    // it on PostgreSQL (a round trip less). Groups and emails are resolved to people only once
    // the conversation is locked, and more people than one statement reads are read by
    // statements of their own.
    let direct: Option<Vec<&String>> = request
        .invitees
        .iter()
        .map(|i| match i {
            Invitee::User(u) => Some(u),
            _ => None,
        })
        .collect::<Option<Vec<&String>>>()
        .map(|ids| {
            let mut seen = std::collections::HashSet::with_capacity(ids.len());
            ids.into_iter()
                .filter(|id| seen.insert(id.as_str()))
                .collect::<Vec<_>>()
        })
        .filter(|ids| ids.len() <= super::IDS_PER_LOOKUP);
    let mut read_with_lock = Vec::new();
    let mut people_sink = |row: &dyn super::cells::Cells| {
        people_row(row, conversation_id, tenant_id, &mut read_with_lock)
    };
    let then = match &direct {
        Some(ids) => Some(super::cells::Opening {
            name: "parley_people",
            stmt: people_statement(tx.get_database_backend(), tenant_id, conversation_id, ids)?,
            each: &mut people_sink,
        }),
        None => None,
    };
    // Load: the conversation (locked), the caller's row and directory entry in one statement.
    let (
        Locked {
            conversation,
            caller,
            ..
        },
        read_after_lock,
    ) = super::lock_with_caller_then(tx, principal, conversation_id, then).await?;
    // A call its caller or its conversation refuses loads nothing more.
    roster::admit(&conversation, actor, caller.as_ref())?;
    let now = now_micros();
    let group_ids: Vec<String> = request
        .invitees
        .iter()
        .filter_map(|i| match i {
            Invitee::Group(g) => Some(g.clone()),
            _ => None,
        })
        .collect();
    let emails: Vec<String> = request
        .invitees
        .iter()
        .filter_map(|i| match i {
            Invitee::Email(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    // Count before loading: a call may name up to 1,000 groups of any size.
    let group_reach = directory::memberships(tx, tenant_id, &group_ids).await?;
    roster::check_group_reach(group_reach, request.max_group_reach)?;
    // Resolve groups and emails to people, one query each (two for groups), then everyone's
    // directory entry, participant row and pending invitation, one query each.
    let groups = directory::groups_by_id(tx, tenant_id, &group_ids).await?;
    let users_by_email = directory::users_by_email(tx, tenant_id, &emails).await?;
    let lookups = roster::lookups(&request.invitees, &groups, &users_by_email);
    let (users, existing) = match direct {
        // Read with the lock, and they are everyone the call reaches.
        Some(ids) if read_after_lock && ids == super::distinct(&lookups.user_ids) => {
            people_from(read_with_lock)?
        }
        _ => people_with_seats(tx, tenant_id, conversation_id, &lookups.user_ids).await?,
    };
    let pending = invitations::pending_for(tx, conversation_id, &lookups.emails, now).await?;

    // Who holds a row in the conversation already, active or removed: their rows change in
    // place, everyone else's are new.
    let seated: std::collections::HashSet<String> = existing.keys().cloned().collect();

    // Decide.
    let state = AddState {
        conversation,
        actor: actor.clone(),
        caller,
        group_reach,
        groups,
        users_by_email,
        users,
        existing,
        pending,
        now,
    };
    let plan = roster::decide_add(state, request, super::new_id)?;

    // Apply: one insert of new participants and one upsert of returning ones, one insert
    // each of invitations, events and notifications, one update of resent invitations' links
    // and one of the conversation (a statement per `ROWS_PER_INSERT` rows), sent together.
    let mut w = Writes::new();
    let (again, new): (Vec<&Participant>, Vec<&Participant>) = plan
        .participants
        .iter()
        .partition(|p| seated.contains(&p.user_id));
    super::insert_participants(&mut w, tenant_id, &new);
    super::upsert_participants(&mut w, tenant_id, &again);
    let new_invitations = plan
        .invitations
        .into_iter()
        .map(|i| links.token_hash(tenant_id, &i.id).map(|hash| (i, hash)))
        .collect::<Result<Vec<_>, Error>>()?;
    invitations::insert_many(&mut w, tenant_id, &new_invitations);
    // A resend carries the link of the first notification: the token is derived from the
    // invitation, so only invitations made before links were derived change (rule 23).
    let resent_links = plan
        .resent
        .iter()
        .map(|i| Ok((i.id.clone(), links.token_hash(tenant_id, &i.id)?)))
        .collect::<Result<Vec<_>, Error>>()?;
    invitations::adopt_derived_links(&mut w, &resent_links);
    append_items(&mut w, &plan.items);
    outbox::enqueue(&mut w, tenant_id, &plan.notifications);
    if let Some(c) = &plan.conversation {
        save_conversation(&mut w, c);
    }
    w.run(tx).await?;
    Ok(plan.results)
}

/// The directory entries of `user_ids` with their participant rows in the conversation (active
/// or removed), in one statement per [`IDS_PER_LOOKUP`](super::IDS_PER_LOOKUP) ids (see
/// [`people_statement`]). The row of someone not in the directory is not read: the rules
/// judge such a person USER_NOT_FOUND whatever their row says (rule 2).
async fn people_with_seats(
    tx: &WriteTx,
    tenant_id: &str,
    conversation_id: &str,
    user_ids: &[String],
) -> Result<People, Error> {
    let backend = tx.get_database_backend();
    let mut rows = Vec::new();
    for batch in super::distinct(user_ids).chunks(super::IDS_PER_LOOKUP) {
        let statement = people_statement(backend, tenant_id, conversation_id, batch)?;
        tx.each_row(statement, &mut |row| {
            people_row(row, conversation_id, tenant_id, &mut rows)
        })
        .await?;
    }
    people_from(rows)
}

/// A person of the statement of [`people_statement`] and their row in the conversation, if any,
/// from one of its rows into `rows`.
fn people_row(
    row: &dyn super::cells::Cells,
    conversation_id: &str,
    tenant_id: &str,
    rows: &mut Vec<(Candidate, Option<participants::Model>)>,
) -> Result<(), sea_orm::DbErr> {
    let user = super::candidate_at(row, 0)?;
    let seat = super::seat_at(
        row,
        super::CANDIDATE_COLUMNS.len(),
        conversation_id,
        tenant_id,
    )?;
    rows.extend(user.map(|user| (user, seat)));
    Ok(())
}

/// People by id, and the participant rows of those who have one, by user id.
type People = (HashMap<String, Candidate>, HashMap<String, Participant>);

/// The people read by [`people_row`], by id, and the participant rows of those who have one.
fn people_from(rows: Vec<(Candidate, Option<participants::Model>)>) -> Result<People, Error> {
    let (mut people, mut seats) = (HashMap::new(), HashMap::new());
    for (user, seat) in rows {
        if let Some(seat) = seat {
            let seat = participant_from(seat)?;
            seats.insert(seat.user_id.clone(), seat);
        }
        people.insert(user.id.clone(), user);
    }
    Ok((people, seats))
}

/// AddParticipants' read of the people it names, for `ids` (at most 10,000): the directory
/// entries of the tenant's users among them, each with its participant row in the
/// conversation, if any.
pub fn people_statement(
    backend: DatabaseBackend,
    tenant_id: &str,
    conversation_id: &str,
    ids: &[&String],
) -> Result<sea_orm::Statement, Error> {
    use sea_orm::Value;
    let ids = Value::from(
        serde_json::to_string(ids)
            .map_err(|e| Error::Internal(format!("user ids do not encode as JSON: {e}")))?,
    );
    let values: [Value; 3] = [conversation_id.into(), tenant_id.into(), ids];
    Ok(sea_orm::Statement::from_sql_and_values(
        backend,
        people_sql(backend),
        values,
    ))
}

/// The text of [`people_statement`], made once per engine. Its values are the conversation,
/// the tenant and the user ids as a JSON array.
///
/// On PostgreSQL the ids are JSON rather than an array so that the statement keeps one plan
/// for all values: the planner counts a constant array's elements (`unnest`) but not a JSON
/// array's, so with an array every execution's own plan (one id: one row) looked cheaper than
/// the generic plan (ten rows), and PostgreSQL planned each AddParticipants anew, for as long as
/// the connection lived (a tenth of the engine's CPU under AddParticipants(1), 16 in flight).
///
/// Each id is looked up on its own, by the whole primary key of `users` and of `participants`,
/// and on PostgreSQL in a `LATERAL … LIMIT 1` of its own, so that no other plan is possible:
/// PostgreSQL plans a prepared statement once for all values (its generic plan), on the
/// statistics of the moment. Planned while a tenant or a conversation was small, a join of the
/// ids to `users` by `= ANY` scanned every user of the tenant, and a join to `participants`
/// every participant of the conversation (1.7 ms a call at 2,000 participants, with the
/// conversation locked). SQLite, left to order the loops itself, may read the tenant's users
/// once per id (seconds for 1,000 ids): `CROSS JOIN` keeps the ids the outer loop.
///
/// On SQLite each person comes from the index `users_person`, which holds the columns read:
/// through the table's key each id was looked up twice, in the key and then in the table's
/// rows (stored in the order users were made, so a thousand ids touched pages all over
/// the table). SQLite, seeing two indexes that both find a row by `(tenant_id, id)`, picks
/// the key, hence `INDEXED BY`.
fn people_sql(backend: DatabaseBackend) -> &'static str {
    static POSTGRES: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static SQLITE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let columns = || {
        let mut cols = Vec::new();
        super::prefixed_columns(&mut cols, "u", super::CANDIDATE_COLUMNS.into_iter());
        super::prefixed_columns(&mut cols, "p", super::SEAT_COLUMNS.into_iter());
        cols.join(", ")
    };
    match backend {
        DatabaseBackend::Postgres => POSTGRES.get_or_init(|| {
            format!(
                "SELECT {} FROM json_array_elements_text($3::json) AS t (id) \
                 CROSS JOIN LATERAL \
                   (SELECT * FROM users WHERE tenant_id = $2 AND id = t.id LIMIT 1) AS u \
                 LEFT JOIN LATERAL \
                   (SELECT * FROM participants WHERE conversation_id = $1 AND user_id = t.id \
                    LIMIT 1) AS p ON true",
                columns()
            )
        }),
        _ => SQLITE.get_or_init(|| {
            format!(
                "SELECT {} FROM json_each(?3) AS t \
                 CROSS JOIN users u INDEXED BY users_person \
                   ON u.tenant_id = ?2 AND u.id = t.value \
                 LEFT JOIN participants p ON p.conversation_id = ?1 AND p.user_id = t.value",
                columns()
            )
        }),
    }
}

/// Filters of ListParticipants.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParticipantFilter {
    pub state: Option<ParticipantState>,
    pub kind: Option<ParticipantKind>,
}

/// Participants by user id, after `after`, at most `limit`, of those `scope` shows.
pub async fn list<C: sea_orm::ConnectionTrait>(
    db: &C,
    c: &Conversation,
    scope: RosterScope,
    filter: ParticipantFilter,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<Participant>, Error> {
    let mut q =
        participants::Entity::find().filter(participants::Column::ConversationId.eq(c.id.clone()));
    if scope == RosterScope::ExternalAndOwner {
        q = q.filter(
            sea_orm::Condition::any()
                .add(participants::Column::Kind.eq(ParticipantKind::External as i32))
                .add(participants::Column::UserId.eq(c.owner_id.clone())),
        );
    }
    if let Some(state) = filter.state {
        q = q.filter(participants::Column::State.eq(state as i32));
    }
    if let Some(kind) = filter.kind {
        q = q.filter(participants::Column::Kind.eq(kind as i32));
    }
    if let Some(after) = after {
        q = q.filter(participants::Column::UserId.gt(after));
    }
    q.order_by_asc(participants::Column::UserId)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(participant_from)
        .collect()
}

/// A page of participants read with its caller ([`super::CallerSeat`]) in one statement, so
/// one snapshot without a transaction: the page as a viewer who sees everyone
/// ([`RosterScope::Everyone`]) sees it, by user id after `after`, at most `limit`. Whether the
/// caller is such a viewer is for the rules to judge on the caller's part; a caller who sees
/// less reads its page with [`list`].
///
/// The statement is the caller's row (its first column 0) and, `UNION ALL`, the page's rows
/// (first column 1), read by position ([`super::cells`]). A page row carries its participant
/// in the columns of the caller's own participant row, the last of the caller's, and `NULL`
/// in the caller's others: rows of 16 columns rather than 27 (the caller's and the page's side
/// by side). Every column costs PostgreSQL's executor and output and the server's reading, so
/// the statement takes of the caller's directory entry only its id, kind and status, of the
/// conversation only whether it is the tenant's, and of each participant neither its
/// conversation nor its tenant: PostgreSQL ran it 1.3-1.5 times as often per second as the
/// statement that took the three tables' whole rows (46 columns) in 7 of 8 alternations
/// (pgbench, prepared, 16 clients, a page of 20: 9.8-17.0k -> 14.1-21.8k per second).
///
/// The page is `SELECT <the seat's columns> FROM participants WHERE
/// conversation_id = $2 … ORDER BY user_id LIMIT $n` (not the conversation and tenant of each
/// row: the call knows them), alone: whether the conversation is the tenant's is the caller
/// row's to say, and a call whose caller row says it is not returns no page (`judge_seat`),
/// so the page needs no join to the conversation (it was one index lookup more per call), nor
/// a filter on the tenant (which would invite a plan on the tenant's index, which also orders
/// by user id, and scans every participant of the tenant). A `NULL` costs a row four bytes on
/// PostgreSQL's wire, so the caller's columns are not repeated. PostgreSQL once returned the
/// page as one JSON array (`json_agg`) in the caller's row instead; rows measured the same
/// there (ListParticipants(50), 16 in flight, within the noise) and one statement serves
/// both engines. On SQLite building and parsing the JSON cost more than the rows.
///
/// The statement is text made once per engine and per filter (state, kind, a page token): built
/// per call with sea-query, the statement's building and dropping took about an eighth of the
/// server's CPU per call (SQLite, 16 in flight).
pub async fn page_with_caller<C: EachRow>(
    db: &C,
    tenant_id: &str,
    conversation_id: &str,
    user_id: Option<&str>,
    filter: ParticipantFilter,
    after: Option<&str>,
    limit: u64,
) -> Result<(super::CallerSeat, Vec<Participant>), Error> {
    use super::cells::{Cells, Kind};
    use sea_orm::Value;
    let backend = db.get_database_backend();
    // The values in the order `page_sql` numbers them.
    let mut values: Vec<Value> = vec![
        tenant_id.into(),
        conversation_id.into(),
        user_id.map(str::to_owned).into(),
    ];
    values.extend(filter.state.map(|s| Value::from(s as i32)));
    values.extend(filter.kind.map(|k| Value::from(k as i32)));
    values.extend(after.map(|a| Value::from(a.to_owned())));
    values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
    let sql = page_sql(
        backend,
        filter.state.is_some(),
        filter.kind.is_some(),
        after.is_some(),
    );
    let at = 1 + super::CallerSeat::width() - super::SEAT_COLUMNS.len();
    let mut caller = None;
    let mut rows: Vec<participants::Model> = Vec::new();
    db.each_row(
        sea_orm::Statement::from_sql_and_values(backend, sql, values),
        &mut |row: &dyn Cells| {
            if row.value(0, Kind::Int)? == Value::Int(Some(0)) {
                caller = Some(super::CallerSeat::from_cells(
                    row,
                    1,
                    conversation_id,
                    tenant_id,
                )?);
            } else if let Some(m) = super::seat_at(row, at, conversation_id, "")? {
                // A page row becomes a Participant, which carries no tenant: its model's is
                // left empty rather than copied for every row.
                rows.push(m);
            }
            Ok(())
        },
    )
    .await?;
    let caller =
        caller.ok_or_else(|| Error::Internal("the page's statement read no caller".into()))??;
    let mut list = rows
        .into_iter()
        .map(participant_from)
        .collect::<Result<Vec<_>, _>>()?;
    // An aggregate's order, and a compound's, are the engine's to choose.
    list.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    Ok((caller, list))
}

/// The statement of [`page_with_caller`] on `backend`, with a filter on the state, on the kind
/// and a page token where said. Its placeholders are numbered in this order: tenant,
/// conversation, caller's user id, then those of the state, the kind and the token where
/// present, then the limit.
fn page_sql(backend: DatabaseBackend, state: bool, kind: bool, after: bool) -> &'static str {
    use sea_orm::IdenStatic;
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        let mut all = Vec::with_capacity(16);
        let seat_columns = |table: &str| {
            super::SEAT_COLUMNS
                .iter()
                .map(|c| format!("{table}{}", c.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let nulls = |n: usize| vec!["NULL"; n].join(", ");
        for postgres in [false, true] {
            for variant in 0..8u8 {
                let mark = |n: usize| super::mark(postgres, n);
                let mut page = format!(
                    "SELECT {} FROM participants WHERE conversation_id = {}",
                    seat_columns(""),
                    mark(2)
                );
                let mut n = 3;
                for (bit, column, op) in [(1, "state", "="), (2, "kind", "="), (4, "user_id", ">")]
                {
                    if variant & bit != 0 {
                        n += 1;
                        page.push_str(&format!(" AND {column} {op} {}", mark(n)));
                    }
                }
                page.push_str(&format!(" ORDER BY user_id ASC LIMIT {}", mark(n + 1)));
                let caller = super::caller_joins(&mark(1), &mark(2), &mark(3));
                // The caller's columns end with its participant row's, where a page row
                // puts its own.
                all.push(format!(
                    "SELECT 0 AS part, {} {caller} \
                     UNION ALL SELECT 1, {}, {} FROM ({page}) AS l",
                    super::CallerSeat::columns(),
                    nulls(super::CallerSeat::width() - super::SEAT_COLUMNS.len()),
                    seat_columns("l."),
                ));
            }
        }
        all
    });
    let variant = usize::from(state) | usize::from(kind) << 1 | usize::from(after) << 2;
    let engine = if backend == DatabaseBackend::Postgres {
        8
    } else {
        0
    };
    &all[engine + variant]
}

/// RemoveParticipant (rules 13, 14, 8, 15): the participant keeps read access below the
/// removal.
pub async fn remove(
    tx: &WriteTx,
    principal: &Principal,
    conversation_id: &str,
    user_id: &str,
) -> Result<Participant, Error> {
    let tenant_id = principal.tenant_id.as_str();
    let state = load_target(tx, principal, conversation_id, user_id).await?;
    let plan = roster::decide_remove(state, user_id)?;
    apply_target(tx, tenant_id, plan).await
}

/// SetParticipantRole: the owner (or a service) makes an active participant ADMIN or MEMBER.
pub async fn set_role(
    tx: &WriteTx,
    principal: &Principal,
    conversation_id: &str,
    user_id: &str,
    role: Role,
) -> Result<Participant, Error> {
    let tenant_id = principal.tenant_id.as_str();
    let state = load_target(tx, principal, conversation_id, user_id).await?;
    let plan = roster::decide_set_role(state, user_id, role)?;
    apply_target(tx, tenant_id, plan).await
}

/// What a change to one participant reads: the conversation (locked) with the caller's row,
/// then the target's row.
async fn load_target(
    tx: &WriteTx,
    principal: &Principal,
    conversation_id: &str,
    user_id: &str,
) -> Result<TargetState, Error> {
    let Locked {
        conversation,
        caller,
        ..
    } = lock_with_caller(tx, principal, conversation_id).await?;
    let target = get_participant(tx, conversation_id, user_id).await?;
    Ok(TargetState {
        conversation,
        actor: principal.actor(),
        caller,
        target,
        now: now_micros(),
    })
}

/// Writes a change to one participant: its row, the events, the conversation; nothing when the
/// plan changes nothing.
async fn apply_target(
    tx: &WriteTx,
    tenant_id: &str,
    plan: TargetPlan,
) -> Result<Participant, Error> {
    let Some(c) = &plan.conversation else {
        return Ok(plan.participant);
    };
    let mut w = Writes::new();
    super::update_participant(&mut w, tenant_id, &plan.participant);
    append_items(&mut w, &plan.items);
    save_conversation(&mut w, c);
    w.run(tx).await?;
    Ok(plan.participant)
}

/// Users of one tenant whose [`memberships`] one statement reads.
pub const MEMBERSHIPS_PER_STATEMENT: usize = 500;

/// For each of `users` of tenant `tenant_id` who is or was in a conversation: how many
/// conversations they have a participant row in, and in how many of them they are active.
/// Between two reads a user added to a conversation moves the first, one removed or added
/// again the second. It reads `participants_by_user`, as many entries as the users have rows.
pub async fn memberships<C: super::EachRow>(
    db: &C,
    tenant_id: &str,
    users: &[&str],
) -> Result<Vec<(String, i64, i64)>, Error> {
    use super::cells::{Cells, big_int, text};
    let backend = db.get_database_backend();
    let postgres = backend == sea_orm::DatabaseBackend::Postgres;
    let mut out = Vec::with_capacity(users.len());
    for chunk in users.chunks(MEMBERSHIPS_PER_STATEMENT) {
        let marks: Vec<String> = (2..2 + chunk.len())
            .map(|n| super::mark(postgres, n))
            .collect();
        let sql = format!(
            "SELECT user_id, count(*), sum(CASE WHEN state = {} THEN 1 ELSE 0 END) \
             FROM participants WHERE tenant_id = {} AND user_id IN ({}) GROUP BY user_id",
            ParticipantState::Active as i32,
            super::mark(postgres, 1),
            marks.join(", ")
        );
        let mut values: Vec<sea_orm::Value> = vec![tenant_id.into()];
        values.extend(chunk.iter().map(|u| sea_orm::Value::from(*u)));
        db.each_row(
            sea_orm::Statement::from_sql_and_values(backend, sql, values),
            &mut |row: &dyn Cells| {
                if let (Some(user), Some(all), Some(active)) =
                    (text(row, 0)?, big_int(row, 1)?, big_int(row, 2)?)
                {
                    out.push((user, all, active));
                }
                Ok(())
            },
        )
        .await?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The people read's person is each column of `users` it names, read into the field of
    /// that name: a table whose columns stand in another order, each holding a value of its
    /// own, gives every field its column's value.
    #[test]
    fn a_person_is_read_from_the_columns_the_read_names() {
        use crate::domain::model::{UserKind, UserStatus};
        use sea_orm::IdenStatic;
        let conn = rusqlite::Connection::open_in_memory().expect("memory");
        conn.execute_batch(
            "CREATE TABLE users (update_time, status, email_lower, email, name_lower, \
               display_name, kind, create_time, id, tenant_id); \
             INSERT INTO users VALUES (6, 2, 'x', 'bob@x.example', 'y', 'Bob', 2, 5, 'bob', \
               'acme')",
        )
        .expect("a table");
        let columns: Vec<&str> = crate::store::CANDIDATE_COLUMNS
            .iter()
            .map(|c| c.as_str())
            .collect();
        let sql = format!("SELECT {} FROM users", columns.join(", "));
        let person = conn
            .query_row(&sql, [], |row| Ok(crate::store::candidate_at(row, 0)))
            .expect("one row")
            .expect("decodes")
            .expect("a person");
        assert_eq!(
            person,
            Candidate {
                id: "bob".into(),
                kind: UserKind::External,
                status: UserStatus::Deactivated,
            }
        );
        // A row without a person (its columns NULL) is none.
        let nulls = vec!["NULL"; crate::store::CANDIDATE_COLUMNS.len()].join(", ");
        let none = conn
            .query_row(&format!("SELECT {nulls}"), [], |row| {
                Ok(crate::store::candidate_at(row, 0))
            })
            .expect("one row")
            .expect("decodes");
        assert_eq!(none, None);
    }

    /// The numbers of the placeholders `sql` uses, in order of first use, each once.
    fn placeholders(sql: &str, mark: char) -> Vec<usize> {
        let mut seen = Vec::new();
        let mut rest = sql;
        while let Some(at) = rest.find(mark) {
            let digits: String = rest[at + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse::<usize>()
                && !seen.contains(&n)
            {
                seen.push(n);
            }
            rest = &rest[at + 1..];
        }
        seen
    }

    /// Each variant of the page statement numbers its placeholders 1..=n with no gap, n being
    /// the number of values `page_with_caller` binds for it, and filters on what it was asked.
    #[test]
    fn page_statements_number_their_placeholders_as_the_values_are_bound() {
        for (backend, mark) in [
            (DatabaseBackend::Sqlite, '?'),
            (DatabaseBackend::Postgres, '$'),
        ] {
            for variant in 0..8u8 {
                let (state, kind, after) = (variant & 1 != 0, variant & 2 != 0, variant & 4 != 0);
                let sql = page_sql(backend, state, kind, after);
                let mut used = placeholders(sql, mark);
                used.sort_unstable();
                let values = 4 + usize::from(state) + usize::from(kind) + usize::from(after);
                assert_eq!(used, (1..=values).collect::<Vec<_>>(), "{sql}");
                assert_eq!(sql.contains("AND state ="), state, "{sql}");
                assert_eq!(sql.contains("AND kind ="), kind, "{sql}");
                assert_eq!(sql.contains("AND user_id >"), after, "{sql}");
                assert!(
                    sql.contains(&format!("LIMIT {mark}{values})")),
                    "the limit is the last value: {sql}"
                );
            }
        }
    }
}
