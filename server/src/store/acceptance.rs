//! What invitees and inviters do with an invitation: accept, decline, revoke (rules 16, 17).
//! Each loads the conversation and the invitation (locked, in that order) and the participant
//! row its rules read, asks [`invitation_ops`] what to do, and applies the plan.

use super::WriteTx;
use super::conversations::{apply_change, enqueue_add_notices};
use super::writes::Writes;
use super::{get_participant, invitations, lock_conversation};
use crate::domain::invitation_ops::{self, Accepted, InvitationPlan, Invitee};
use crate::domain::model::{Conversation, Invitation, Micros, Participant, now_micros};
use crate::error::Error;

/// The invitation a token opens and its conversation, locked in the one order every mutation
/// takes (the conversation, then what hangs off it): the invitation is first read unlocked to
/// learn its conversation, then re-read under the lock, and only that read is judged.
async fn lock_by_token(
    tx: &WriteTx,
    tenant_id: &str,
    token: &str,
) -> Result<(Invitation, Conversation), Error> {
    let seen = invitations::find_by_token(tx, tenant_id, token).await?;
    let c = lock_conversation(tx, tenant_id, &seen.conversation_id).await?;
    let invitation = invitations::lock_by_id(tx, tenant_id, &seen.id).await?;
    Ok((invitation, c))
}

/// Writes an answer to an invitation: its new state, the participant who joins (with the
/// notifications owed), the events and the conversation row.
async fn apply(
    tx: &WriteTx,
    tenant_id: &str,
    plan: &InvitationPlan,
    now: Micros,
) -> Result<(), Error> {
    let mut w = Writes::new();
    invitations::set_state(&mut w, &plan.invitation, now);
    if let Some(joined) = &plan.joined {
        super::upsert_participants(&mut w, tenant_id, std::slice::from_ref(&joined.participant));
        enqueue_add_notices(&mut w, &plan.change.conversation, &joined.notices);
    }
    apply_change(&mut w, &plan.change);
    w.run(tx).await
}

/// AcceptInvitation: the caller becomes an EXTERNAL participant. Invitations sent before the
/// first message stay acceptable once the external roster is locked; the cap still applies.
pub async fn accept(
    tx: &WriteTx,
    tenant_id: &str,
    user_id: &str,
    email: Option<&str>,
    token: &str,
) -> Result<Participant, Error> {
    let (invitation, c) = lock_by_token(tx, tenant_id, token).await?;
    let existing = get_participant(tx, &c.id, user_id).await?;
    let now = now_micros();
    let Accepted { plan, participant } =
        invitation_ops::decide_accept(c, invitation, existing, Invitee { user_id, email }, now)?;
    apply(tx, tenant_id, &plan, now).await?;
    Ok(participant)
}

/// DeclineInvitation by the invitee.
pub async fn decline(
    tx: &WriteTx,
    tenant_id: &str,
    user_id: &str,
    email: Option<&str>,
    token: &str,
) -> Result<Invitation, Error> {
    let (invitation, c) = lock_by_token(tx, tenant_id, token).await?;
    let now = now_micros();
    let plan = invitation_ops::decide_decline(c, invitation, Invitee { user_id, email }, now)?;
    apply(tx, tenant_id, &plan, now).await?;
    Ok(plan.invitation)
}

/// RevokeInvitation by the inviter, the owner (or a service acting as administrator).
pub async fn revoke(
    tx: &WriteTx,
    principal: &crate::domain::principal::Principal,
    invitation_id: &str,
) -> Result<Invitation, Error> {
    let tenant_id = principal.tenant_id.as_str();
    let actor = &principal.actor();
    // The conversation is locked before the invitation, as everywhere (see `lock_by_token`).
    let seen = invitations::find_by_id(tx, tenant_id, invitation_id).await?;
    let super::Locked {
        conversation: c,
        caller,
        ..
    } = super::lock_with_caller(tx, principal, &seen.conversation_id).await?;
    let invitation = invitations::lock_by_id(tx, tenant_id, &seen.id).await?;
    let now = now_micros();
    let plan = invitation_ops::decide_revoke(c, invitation, actor, caller.as_ref(), now)?;
    apply(tx, tenant_id, &plan, now).await?;
    Ok(plan.invitation)
}
