//! States and helpers for the deciders' tests, shared with the invitation deciders' tests.

use parley::pb::ErrorReason;

use super::*;
use crate::domain::model::UserKind;
use crate::domain::principal::PrincipalKind;

pub(crate) const NOW: Micros = 1_000_000;

/// A GROUP conversation: the owner, one internal member, one external member; five items.
pub(crate) fn conversation() -> Conversation {
    Conversation {
        id: "c".into(),
        tenant_id: "t".into(),
        kind: ConversationKind::Group,
        title: "title".into(),
        owner_id: "owner".into(),
        state: ConversationState::Active,
        policy: Policy {
            add_internal: Permission::Participants,
            add_external: Permission::Owner,
            remove: Permission::Owner,
            lock_external_roster_on_first_message: true,
            new_participant_history: History::Full,
            max_participants: 10,
        },
        participant_count: 3,
        last_seq: 5,
        first_message_time: None,
        version: 4,
        create_time: 1,
        update_time: 50,
        shared_version: 3,
        shared_update_time: 40,
        external_view_count: 2,
    }
}

pub(crate) fn row(user_id: &str, kind: ParticipantKind, role: Role) -> Participant {
    Participant {
        conversation_id: "c".into(),
        user_id: user_id.into(),
        kind,
        role,
        state: ParticipantState::Active,
        added_by: "owner".into(),
        join_time: 1,
        removed_by: None,
        remove_time: None,
        history_from: 1,
        removed_seq: None,
        removed_view: None,
    }
}

pub(crate) fn owner_row() -> Participant {
    row("owner", ParticipantKind::Internal, Role::Owner)
}

pub(crate) fn removed(mut p: Participant) -> Participant {
    p.state = ParticipantState::Removed;
    p.removed_by = Some("owner".into());
    p.remove_time = Some(2);
    p.removed_seq = Some(3);
    p
}

pub(crate) fn principal(id: &str, kind: PrincipalKind) -> Principal {
    Principal {
        tenant_id: "t".into(),
        id: id.into(),
        kind,
        email: None,
        name: None,
        acting_for: None,
        directory_kind: None,
        directory_read: true,
    }
}

pub(crate) fn internal(id: &str) -> Principal {
    principal(id, PrincipalKind::Internal)
}

/// A service acting as its tenant's administrator.
pub(crate) fn admin() -> Principal {
    principal("svc", PrincipalKind::Service)
}

pub(crate) fn user(id: &str, kind: UserKind, status: UserStatus) -> User {
    User {
        tenant_id: "t".into(),
        id: id.into(),
        display_name: id.into(),
        email: format!("{id}@example.com"),
        kind,
        status,
        create_time: 1,
        update_time: 1,
    }
}

pub(crate) fn ok<T>(r: Result<T, Error>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("expected success, got {e:?}"),
    }
}

pub(crate) fn reason<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorReason {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.reason(),
    }
}

/// The change of a decision that must change something.
pub(crate) fn change_of<R>(d: Decision<R>) -> Change {
    match d.change {
        Some(c) => c,
        None => panic!("expected a change"),
    }
}

pub(crate) fn event_type(item: &TimelineItem) -> Option<EventType> {
    match &item.entry {
        Entry::Event { event_type, .. } => Some(*event_type),
        Entry::Message { .. } => None,
    }
}
