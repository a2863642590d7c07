//! The permission policy and the roster rules of SPEC §3.

use parley::pb::ErrorReason;

use super::model::{
    Candidate, Conversation, ConversationKind, ConversationState, History, Participant,
    ParticipantKind, Permission, Policy, Role, User, UserStatus,
};
use super::principal::Actor;
use crate::error::Error;

/// The caller as this conversation sees them.
#[derive(Clone, Copy, Debug)]
pub enum Standing<'a> {
    /// A service principal acting as the tenant's administrator.
    Admin,
    /// An active participant.
    Member(&'a Participant),
}

impl Standing<'_> {
    /// Whether the caller satisfies a policy permission (ADMINS = owner or role ADMIN).
    pub fn satisfies(&self, permission: Permission) -> bool {
        match self {
            Standing::Admin => true,
            Standing::Member(p) => match permission {
                Permission::Owner => p.role == Role::Owner,
                Permission::Admins => matches!(p.role, Role::Owner | Role::Admin),
                Permission::Participants => true,
                Permission::Unspecified => false,
            },
        }
    }

    pub fn user_id(&self) -> Option<&str> {
        match self {
            Standing::Admin => None,
            Standing::Member(p) => Some(&p.user_id),
        }
    }
}

/// The caller must be an active participant (rules 1 and 15) unless they are an administrator.
pub fn require_active<'a>(
    conversation: &Conversation,
    actor: &Actor,
    caller: Option<&'a Participant>,
) -> Result<Standing<'a>, Error> {
    match (actor, caller) {
        (Actor::Admin(_), _) => Ok(Standing::Admin),
        (Actor::User(_), Some(p)) if p.is_active() => Ok(Standing::Member(p)),
        (Actor::User(_), Some(_)) => Err(Error::ParticipantRemoved(conversation.id.clone())),
        (Actor::User(_), None) => Err(Error::NotAParticipant(conversation.id.clone())),
    }
}

/// Only an active participant posts (rule 25). A service posts for a user, through
/// `x-parley-act-as`; as its tenant's administrator it passes policy checks, but it has no seat
/// to post from, and its first message would lock the external roster in nobody's name.
pub fn require_sender(
    conversation: &Conversation,
    actor: &Actor,
    caller: Option<&Participant>,
) -> Result<(), Error> {
    match actor {
        Actor::Admin(_) => Err(Error::NotAParticipant(conversation.id.clone())),
        Actor::User(_) => require_active(conversation, actor, caller).map(|_| ()),
    }
}

/// Archived and closed conversations are read-only (rules 6 and 24).
pub fn require_open(conversation: &Conversation) -> Result<(), Error> {
    match conversation.state {
        ConversationState::Archived => Err(Error::ConversationArchived(conversation.id.clone())),
        ConversationState::Closed => Err(Error::ConversationClosed(conversation.id.clone())),
        _ => Ok(()),
    }
}

/// Direct conversations take no roster changes (rule 7).
pub fn require_group(conversation: &Conversation) -> Result<(), Error> {
    if conversation.kind == ConversationKind::Direct {
        return Err(Error::UnsupportedForDirect(conversation.id.clone()));
    }
    Ok(())
}

/// The owner or an admin (or a service) may archive, unarchive and close (rule 24).
pub fn require_owner_or_admin(standing: &Standing<'_>) -> Result<(), Error> {
    if standing.satisfies(Permission::Admins) {
        Ok(())
    } else {
        Err(Error::NoPermission(
            "only the owner or an admin may archive, unarchive or close a conversation",
        ))
    }
}

/// Where a newly added participant's history starts (rule 11).
pub fn history_from(policy: &Policy, last_seq: i64) -> i64 {
    match policy.new_participant_history {
        History::SinceJoin => last_seq + 1,
        _ => 1,
    }
}

/// What happens to one person an AddParticipants call names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Becomes (again) an active participant.
    Add,
    /// Already active: nothing changes.
    AlreadyParticipant,
    Fail(ErrorReason),
}

/// Judges one invitee (rules 2, 4, 8). `user` is the directory entry, `existing` their row;
/// `through_group` says the person was reached through a group rather than named.
pub fn judge_invitee(
    conversation: &Conversation,
    standing: &Standing<'_>,
    user_id: &str,
    through_group: bool,
    user: Option<&Candidate>,
    existing: Option<&Participant>,
) -> Verdict {
    if standing.user_id() == Some(user_id) {
        // Naming yourself is a mistake; being a member of the group you add is not. The caller
        // is an active participant (rule 1), so for them the group changes nothing.
        return if through_group {
            Verdict::AlreadyParticipant
        } else {
            Verdict::Fail(ErrorReason::CantInviteSelf)
        };
    }
    let Some(user) = user else {
        return Verdict::Fail(ErrorReason::UserNotFound);
    };
    if user.status == UserStatus::Deactivated {
        return Verdict::Fail(ErrorReason::UserDeactivated);
    }
    let external = user.participant_kind() == ParticipantKind::External;
    if external && !standing.satisfies(conversation.policy.add_external) {
        return Verdict::Fail(ErrorReason::NoExternalInvitePermission);
    }
    if !external && !standing.satisfies(conversation.policy.add_internal) {
        return Verdict::Fail(ErrorReason::NoInvitePermission);
    }
    if existing.is_some_and(Participant::is_active) {
        return Verdict::AlreadyParticipant;
    }
    if external && conversation.external_roster_locked() {
        return Verdict::Fail(ErrorReason::ExternalRosterLocked);
    }
    Verdict::Add
}

/// Checks a RemoveParticipant call once the caller is known to be active (rules 13, 14, 8).
pub fn check_remove(
    conversation: &Conversation,
    standing: &Standing<'_>,
    target_id: &str,
    target: Option<&Participant>,
) -> Result<(), Error> {
    if standing.user_id() == Some(target_id) {
        return Err(Error::CantRemoveSelf);
    }
    if !standing.satisfies(conversation.policy.remove) {
        return Err(Error::NoRemovePermission(conversation.id.clone()));
    }
    let target = target
        .filter(|t| t.is_active())
        .ok_or_else(|| Error::ParticipantNotFound {
            conversation_id: conversation.id.clone(),
            user_id: target_id.to_owned(),
        })?;
    if target.role == Role::Owner {
        return Err(Error::CantRemoveOwner(conversation.id.clone()));
    }
    if target.kind == ParticipantKind::External && conversation.external_roster_locked() {
        return Err(Error::ExternalRosterLocked(conversation.id.clone()));
    }
    Ok(())
}

/// The policy a new conversation gets: the request's choices over the defaults.
pub fn resolve_policy(
    requested: Option<RequestedPolicy>,
    server_max: i32,
) -> Result<Policy, Error> {
    let r = requested.unwrap_or_default();
    let remove = r.remove.unwrap_or(Permission::Owner);
    if remove == Permission::Participants {
        return Err(Error::field("policy.remove", "must be OWNER or ADMINS"));
    }
    let max = match r.max_participants {
        0 => server_max,
        n if (2..=server_max).contains(&n) => n,
        n => {
            return Err(Error::field(
                "policy.max_participants",
                format!("{n} is outside 2..{server_max}"),
            ));
        }
    };
    Ok(Policy {
        add_internal: r.add_internal.unwrap_or(Permission::Participants),
        add_external: r.add_external.unwrap_or(Permission::Owner),
        remove,
        lock_external_roster_on_first_message: r
            .lock_external_roster_on_first_message
            .unwrap_or(true),
        new_participant_history: r.new_participant_history.unwrap_or(History::Full),
        max_participants: max,
    })
}

/// A policy as a request states it: `None` is "the default".
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestedPolicy {
    pub add_internal: Option<Permission>,
    pub add_external: Option<Permission>,
    pub remove: Option<Permission>,
    pub lock_external_roster_on_first_message: Option<bool>,
    pub new_participant_history: Option<History>,
    pub max_participants: i32,
}

/// The key that makes a DIRECT conversation unique per pair of people.
pub fn direct_key(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    format!("{x}\u{1f}{y}")
}

/// What a user may do in a conversation (rule 26), for services that keep their own messages.
/// A deactivated user may do nothing: their own calls fail with `USER_DEACTIVATED`, and a
/// service asking on their behalf gets the same answer.
pub fn access(
    c: &Conversation,
    user: Option<&User>,
    participant: Option<&Participant>,
) -> parley::pb::CheckAccessResponse {
    let Some(p) = participant else {
        return parley::pb::CheckAccessResponse::default();
    };
    if user.is_some_and(|u| u.status == UserStatus::Deactivated) {
        return parley::pb::CheckAccessResponse::default();
    }
    if !p.is_active() {
        return parley::pb::CheckAccessResponse {
            can_read: true,
            history_from: p.history_from,
            history_until: p.removed_seq.unwrap_or_default(),
            ..Default::default()
        };
    }
    let standing = Standing::Member(p);
    let writable = c.state == ConversationState::Active;
    let roster = writable && c.kind == ConversationKind::Group;
    parley::pb::CheckAccessResponse {
        can_read: true,
        can_post: writable,
        can_add_internal: roster && standing.satisfies(c.policy.add_internal),
        can_add_external: roster
            && standing.satisfies(c.policy.add_external)
            && !c.external_roster_locked(),
        can_remove: roster && standing.satisfies(c.policy.remove),
        history_from: p.history_from,
        history_until: 0,
    }
}
