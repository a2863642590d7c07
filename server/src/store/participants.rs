//! Adding, removing and listing participants: each mutation loads what the rules read (the
//! conversation locked first, with the caller's row), asks [`crate::domain::roster`] for the
//! plan, and applies it, in a bounded number of statements whatever the batch size.

use super::WriteTx;
use std::collections::HashMap;

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::participants;
use super::writes::Writes;
use super::{
    Locked, append_items, directory, get_participant, invitations, lock_with_caller, outbox,
    participant_from, save_conversation,
};
use crate::domain::model::{
    Conversation, Participant, ParticipantKind, ParticipantState, Role, User, now_micros,
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
    // Load: the conversation (locked), the caller's row and directory entry in one statement.
    let Locked {
        conversation,
        caller,
        ..
    } = lock_with_caller(tx, principal, conversation_id).await?;
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
    let (users, existing) =
        people_with_seats(tx, tenant_id, conversation_id, &lookups.user_ids).await?;
    let pending = invitations::pending_for(tx, conversation_id, &lookups.emails, now).await?;

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
    let plan = roster::decide_add(state, request, || uuid::Uuid::now_v7().to_string())?;

    // Apply: one upsert of participants, one insert each of invitations, events and
    // notifications, one update of resent invitations' links and one of the conversation
    // (a statement per `ROWS_PER_INSERT` rows), sent together.
    let mut w = Writes::new();
    super::upsert_participants(&mut w, tenant_id, &plan.participants);
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
/// or removed), in one statement per [`IDS_PER_LOOKUP`](super::IDS_PER_LOOKUP) ids: `users`
/// left-joined to `participants`. The row of someone not in the directory is not read: the
/// rules judge such a person USER_NOT_FOUND whatever their row says (rule 2).
async fn people_with_seats(
    tx: &WriteTx,
    tenant_id: &str,
    conversation_id: &str,
    user_ids: &[String],
) -> Result<(HashMap<String, User>, HashMap<String, Participant>), Error> {
    use super::entities::users;
    use sea_orm::FromQueryResult;
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, JoinType, Query};

    let (mut people, mut seats) = (HashMap::new(), HashMap::new());
    let (u, p) = (Alias::new("u"), Alias::new("p"));
    for batch in super::distinct(user_ids).chunks(super::IDS_PER_LOOKUP) {
        let mut q = Query::select();
        super::select_prefixed::<users::Column>(&mut q, &u, "u_");
        super::select_prefixed::<participants::Column>(&mut q, &p, "p_");
        q.from_as(users::Entity, u.clone())
            .join_as(
                JoinType::LeftJoin,
                participants::Entity,
                p.clone(),
                Expr::col((p.clone(), participants::Column::ConversationId))
                    .eq(conversation_id)
                    .and(
                        Expr::col((p.clone(), participants::Column::UserId))
                            .equals((u.clone(), users::Column::Id)),
                    ),
            )
            .and_where(Expr::col((u.clone(), users::Column::TenantId)).eq(tenant_id))
            .and_where(super::one_of(
                tx.get_database_backend(),
                Expr::col((u.clone(), users::Column::Id)),
                batch,
            ));
        for row in tx.query_all(&q).await? {
            let user = super::user_from(users::Model::from_query_result(&row, "u_")?)?;
            if row.try_get::<Option<String>>("", "p_user_id")?.is_some() {
                let seat = participant_from(participants::Model::from_query_result(&row, "p_")?)?;
                seats.insert(seat.user_id.clone(), seat);
            }
            people.insert(user.id.clone(), user);
        }
    }
    Ok((people, seats))
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

/// A page of participants read with its caller ([`super::WithCaller`]) in one statement, so
/// one snapshot without a transaction: the page as a viewer who sees everyone
/// ([`RosterScope::Everyone`]) sees it, by user id after `after`, at most `limit`. Whether the
/// caller is such a viewer is for the rules to judge on the caller's part; a caller who sees
/// less reads its page with [`list`].
///
/// The statement returns one row: the caller's parts as [`super::conversation_with_caller`]
/// reads them, and the page as a JSON array in one column (PostgreSQL `json_agg`, SQLite
/// `json_group_array`), built by the engine from `SELECT * FROM participants WHERE
/// conversation_id = $2 … ORDER BY user_id LIMIT $n` where the conversation is the tenant's
/// (a filter on the tenant too would invite a plan on the tenant's index, which also orders by
/// user id, and scans every participant of the tenant). One row, not one per
/// participant each repeating the caller's columns: on SQLite every value of every row is
/// copied out of the engine on its own.
///
/// The caller's joins are those of [`super::conversation_with_caller`], built here with
/// sea-query around the page column. That one keeps its statement as text made once: built
/// per call from the same builder, GetConversation measured slower (SQLite 6.9-9.5k against
/// 10.7-11.0k calls/s, PostgreSQL 5.2-5.9k against 6.1-7.3k, alternating runs).
pub async fn page_with_caller<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    conversation_id: &str,
    user_id: Option<&str>,
    filter: ParticipantFilter,
    after: Option<&str>,
    limit: u64,
) -> Result<(super::WithCaller, Vec<Participant>), Error> {
    use super::entities::{conversations as conv, users};
    use participants::Column as P;
    use sea_orm::sea_query::{Alias, Asterisk, Expr, ExprTrait, Func, JoinType, Order, Query};
    use sea_orm::{DatabaseBackend, IdenStatic, Iterable};

    let mut page = Query::select();
    page.column(Asterisk)
        .from(participants::Entity)
        .and_where(Expr::col(P::ConversationId).eq(conversation_id));
    if let Some(state) = filter.state {
        page.and_where(Expr::col(P::State).eq(state as i32));
    }
    if let Some(kind) = filter.kind {
        page.and_where(Expr::col(P::Kind).eq(kind as i32));
    }
    if let Some(after) = after {
        page.and_where(Expr::col(P::UserId).gt(after));
    }
    page.order_by(P::UserId, Order::Asc).limit(limit);
    let l = Alias::new("l");
    let mut json = Query::select();
    match db.get_database_backend() {
        DatabaseBackend::Postgres => {
            json.expr(Expr::cust("coalesce(json_agg(l), '[]')::text"));
        }
        _ => {
            let fields = P::iter().flat_map(|col| {
                [
                    Expr::cust(format!("'{}'", col.as_str())),
                    Expr::col((l.clone(), col)),
                ]
            });
            json.expr(
                Func::cust(Alias::new("json_group_array"))
                    .arg(Func::cust(Alias::new("json_object")).args(fields)),
            );
        }
    }
    json.from_subquery(page, l);

    let (o, u, c, p) = (
        Alias::new("o"),
        Alias::new("u"),
        Alias::new("c"),
        Alias::new("p"),
    );
    let user_id = user_id.map(str::to_owned);
    let mut q = Query::select();
    super::select_prefixed::<users::Column>(&mut q, &u, "u_");
    super::select_prefixed::<conv::Column>(&mut q, &c, "c_");
    super::select_prefixed::<P>(&mut q, &p, "p_");
    // The page only where the conversation is the tenant's.
    q.expr_as(
        Expr::case(
            Expr::col((c.clone(), conv::Column::Id)).is_not_null(),
            Expr::SubQuery(None, Box::new(json.into())),
        ),
        Alias::new("page"),
    )
    .from_subquery(
        Query::select()
            .expr_as(Expr::val(1), Alias::new("one"))
            .to_owned(),
        o,
    )
    .join_as(
        JoinType::LeftJoin,
        users::Entity,
        u.clone(),
        Expr::col((u.clone(), users::Column::TenantId))
            .eq(tenant_id)
            .and(Expr::col((u.clone(), users::Column::Id)).eq(user_id.clone())),
    )
    .join_as(
        JoinType::LeftJoin,
        conv::Entity,
        c.clone(),
        Expr::col((c.clone(), conv::Column::TenantId))
            .eq(tenant_id)
            .and(Expr::col((c.clone(), conv::Column::Id)).eq(conversation_id)),
    )
    .join_as(
        JoinType::LeftJoin,
        participants::Entity,
        p.clone(),
        Expr::col((p.clone(), P::ConversationId))
            .equals((c.clone(), conv::Column::Id))
            .and(Expr::col((p, P::UserId)).eq(user_id)),
    );
    let row = db
        .query_one(&q)
        .await?
        .ok_or_else(|| Error::Internal("a one-row select returned no row".into()))?;
    let caller = super::WithCaller::from_row(&row)?;
    let json: Option<String> = row.try_get("", "page")?;
    let rows: Vec<participants::Model> = serde_json::from_str(json.as_deref().unwrap_or("[]"))
        .map_err(|e| Error::Internal(format!("a page of participants does not decode: {e}")))?;
    let mut list = rows
        .into_iter()
        .map(participant_from)
        .collect::<Result<Vec<_>, _>>()?;
    // An aggregate's order is the engine's to choose.
    list.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    Ok((caller, list))
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
