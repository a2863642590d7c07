//! The roster mutations as decisions (SPEC §3): AddParticipants, RemoveParticipant and
//! SetParticipantRole. Each decider is a pure function of the state the store loaded (the
//! conversation, locked; the caller's row; the directory entries, groups, rows and invitations
//! the call names) and of the request. It returns the plan the store applies (rows to write,
//! timeline events, notifications, the changed conversation, the reply) or the error, and it
//! neither reads a clock nor makes ids: the store passes `now` and an id source in.
//!
//! Every branch names the SPEC rule it implements.

use super::model::{Conversation, Entry, EventType, Micros, Participant, TimelineItem};
use super::principal::Actor;
use super::rules::{self, Standing};
use crate::error::Error;

mod add;
mod target;

pub use add::{
    AddPlan, AddRequest, AddResult, AddState, Invitee, Lookups, Outcome, check_group_reach,
    decide_add, lookups,
};
pub use target::{TargetPlan, TargetState, decide_remove, decide_set_role};

/// The checks every roster change makes of its caller and its conversation, before anything
/// else is read: rules 1 and 15 (an active participant, or a service as administrator), 6 and
/// 24 (not archived or closed), 7 (not DIRECT). The deciders make them again; the store asks
/// first only to skip loading what a refused call does not need.
pub fn admit<'a>(
    conversation: &Conversation,
    actor: &Actor,
    caller: Option<&'a Participant>,
) -> Result<Standing<'a>, Error> {
    // Rules 1 and 15: an active participant, or a service acting as administrator.
    let standing = rules::require_active(conversation, actor, caller)?;
    // Rules 6 and 24: archived and closed conversations are read-only.
    rules::require_open(conversation)?;
    // Rule 7: a DIRECT conversation's roster is fixed.
    rules::require_group(conversation)?;
    Ok(standing)
}

/// An event at the conversation's current `last_seq`.
fn event(
    c: &Conversation,
    now: Micros,
    event_type: EventType,
    actor: &Actor,
    subject_ids: Vec<String>,
    internal_only: bool,
) -> TimelineItem {
    TimelineItem {
        conversation_id: c.id.clone(),
        seq: c.last_seq,
        create_time: now,
        entry: Entry::Event {
            event_type,
            actor_id: actor.id().to_owned(),
            subject_ids,
            internal_only,
        },
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
