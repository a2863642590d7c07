//! RemoveParticipant and SetParticipantRole as decisions (rules 13-15, 8, 18).

use super::{admit, event};
use crate::domain::model::{
    Conversation, EventType, Micros, Participant, ParticipantKind, ParticipantState, Permission,
    Role, TimelineItem,
};
use crate::domain::principal::Actor;
use crate::domain::rules;
use crate::domain::visibility;
use crate::error::Error;

/// What the rules read for a change to one participant (RemoveParticipant, SetParticipantRole).
#[derive(Clone, Debug)]
pub struct TargetState {
    /// The conversation, locked for the transaction.
    pub conversation: Conversation,
    pub actor: Actor,
    /// The caller's own row, when the call is judged as a user.
    pub caller: Option<Participant>,
    /// The row of the participant the call names, active or removed.
    pub target: Option<Participant>,
    pub now: Micros,
}

/// What a change to one participant writes.
#[derive(Clone, Debug)]
pub struct TargetPlan {
    /// The participant as it is after the call (also the reply).
    pub participant: Participant,
    /// The conversation after the call; `None` when nothing changed (and nothing is written).
    pub conversation: Option<Conversation>,
    /// Timeline events, in seq order.
    pub items: Vec<TimelineItem>,
}

/// RemoveParticipant (rules 13, 14, 8, 15).
pub fn decide_remove(state: TargetState, user_id: &str) -> Result<TargetPlan, Error> {
    let TargetState {
        mut conversation,
        actor,
        caller,
        target,
        now,
    } = state;
    // Rules 1, 15, 6, 24, 7.
    let standing = admit(&conversation, &actor, caller.as_ref())?;
    // Rule 14 (CANT_REMOVE_SELF, CANT_REMOVE_OWNER, PARTICIPANT_NOT_FOUND), rule 13
    // (NO_REMOVE_PERMISSION), rule 8 (EXTERNAL_ROSTER_LOCKED).
    rules::check_remove(&conversation, &standing, user_id, target.as_ref())?;
    let Some(mut target) = target else {
        return Err(Error::Internal("a checked participant vanished".into()));
    };
    let c = &mut conversation;
    c.last_seq += 1;
    c.participant_count -= 1;
    // Rule 18: external viewers count external participants and the owner (never removed).
    if target.kind == ParticipantKind::External {
        c.external_view_count -= 1;
    }
    // Rule 18: an internal participant's removal is hidden from external viewers.
    let items = vec![event(
        c,
        now,
        EventType::ParticipantRemoved,
        &actor,
        vec![user_id.to_owned()],
        target.kind == ParticipantKind::Internal,
    )];
    visibility::touch(c, now, &items);
    target.state = ParticipantState::Removed;
    target.removed_by = Some(actor.id().to_owned());
    target.remove_time = Some(now);
    // Rule 15: they read below their removal event, and the record as they saw it just now.
    target.removed_seq = Some(c.last_seq);
    target.removed_view = Some(visibility::freeze(c));
    Ok(TargetPlan {
        participant: target,
        conversation: Some(conversation),
        items,
    })
}

/// SetParticipantRole (SPEC §8): the owner (or a service as administrator) makes an active
/// participant ADMIN or MEMBER; the owner's own role is fixed.
pub fn decide_set_role(state: TargetState, user_id: &str, role: Role) -> Result<TargetPlan, Error> {
    let TargetState {
        mut conversation,
        actor,
        caller,
        target,
        now,
    } = state;
    let c = &conversation;
    // Rules 1 and 15: an active participant, or a service acting as administrator.
    let standing = rules::require_active(c, &actor, caller.as_ref())?;
    // Only the owner names admins (ADMINS = the owner and role ADMIN, SPEC §2).
    if !standing.satisfies(Permission::Owner) {
        return Err(Error::NoPermission("only the owner may change roles"));
    }
    // Rules 6, 24 and 7.
    rules::require_open(c)?;
    rules::require_group(c)?;
    let mut target =
        target
            .filter(Participant::is_active)
            .ok_or_else(|| Error::ParticipantNotFound {
                conversation_id: c.id.clone(),
                user_id: user_id.to_owned(),
            })?;
    if target.role == Role::Owner {
        return Err(Error::NoPermission("the owner's role is fixed"));
    }
    // Setting the role a participant has changes nothing: no event, no new version.
    if target.role == role {
        return Ok(TargetPlan {
            participant: target,
            conversation: None,
            items: vec![],
        });
    }
    target.role = role;
    let c = &mut conversation;
    c.last_seq += 1;
    // Rule 18: a change about an internal participant is hidden from external viewers.
    let items = vec![event(
        c,
        now,
        EventType::RoleChanged,
        &actor,
        vec![user_id.to_owned()],
        target.kind == ParticipantKind::Internal,
    )];
    visibility::touch(c, now, &items);
    Ok(TargetPlan {
        participant: target,
        conversation: Some(conversation),
        items,
    })
}
