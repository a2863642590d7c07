//! What invitees and inviters do with an invitation: accept, decline, revoke (rules 16, 17).

use sea_orm::DatabaseTransaction;

use super::outbox::{self, Kind, Notification, Recipient};
use super::{
    append_items, event, get_participant, invitations, lock_conversation, save_conversation,
};
use crate::domain::model::{
    Conversation, EventType, Invitation, InvitationState, Participant, ParticipantKind,
    ParticipantState, Role, now_micros,
};
use crate::domain::principal::Actor;
use crate::domain::rules;
use crate::error::Error;

/// The invitation a token opens and its conversation, locked in the one order every mutation
/// takes (the conversation, then what hangs off it): the invitation is first read unlocked to
/// learn its conversation, then re-read under the lock, and only that read is judged.
async fn lock_by_token(
    tx: &DatabaseTransaction,
    tenant_id: &str,
    token: &str,
) -> Result<(Invitation, Conversation), Error> {
    let seen = invitations::find_by_token(tx, tenant_id, token).await?;
    let c = lock_conversation(tx, tenant_id, &seen.conversation_id).await?;
    let invitation = invitations::lock_by_id(tx, tenant_id, &seen.id).await?;
    Ok((invitation, c))
}

/// Whether the caller (with `email`) may answer this invitation (rule 16).
fn answerable(invitation: &Invitation, email: Option<&str>) -> Result<(), Error> {
    match invitation.effective_state(now_micros()) {
        InvitationState::Pending => {}
        InvitationState::Expired => return Err(Error::InvitationExpired),
        _ => return Err(Error::InvitationNotPending),
    }
    if !email.is_some_and(|e| same_email(e, &invitation.email)) {
        return Err(Error::InvitationEmailMismatch);
    }
    Ok(())
}

/// Emails compare case-insensitively with the same Unicode lower-casing that invitee emails
/// get when invited (so "Émile@…" invited is "émile@…" accepting).
fn same_email(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

/// AcceptInvitation: the caller becomes an EXTERNAL participant. Invitations sent before the
/// first message stay acceptable once the external roster is locked; the cap still applies.
pub async fn accept(
    tx: &DatabaseTransaction,
    tenant_id: &str,
    user_id: &str,
    email: Option<&str>,
    token: &str,
) -> Result<Participant, Error> {
    let (mut invitation, mut c) = lock_by_token(tx, tenant_id, token).await?;
    answerable(&invitation, email)?;
    rules::require_open(&c)?;
    if c.external_roster_locked()
        && c.first_message_time
            .is_some_and(|first| invitation.create_time > first)
    {
        return Err(Error::ExternalRosterLocked(c.id.clone()));
    }
    let now = now_micros();
    invitation.state = InvitationState::Accepted;
    invitation.accepted_by = Some(user_id.to_owned());
    invitations::set_state(tx, &invitation, now).await?;
    let existing = get_participant(tx, &c.id, user_id).await?;
    let participant = match existing {
        Some(p) if p.is_active() => p,
        _ => {
            if i64::from(c.participant_count) + 1 > i64::from(c.policy.max_participants) {
                return Err(Error::ParticipantLimitExceeded {
                    conversation_id: c.id.clone(),
                    max: c.policy.max_participants,
                    would_have: i64::from(c.participant_count) + 1,
                });
            }
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
            super::upsert_participants(tx, tenant_id, std::slice::from_ref(&p)).await?;
            c.participant_count += 1;
            c.external_view_count += 1;
            c.last_seq += 1;
            let added = event(
                &c.id,
                c.last_seq,
                now,
                EventType::ParticipantAdded,
                &invitation.invited_by,
                vec![user_id.to_owned()],
                false,
            );
            append_items(tx, &[added]).await?;
            // What any add owes (rules 21 and 22): the new participant hears they are in,
            // and the owner hears of an add someone else made.
            let mut notes = vec![Notification::new(
                Kind::AddedToConversation,
                Recipient::User(user_id.to_owned()),
                &c.id,
                &invitation.invited_by,
                vec![user_id.to_owned()],
            )];
            if invitation.invited_by != c.owner_id {
                notes.push(Notification::new(
                    Kind::ParticipantAddedByOther,
                    Recipient::User(c.owner_id.clone()),
                    &c.id,
                    &invitation.invited_by,
                    vec![user_id.to_owned()],
                ));
            }
            outbox::enqueue(tx, tenant_id, &notes).await?;
            p
        }
    };
    finish(
        tx,
        &mut c,
        now,
        EventType::InvitationAccepted,
        user_id,
        vec![user_id.to_owned()],
    )
    .await?;
    Ok(participant)
}

async fn finish(
    tx: &DatabaseTransaction,
    c: &mut Conversation,
    now: i64,
    event_type: EventType,
    actor_id: &str,
    subjects: Vec<String>,
) -> Result<(), Error> {
    c.last_seq += 1;
    let items = [event(
        &c.id, c.last_seq, now, event_type, actor_id, subjects, false,
    )];
    crate::domain::visibility::touch(c, now, &items);
    append_items(tx, &items).await?;
    save_conversation(tx, c).await
}

/// DeclineInvitation by the invitee. Declining appends an event, so like accepting it needs a
/// conversation that is not read-only (rule 24).
pub async fn decline(
    tx: &DatabaseTransaction,
    tenant_id: &str,
    user_id: &str,
    email: Option<&str>,
    token: &str,
) -> Result<Invitation, Error> {
    let (mut invitation, mut c) = lock_by_token(tx, tenant_id, token).await?;
    answerable(&invitation, email)?;
    rules::require_open(&c)?;
    let now = now_micros();
    invitation.state = InvitationState::Declined;
    invitations::set_state(tx, &invitation, now).await?;
    finish(
        tx,
        &mut c,
        now,
        EventType::InvitationDeclined,
        user_id,
        vec![invitation.email.clone()],
    )
    .await?;
    Ok(invitation)
}

/// RevokeInvitation by the inviter, the owner (or a service acting as administrator), who must
/// still be active participants (rules 1 and 15), of a conversation that is not read-only (24).
pub async fn revoke(
    tx: &DatabaseTransaction,
    tenant_id: &str,
    actor: &Actor,
    invitation_id: &str,
) -> Result<Invitation, Error> {
    // The conversation is locked before the invitation, as everywhere (see `lock_by_token`).
    let seen = invitations::find_by_id(tx, tenant_id, invitation_id).await?;
    let mut c = lock_conversation(tx, tenant_id, &seen.conversation_id).await?;
    let mut invitation = invitations::lock_by_id(tx, tenant_id, &seen.id).await?;
    let caller = super::caller_participant(tx, &c.id, actor).await?;
    rules::require_active(&c, actor, caller.as_ref())?;
    if let Actor::User(u) = actor
        && *u != invitation.invited_by
        && *u != c.owner_id
    {
        return Err(Error::NoPermission(
            "only the inviter or the owner may revoke an invitation",
        ));
    }
    rules::require_open(&c)?;
    if invitation.effective_state(now_micros()) != InvitationState::Pending {
        return Err(Error::InvitationNotPending);
    }
    let now = now_micros();
    invitation.state = InvitationState::Revoked;
    invitations::set_state(tx, &invitation, now).await?;
    finish(
        tx,
        &mut c,
        now,
        EventType::InvitationRevoked,
        actor.id(),
        vec![invitation.email.clone()],
    )
    .await?;
    Ok(invitation)
}
