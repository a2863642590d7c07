//! Domain values to wire messages.

use parley::pb;

use crate::domain::model::{Entry, Group, Invitation, Micros, Participant, TimelineItem, User};
use crate::domain::visibility::ConversationView;

pub fn timestamp(micros: Micros) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// A conversation as one viewer sees it ([`crate::domain::visibility::Viewer::conversation`]).
pub fn conversation(view: &ConversationView) -> pb::Conversation {
    let c = &view.conversation;
    pb::Conversation {
        id: c.id.clone(),
        kind: c.kind as i32,
        title: c.title.clone(),
        owner_id: c.owner_id.clone(),
        state: c.state as i32,
        policy: Some(pb::Policy {
            add_internal: c.policy.add_internal as i32,
            add_external: c.policy.add_external as i32,
            remove: c.policy.remove as i32,
            lock_external_roster_on_first_message: Some(
                c.policy.lock_external_roster_on_first_message,
            ),
            new_participant_history: c.policy.new_participant_history as i32,
            max_participants: c.policy.max_participants,
        }),
        participant_count: c.participant_count,
        first_message_time: c.first_message_time.map(timestamp),
        create_time: Some(timestamp(c.create_time)),
        update_time: Some(timestamp(c.update_time)),
        etag: view.etag.clone(),
        viewer_state: view.viewer_state.map_or(0, |s| s as i32),
    }
}

pub fn participant(p: &Participant) -> pb::Participant {
    participant_into(p.clone())
}

/// [`participant`] taking the row, whose strings move into the message: a page of
/// participants is converted without copying each of its ids again.
pub fn participant_into(p: Participant) -> pb::Participant {
    pb::Participant {
        conversation_id: p.conversation_id,
        user_id: p.user_id,
        kind: p.kind as i32,
        role: p.role as i32,
        state: p.state as i32,
        added_by: p.added_by,
        join_time: Some(timestamp(p.join_time)),
        removed_by: p.removed_by.unwrap_or_default(),
        remove_time: p.remove_time.map(timestamp),
        history_from: p.history_from,
    }
}

pub fn message(item: &TimelineItem) -> Option<pb::Message> {
    match &item.entry {
        Entry::Message {
            id,
            sender_id,
            body,
        } => Some(pb::Message {
            id: id.clone(),
            conversation_id: item.conversation_id.clone(),
            seq: item.seq,
            sender_id: sender_id.clone(),
            body: body.clone(),
            create_time: Some(timestamp(item.create_time)),
        }),
        Entry::Event { .. } => None,
    }
}

pub fn event(item: &TimelineItem) -> Option<pb::Event> {
    match &item.entry {
        Entry::Event {
            event_type,
            actor_id,
            subject_ids,
            ..
        } => Some(pb::Event {
            conversation_id: item.conversation_id.clone(),
            seq: item.seq,
            r#type: *event_type as i32,
            actor_id: actor_id.clone(),
            subject_ids: subject_ids.clone(),
            create_time: Some(timestamp(item.create_time)),
        }),
        Entry::Message { .. } => None,
    }
}

pub fn timeline_item(item: &TimelineItem) -> pb::TimelineItem {
    let inner = match message(item) {
        Some(m) => pb::timeline_item::Item::Message(m),
        None => pb::timeline_item::Item::Event(event(item).unwrap_or_default()),
    };
    pb::TimelineItem {
        seq: item.seq,
        item: Some(inner),
    }
}

pub fn user(u: &User) -> pb::User {
    pb::User {
        id: u.id.clone(),
        display_name: u.display_name.clone(),
        email: u.email.clone(),
        kind: u.kind as i32,
        status: u.status as i32,
        create_time: Some(timestamp(u.create_time)),
        update_time: Some(timestamp(u.update_time)),
    }
}

pub fn group(g: &Group) -> pb::Group {
    pb::Group {
        id: g.id.clone(),
        name: g.name.clone(),
        member_ids: g.member_ids.clone(),
        update_time: Some(timestamp(g.update_time)),
    }
}

/// An invitation as of `now` (a pending one past its expiry reads EXPIRED).
pub fn invitation(i: &Invitation, now: Micros) -> pb::Invitation {
    pb::Invitation {
        id: i.id.clone(),
        conversation_id: i.conversation_id.clone(),
        email: i.email.clone(),
        invited_by: i.invited_by.clone(),
        state: i.effective_state(now) as i32,
        create_time: Some(timestamp(i.create_time)),
        expire_time: Some(timestamp(i.expire_time)),
    }
}
