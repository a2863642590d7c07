//! What the conversation mutations decide: CreateConversation, the lifecycle (archive, unarchive,
//! close), SendMessage and UpdateConversation. Each decider is a pure function over the state the
//! store loaded (the conversation row, locked, and the caller's participant row, or the
//! directory entries of the people named): it returns the change to apply and the reply, or the
//! error. The time and any fresh id come in from the caller; nothing here reads a clock, makes
//! an id or touches storage. Each check cites the SPEC §3 rule it implements.

use std::collections::HashMap;

use super::model::{
    Conversation, ConversationKind, ConversationState, Entry, EventType, History, Micros,
    Participant, ParticipantKind, ParticipantState, Permission, Policy, Role, TimelineItem, User,
    UserStatus,
};
use super::principal::{Actor, Principal};
use super::rules;
use super::visibility::{self, ConversationView};
use crate::error::Error;

/// A change to one conversation: its record as it is afterwards (the timeline's `last_seq` and
/// the versions moved) and the timeline items to append, in seq order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub conversation: Conversation,
    pub items: Vec<TimelineItem>,
}

/// What a mutation decided: the change to apply (`None` when the call changes nothing) and the
/// reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<R> {
    pub change: Option<Change>,
    pub reply: R,
}

/// The notifications an add owes, for the store to write (rules 21 and 22).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddNotices {
    /// Who made the add (the notifications' actor).
    pub actor_id: String,
    /// Each is told they were added (ADDED_TO_CONVERSATION, rule 22), as its subject.
    pub added: Vec<String>,
    /// The owner, when someone else made the add (PARTICIPANT_ADDED_BY_OTHER about `added`,
    /// rule 21).
    pub owner: Option<String>,
}

/// Appends an event to `c`'s timeline: the next seq, recorded in `c.last_seq`.
pub(crate) fn next_event(
    c: &mut Conversation,
    now: Micros,
    event_type: EventType,
    actor_id: &str,
    subject_ids: Vec<String>,
    internal_only: bool,
) -> TimelineItem {
    c.last_seq += 1;
    TimelineItem {
        conversation_id: c.id.clone(),
        seq: c.last_seq,
        create_time: now,
        entry: Entry::Event {
            event_type,
            actor_id: actor_id.to_owned(),
            subject_ids,
            internal_only,
        },
    }
}

/// A change that appended `items` to `c` at `now`: the versions move as rule 18 says.
pub(crate) fn changed(mut c: Conversation, now: Micros, items: Vec<TimelineItem>) -> Change {
    visibility::touch(&mut c, now, &items);
    Change {
        conversation: c,
        items,
    }
}

// ---------------------------------------------------------------------------------------------
// CreateConversation

/// What CreateConversation asks for, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewConversation {
    pub kind: ConversationKind,
    pub title: String,
    pub policy: Policy,
    pub owner_id: String,
    /// The other people's ids, without the owner, no duplicates.
    pub other_ids: Vec<String>,
}

impl NewConversation {
    /// The key that makes a DIRECT conversation unique per pair of people (rule 12); `None` for
    /// a group. The store serializes creations of one key and looks the key up before deciding.
    pub fn direct_key(&self) -> Option<String> {
        if self.kind != ConversationKind::Direct {
            return None;
        }
        self.other_ids
            .first()
            .map(|other| rules::direct_key(&self.owner_id, other))
    }

    /// Everyone whose directory entry the decision needs: the owner, then the others.
    pub fn people(&self) -> Vec<String> {
        std::iter::once(self.owner_id.clone())
            .chain(self.other_ids.iter().cloned())
            .collect()
    }
}

/// What CreateConversation's rules read, loaded inside its transaction (so that a user
/// deactivated concurrently is never added).
#[derive(Clone, Debug, Default)]
pub struct CreateState {
    /// The directory entries found among [`NewConversation::people`].
    pub users: HashMap<String, User>,
    /// The DIRECT conversation of [`NewConversation::direct_key`], if the two people already
    /// have one, with the owner's participant row in it.
    pub existing_direct: Option<(Conversation, Option<Participant>)>,
}

/// A conversation to insert, with everything that comes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    pub conversation: Conversation,
    /// The `direct_key` column: unique per pair, the last guard against two DIRECT
    /// conversations of one pair.
    pub direct_key: Option<String>,
    pub participants: Vec<Participant>,
    pub items: Vec<TimelineItem>,
    pub notices: AddNotices,
}

/// What CreateConversation decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreatePlan {
    /// The two people's DIRECT conversation exists: nothing is written (rule 12).
    Existing(ConversationView),
    /// A new conversation to insert, and how its creator sees it.
    New {
        created: Box<Created>,
        reply: ConversationView,
    },
}

/// Decides a CreateConversation: the conversation `id` the store made for it, at `now`.
pub fn decide_create(
    principal: &Principal,
    request: NewConversation,
    mut state: CreateState,
    id: String,
    now: Micros,
) -> Result<CreatePlan, Error> {
    // Everyone named must be in the directory; the others must be active (as an add's
    // invitees, rule 4). The owner is the caller, whose own calls already require an entry.
    let owner = state
        .users
        .remove(&request.owner_id)
        .ok_or_else(|| Error::UserNotFound(request.owner_id.clone()))?;
    let mut others = Vec::with_capacity(request.other_ids.len());
    for other_id in &request.other_ids {
        let user = state
            .users
            .remove(other_id)
            .ok_or_else(|| Error::UserNotFound(other_id.clone()))?;
        if user.status == UserStatus::Deactivated {
            return Err(Error::UserDeactivated(other_id.clone()));
        }
        others.push(user);
    }
    // Rule 12: a DIRECT conversation that exists between the two is returned as it is.
    let direct_key = request.direct_key();
    if direct_key.is_some()
        && let Some((existing, caller)) = state.existing_direct
    {
        let view = visibility::viewer(&existing, principal, caller)?.conversation(&existing);
        return Ok(CreatePlan::Existing(view));
    }
    // Rule 12: the creator becomes OWNER; the others MEMBER. Everyone reads the whole history
    // (rule 11: nothing precedes them).
    let people =
        std::iter::once((&owner, Role::Owner)).chain(others.iter().map(|u| (u, Role::Member)));
    let participants: Vec<Participant> = people
        .map(|(user, role)| Participant {
            conversation_id: id.clone(),
            user_id: user.id.clone(),
            kind: user.participant_kind(),
            role,
            state: ParticipantState::Active,
            added_by: owner.id.clone(),
            join_time: now,
            removed_by: None,
            remove_time: None,
            history_from: 1,
            removed_seq: None,
            removed_view: None,
        })
        .collect();
    let mut c = Conversation {
        id: id.clone(),
        tenant_id: principal.tenant_id.clone(),
        kind: request.kind,
        title: request.title,
        owner_id: owner.id.clone(),
        state: ConversationState::Active,
        policy: request.policy,
        participant_count: participants.len() as i32,
        last_seq: 0,
        first_message_time: None,
        version: 1,
        create_time: now,
        update_time: now,
        shared_version: 1,
        shared_update_time: now,
        external_view_count: visibility::external_view_count(&participants),
    };
    // seq 1: created; then who was added, internal and external people in events of their own,
    // so that external viewers never see the internal ones (rule 18).
    let mut items = vec![next_event(
        &mut c,
        now,
        EventType::ConversationCreated,
        &owner.id,
        vec![],
        false,
    )];
    for kind in [ParticipantKind::Internal, ParticipantKind::External] {
        let subjects: Vec<String> = others
            .iter()
            .filter(|u| u.participant_kind() == kind)
            .map(|u| u.id.clone())
            .collect();
        if !subjects.is_empty() {
            items.push(next_event(
                &mut c,
                now,
                EventType::ParticipantAdded,
                &owner.id,
                subjects,
                kind == ParticipantKind::Internal,
            ));
        }
    }
    // Rule 22: each person added is told; the owner made the add, so rule 21 owes nothing.
    let notices = AddNotices {
        actor_id: owner.id.clone(),
        added: others.iter().map(|u| u.id.clone()).collect(),
        owner: None,
    };
    let owner_row = participants.first().cloned();
    let reply = visibility::viewer(&c, principal, owner_row)?.conversation(&c);
    Ok(CreatePlan::New {
        created: Box::new(Created {
            conversation: c,
            direct_key,
            participants,
            items,
            notices,
        }),
        reply,
    })
}

// ---------------------------------------------------------------------------------------------
// Archive, unarchive, close

/// A lifecycle change (rule 24).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Archive,
    Unarchive,
    Close,
}

/// Decides an archive, unarchive or close of `c` (locked) by the caller, whose participant row
/// is `caller`. Repeating a transition already made changes nothing; a closed conversation
/// stays closed. Replies with the conversation as the caller sees it.
pub fn decide_transition(
    c: Conversation,
    principal: &Principal,
    caller: Option<Participant>,
    to: Transition,
    now: Micros,
) -> Result<Decision<ConversationView>, Error> {
    let actor = principal.actor();
    // Rules 1 and 15: only an active participant (or the administrator) acts.
    let standing = rules::require_active(&c, &actor, caller.as_ref())?;
    // Rule 24: the owner or an admin.
    rules::require_owner_or_admin(&standing)?;
    let viewer = visibility::viewer(&c, principal, caller)?;
    use ConversationState as S;
    // Rule 24: ACTIVE ⇄ ARCHIVED, either → CLOSED, and CLOSED is final.
    let (next, event_type) = match (c.state, to) {
        (S::Closed, Transition::Close)
        | (S::Archived, Transition::Archive)
        | (S::Active, Transition::Unarchive) => {
            return Ok(Decision {
                reply: viewer.conversation(&c),
                change: None,
            });
        }
        (S::Closed, _) => return Err(Error::ConversationClosed(c.id.clone())),
        (_, Transition::Archive) => (S::Archived, EventType::ConversationArchived),
        (_, Transition::Unarchive) => (S::Active, EventType::ConversationUnarchived),
        (_, Transition::Close) => (S::Closed, EventType::ConversationClosed),
    };
    let mut c = c;
    c.state = next;
    let item = next_event(&mut c, now, event_type, actor.id(), vec![], false);
    let change = changed(c, now, vec![item]);
    Ok(Decision {
        reply: viewer.conversation(&change.conversation),
        change: Some(change),
    })
}

// ---------------------------------------------------------------------------------------------
// SendMessage

/// Decides a SendMessage to `c` (locked): the message gets id `message_id` and `now`. Replies
/// with the message.
pub fn decide_send(
    c: Conversation,
    actor: &Actor,
    caller: Option<&Participant>,
    body: String,
    message_id: String,
    now: Micros,
) -> Result<Decision<TimelineItem>, Error> {
    // Rule 25: only an active participant posts (a service only for a user).
    rules::require_sender(&c, actor, caller)?;
    // Rules 6 and 24: ARCHIVED and CLOSED take no messages.
    rules::require_open(&c)?;
    let mut c = c;
    c.last_seq += 1;
    let item = TimelineItem {
        conversation_id: c.id.clone(),
        seq: c.last_seq,
        create_time: now,
        entry: Entry::Message {
            id: message_id,
            sender_id: actor.id().to_owned(),
            body,
        },
    };
    // Rule 25: the first message sets first_message_time (which, with the lock on, fixes the
    // external roster: rule 8). Only it changes the record; later messages move nothing a
    // reader of the record sees, so the versions stay.
    let change = if c.first_message_time.is_none() {
        c.first_message_time = Some(now);
        changed(c, now, vec![item.clone()])
    } else {
        Change {
            conversation: c,
            items: vec![item.clone()],
        }
    };
    Ok(Decision {
        change: Some(change),
        reply: item,
    })
}

// ---------------------------------------------------------------------------------------------
// UpdateConversation

/// UpdateConversation's changes, already validated: `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConversationPatch {
    pub title: Option<String>,
    pub add_internal: Option<Permission>,
    pub add_external: Option<Permission>,
    pub remove: Option<Permission>,
    pub lock_external_roster_on_first_message: Option<bool>,
    pub new_participant_history: Option<History>,
    pub max_participants: Option<i32>,
}

impl ConversationPatch {
    /// `policy` with the patch's policy fields over it.
    fn apply_to(&self, policy: Policy) -> Policy {
        Policy {
            add_internal: self.add_internal.unwrap_or(policy.add_internal),
            add_external: self.add_external.unwrap_or(policy.add_external),
            remove: self.remove.unwrap_or(policy.remove),
            lock_external_roster_on_first_message: self
                .lock_external_roster_on_first_message
                .unwrap_or(policy.lock_external_roster_on_first_message),
            new_participant_history: self
                .new_participant_history
                .unwrap_or(policy.new_participant_history),
            max_participants: self.max_participants.unwrap_or(policy.max_participants),
        }
    }
}

/// Decides an UpdateConversation of `c` (locked) by the caller, guarded by `etag` (empty: no
/// guard). Replies with the conversation as the caller sees it.
pub fn decide_update(
    c: Conversation,
    principal: &Principal,
    caller: Option<Participant>,
    etag: &str,
    patch: ConversationPatch,
    now: Micros,
) -> Result<Decision<ConversationView>, Error> {
    let actor = principal.actor();
    // Rules 1 and 15: only an active participant (or the administrator) acts.
    let standing = rules::require_active(&c, &actor, caller.as_ref())?;
    // §2 Policy: the owner changes the title and the policy.
    if !standing.satisfies(Permission::Owner) {
        return Err(Error::NoPermission(
            "only the owner may update a conversation",
        ));
    }
    // AIP-154: the etag is the one the caller reads (an external owner's moves only with what
    // they see, rule 18).
    let viewer = visibility::viewer(&c, principal, caller)?;
    if !etag.is_empty() && etag != viewer.conversation(&c).etag {
        return Err(Error::EtagMismatch(etag.to_owned()));
    }
    // Rules 6 and 24: read-only conversations take no update.
    rules::require_open(&c)?;
    let mut c = c;
    let mut items = Vec::new();
    if let Some(title) = patch.title.as_ref()
        && *title != c.title
    {
        // Rule 12: a title only where there are more than two people: never on a DIRECT one.
        if c.kind == ConversationKind::Direct {
            return Err(Error::field(
                "conversation.title",
                "a DIRECT conversation has no title",
            ));
        }
        c.title = title.clone();
        items.push(next_event(
            &mut c,
            now,
            EventType::TitleChanged,
            actor.id(),
            vec![],
            false,
        ));
    }
    let policy = patch.apply_to(c.policy);
    if policy != c.policy {
        // Rule 9: only active participants count; a pending invitation is checked against the
        // cap when it is accepted.
        if policy.max_participants < c.participant_count {
            return Err(Error::ParticipantLimitExceeded {
                conversation_id: c.id.clone(),
                max: policy.max_participants,
                would_have: i64::from(c.participant_count),
            });
        }
        c.policy = policy;
        items.push(next_event(
            &mut c,
            now,
            EventType::PolicyChanged,
            actor.id(),
            vec![],
            false,
        ));
    }
    if items.is_empty() {
        return Ok(Decision {
            reply: viewer.conversation(&c),
            change: None,
        });
    }
    let change = changed(c, now, items);
    Ok(Decision {
        reply: viewer.conversation(&change.conversation),
        change: Some(change),
    })
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod invariants;
#[cfg(test)]
mod tests;
