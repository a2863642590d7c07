//! Creating conversations, their lifecycle, and messages: each mutation loads what its rules
//! read, asks [`conversation_ops`] what to do, and applies that.

use super::WriteTx;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, JoinType,
    QueryFilter, QueryOrder, QuerySelect, Statement, sea_query::Condition,
};

use super::entities::{conversations, participants};
use super::outbox::{self, Kind, Notification, Recipient};
use super::writes::Writes;
use super::{append_items, conversation_from, save_conversation};
use crate::domain::conversation_ops::{
    self, AddNotices, Change, ConversationPatch, CreatePlan, CreateState, Created, NewConversation,
    Transition,
};
use crate::domain::model::{Conversation, Participant, ParticipantState, TimelineItem, now_micros};
use crate::domain::principal::Principal;
use crate::domain::visibility::ConversationView;
use crate::error::Error;

/// Creates a conversation with its owner, participants and opening events; a DIRECT
/// conversation that already exists between the two people is returned instead. Returns it as
/// its creator sees it.
///
/// Load: the people named (one look-up, inside the transaction, so that a user deactivated
/// concurrently is never added) and, for a DIRECT one, the pair's existing conversation (its
/// creation serialized per pair); decide ([`conversation_ops::decide_create`]); apply: the
/// conversation, its participants, its events and its notifications, one statement each.
pub async fn create(
    tx: &WriteTx,
    principal: &Principal,
    request: NewConversation,
) -> Result<ConversationView, Error> {
    let tenant_id = &principal.tenant_id;
    let users = super::directory::users_by_id(tx, tenant_id, &request.people()).await?;
    let mut state = CreateState {
        users,
        existing_direct: None,
    };
    if let Some(key) = request.direct_key() {
        // Serialize the creation of one pair's direct conversation (SQLite writers are already serial).
        if tx.get_database_backend() == DatabaseBackend::Postgres {
            tx.execute_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                [format!("{tenant_id}/{key}").into()],
            ))
            .await?;
        }
        if let Some(existing) = find_direct(tx, tenant_id, &key).await? {
            let caller = super::get_participant(tx, &existing.id, &request.owner_id).await?;
            state.existing_direct = Some((existing, caller));
        }
    }
    let id = super::new_id();
    match conversation_ops::decide_create(principal, request, state, id, now_micros())? {
        CreatePlan::Existing(view) => Ok(view),
        CreatePlan::New { created, reply } => {
            insert(tx, &created).await?;
            Ok(reply)
        }
    }
}

async fn insert(tx: &WriteTx, created: &Created) -> Result<(), Error> {
    let c = &created.conversation;
    let row = conversations::ActiveModel {
        id: Set(c.id.clone()),
        tenant_id: Set(c.tenant_id.clone()),
        kind: Set(c.kind as i32),
        title: Set(c.title.clone()),
        owner_id: Set(c.owner_id.clone()),
        state: Set(c.state as i32),
        add_internal: Set(c.policy.add_internal as i32),
        add_external: Set(c.policy.add_external as i32),
        remove_policy: Set(c.policy.remove as i32),
        lock_external: Set(c.policy.lock_external_roster_on_first_message),
        history: Set(c.policy.new_participant_history as i32),
        max_participants: Set(c.policy.max_participants),
        participant_count: Set(c.participant_count),
        last_seq: Set(c.last_seq),
        first_message_time: Set(c.first_message_time),
        direct_key: Set(created.direct_key.clone()),
        version: Set(c.version),
        create_time: Set(c.create_time),
        update_time: Set(c.update_time),
        shared_version: Set(c.shared_version),
        shared_update_time: Set(c.shared_update_time),
        external_view_count: Set(c.external_view_count),
    };
    let mut w = Writes::new();
    w.insert_models([row], "");
    super::insert_participants(&mut w, &c.tenant_id, &created.participants);
    append_items(&mut w, &created.items);
    enqueue_add_notices(&mut w, c, &created.notices);
    w.run(tx).await
}

/// Writes the notifications an add owes (rules 21 and 22), as the decision lists them.
pub(crate) fn enqueue_add_notices(w: &mut Writes, c: &Conversation, notices: &AddNotices) {
    let mut notes: Vec<Notification> = notices
        .added
        .iter()
        .map(|u| {
            Notification::new(
                Kind::AddedToConversation,
                Recipient::User(u.clone()),
                &c.id,
                &notices.actor_id,
                vec![u.clone()],
            )
        })
        .collect();
    if let Some(owner) = &notices.owner {
        notes.push(Notification::new(
            Kind::ParticipantAddedByOther,
            Recipient::User(owner.clone()),
            &c.id,
            &notices.actor_id,
            notices.added.clone(),
        ));
    }
    outbox::enqueue(w, &c.tenant_id, &notes)
}

/// Applies a decided change to a conversation: its new items, then its row.
pub(crate) fn apply_change(w: &mut Writes, change: &Change) {
    append_items(w, &change.items);
    save_conversation(w, &change.conversation)
}

/// Writes a decided change in one round trip.
async fn write_change(tx: &WriteTx, change: &Change) -> Result<(), Error> {
    let mut w = Writes::new();
    apply_change(&mut w, change);
    w.run(tx).await
}

/// The DIRECT conversation of a pair, by its key.
async fn find_direct(
    db: &WriteTx,
    tenant_id: &str,
    key: &str,
) -> Result<Option<Conversation>, Error> {
    conversations::Entity::find()
        .filter(conversations::Column::TenantId.eq(tenant_id))
        .filter(conversations::Column::DirectKey.eq(key))
        .one(db)
        .await?
        .map(conversation_from)
        .transpose()
}

/// The conversations `user_id` is an active participant of (or, with `include_removed`, was
/// removed from), newest first, after `before`, each with the user's participant row.
pub async fn list_for_user(
    db: &super::Conn,
    tenant_id: &str,
    user_id: &str,
    include_removed: bool,
    before: Option<&str>,
    limit: u64,
) -> Result<Vec<(Conversation, Participant)>, Error> {
    let mut q = for_user(tenant_id, user_id);
    if !include_removed {
        q = q.filter(participants::Column::State.eq(ParticipantState::Active as i32));
    }
    if let Some(before) = before {
        q = q.filter(conversations::Column::Id.lt(before));
    }
    joined(q.order_by_desc(conversations::Column::Id).limit(limit), db).await
}

/// Those of conversations `ids` that `user_id` is or was a participant of, each with the
/// user's participant row, in one statement.
pub async fn of_user_among(
    db: &super::Conn,
    tenant_id: &str,
    user_id: &str,
    ids: &[String],
) -> Result<Vec<(Conversation, Participant)>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let q =
        for_user(tenant_id, user_id).filter(conversations::Column::Id.is_in(ids.iter().cloned()));
    joined(q, db).await
}

fn for_user(tenant_id: &str, user_id: &str) -> sea_orm::Select<conversations::Entity> {
    conversations::Entity::find()
        .join_rev(JoinType::InnerJoin, participants_relation())
        .filter(participants::Column::TenantId.eq(tenant_id))
        .filter(participants::Column::UserId.eq(user_id))
}

async fn joined(
    q: sea_orm::Select<conversations::Entity>,
    db: &super::Conn,
) -> Result<Vec<(Conversation, Participant)>, Error> {
    q.select_also(participants::Entity)
        .all(db)
        .await?
        .into_iter()
        .map(|(c, p)| {
            let p = p.ok_or_else(|| Error::Internal("a joined participant is missing".into()))?;
            Ok((conversation_from(c)?, super::participant_from(p)?))
        })
        .collect()
}

fn participants_relation() -> sea_orm::RelationDef {
    participants::Entity::belongs_to(conversations::Entity)
        .from(participants::Column::ConversationId)
        .to(conversations::Column::Id)
        .into()
}

/// Every conversation of the tenant, newest first (a service principal's view).
pub async fn list_for_tenant(
    db: &super::Conn,
    tenant_id: &str,
    before: Option<&str>,
    limit: u64,
) -> Result<Vec<Conversation>, Error> {
    let mut cond = Condition::all().add(conversations::Column::TenantId.eq(tenant_id));
    if let Some(before) = before {
        cond = cond.add(conversations::Column::Id.lt(before));
    }
    conversations::Entity::find()
        .filter(cond)
        .order_by_desc(conversations::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(conversation_from)
        .collect()
}

/// Archives, unarchives or closes a conversation (rule 24): load the conversation (locked) and
/// the caller's row, decide ([`conversation_ops::decide_transition`]), apply.
pub async fn transition(
    tx: &WriteTx,
    principal: &Principal,
    id: &str,
    to: Transition,
) -> Result<ConversationView, Error> {
    let super::Locked {
        conversation: c,
        caller,
        principal,
    } = super::lock_with_caller(tx, principal, id).await?;
    let decision = conversation_ops::decide_transition(c, &principal, caller, to, now_micros())?;
    if let Some(change) = &decision.change {
        write_change(tx, change).await?;
    }
    Ok(decision.reply)
}

/// Posts a message (rule 25): load the conversation (locked) and the caller's row, decide
/// ([`conversation_ops::decide_send`]), apply.
pub async fn send_message(
    tx: &WriteTx,
    principal: &Principal,
    id: &str,
    body: String,
) -> Result<TimelineItem, Error> {
    let actor = &principal.actor();
    let super::Locked {
        conversation: c,
        caller,
        ..
    } = super::lock_with_caller(tx, principal, id).await?;
    let message_id = super::new_id();
    let decision =
        conversation_ops::decide_send(c, actor, caller.as_ref(), body, message_id, now_micros())?;
    if let Some(change) = &decision.change {
        write_change(tx, change).await?;
    }
    Ok(decision.reply)
}

/// UpdateConversation: the owner changes the title or the policy, guarded by the etag. Load the
/// conversation (locked) and the caller's row, decide ([`conversation_ops::decide_update`]),
/// apply.
pub async fn update(
    tx: &WriteTx,
    principal: &Principal,
    id: &str,
    etag: &str,
    patch: ConversationPatch,
) -> Result<ConversationView, Error> {
    let super::Locked {
        conversation: c,
        caller,
        principal,
    } = super::lock_with_caller(tx, principal, id).await?;
    let decision =
        conversation_ops::decide_update(c, &principal, caller, etag, patch, now_micros())?;
    if let Some(change) = &decision.change {
        write_change(tx, change).await?;
    }
    Ok(decision.reply)
}

/// The latest seq of each of the conversations `ids` that exists, in one statement (the
/// watches' poll, [`crate::realtime::Hub::poll`]).
pub async fn latest_seqs<C: super::EachRow>(
    db: &C,
    ids: &[&str],
) -> Result<Vec<(String, i64)>, Error> {
    use super::cells::{Cells, big_int, text};
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let backend = db.get_database_backend();
    let postgres = backend == DatabaseBackend::Postgres;
    let marks: Vec<String> = (1..=ids.len()).map(|n| super::mark(postgres, n)).collect();
    let sql = format!(
        "SELECT id, last_seq FROM conversations WHERE id IN ({})",
        marks.join(", ")
    );
    let values: Vec<sea_orm::Value> = ids.iter().map(|id| (*id).into()).collect();
    let mut latest = Vec::with_capacity(ids.len());
    db.each_row(
        Statement::from_sql_and_values(backend, sql, values),
        &mut |row: &dyn Cells| {
            if let (Some(id), Some(seq)) = (text(row, 0)?, big_int(row, 1)?) {
                latest.push((id, seq));
            }
            Ok(())
        },
    )
    .await?;
    Ok(latest)
}
