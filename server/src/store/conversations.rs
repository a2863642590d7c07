//! Creating conversations, their lifecycle, and messages.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, EntityTrait, JoinType, QueryFilter, QueryOrder, QuerySelect, Statement,
    sea_query::Condition,
};

use super::entities::{conversations, participants};
use super::outbox::{self, Kind, Notification, Recipient};
use super::{
    append_items, conversation_from, event, lock_conversation, participant_row, save_conversation,
};
use crate::domain::model::{
    Conversation, ConversationKind, ConversationState, Entry, EventType, Participant,
    ParticipantKind, ParticipantState, Role, TimelineItem, User, now_micros,
};
use crate::domain::principal::{Actor, Principal};
use crate::domain::rules;
use crate::domain::visibility::{self, ConversationView};
use crate::error::Error;

/// What CreateConversation asks for, validated.
pub struct NewConversation {
    pub kind: ConversationKind,
    pub title: String,
    pub policy: crate::domain::model::Policy,
    pub owner_id: String,
    /// The other people's ids, without the owner, no duplicates.
    pub other_ids: Vec<String>,
}

/// The people of a new conversation, read from the directory inside its transaction, so that
/// a user deactivated concurrently is never added: the owner and the others, each a known,
/// active user.
struct People {
    tenant_id: String,
    kind: ConversationKind,
    title: String,
    policy: crate::domain::model::Policy,
    owner: User,
    others: Vec<User>,
}

/// Creates a conversation with its owner, participants and opening events; a DIRECT
/// conversation that already exists between the two people is returned instead. Returns it as
/// its creator sees it.
pub async fn create(
    tx: &DatabaseTransaction,
    principal: &Principal,
    request: NewConversation,
) -> Result<ConversationView, Error> {
    let tenant_id = &principal.tenant_id;
    let owner = super::directory::get_user(tx, tenant_id, &request.owner_id)
        .await?
        .ok_or_else(|| Error::UserNotFound(request.owner_id.clone()))?;
    let mut found = super::directory::users_by_id(tx, tenant_id, &request.other_ids).await?;
    let mut others = Vec::with_capacity(request.other_ids.len());
    for id in &request.other_ids {
        let user = found
            .remove(id)
            .ok_or_else(|| Error::UserNotFound(id.clone()))?;
        if user.status == crate::domain::model::UserStatus::Deactivated {
            return Err(Error::UserDeactivated(id.clone()));
        }
        others.push(user);
    }
    let new = People {
        tenant_id: tenant_id.clone(),
        kind: request.kind,
        title: request.title,
        policy: request.policy,
        owner,
        others,
    };
    let c = insert(tx, &new).await?;
    let caller = super::get_participant(tx, &c.id, &new.owner.id).await?;
    Ok(visibility::viewer(&c, principal, caller)?.conversation(&c))
}

async fn insert(tx: &DatabaseTransaction, new: &People) -> Result<Conversation, Error> {
    let direct_key = (new.kind == ConversationKind::Direct)
        .then(|| {
            new.others
                .first()
                .map(|o| rules::direct_key(&new.owner.id, &o.id))
        })
        .flatten();
    if let Some(key) = &direct_key {
        // Serialize the creation of one pair's direct conversation (SQLite writers are already serial).
        if tx.get_database_backend() == DatabaseBackend::Postgres {
            tx.execute_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                [format!("{}/{key}", new.tenant_id).into()],
            ))
            .await?;
        }
        if let Some(existing) = find_direct(tx, &new.tenant_id, key).await? {
            return Ok(existing);
        }
    }
    let now = now_micros();
    let id = uuid::Uuid::now_v7().to_string();
    let mut people: Vec<(&User, Role)> = vec![(&new.owner, Role::Owner)];
    people.extend(new.others.iter().map(|u| (u, Role::Member)));
    let participants: Vec<Participant> = people
        .iter()
        .map(|(u, role)| Participant {
            conversation_id: id.clone(),
            user_id: u.id.clone(),
            kind: u.participant_kind(),
            role: *role,
            state: ParticipantState::Active,
            added_by: new.owner.id.clone(),
            join_time: now,
            removed_by: None,
            remove_time: None,
            history_from: 1,
            removed_seq: None,
            removed_view: None,
        })
        .collect();
    // seq 1: created; then who was added, internal and external apart (rule 18).
    let mut items = vec![event(
        &id,
        1,
        now,
        EventType::ConversationCreated,
        &new.owner.id,
        vec![],
        false,
    )];
    for kind in [ParticipantKind::Internal, ParticipantKind::External] {
        let subjects: Vec<String> = new
            .others
            .iter()
            .filter(|u| u.participant_kind() == kind)
            .map(|u| u.id.clone())
            .collect();
        if !subjects.is_empty() {
            let seq = items.len() as i64 + 1;
            let internal_only = kind == ParticipantKind::Internal;
            items.push(event(
                &id,
                seq,
                now,
                EventType::ParticipantAdded,
                &new.owner.id,
                subjects,
                internal_only,
            ));
        }
    }
    let row = conversations::ActiveModel {
        id: Set(id.clone()),
        tenant_id: Set(new.tenant_id.clone()),
        kind: Set(new.kind as i32),
        title: Set(new.title.clone()),
        owner_id: Set(new.owner.id.clone()),
        state: Set(ConversationState::Active as i32),
        add_internal: Set(new.policy.add_internal as i32),
        add_external: Set(new.policy.add_external as i32),
        remove_policy: Set(new.policy.remove as i32),
        lock_external: Set(new.policy.lock_external_roster_on_first_message),
        history: Set(new.policy.new_participant_history as i32),
        max_participants: Set(new.policy.max_participants),
        participant_count: Set(participants.len() as i32),
        last_seq: Set(items.len() as i64),
        first_message_time: Set(None),
        direct_key: Set(direct_key.clone()),
        version: Set(1),
        create_time: Set(now),
        update_time: Set(now),
        shared_version: Set(1),
        shared_update_time: Set(now),
        external_view_count: Set(visibility::external_view_count(&participants)),
    };
    conversations::Entity::insert(row)
        .exec_without_returning(tx)
        .await?;
    participants::Entity::insert_many(
        participants
            .iter()
            .map(|p| participant_row(&new.tenant_id, p)),
    )
    .exec_without_returning(tx)
    .await?;
    append_items(tx, &items).await?;
    let added: Vec<Notification> = new
        .others
        .iter()
        .map(|u| {
            Notification::new(
                Kind::AddedToConversation,
                Recipient::User(u.id.clone()),
                &id,
                &new.owner.id,
                vec![u.id.clone()],
            )
        })
        .collect();
    outbox::enqueue(tx, &new.tenant_id, &added).await?;
    super::get_conversation(tx, &new.tenant_id, &id).await
}

async fn find_direct(
    db: &DatabaseTransaction,
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
    db: &DatabaseConnection,
    tenant_id: &str,
    user_id: &str,
    include_removed: bool,
    before: Option<&str>,
    limit: u64,
) -> Result<Vec<(Conversation, Participant)>, Error> {
    let mut q = conversations::Entity::find()
        .join_rev(JoinType::InnerJoin, participants_relation())
        .filter(participants::Column::TenantId.eq(tenant_id))
        .filter(participants::Column::UserId.eq(user_id));
    if !include_removed {
        q = q.filter(participants::Column::State.eq(ParticipantState::Active as i32));
    }
    if let Some(before) = before {
        q = q.filter(conversations::Column::Id.lt(before));
    }
    q.order_by_desc(conversations::Column::Id)
        .limit(limit)
        .select_also(participants::Entity)
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
    db: &DatabaseConnection,
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

/// A lifecycle change (rule 24).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Archive,
    Unarchive,
    Close,
}

/// Archives, unarchives or closes a conversation. Repeating a transition already made changes
/// nothing; a closed conversation stays closed.
pub async fn transition(
    tx: &DatabaseTransaction,
    principal: &Principal,
    id: &str,
    to: Transition,
) -> Result<ConversationView, Error> {
    let actor = &principal.actor();
    let mut c = lock_conversation(tx, &principal.tenant_id, id).await?;
    let caller = super::caller_participant(tx, id, actor).await?;
    let standing = rules::require_active(&c, actor, caller.as_ref())?;
    rules::require_owner_or_admin(&standing)?;
    let viewer = visibility::viewer(&c, principal, caller.clone())?;
    use ConversationState as S;
    let (next, event_type) = match (c.state, to) {
        (S::Closed, Transition::Close) => return Ok(viewer.conversation(&c)),
        (S::Closed, _) => return Err(Error::ConversationClosed(c.id.clone())),
        (S::Archived, Transition::Archive) | (S::Active, Transition::Unarchive) => {
            return Ok(viewer.conversation(&c));
        }
        (_, Transition::Archive) => (S::Archived, EventType::ConversationArchived),
        (_, Transition::Unarchive) => (S::Active, EventType::ConversationUnarchived),
        (_, Transition::Close) => (S::Closed, EventType::ConversationClosed),
    };
    let now = now_micros();
    c.state = next;
    c.last_seq += 1;
    let items = [event(
        &c.id,
        c.last_seq,
        now,
        event_type,
        actor.id(),
        vec![],
        false,
    )];
    visibility::touch(&mut c, now, &items);
    append_items(tx, &items).await?;
    save_conversation(tx, &c).await?;
    Ok(viewer.conversation(&c))
}

/// Posts a message (rule 25); the first one sets `first_message_time` and, with the lock on,
/// fixes the external roster (rule 8).
pub async fn send_message(
    tx: &DatabaseTransaction,
    tenant_id: &str,
    actor: &Actor,
    id: &str,
    body: String,
) -> Result<TimelineItem, Error> {
    let mut c = lock_conversation(tx, tenant_id, id).await?;
    let caller = super::caller_participant(tx, id, actor).await?;
    rules::require_sender(&c, actor, caller.as_ref())?;
    rules::require_open(&c)?;
    let now = now_micros();
    c.last_seq += 1;
    let first = c.first_message_time.is_none();
    if first {
        c.first_message_time = Some(now);
    }
    let item = TimelineItem {
        conversation_id: c.id.clone(),
        seq: c.last_seq,
        create_time: now,
        entry: Entry::Message {
            id: uuid::Uuid::now_v7().to_string(),
            sender_id: actor.id().to_owned(),
            body,
        },
    };
    // Only the first message changes the record (its first_message_time); later ones move
    // nothing a reader of the record sees.
    if first {
        visibility::touch(&mut c, now, std::slice::from_ref(&item));
    }
    append_items(tx, std::slice::from_ref(&item)).await?;
    save_conversation(tx, &c).await?;
    Ok(item)
}

/// UpdateConversation's changes, already validated: `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct ConversationPatch {
    pub title: Option<String>,
    pub add_internal: Option<crate::domain::model::Permission>,
    pub add_external: Option<crate::domain::model::Permission>,
    pub remove: Option<crate::domain::model::Permission>,
    pub lock_external_roster_on_first_message: Option<bool>,
    pub new_participant_history: Option<crate::domain::model::History>,
    pub max_participants: Option<i32>,
}

/// UpdateConversation: the owner changes the title or the policy, guarded by the etag.
pub async fn update(
    tx: &DatabaseTransaction,
    principal: &Principal,
    id: &str,
    etag: &str,
    patch: ConversationPatch,
) -> Result<ConversationView, Error> {
    let actor = &principal.actor();
    let mut c = lock_conversation(tx, &principal.tenant_id, id).await?;
    let caller = super::caller_participant(tx, id, actor).await?;
    let standing = rules::require_active(&c, actor, caller.as_ref())?;
    if !standing.satisfies(crate::domain::model::Permission::Owner) {
        return Err(Error::NoPermission(
            "only the owner may update a conversation",
        ));
    }
    // The etag is the one the caller reads (an external owner's moves only with what they see).
    let viewer = visibility::viewer(&c, principal, caller.clone())?;
    if !etag.is_empty() && etag != viewer.conversation(&c).etag {
        return Err(Error::EtagMismatch(etag.to_owned()));
    }
    rules::require_open(&c)?;
    let now = now_micros();
    let mut items = Vec::new();
    if let Some(title) = patch.title
        && title != c.title
    {
        if c.kind == ConversationKind::Direct {
            return Err(Error::field(
                "conversation.title",
                "a DIRECT conversation has no title",
            ));
        }
        c.title = title;
        c.last_seq += 1;
        items.push(event(
            &c.id,
            c.last_seq,
            now,
            EventType::TitleChanged,
            actor.id(),
            vec![],
            false,
        ));
    }
    let before = c.policy;
    let p = &mut c.policy;
    if let Some(v) = patch.add_internal {
        p.add_internal = v;
    }
    if let Some(v) = patch.add_external {
        p.add_external = v;
    }
    if let Some(v) = patch.remove {
        p.remove = v;
    }
    if let Some(v) = patch.lock_external_roster_on_first_message {
        p.lock_external_roster_on_first_message = v;
    }
    if let Some(v) = patch.new_participant_history {
        p.new_participant_history = v;
    }
    if let Some(v) = patch.max_participants {
        p.max_participants = v;
    }
    if c.policy != before {
        // Only active participants count (rule 9): a pending invitation is checked against
        // the cap when it is accepted.
        if c.policy.max_participants < c.participant_count {
            return Err(Error::ParticipantLimitExceeded {
                conversation_id: c.id.clone(),
                max: c.policy.max_participants,
                would_have: i64::from(c.participant_count),
            });
        }
        c.last_seq += 1;
        items.push(event(
            &c.id,
            c.last_seq,
            now,
            EventType::PolicyChanged,
            actor.id(),
            vec![],
            false,
        ));
    }
    if items.is_empty() {
        return Ok(viewer.conversation(&c));
    }
    visibility::touch(&mut c, now, &items);
    append_items(tx, &items).await?;
    save_conversation(tx, &c).await?;
    Ok(viewer.conversation(&c))
}
