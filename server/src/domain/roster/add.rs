//! AddParticipants as a decision (rules 1-11, 21-23).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use parley::pb::ErrorReason;

use super::{admit, event};
use crate::domain::model::{
    Candidate, Conversation, EventType, Group, Invitation, InvitationState, Micros, Participant,
    ParticipantKind, ParticipantState, Role, TimelineItem, User, UserStatus,
};
use crate::domain::notify::{Kind, Notification, Recipient};
use crate::domain::principal::Actor;
use crate::domain::rules::{self, Standing, Verdict};
use crate::domain::visibility;
use crate::error::{Error, FieldViolation};

/// One invitee of an AddParticipants call, as the request named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invitee {
    User(String),
    Group(String),
    /// Lower-cased.
    Email(String),
}

/// What happened to one person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Added(Participant),
    AlreadyParticipant(Participant),
    Invited(Invitation),
    AlreadyInvited(Invitation),
    Failed(ErrorReason),
}

/// One result per person (rule 5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddResult {
    /// The invitee as named: for group members, `Invitee::User(member)`.
    pub invitee: Invitee,
    pub via_group: Option<String>,
    pub outcome: Outcome,
}

/// An AddParticipants call as the rules take it.
#[derive(Clone, Debug)]
pub struct AddRequest {
    pub invitees: Vec<Invitee>,
    /// Apply the valid invitees even when others fail (rule 5).
    pub partial_success: bool,
    /// How long a new invitation stays pending.
    pub invitation_ttl_micros: i64,
    /// Group memberships one call may expand ([`crate::Limits::max_group_reach`]).
    pub max_group_reach: usize,
}

/// What AddParticipants' rules read, as the store loaded it inside the transaction.
#[derive(Clone, Debug)]
pub struct AddState {
    /// The conversation, locked for the transaction.
    pub conversation: Conversation,
    pub actor: Actor,
    /// The caller's own row, when the call is judged as a user.
    pub caller: Option<Participant>,
    /// How many memberships the named groups hold together (counted before they are loaded).
    pub group_reach: u64,
    /// The named groups that exist, with their members.
    pub groups: HashMap<String, Group>,
    /// Directory users by lower-case email, for the emails named.
    pub users_by_email: HashMap<String, User>,
    /// Directory users by id, for every person [`lookups`] listed: what the rules judge
    /// each by.
    pub users: HashMap<String, Candidate>,
    /// Their participant rows, active or removed, by user id (of those in the directory: a
    /// person who is not is USER_NOT_FOUND whatever their row says).
    pub existing: HashMap<String, Participant>,
    /// Pending, unexpired invitations of the conversation by email, for the emails
    /// [`lookups`] listed.
    pub pending: HashMap<String, Invitation>,
    pub now: Micros,
}

/// What an AddParticipants call changes, for the store to apply.
#[derive(Clone, Debug, Default)]
pub struct AddPlan {
    /// The conversation as it is after the call, when the call changed it.
    pub conversation: Option<Conversation>,
    /// Participant rows to insert, or to make active again (rule 10), by user id.
    pub participants: Vec<Participant>,
    /// New invitations (rule 3), by email.
    pub invitations: Vec<Invitation>,
    /// Pending invitations whose notification is sent again (rule 4, `ALREADY_INVITED`).
    pub resent: Vec<Invitation>,
    /// Timeline events, in seq order.
    pub items: Vec<TimelineItem>,
    pub notifications: Vec<Notification>,
    /// One per person, in request order (rule 5).
    pub results: Vec<AddResult>,
}

/// SPEC §4 bounds: the groups one call names may hold at most `max` memberships together,
/// counted before any group is loaded (a call may name up to 1,000 groups of any size).
pub fn check_group_reach(reach: u64, max: usize) -> Result<(), Error> {
    if reach > max as u64 {
        return Err(Error::GroupReachExceeded { reach, max });
    }
    Ok(())
}

/// Whom the store must look up for AddParticipants once the groups and emails are resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lookups {
    /// Directory users and participant rows to read (repeats possible).
    pub user_ids: Vec<String>,
    /// Emails that match no directory user: their pending invitations to read.
    pub emails: Vec<String>,
}

/// The people an AddParticipants call reaches (rule 3): named users, the members of named
/// groups, and for each email the directory user who has it, or else the email itself.
pub fn lookups(
    invitees: &[Invitee],
    groups: &HashMap<String, Group>,
    users_by_email: &HashMap<String, User>,
) -> Lookups {
    let mut out = Lookups::default();
    for named in expand(invitees, groups, users_by_email) {
        match named.person {
            Person::User(u) => out.user_ids.push(u),
            Person::Email(e) => out.emails.push(e),
            Person::UnknownGroup | Person::EmptyGroup => {}
        }
    }
    out
}

/// A person an AddParticipants call names: a directory user or an email nobody has.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Person {
    User(String),
    Email(String),
    UnknownGroup,
    /// A group with no active member: it adds nobody (rule 5, `GROUP_EMPTY`).
    EmptyGroup,
}

/// Verdict on an email address that matches no directory user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EmailVerdict {
    Invite,
    AlreadyInvited,
    Fail(ErrorReason),
}

#[derive(Clone, Copy, Debug)]
enum Judged {
    User(Verdict),
    Email(EmailVerdict),
}

impl Judged {
    fn failure(self) -> Option<ErrorReason> {
        match self {
            Judged::User(Verdict::Fail(r)) | Judged::Email(EmailVerdict::Fail(r)) => Some(r),
            _ => None,
        }
    }
}

/// One person as the request reached them.
#[derive(Clone, Debug)]
struct Named {
    /// The index of the invitee that reached them.
    index: usize,
    /// As the result names them: a group's member as `Invitee::User`.
    invitee: Invitee,
    via: Option<String>,
    person: Person,
}

/// Every person named, in request order (rule 3): a group expands to its members, an email of
/// a directory user is that user.
fn expand(
    invitees: &[Invitee],
    groups: &HashMap<String, Group>,
    users_by_email: &HashMap<String, User>,
) -> Vec<Named> {
    let mut named = Vec::with_capacity(invitees.len());
    for (index, invitee) in invitees.iter().enumerate() {
        let one = |person| Named {
            index,
            invitee: invitee.clone(),
            via: None,
            person,
        };
        match invitee {
            Invitee::User(u) => named.push(one(Person::User(u.clone()))),
            Invitee::Email(e) => named.push(one(match users_by_email.get(e) {
                Some(u) => Person::User(u.id.clone()),
                None => Person::Email(e.clone()),
            })),
            // Rule 5: an unknown group is one FAILED result.
            Invitee::Group(g) => match groups.get(g) {
                None => named.push(one(Person::UnknownGroup)),
                Some(group) => named.extend(group.member_ids.iter().map(|m| Named {
                    index,
                    invitee: Invitee::User(m.clone()),
                    via: Some(g.clone()),
                    person: Person::User(m.clone()),
                })),
            },
        }
    }
    named
}

/// AddParticipants (rules 1-11, 21-23).
pub fn decide_add(
    state: AddState,
    request: AddRequest,
    mut new_id: impl FnMut() -> String,
) -> Result<AddPlan, Error> {
    let AddState {
        mut conversation,
        actor,
        caller,
        group_reach,
        groups,
        users_by_email,
        users,
        existing,
        pending,
        now,
    } = state;
    let c = &conversation;
    // Rules 1, 15, 6, 24, 7.
    let standing = admit(c, &actor, caller.as_ref())?;
    check_group_reach(group_reach, request.max_group_reach)?;

    // Judge each person once; a person named again is already in (or already failed).
    let named = expand(&request.invitees, &groups, &users_by_email);
    let mut first: HashMap<String, Verdict> = HashMap::with_capacity(named.len());
    let mut first_email: HashMap<String, EmailVerdict> = HashMap::new();
    let mut judged: Vec<(Named, Judged)> = Vec::with_capacity(named.len());
    for named in named {
        let judgement = match &named.person {
            // Rule 5: an unknown group fails as one result.
            Person::UnknownGroup => Judged::User(Verdict::Fail(ErrorReason::GroupNotFound)),
            Person::EmptyGroup => Judged::User(Verdict::Fail(ErrorReason::GroupEmpty)),
            Person::User(id) => {
                let user = users.get(id);
                // Rule 3: a group expands to its active members; deactivated ones are skipped.
                if named.via.is_some() && user.is_some_and(|u| u.status == UserStatus::Deactivated)
                {
                    continue;
                }
                // Rule 4 (CANT_INVITE_SELF): naming yourself is refused wherever the name
                // stands, also after a group that reached you (and made you
                // ALREADY_PARTICIPANT there).
                let named_self = named.via.is_none() && standing.user_id() == Some(id.as_str());
                Judged::User(match first.get(id) {
                    _ if named_self => {
                        rules::judge_invitee(c, &standing, id, false, user, existing.get(id))
                    }
                    // Rule 5: a person reached twice is added once.
                    Some(Verdict::Add) => Verdict::AlreadyParticipant,
                    Some(v) => *v,
                    // Rules 2, 4, 8.
                    None => {
                        let through_group = named.via.is_some();
                        let v = rules::judge_invitee(
                            c,
                            &standing,
                            id,
                            through_group,
                            user,
                            existing.get(id),
                        );
                        first.insert(id.clone(), v);
                        v
                    }
                })
            }
            Person::Email(email) => Judged::Email(match first_email.get(email) {
                // Rule 4: the same email twice makes one invitation.
                Some(EmailVerdict::Invite) => EmailVerdict::AlreadyInvited,
                Some(v) => *v,
                None => {
                    let v = judge_email(c, &standing, pending.contains_key(email));
                    first_email.insert(email.clone(), v);
                    v
                }
            }),
        };
        judged.push((named, judgement));
    }
    // Rule 5: a group that reached nobody active (no members, or only deactivated ones) still
    // has its one result, GROUP_EMPTY (never a silent cap), in request order.
    let names_a_group = request
        .invitees
        .iter()
        .any(|i| matches!(i, Invitee::Group(_)));
    let reached: HashSet<usize> = if names_a_group {
        judged.iter().map(|(n, _)| n.index).collect()
    } else {
        HashSet::new()
    };
    let mut empty_groups = request
        .invitees
        .iter()
        .enumerate()
        .filter(|(i, invitee)| matches!(invitee, Invitee::Group(_)) && !reached.contains(i))
        .peekable();
    if empty_groups.peek().is_some() {
        for (index, invitee) in empty_groups {
            judged.push((
                Named {
                    index,
                    invitee: invitee.clone(),
                    via: None,
                    person: Person::EmptyGroup,
                },
                Judged::User(Verdict::Fail(ErrorReason::GroupEmpty)),
            ));
        }
        judged.sort_by_key(|(n, _)| n.index);
    }

    // Rule 5: atomic by default: one failure and nothing is applied; the error lists every
    // failing invitee.
    let failures: Vec<FieldViolation> = judged
        .iter()
        .filter_map(|(n, j)| {
            j.failure().map(|reason| FieldViolation {
                field: format!("invitees[{}]", n.index),
                description: describe_failure(&n.invitee, n.via.as_deref(), reason),
                reason,
            })
        })
        .collect();
    if !failures.is_empty() && !request.partial_success {
        return Err(Error::InviteesFailed {
            conversation_id: c.id.clone(),
            failures,
        });
    }

    // In id order (the keys are distinct): the rows, events and notifications come out the
    // same whatever the map's order.
    let mut added_ids: Vec<String> = first
        .iter()
        .filter(|(_, v)| **v == Verdict::Add)
        .map(|(id, _)| id.clone())
        .collect();
    added_ids.sort_unstable();
    let new_emails: Vec<String> = first_email
        .iter()
        .filter(|(_, v)| **v == EmailVerdict::Invite)
        .map(|(e, _)| e.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let resent: Vec<Invitation> = first_email
        .iter()
        .filter(|(_, v)| **v == EmailVerdict::AlreadyInvited)
        .filter_map(|(e, _)| pending.get(e).map(|i| (e, i)))
        .collect::<BTreeMap<_, _>>()
        .into_values()
        .cloned()
        .collect();

    // Rule 9: the cap counts active participants only; a pending invitation is checked against
    // it again when accepted. It holds with partial_success too: never a silent cap (rule 5).
    let would_have = i64::from(c.participant_count) + added_ids.len() as i64;
    if !added_ids.is_empty() && would_have > i64::from(c.policy.max_participants) {
        return Err(Error::ParticipantLimitExceeded {
            conversation_id: c.id.clone(),
            max: c.policy.max_participants,
            would_have,
        });
    }

    // Rule 11: where the added participants' history starts, from the seq before this call.
    let history_from = rules::history_from(&c.policy, c.last_seq);
    // Rule 10: a removed participant added again becomes active again (the row is replaced).
    let participants: Vec<Participant> = added_ids
        .iter()
        .filter_map(|id| users.get(id))
        .map(|u| Participant {
            conversation_id: c.id.clone(),
            user_id: u.id.clone(),
            kind: u.participant_kind(),
            role: Role::Member,
            state: ParticipantState::Active,
            added_by: actor.id().to_owned(),
            join_time: now,
            removed_by: None,
            remove_time: None,
            history_from,
            removed_seq: None,
            removed_view: None,
        })
        .collect();
    let mut plan = AddPlan {
        participants,
        ..AddPlan::default()
    };
    let new_rows: HashMap<&str, &Participant> = plan
        .participants
        .iter()
        .map(|p| (p.user_id.as_str(), p))
        .collect();

    let c = &mut conversation;
    if !plan.participants.is_empty() {
        // Rule 18: one PARTICIPANT_ADDED event for the internal participants, hidden from
        // external viewers, and one for the external ones.
        for kind in [ParticipantKind::Internal, ParticipantKind::External] {
            let subjects: Vec<String> = plan
                .participants
                .iter()
                .filter(|p| p.kind == kind)
                .map(|p| p.user_id.clone())
                .collect();
            if !subjects.is_empty() {
                c.last_seq += 1;
                plan.items.push(event(
                    c,
                    now,
                    EventType::ParticipantAdded,
                    &actor,
                    subjects,
                    kind == ParticipantKind::Internal,
                ));
            }
        }
        c.participant_count += plan.participants.len() as i32;
        // Rule 18: external viewers count external participants and the owner.
        c.external_view_count += plan
            .participants
            .iter()
            .filter(|p| p.kind == ParticipantKind::External)
            .count() as i32;
        // Rule 22: ADDED_TO_CONVERSATION to each newly added participant.
        for id in &added_ids {
            plan.notifications.push(Notification::at(
                new_id(),
                now,
                Kind::AddedToConversation,
                Recipient::User(id.clone()),
                &c.id,
                actor.id(),
                vec![id.clone()],
            ));
        }
        // Rule 21: PARTICIPANT_ADDED_BY_OTHER to the owner when someone else adds.
        if actor.id() != c.owner_id {
            plan.notifications.push(Notification::at(
                new_id(),
                now,
                Kind::ParticipantAddedByOther,
                Recipient::User(c.owner_id.clone()),
                &c.id,
                actor.id(),
                added_ids.clone(),
            ));
        }
    }
    if !new_emails.is_empty() {
        // Rule 3: an email nobody in the directory has becomes a PENDING invitation; rule 23:
        // its notification carries the link.
        for email in &new_emails {
            let invitation = Invitation {
                id: new_id(),
                conversation_id: c.id.clone(),
                email: email.clone(),
                invited_by: actor.id().to_owned(),
                state: InvitationState::Pending,
                accepted_by: None,
                create_time: now,
                expire_time: now + request.invitation_ttl_micros,
            };
            plan.notifications
                .push(invitation_note(new_id(), now, c, &actor, &invitation));
            plan.invitations.push(invitation);
        }
        c.last_seq += 1;
        plan.items.push(event(
            c,
            now,
            EventType::InvitationSent,
            &actor,
            new_emails.clone(),
            false,
        ));
    }
    // Rules 4 and 23: a resend (ALREADY_INVITED) carries the same link as the first
    // notification; nothing about the invitation changes.
    for invitation in &resent {
        plan.notifications
            .push(invitation_note(new_id(), now, c, &actor, invitation));
    }
    plan.resent = resent;
    if !plan.items.is_empty() {
        // Rule 18: the versions external viewers read move only for changes they can see.
        visibility::touch(c, now, &plan.items);
        plan.conversation = Some(c.clone());
    }

    let invited: HashMap<&str, &Invitation> = plan
        .invitations
        .iter()
        .map(|i| (i.email.as_str(), i))
        .collect();
    plan.results = judged
        .into_iter()
        .map(|(named, judgement)| {
            let outcome = match (judgement, &named.person) {
                (Judged::User(Verdict::Add), Person::User(id)) => new_rows
                    .get(id.as_str())
                    .map_or(Outcome::Failed(ErrorReason::UserNotFound), |p| {
                        Outcome::Added((*p).clone())
                    }),
                (Judged::User(Verdict::AlreadyParticipant), Person::User(id)) => existing
                    .get(id)
                    .or_else(|| new_rows.get(id.as_str()).copied())
                    .cloned()
                    .map_or(
                        Outcome::Failed(ErrorReason::UserNotFound),
                        Outcome::AlreadyParticipant,
                    ),
                (Judged::Email(EmailVerdict::Invite), Person::Email(e)) => invited
                    .get(e.as_str())
                    .map_or(Outcome::Failed(ErrorReason::Internal), |i| {
                        Outcome::Invited((*i).clone())
                    }),
                (Judged::Email(EmailVerdict::AlreadyInvited), Person::Email(e)) => pending
                    .get(e)
                    .or_else(|| invited.get(e.as_str()).copied())
                    .cloned()
                    .map_or(
                        Outcome::Failed(ErrorReason::Internal),
                        Outcome::AlreadyInvited,
                    ),
                (Judged::User(Verdict::Fail(r)) | Judged::Email(EmailVerdict::Fail(r)), _) => {
                    Outcome::Failed(r)
                }
                _ => Outcome::Failed(ErrorReason::Internal),
            };
            AddResult {
                invitee: named.invitee,
                via_group: named.via,
                outcome,
            }
        })
        .collect();
    Ok(plan)
}

/// Judges an email that matches no directory user (rules 2, 4, 8).
fn judge_email(c: &Conversation, standing: &Standing<'_>, pending: bool) -> EmailVerdict {
    // Rule 2: inviting by email takes `add_external`.
    if !standing.satisfies(c.policy.add_external) {
        EmailVerdict::Fail(ErrorReason::NoExternalInvitePermission)
    // Rule 4: a pending invitation to the same email is ALREADY_INVITED, also once the
    // roster is locked (rule 8: those people were on the list).
    } else if pending {
        EmailVerdict::AlreadyInvited
    // Rule 8: no new invitation once the external roster is locked.
    } else if c.external_roster_locked() {
        EmailVerdict::Fail(ErrorReason::ExternalRosterLocked)
    } else {
        EmailVerdict::Invite
    }
}

fn invitation_note(
    id: String,
    now: Micros,
    c: &Conversation,
    actor: &Actor,
    invitation: &Invitation,
) -> Notification {
    let mut note = Notification::at(
        id,
        now,
        Kind::Invitation,
        Recipient::Email(invitation.email.clone()),
        &c.id,
        actor.id(),
        vec![],
    );
    note.invitation_id = Some(invitation.id.clone());
    note
}

fn describe_failure(invitee: &Invitee, via: Option<&str>, reason: ErrorReason) -> String {
    let who = match invitee {
        Invitee::User(u) => format!("user {u}"),
        Invitee::Group(g) => format!("group {g}"),
        Invitee::Email(e) => format!("email {e}"),
    };
    match via {
        Some(g) => format!("{who} (member of group {g}): {}", reason.as_str_name()),
        None => format!("{who}: {}", reason.as_str_name()),
    }
}
