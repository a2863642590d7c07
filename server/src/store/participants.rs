//! Adding, removing and listing participants.

use std::collections::HashMap;

use parley::pb::ErrorReason;
use sea_orm::{
    ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::entities::participants;
use super::outbox::{self, Kind, Notification, Recipient};
use super::{
    append_items, directory, event, get_participant, invitations, lock_conversation,
    participant_from, participant_row, save_conversation,
};
use crate::domain::model::{
    Conversation, EventType, Invitation, InvitationState, Participant, ParticipantKind,
    ParticipantState, Role, UserStatus, now_micros,
};
use crate::domain::principal::Actor;
use crate::domain::rules::{self, Verdict};
use crate::domain::visibility::{self, RosterScope};
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
#[derive(Clone, Debug)]
pub struct AddResult {
    /// The invitee as named: for group members, `Invitee::User(member)`.
    pub invitee: Invitee,
    pub via_group: Option<String>,
    pub outcome: Outcome,
}

/// How an AddParticipants call runs.
#[derive(Clone, Debug)]
pub struct AddOptions {
    pub partial_success: bool,
    pub invitation_ttl_micros: i64,
    /// Group memberships the call may expand ([`crate::Limits::max_group_reach`]).
    pub max_group_reach: usize,
    /// Derives the link token whose hash a new invitation stores (rule 23).
    pub links: invitations::LinkKey,
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

/// AddParticipants (rules 1-11, 21-23): a bounded number of statements whatever the batch size.
pub async fn add(
    tx: &DatabaseTransaction,
    tenant_id: &str,
    actor: &Actor,
    conversation_id: &str,
    invitees: Vec<Invitee>,
    options: AddOptions,
) -> Result<Vec<AddResult>, Error> {
    let mut c = lock_conversation(tx, tenant_id, conversation_id).await?;
    let caller = super::caller_participant(tx, conversation_id, actor).await?;
    let standing = rules::require_active(&c, actor, caller.as_ref())?;
    rules::require_open(&c)?;
    rules::require_group(&c)?;
    let now = now_micros();

    // Resolve groups and emails to people, one query each.
    let group_ids: Vec<String> = invitees
        .iter()
        .filter_map(|i| {
            if let Invitee::Group(g) = i {
                Some(g.clone())
            } else {
                None
            }
        })
        .collect();
    let emails: Vec<String> = invitees
        .iter()
        .filter_map(|i| {
            if let Invitee::Email(e) = i {
                Some(e.clone())
            } else {
                None
            }
        })
        .collect();
    // Count before loading: a call may name up to 1,000 groups of any size.
    let reach = directory::memberships(tx, tenant_id, &group_ids).await?;
    if reach > options.max_group_reach as u64 {
        return Err(Error::GroupReachExceeded {
            reach,
            max: options.max_group_reach,
        });
    }
    let groups = directory::groups_by_id(tx, tenant_id, &group_ids).await?;
    let by_email = directory::users_by_email(tx, tenant_id, &emails).await?;

    // Every person named, in request order: (invitee index, invitee, via group, person).
    let mut named: Vec<(usize, Invitee, Option<String>, Person)> = Vec::new();
    for (index, invitee) in invitees.iter().enumerate() {
        match invitee {
            Invitee::User(u) => named.push((index, invitee.clone(), None, Person::User(u.clone()))),
            Invitee::Email(e) => {
                let person = match by_email.get(e) {
                    Some(u) => Person::User(u.id.clone()),
                    None => Person::Email(e.clone()),
                };
                named.push((index, invitee.clone(), None, person));
            }
            Invitee::Group(g) => match groups.get(g) {
                None => named.push((index, invitee.clone(), None, Person::UnknownGroup)),
                Some(group) => named.extend(group.member_ids.iter().map(|m| {
                    (
                        index,
                        Invitee::User(m.clone()),
                        Some(g.clone()),
                        Person::User(m.clone()),
                    )
                })),
            },
        }
    }
    let user_ids: Vec<String> = named
        .iter()
        .filter_map(|n| {
            if let Person::User(u) = &n.3 {
                Some(u.clone())
            } else {
                None
            }
        })
        .collect();
    let invite_emails: Vec<String> = named
        .iter()
        .filter_map(|n| {
            if let Person::Email(e) = &n.3 {
                Some(e.clone())
            } else {
                None
            }
        })
        .collect();
    let users = directory::users_by_id(tx, tenant_id, &user_ids).await?;
    let existing = participants_by_user(tx, conversation_id, &user_ids).await?;
    let pending = invitations::pending_for(tx, conversation_id, &invite_emails, now).await?;

    // Judge each person once; a person named again is already in (or already failed).
    let mut first: HashMap<Person, Verdict> = HashMap::new();
    let mut first_email: HashMap<String, EmailVerdict> = HashMap::new();
    let mut judged: Vec<(usize, Invitee, Option<String>, Person, Judged)> = Vec::new();
    for (index, invitee, via, person) in named {
        let judgement = match &person {
            Person::UnknownGroup => Judged::User(Verdict::Fail(ErrorReason::GroupNotFound)),
            Person::EmptyGroup => Judged::User(Verdict::Fail(ErrorReason::GroupEmpty)),
            Person::User(id) => {
                let user = users.get(id);
                // A group expands to its active members: deactivated ones are skipped.
                if via.is_some() && user.is_some_and(|u| u.status == UserStatus::Deactivated) {
                    continue;
                }
                // Naming yourself is refused wherever the name stands, also after a group
                // that reached you (and made you ALREADY_PARTICIPANT there).
                let named_self = via.is_none() && standing.user_id() == Some(id.as_str());
                Judged::User(match first.get(&person) {
                    _ if named_self => {
                        rules::judge_invitee(&c, &standing, id, false, user, existing.get(id))
                    }
                    Some(Verdict::Add) => Verdict::AlreadyParticipant,
                    Some(v) => *v,
                    None => {
                        let v = rules::judge_invitee(
                            &c,
                            &standing,
                            id,
                            via.is_some(),
                            user,
                            existing.get(id),
                        );
                        first.insert(person.clone(), v);
                        v
                    }
                })
            }
            Person::Email(email) => Judged::Email(match first_email.get(email) {
                Some(EmailVerdict::Invite) => EmailVerdict::AlreadyInvited,
                Some(v) => *v,
                None => {
                    let v = if !standing.satisfies(c.policy.add_external) {
                        EmailVerdict::Fail(ErrorReason::NoExternalInvitePermission)
                    } else if pending.contains_key(email) {
                        EmailVerdict::AlreadyInvited
                    } else if c.external_roster_locked() {
                        EmailVerdict::Fail(ErrorReason::ExternalRosterLocked)
                    } else {
                        EmailVerdict::Invite
                    };
                    first_email.insert(email.clone(), v);
                    v
                }
            }),
        };
        judged.push((index, invitee, via, person, judgement));
    }
    // A group that reached nobody active (no members, or only deactivated ones) still has its
    // one result (rule 5: never a silent cap), in request order.
    let reached: std::collections::HashSet<usize> = judged.iter().map(|j| j.0).collect();
    let empty_groups: Vec<usize> = invitees
        .iter()
        .enumerate()
        .filter(|(i, invitee)| matches!(invitee, Invitee::Group(_)) && !reached.contains(i))
        .map(|(i, _)| i)
        .collect();
    if !empty_groups.is_empty() {
        for index in empty_groups {
            judged.push((
                index,
                invitees[index].clone(),
                None,
                Person::EmptyGroup,
                Judged::User(Verdict::Fail(ErrorReason::GroupEmpty)),
            ));
        }
        judged.sort_by_key(|j| j.0);
    }

    let failures: Vec<FieldViolation> = judged
        .iter()
        .filter_map(|(index, invitee, via, _, j)| match j {
            Judged::User(Verdict::Fail(reason)) | Judged::Email(EmailVerdict::Fail(reason)) => {
                Some(FieldViolation {
                    field: format!("invitees[{index}]"),
                    description: describe_failure(invitee, via.as_deref(), *reason),
                    reason: *reason,
                })
            }
            _ => None,
        })
        .collect();
    if !failures.is_empty() && !options.partial_success {
        return Err(Error::InviteesFailed {
            conversation_id: c.id.clone(),
            failures,
        });
    }

    let added_ids: Vec<String> = first
        .iter()
        .filter(|(_, v)| **v == Verdict::Add)
        .filter_map(|(p, _)| {
            if let Person::User(u) = p {
                Some(u.clone())
            } else {
                None
            }
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let new_emails: Vec<String> = first_email
        .iter()
        .filter(|(_, v)| **v == EmailVerdict::Invite)
        .map(|(e, _)| e.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let resent_emails: Vec<String> = first_email
        .iter()
        .filter(|(e, v)| **v == EmailVerdict::AlreadyInvited && pending.contains_key(*e))
        .map(|(e, _)| e.clone())
        .collect();

    // The cap counts active participants only (rule 9): a pending invitation is checked
    // against it again when accepted.
    let would_have = i64::from(c.participant_count) + added_ids.len() as i64;
    if !added_ids.is_empty() && would_have > i64::from(c.policy.max_participants) {
        return Err(Error::ParticipantLimitExceeded {
            conversation_id: c.id.clone(),
            max: c.policy.max_participants,
            would_have,
        });
    }

    // Apply: one upsert of participants, one insert each of invitations, events and
    // notifications, one update of the conversation.
    let history_from = rules::history_from(&c.policy, c.last_seq);
    let new_rows: HashMap<String, Participant> = added_ids
        .iter()
        .filter_map(|id| users.get(id))
        .map(|u| {
            let p = Participant {
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
            };
            (u.id.clone(), p)
        })
        .collect();
    let mut items = Vec::new();
    let mut notes = Vec::new();
    if !added_ids.is_empty() {
        let rows: Vec<Participant> = added_ids
            .iter()
            .filter_map(|id| new_rows.get(id))
            .cloned()
            .collect();
        super::upsert_participants(tx, tenant_id, &rows).await?;
        for kind in [ParticipantKind::Internal, ParticipantKind::External] {
            let subjects: Vec<String> = added_ids
                .iter()
                .filter(|id| new_rows.get(*id).is_some_and(|p| p.kind == kind))
                .cloned()
                .collect();
            if !subjects.is_empty() {
                c.last_seq += 1;
                let internal_only = kind == ParticipantKind::Internal;
                items.push(event(
                    &c.id,
                    c.last_seq,
                    now,
                    EventType::ParticipantAdded,
                    actor.id(),
                    subjects,
                    internal_only,
                ));
            }
        }
        c.participant_count += added_ids.len() as i32;
        c.external_view_count += rows
            .iter()
            .filter(|p| p.kind == ParticipantKind::External)
            .count() as i32;
        notes.extend(added_ids.iter().map(|id| {
            Notification::new(
                Kind::AddedToConversation,
                Recipient::User(id.clone()),
                &c.id,
                actor.id(),
                vec![id.clone()],
            )
        }));
        if actor.id() != c.owner_id {
            notes.push(Notification::new(
                Kind::ParticipantAddedByOther,
                Recipient::User(c.owner_id.clone()),
                &c.id,
                actor.id(),
                added_ids.clone(),
            ));
        }
    }
    let mut invited: HashMap<String, Invitation> = HashMap::new();
    if !new_emails.is_empty() {
        let mut rows = Vec::with_capacity(new_emails.len());
        for email in &new_emails {
            let id = uuid::Uuid::now_v7().to_string();
            let hash = options.links.token_hash(tenant_id, &id)?;
            let invitation = Invitation {
                id,
                conversation_id: c.id.clone(),
                email: email.clone(),
                invited_by: actor.id().to_owned(),
                state: InvitationState::Pending,
                accepted_by: None,
                create_time: now,
                expire_time: now + options.invitation_ttl_micros,
            };
            let mut note = Notification::new(
                Kind::Invitation,
                Recipient::Email(email.clone()),
                &c.id,
                actor.id(),
                vec![],
            );
            note.invitation_id = Some(invitation.id.clone());
            notes.push(note);
            invited.insert(email.clone(), invitation.clone());
            rows.push((invitation, hash));
        }
        invitations::insert_many(tx, tenant_id, &rows).await?;
        c.last_seq += 1;
        items.push(event(
            &c.id,
            c.last_seq,
            now,
            EventType::InvitationSent,
            actor.id(),
            new_emails.clone(),
            false,
        ));
    }
    // A resend (rule 4, ALREADY_INVITED) carries the same link as the first notification: the
    // token is derived from the invitation, so nothing about the invitation changes (rule 23).
    if !resent_emails.is_empty() {
        let mut hashes = Vec::with_capacity(resent_emails.len());
        for email in &resent_emails {
            let Some(invitation) = pending.get(email) else {
                continue;
            };
            let mut note = Notification::new(
                Kind::Invitation,
                Recipient::Email(email.clone()),
                &c.id,
                actor.id(),
                vec![],
            );
            note.invitation_id = Some(invitation.id.clone());
            notes.push(note);
            hashes.push((
                invitation.id.clone(),
                options.links.token_hash(tenant_id, &invitation.id)?,
            ));
        }
        invitations::adopt_derived_links(tx, &hashes).await?;
    }
    append_items(tx, &items).await?;
    outbox::enqueue(tx, tenant_id, &notes).await?;
    if !items.is_empty() {
        visibility::touch(&mut c, now, &items);
        save_conversation(tx, &c).await?;
    }

    Ok(judged
        .into_iter()
        .map(|(_, invitee, via, person, judgement)| {
            let outcome = match (judgement, &person) {
                (Judged::User(Verdict::Add), Person::User(id)) => new_rows
                    .get(id)
                    .cloned()
                    .map_or(Outcome::Failed(ErrorReason::UserNotFound), Outcome::Added),
                (Judged::User(Verdict::AlreadyParticipant), Person::User(id)) => existing
                    .get(id)
                    .or_else(|| new_rows.get(id))
                    .cloned()
                    .map_or(
                        Outcome::Failed(ErrorReason::UserNotFound),
                        Outcome::AlreadyParticipant,
                    ),
                (Judged::Email(EmailVerdict::Invite), Person::Email(e)) => invited
                    .get(e)
                    .cloned()
                    .map_or(Outcome::Failed(ErrorReason::Internal), Outcome::Invited),
                (Judged::Email(EmailVerdict::AlreadyInvited), Person::Email(e)) => {
                    pending.get(e).or_else(|| invited.get(e)).cloned().map_or(
                        Outcome::Failed(ErrorReason::Internal),
                        Outcome::AlreadyInvited,
                    )
                }
                (Judged::User(Verdict::Fail(r)) | Judged::Email(EmailVerdict::Fail(r)), _) => {
                    Outcome::Failed(r)
                }
                _ => Outcome::Failed(ErrorReason::Internal),
            };
            AddResult {
                invitee,
                via_group: via,
                outcome,
            }
        })
        .collect())
}

#[derive(Clone, Copy, Debug)]
enum Judged {
    User(Verdict),
    Email(EmailVerdict),
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

async fn participants_by_user<C: sea_orm::ConnectionTrait>(
    db: &C,
    conversation_id: &str,
    user_ids: &[String],
) -> Result<HashMap<String, Participant>, Error> {
    let mut found = HashMap::new();
    for batch in super::distinct(user_ids).chunks(super::IDS_PER_LOOKUP) {
        for m in participants::Entity::find()
            .filter(participants::Column::ConversationId.eq(conversation_id))
            .filter(participants::Column::UserId.is_in(batch.iter().map(|s| s.as_str())))
            .all(db)
            .await?
        {
            let p = participant_from(m)?;
            found.insert(p.user_id.clone(), p);
        }
    }
    Ok(found)
}

/// RemoveParticipant (rules 13, 14, 8): the participant keeps read access below the removal.
pub async fn remove(
    tx: &DatabaseTransaction,
    tenant_id: &str,
    actor: &Actor,
    conversation_id: &str,
    user_id: &str,
) -> Result<Participant, Error> {
    let mut c = lock_conversation(tx, tenant_id, conversation_id).await?;
    let caller = super::caller_participant(tx, conversation_id, actor).await?;
    let standing = rules::require_active(&c, actor, caller.as_ref())?;
    rules::require_open(&c)?;
    rules::require_group(&c)?;
    let target = get_participant(tx, conversation_id, user_id).await?;
    rules::check_remove(&c, &standing, user_id, target.as_ref())?;
    let Some(mut target) = target else {
        return Err(Error::Internal("a checked participant vanished".into()));
    };
    let now = now_micros();
    c.last_seq += 1;
    c.participant_count -= 1;
    if target.kind == ParticipantKind::External {
        c.external_view_count -= 1;
    }
    let internal_only = target.kind == ParticipantKind::Internal;
    let items = [event(
        &c.id,
        c.last_seq,
        now,
        EventType::ParticipantRemoved,
        actor.id(),
        vec![user_id.to_owned()],
        internal_only,
    )];
    visibility::touch(&mut c, now, &items);
    target.state = ParticipantState::Removed;
    target.removed_by = Some(actor.id().to_owned());
    target.remove_time = Some(now);
    target.removed_seq = Some(c.last_seq);
    // What they keep of the conversation: the record as they saw it just now (rule 15).
    target.removed_view = Some(visibility::freeze(&c));
    participants::Entity::update(participant_row(tenant_id, &target))
        .exec(tx)
        .await?;
    append_items(tx, &items).await?;
    save_conversation(tx, &c).await?;
    Ok(target)
}

/// Filters of ListParticipants.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParticipantFilter {
    pub state: Option<ParticipantState>,
    pub kind: Option<ParticipantKind>,
}

/// Participants by user id, after `after`, at most `limit`, of those `scope` shows.
pub async fn list<C: sea_orm::ConnectionTrait>(
    db: &C,
    c: &Conversation,
    scope: RosterScope,
    filter: ParticipantFilter,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<Participant>, Error> {
    let mut q =
        participants::Entity::find().filter(participants::Column::ConversationId.eq(c.id.clone()));
    if scope == RosterScope::ExternalAndOwner {
        q = q.filter(
            sea_orm::Condition::any()
                .add(participants::Column::Kind.eq(ParticipantKind::External as i32))
                .add(participants::Column::UserId.eq(c.owner_id.clone())),
        );
    }
    if let Some(state) = filter.state {
        q = q.filter(participants::Column::State.eq(state as i32));
    }
    if let Some(kind) = filter.kind {
        q = q.filter(participants::Column::Kind.eq(kind as i32));
    }
    if let Some(after) = after {
        q = q.filter(participants::Column::UserId.gt(after));
    }
    q.order_by_asc(participants::Column::UserId)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(participant_from)
        .collect()
}

/// SetParticipantRole: the owner (or a service) makes an active participant ADMIN or MEMBER.
pub async fn set_role(
    tx: &DatabaseTransaction,
    tenant_id: &str,
    actor: &Actor,
    conversation_id: &str,
    user_id: &str,
    role: Role,
) -> Result<Participant, Error> {
    let mut c = lock_conversation(tx, tenant_id, conversation_id).await?;
    let caller = super::caller_participant(tx, conversation_id, actor).await?;
    let standing = rules::require_active(&c, actor, caller.as_ref())?;
    if !standing.satisfies(crate::domain::model::Permission::Owner) {
        return Err(Error::NoPermission("only the owner may change roles"));
    }
    rules::require_open(&c)?;
    rules::require_group(&c)?;
    let mut target = get_participant(tx, conversation_id, user_id)
        .await?
        .filter(Participant::is_active)
        .ok_or_else(|| Error::ParticipantNotFound {
            conversation_id: conversation_id.to_owned(),
            user_id: user_id.to_owned(),
        })?;
    if target.role == Role::Owner {
        return Err(Error::NoPermission("the owner's role is fixed"));
    }
    if target.role == role {
        return Ok(target);
    }
    let now = now_micros();
    target.role = role;
    participants::Entity::update(participant_row(tenant_id, &target))
        .exec(tx)
        .await?;
    c.last_seq += 1;
    let internal_only = target.kind == ParticipantKind::Internal;
    let items = [event(
        &c.id,
        c.last_seq,
        now,
        EventType::RoleChanged,
        actor.id(),
        vec![user_id.to_owned()],
        internal_only,
    )];
    visibility::touch(&mut c, now, &items);
    append_items(tx, &items).await?;
    save_conversation(tx, &c).await?;
    Ok(target)
}
