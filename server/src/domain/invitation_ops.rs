//! What answering an invitation decides: AcceptInvitation and DeclineInvitation by the invitee,
//! RevokeInvitation by the inviter or the owner (rules 16, 17). Each decider is a pure function
//! over the state the store loaded (the conversation and the invitation, both locked, and the
//! participant row that matters) and returns the plan, or the error. Each check cites the SPEC
//! §3 rule it implements.

use super::conversation_ops::{AddNotices, Change, changed, next_event};
use super::model::{
    Conversation, EventType, Invitation, InvitationState, Micros, Participant, ParticipantKind,
    ParticipantState, Role,
};
use super::principal::Actor;
use super::rules;
use crate::error::Error;

/// What an answer to an invitation writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvitationPlan {
    /// The invitation in its final state.
    pub invitation: Invitation,
    /// The conversation's change: the events appended, the versions moved.
    pub change: Change,
    /// Accepting only: the invitee joins (or joins again).
    pub joined: Option<Joined>,
}

/// A participant an accepted invitation adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// The row to insert, or to make active again (rule 10).
    pub participant: Participant,
    pub notices: AddNotices,
}

/// What AcceptInvitation decided, and the caller's participant row, its reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub plan: InvitationPlan,
    pub participant: Participant,
}

/// Who answers an invitation: the user the caller is, and the email their token carries.
#[derive(Clone, Copy, Debug)]
pub struct Invitee<'a> {
    pub user_id: &'a str,
    pub email: Option<&'a str>,
}

/// Whether the invitee may answer this invitation at `now` (rule 16).
fn answerable(invitation: &Invitation, invitee: Invitee<'_>, now: Micros) -> Result<(), Error> {
    match invitation.effective_state(now) {
        InvitationState::Pending => {}
        InvitationState::Expired => return Err(Error::InvitationExpired),
        _ => return Err(Error::InvitationNotPending),
    }
    if !invitee
        .email
        .is_some_and(|e| same_email(e, &invitation.email))
    {
        return Err(Error::InvitationEmailMismatch);
    }
    Ok(())
}

/// Emails compare case-insensitively (rule 16), with the same Unicode lower-casing that invitee
/// emails get when invited (so "Émile@…" invited is "émile@…" accepting).
fn same_email(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

/// Decides an AcceptInvitation of `invitation` (locked) into `c` (locked), by `invitee`, whose
/// participant row (active or removed) is `existing`.
pub fn decide_accept(
    c: Conversation,
    invitation: Invitation,
    existing: Option<Participant>,
    invitee: Invitee<'_>,
    now: Micros,
) -> Result<Accepted, Error> {
    // Rule 16: pending, unexpired, and the caller's email is the invited one.
    answerable(&invitation, invitee, now)?;
    // Rules 6 and 24: a read-only conversation takes no one.
    rules::require_open(&c)?;
    // Rule 8: invitations sent before the first message stay acceptable once the external
    // roster is locked (those people were on the list); later ones do not.
    if c.external_roster_locked()
        && c.first_message_time
            .is_some_and(|first| invitation.create_time > first)
    {
        return Err(Error::ExternalRosterLocked(c.id.clone()));
    }
    let mut c = c;
    let mut invitation = invitation;
    let user_id = invitee.user_id;
    let mut items = Vec::with_capacity(2);
    let (participant, joined) = match existing {
        // Already active: accepting adds nobody (rule 4's ALREADY_PARTICIPANT, as an outcome).
        Some(p) if p.is_active() => (p, None),
        _ => {
            // Rule 9: the cap holds when a pending invitation is accepted.
            let would_have = i64::from(c.participant_count) + 1;
            if would_have > i64::from(c.policy.max_participants) {
                return Err(Error::ParticipantLimitExceeded {
                    conversation_id: c.id.clone(),
                    max: c.policy.max_participants,
                    would_have,
                });
            }
            // Rule 16: an EXTERNAL participant; rule 10: a removed one becomes active again;
            // rule 11: their history starts as the policy says.
            let p = Participant {
                conversation_id: c.id.clone(),
                user_id: user_id.to_owned(),
                kind: ParticipantKind::External,
                role: Role::Member,
                state: ParticipantState::Active,
                added_by: invitation.invited_by.clone(),
                join_time: now,
                removed_by: None,
                remove_time: None,
                history_from: rules::history_from(&c.policy, c.last_seq),
                removed_seq: None,
                removed_view: None,
            };
            c.participant_count += 1;
            c.external_view_count += 1;
            // Rule 10: a PARTICIPANT_ADDED event, in the inviter's name; an external person,
            // so every viewer sees it (rule 18).
            items.push(next_event(
                &mut c,
                now,
                EventType::ParticipantAdded,
                &invitation.invited_by,
                vec![user_id.to_owned()],
                false,
            ));
            // Rule 22: the new participant hears they are in; rule 21: the owner hears of an
            // add someone else made.
            let notices = AddNotices {
                actor_id: invitation.invited_by.clone(),
                added: vec![user_id.to_owned()],
                owner: (invitation.invited_by != c.owner_id).then(|| c.owner_id.clone()),
            };
            let joined = Joined {
                participant: p.clone(),
                notices,
            };
            (p, Some(joined))
        }
    };
    invitation.state = InvitationState::Accepted;
    invitation.accepted_by = Some(user_id.to_owned());
    items.push(next_event(
        &mut c,
        now,
        EventType::InvitationAccepted,
        user_id,
        vec![user_id.to_owned()],
        false,
    ));
    Ok(Accepted {
        plan: InvitationPlan {
            invitation,
            change: changed(c, now, items),
            joined,
        },
        participant,
    })
}

/// Decides a DeclineInvitation of `invitation` (locked) in `c` (locked) by `invitee`.
pub fn decide_decline(
    c: Conversation,
    invitation: Invitation,
    invitee: Invitee<'_>,
    now: Micros,
) -> Result<InvitationPlan, Error> {
    // Rules 16 and 17: the invitee of a pending, unexpired invitation declines it.
    answerable(&invitation, invitee, now)?;
    // Rule 24: declining appends an event, so like accepting it needs a conversation that is
    // not read-only.
    rules::require_open(&c)?;
    let mut c = c;
    let mut invitation = invitation;
    invitation.state = InvitationState::Declined;
    let item = next_event(
        &mut c,
        now,
        EventType::InvitationDeclined,
        invitee.user_id,
        vec![invitation.email.clone()],
        false,
    );
    Ok(InvitationPlan {
        invitation,
        change: changed(c, now, vec![item]),
        joined: None,
    })
}

/// Decides a RevokeInvitation of `invitation` (locked) in `c` (locked) by `actor`, whose
/// participant row is `caller`.
pub fn decide_revoke(
    c: Conversation,
    invitation: Invitation,
    actor: &Actor,
    caller: Option<&Participant>,
    now: Micros,
) -> Result<InvitationPlan, Error> {
    // Rules 1 and 15: the caller must still be an active participant (or the administrator).
    rules::require_active(&c, actor, caller)?;
    // Rule 17: the inviter or the owner (a service acting as administrator passes).
    if let Actor::User(u) = actor
        && *u != invitation.invited_by
        && *u != c.owner_id
    {
        return Err(Error::NoPermission(
            "only the inviter or the owner may revoke an invitation",
        ));
    }
    // Rule 24: a read-only conversation changes no more.
    rules::require_open(&c)?;
    // Rule 17: only a pending invitation can be revoked; an expired one is no longer pending.
    if invitation.effective_state(now) != InvitationState::Pending {
        return Err(Error::InvitationNotPending);
    }
    let mut c = c;
    let mut invitation = invitation;
    invitation.state = InvitationState::Revoked;
    let item = next_event(
        &mut c,
        now,
        EventType::InvitationRevoked,
        actor.id(),
        vec![invitation.email.clone()],
        false,
    );
    Ok(InvitationPlan {
        invitation,
        change: changed(c, now, vec![item]),
        joined: None,
    })
}

#[cfg(test)]
mod tests;
