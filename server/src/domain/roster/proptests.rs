//! Invariants of [`decide_add`] over random conversations, rosters, directories and requests:
//! whatever the state and the request, the plan never breaks the roster rules.

use std::collections::{HashMap, HashSet};

use proptest::collection::vec;
use proptest::prelude::*;

use super::tests::conversation;
use super::*;
use crate::domain::model::{
    ConversationKind, ConversationState, Group, History, Invitation, InvitationState,
    ParticipantKind, ParticipantState, Permission, Role, User, UserKind, UserStatus,
};

const USERS: usize = 6;
const GROUPS: usize = 3;
const EMAILS: usize = 4;

/// One directory user of the universe `u0..u5` (`u0` owns the conversation).
#[derive(Clone, Debug)]
struct Person {
    in_directory: bool,
    external: bool,
    deactivated: bool,
    /// 0: no row, 1: active, 2: removed.
    row: u8,
    admin: bool,
}

#[derive(Clone, Debug)]
struct Case {
    people: Vec<Person>,
    /// `USERS` is a service acting as administrator.
    caller: usize,
    state: ConversationState,
    direct: bool,
    add_internal: Permission,
    add_external: Permission,
    lock: bool,
    first_message: bool,
    since_join: bool,
    max_participants: i32,
    /// Active participants outside the universe.
    others: i32,
    /// Per group: whether it exists, and which users are its members.
    groups: Vec<(bool, Vec<bool>)>,
    /// Per email: the user who has it, if any, and whether an invitation to it is pending.
    emails: Vec<(Option<usize>, bool)>,
    invitees: Vec<Invitee>,
    partial: bool,
    max_group_reach: usize,
}

fn permission() -> impl Strategy<Value = Permission> {
    prop_oneof![
        Just(Permission::Owner),
        Just(Permission::Admins),
        Just(Permission::Participants)
    ]
}

fn person() -> impl Strategy<Value = Person> {
    (
        prop::bool::weighted(0.85),
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop_oneof![2 => Just(0u8), 1 => Just(1), 1 => Just(2)],
        any::<bool>(),
    )
        .prop_map(|(in_directory, external, deactivated, row, admin)| Person {
            in_directory: in_directory || row == 1,
            external,
            deactivated: deactivated && row != 1,
            row,
            admin,
        })
}

fn invitee() -> impl Strategy<Value = Invitee> {
    // `u6`, `g3` and the fifth email are unknown to everyone.
    prop_oneof![
        4 => (0..=USERS).prop_map(|i| Invitee::User(format!("u{i}"))),
        1 => (0..=GROUPS).prop_map(|i| Invitee::Group(format!("g{i}"))),
        2 => (0..=EMAILS).prop_map(|i| Invitee::Email(format!("e{i}@x.org"))),
    ]
}

prop_compose! {
    fn case()(
        people in vec(person(), USERS),
        caller in 0..=USERS,
        state in prop_oneof![
            8 => Just(ConversationState::Active),
            1 => Just(ConversationState::Archived),
            1 => Just(ConversationState::Closed)
        ],
        direct in prop::bool::weighted(0.1),
        (add_internal, add_external) in (permission(), permission()),
        (lock, first_message, since_join) in (any::<bool>(), any::<bool>(), any::<bool>()),
        (max_participants, others) in (2i32..16, 0i32..3),
        groups in vec((prop::bool::weighted(0.8), vec(any::<bool>(), USERS)), GROUPS),
        emails in vec((prop::option::weighted(0.4, 0..USERS), any::<bool>()), EMAILS),
        invitees in vec(invitee(), 1..10),
        (partial, max_group_reach) in (any::<bool>(), prop_oneof![4 => Just(100usize), 1 => 0usize..6]),
        caller_active in prop::bool::weighted(0.85),
    ) -> Case {
        let mut people = people;
        // Mostly an active caller: refused callers are judged before anything else.
        if caller_active && caller < USERS {
            people[caller].row = 1;
            people[caller].in_directory = true;
            people[caller].deactivated = false;
        }
        // The owner is an active participant with role OWNER.
        people[0] = Person { in_directory: true, external: false, deactivated: false, row: 1, admin: false };
        Case {
            people, caller, state, direct, add_internal, add_external, lock, first_message,
            since_join, max_participants, others, groups, emails, invitees, partial,
            max_group_reach,
        }
    }
}

fn id(i: usize) -> String {
    format!("u{i}")
}

/// The state as the store would load it for `case`.
fn load(case: &Case) -> AddState {
    let mut c = conversation();
    c.owner_id = id(0);
    c.state = case.state;
    if case.direct {
        c.kind = ConversationKind::Direct;
    }
    c.policy.add_internal = case.add_internal;
    c.policy.add_external = case.add_external;
    c.policy.lock_external_roster_on_first_message = case.lock;
    c.first_message_time = case.first_message.then_some(5);
    if case.since_join {
        c.policy.new_participant_history = History::SinceJoin;
    }
    c.policy.max_participants = case.max_participants;
    let directory: Vec<User> = (0..USERS)
        .filter(|&i| case.people[i].in_directory)
        .map(|i| {
            let p = &case.people[i];
            User {
                tenant_id: "t".into(),
                id: id(i),
                display_name: id(i),
                email: format!("{}@example.com", id(i)),
                kind: if p.external {
                    UserKind::External
                } else {
                    UserKind::Internal
                },
                status: if p.deactivated {
                    UserStatus::Deactivated
                } else {
                    UserStatus::Active
                },
                create_time: 1,
                update_time: 1,
            }
        })
        .collect();
    let rows: Vec<Participant> = (0..USERS)
        .filter(|&i| case.people[i].row != 0)
        .map(|i| {
            let p = &case.people[i];
            Participant {
                conversation_id: c.id.clone(),
                user_id: id(i),
                kind: if p.external {
                    ParticipantKind::External
                } else {
                    ParticipantKind::Internal
                },
                role: match (i, p.admin) {
                    (0, _) => Role::Owner,
                    (_, true) => Role::Admin,
                    _ => Role::Member,
                },
                state: if p.row == 1 {
                    ParticipantState::Active
                } else {
                    ParticipantState::Removed
                },
                added_by: id(0),
                join_time: 1,
                removed_by: None,
                remove_time: None,
                history_from: 1,
                removed_seq: (p.row == 2).then_some(3),
                removed_view: None,
            }
        })
        .collect();
    c.participant_count = rows.iter().filter(|r| r.is_active()).count() as i32 + case.others;
    let actor = if case.caller == USERS {
        Actor::Admin("svc".into())
    } else {
        Actor::User(id(case.caller))
    };
    let caller = actor
        .user_id()
        .and_then(|u| rows.iter().find(|r| r.user_id == u).cloned());

    let named_groups: HashSet<&str> = case
        .invitees
        .iter()
        .filter_map(|i| match i {
            Invitee::Group(g) => Some(g.as_str()),
            _ => None,
        })
        .collect();
    let groups: HashMap<String, Group> = case
        .groups
        .iter()
        .enumerate()
        .filter(|(i, (exists, _))| *exists && named_groups.contains(format!("g{i}").as_str()))
        .map(|(i, (_, members))| {
            let gid = format!("g{i}");
            let member_ids = (0..USERS).filter(|&m| members[m]).map(id).collect();
            let group = Group {
                id: gid.clone(),
                name: gid.clone(),
                member_ids,
                update_time: 1,
            };
            (gid, group)
        })
        .collect();
    let group_reach = groups.values().map(|g| g.member_ids.len() as u64).sum();
    // An email belongs to a directory user only if that user exists.
    let owner_of = |e: &str| -> Option<&User> {
        let i: usize = e.strip_prefix('e')?.split('@').next()?.parse().ok()?;
        let (holder, _) = case.emails.get(i)?;
        directory
            .iter()
            .find(|u| Some(&u.id) == holder.map(id).as_ref())
    };
    let users_by_email: HashMap<String, User> = case
        .invitees
        .iter()
        .filter_map(|i| match i {
            Invitee::Email(e) => owner_of(e).map(|u| (e.clone(), u.clone())),
            _ => None,
        })
        .collect();
    let wanted = lookups(&case.invitees, &groups, &users_by_email);
    let pending = wanted
        .emails
        .iter()
        .filter(|e| {
            e.strip_prefix('e')
                .and_then(|r| r.split('@').next())
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| case.emails.get(n))
                .is_some_and(|(_, pending)| *pending)
        })
        .map(|e| {
            let invitation = Invitation {
                id: format!("inv-{e}"),
                conversation_id: c.id.clone(),
                email: e.clone(),
                invited_by: id(0),
                state: InvitationState::Pending,
                accepted_by: None,
                create_time: 1,
                expire_time: 10_000,
            };
            (e.clone(), invitation)
        })
        .collect();
    AddState {
        conversation: c,
        actor,
        caller,
        group_reach,
        users: directory
            .iter()
            .filter(|u| wanted.user_ids.contains(&u.id))
            .map(|u| (u.id.clone(), u.into()))
            .collect(),
        existing: rows
            .iter()
            .filter(|r| wanted.user_ids.contains(&r.user_id))
            .map(|r| (r.user_id.clone(), r.clone()))
            .collect(),
        pending,
        groups,
        users_by_email,
        now: 1_000,
    }
}

fn decide(case: &Case, partial: bool) -> Result<AddPlan, Error> {
    let request = AddRequest {
        invitees: case.invitees.clone(),
        partial_success: partial,
        invitation_ttl_micros: 100,
        max_group_reach: case.max_group_reach,
    };
    let mut n = 0;
    decide_add(load(case), request, || {
        n += 1;
        format!("id{n}")
    })
}

/// How many results each invitee has (rule 5): one, or one per active member of a group
/// (members missing from the directory included: they fail as USER_NOT_FOUND), or one for a
/// group that reaches nobody.
fn expected_results(state: &AddState, invitees: &[Invitee]) -> Vec<usize> {
    invitees
        .iter()
        .map(|i| match i {
            Invitee::Group(g) => state.groups.get(g).map_or(1, |group| {
                let reached = group
                    .member_ids
                    .iter()
                    .filter(|m| {
                        state
                            .users
                            .get(*m)
                            .is_none_or(|u| u.status != UserStatus::Deactivated)
                    })
                    .count();
                reached.max(1)
            }),
            _ => 1,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn decide_add_keeps_the_roster_rules(case in case()) {
        let state = load(&case);
        let before = state.conversation.clone();
        let standing_external = match &state.actor {
            Actor::Admin(_) => true,
            Actor::User(_) => state
                .caller
                .as_ref()
                .is_some_and(|p| Standing::Member(p).satisfies(before.policy.add_external)),
        };
        let result = decide(&case, case.partial);
        // The same call with partial_success, as the reference for the atomic one.
        let partial = decide(&case, true);

        // Rule 5: atomic by default. A call with a failing invitee applies nothing; one
        // without applies what partial_success would.
        if !case.partial {
            match &partial {
                Ok(p) if p.results.iter().any(|r| matches!(r.outcome, Outcome::Failed(_))) => {
                    prop_assert!(
                        matches!(result, Err(Error::InviteesFailed { .. })),
                        "an atomic call with failures must fail: {:?}", result.as_ref().map(|p| &p.results)
                    );
                }
                Ok(p) => {
                    let plan = result.as_ref().map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                    prop_assert_eq!(&plan.results, &p.results);
                    prop_assert_eq!(&plan.participants, &p.participants);
                }
                Err(_) => prop_assert!(result.is_err()),
            }
        }

        let Ok(plan) = result else { return Ok(()); };
        prop_assert!(admit(&before, &state.actor, state.caller.as_ref()).is_ok());
        prop_assert!(state.group_reach <= case.max_group_reach as u64);
        if !case.partial {
            prop_assert!(plan.results.iter().all(|r| !matches!(r.outcome, Outcome::Failed(_))));
        }

        // Rule 5: exactly one result per person, in request order.
        let expected = expected_results(&state, &case.invitees);
        prop_assert_eq!(plan.results.len(), expected.iter().sum::<usize>());
        let mut results = plan.results.iter();
        for (invitee, n) in case.invitees.iter().zip(&expected) {
            for _ in 0..*n {
                let r = results.next().ok_or_else(|| TestCaseError::fail("too few results"))?;
                match invitee {
                    Invitee::Group(g) => prop_assert!(
                        r.via_group.as_ref() == Some(g) || &r.invitee == invitee,
                        "{:?} for {:?}", r, invitee
                    ),
                    _ => prop_assert_eq!(&r.invitee, invitee),
                }
            }
        }

        // Every added person: once, active in the directory, not already active, not the caller.
        let mut seen = HashSet::new();
        for p in &plan.participants {
            prop_assert!(seen.insert(p.user_id.clone()), "{} added twice", p.user_id);
            let u = state.users.get(&p.user_id);
            prop_assert!(u.is_some_and(|u| u.status == UserStatus::Active));
            prop_assert!(!state.existing.get(&p.user_id).is_some_and(Participant::is_active));
            prop_assert!(state.actor.user_id() != Some(p.user_id.as_str()));
            prop_assert_eq!(p.state, ParticipantState::Active);
            prop_assert_eq!(p.role, Role::Member);
            // Rule 2: externals only for callers allowed to add them.
            if p.kind == ParticipantKind::External {
                prop_assert!(standing_external);
                // Rule 8: never an external once the roster is locked.
                prop_assert!(!before.external_roster_locked());
            }
        }
        let added_outcomes: Vec<&str> = plan
            .results
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Added(p) => Some(p.user_id.as_str()),
                _ => None,
            })
            .collect();
        prop_assert_eq!(added_outcomes.len(), plan.participants.len());
        prop_assert!(added_outcomes.iter().all(|u| seen.contains(*u)));

        // Invitations: rule 2 (add_external), rule 8 (not once locked), rule 4 (not twice).
        let mut emails = HashSet::new();
        for i in &plan.invitations {
            prop_assert!(standing_external && !before.external_roster_locked());
            prop_assert!(emails.insert(i.email.clone()));
            prop_assert!(!state.pending.contains_key(&i.email));
            prop_assert!(!state.users_by_email.contains_key(&i.email));
        }

        // Rule 9: never over the cap; the count moves by exactly the rows added.
        let after = plan.conversation.clone().unwrap_or_else(|| before.clone());
        prop_assert_eq!(
            after.participant_count,
            before.participant_count + plan.participants.len() as i32
        );
        if !plan.participants.is_empty() {
            prop_assert!(after.participant_count <= before.policy.max_participants);
        }

        // The timeline stays gapless: events take the seqs after the last one.
        for (k, item) in plan.items.iter().enumerate() {
            prop_assert_eq!(item.seq, before.last_seq + 1 + k as i64);
        }
        prop_assert_eq!(after.last_seq, before.last_seq + plan.items.len() as i64);
        prop_assert_eq!(plan.conversation.is_some(), !plan.items.is_empty());

        // Rules 21-23: a notification to each added person, one per invitation, one per resend.
        let to_added = plan
            .notifications
            .iter()
            .filter(|n| n.kind == crate::domain::notify::Kind::AddedToConversation)
            .count();
        prop_assert_eq!(to_added, plan.participants.len());
        let invitation_notes = plan
            .notifications
            .iter()
            .filter(|n| n.kind == crate::domain::notify::Kind::Invitation)
            .count();
        prop_assert_eq!(invitation_notes, plan.invitations.len() + plan.resent.len());
    }
}
