//! One test per roster rule the deciders implement: each fails if its rule is dropped.

use std::collections::HashMap;

use parley::pb::ErrorReason;

use super::*;
use crate::domain::model::{
    ConversationKind, ConversationState, Group, History, Invitation, InvitationState,
    ParticipantKind, ParticipantState, Permission, Policy, Role, User, UserKind, UserStatus,
};
use crate::domain::notify::{Kind, Recipient};

const NOW: Micros = 1_000;
const TTL: i64 = 50;

pub(super) fn conversation() -> Conversation {
    Conversation {
        id: "c".into(),
        tenant_id: "t".into(),
        kind: ConversationKind::Group,
        title: "title".into(),
        owner_id: "owner".into(),
        state: ConversationState::Active,
        policy: Policy {
            add_internal: Permission::Participants,
            add_external: Permission::Owner,
            remove: Permission::Owner,
            lock_external_roster_on_first_message: true,
            new_participant_history: History::Full,
            max_participants: 100,
        },
        participant_count: 3,
        last_seq: 10,
        first_message_time: None,
        version: 7,
        create_time: 1,
        update_time: 70,
        shared_version: 3,
        shared_update_time: 30,
        external_view_count: 2,
    }
}

fn row(user: &str, kind: ParticipantKind, role: Role) -> Participant {
    Participant {
        conversation_id: "c".into(),
        user_id: user.into(),
        kind,
        role,
        state: ParticipantState::Active,
        added_by: "owner".into(),
        join_time: 1,
        removed_by: None,
        remove_time: None,
        history_from: 1,
        removed_seq: None,
        removed_view: None,
    }
}

fn removed(mut p: Participant) -> Participant {
    p.state = ParticipantState::Removed;
    p.removed_by = Some("owner".into());
    p.removed_seq = Some(5);
    p
}

fn user(id: &str, kind: UserKind) -> User {
    User {
        tenant_id: "t".into(),
        id: id.into(),
        display_name: id.into(),
        email: format!("{id}@example.com"),
        kind,
        status: UserStatus::Active,
        create_time: 1,
        update_time: 1,
    }
}

fn deactivated(mut u: User) -> User {
    u.status = UserStatus::Deactivated;
    u
}

fn pending(email: &str) -> Invitation {
    Invitation {
        id: format!("inv-{email}"),
        conversation_id: "c".into(),
        email: email.into(),
        invited_by: "owner".into(),
        state: InvitationState::Pending,
        accepted_by: None,
        create_time: 1,
        expire_time: NOW + 10,
    }
}

/// A roster and directory to add into: the owner, an internal member `mia`, an external
/// member `xena`; in the directory also internal `ivan`, `ida`, external `ed`, deactivated
/// `dora`, and `rita`, once a participant, now removed.
struct World {
    conversation: Conversation,
    rows: Vec<Participant>,
    users: Vec<User>,
    groups: Vec<Group>,
    pending: Vec<Invitation>,
}

impl World {
    fn new() -> Self {
        Self {
            conversation: conversation(),
            rows: vec![
                row("owner", ParticipantKind::Internal, Role::Owner),
                row("mia", ParticipantKind::Internal, Role::Member),
                row("xena", ParticipantKind::External, Role::Member),
                removed(row("rita", ParticipantKind::Internal, Role::Member)),
            ],
            users: vec![
                user("owner", UserKind::Internal),
                user("mia", UserKind::Internal),
                user("xena", UserKind::External),
                user("ivan", UserKind::Internal),
                user("ida", UserKind::Internal),
                user("ed", UserKind::External),
                user("rita", UserKind::Internal),
                deactivated(user("dora", UserKind::Internal)),
            ],
            groups: vec![],
            pending: vec![],
        }
    }

    fn group(mut self, id: &str, members: &[&str]) -> Self {
        self.groups.push(Group {
            id: id.into(),
            name: id.into(),
            member_ids: members.iter().map(|m| (*m).to_owned()).collect(),
            update_time: 1,
        });
        self
    }

    fn locked(mut self) -> Self {
        self.conversation.first_message_time = Some(500);
        self
    }

    /// Loads as the store does: what [`lookups`] names, nothing else.
    fn state(&self, actor: Actor, invitees: &[Invitee]) -> AddState {
        let caller = actor
            .user_id()
            .and_then(|u| self.rows.iter().find(|r| r.user_id == u).cloned());
        let groups: HashMap<String, Group> = self
            .groups
            .iter()
            .filter(|g| invitees.contains(&Invitee::Group(g.id.clone())))
            .map(|g| (g.id.clone(), g.clone()))
            .collect();
        let group_reach = groups.values().map(|g| g.member_ids.len() as u64).sum();
        let users_by_email: HashMap<String, User> = self
            .users
            .iter()
            .filter(|u| invitees.contains(&Invitee::Email(u.email.clone())))
            .map(|u| (u.email.clone(), u.clone()))
            .collect();
        let wanted = lookups(invitees, &groups, &users_by_email);
        AddState {
            conversation: self.conversation.clone(),
            actor,
            caller,
            group_reach,
            users: self
                .users
                .iter()
                .filter(|u| wanted.user_ids.contains(&u.id))
                .map(|u| (u.id.clone(), u.into()))
                .collect(),
            existing: self
                .rows
                .iter()
                .filter(|r| wanted.user_ids.contains(&r.user_id))
                .map(|r| (r.user_id.clone(), r.clone()))
                .collect(),
            pending: self
                .pending
                .iter()
                .filter(|i| wanted.emails.contains(&i.email))
                .map(|i| (i.email.clone(), i.clone()))
                .collect(),
            groups,
            users_by_email,
            now: NOW,
        }
    }

    fn add_as(&self, actor: Actor, invitees: &[Invitee], partial: bool) -> Result<AddPlan, Error> {
        let request = AddRequest {
            invitees: invitees.to_vec(),
            partial_success: partial,
            invitation_ttl_micros: TTL,
            max_group_reach: 100,
        };
        let mut n = 0;
        decide_add(self.state(actor, invitees), request, || {
            n += 1;
            format!("id{n}")
        })
    }

    fn add(&self, invitees: &[Invitee]) -> Result<AddPlan, Error> {
        self.add_as(owner(), invitees, false)
    }

    fn target_state(&self, actor: Actor, target: &str) -> TargetState {
        TargetState {
            conversation: self.conversation.clone(),
            caller: actor
                .user_id()
                .and_then(|u| self.rows.iter().find(|r| r.user_id == u).cloned()),
            actor,
            target: self.rows.iter().find(|r| r.user_id == target).cloned(),
            now: NOW,
        }
    }
}

fn owner() -> Actor {
    Actor::User("owner".into())
}

fn as_user(id: &str) -> Actor {
    Actor::User(id.into())
}

fn u(id: &str) -> Invitee {
    Invitee::User(id.into())
}

fn g(id: &str) -> Invitee {
    Invitee::Group(id.into())
}

fn e(email: &str) -> Invitee {
    Invitee::Email(email.into())
}

fn outcomes(plan: &AddPlan) -> Vec<(Invitee, Option<String>, String)> {
    plan.results
        .iter()
        .map(|r| {
            let o = match &r.outcome {
                Outcome::Added(p) => format!("ADDED {}", p.user_id),
                Outcome::AlreadyParticipant(p) => format!("ALREADY_PARTICIPANT {}", p.user_id),
                Outcome::Invited(i) => format!("INVITED {}", i.email),
                Outcome::AlreadyInvited(i) => format!("ALREADY_INVITED {}", i.email),
                Outcome::Failed(reason) => format!("FAILED {}", reason.as_str_name()),
            };
            (r.invitee.clone(), r.via_group.clone(), o)
        })
        .collect()
}

fn failures(result: Result<AddPlan, Error>) -> Vec<(String, ErrorReason)> {
    match result {
        Err(Error::InviteesFailed { failures, .. }) => {
            failures.into_iter().map(|f| (f.field, f.reason)).collect()
        }
        other => panic!("expected INVITEES_FAILED, got {other:?}"),
    }
}

fn added_ids(plan: &AddPlan) -> Vec<&str> {
    plan.participants
        .iter()
        .map(|p| p.user_id.as_str())
        .collect()
}

fn event_of(item: &TimelineItem) -> (i64, EventType, Vec<String>, bool) {
    match &item.entry {
        Entry::Event {
            event_type,
            subject_ids,
            internal_only,
            ..
        } => (item.seq, *event_type, subject_ids.clone(), *internal_only),
        Entry::Message { .. } => panic!("a message in a roster plan"),
    }
}

// ---- AddParticipants: who may call (rules 1, 15, 6, 24, 7) ----

#[test]
fn rule_1_a_stranger_may_not_add() {
    let r = World::new().add_as(as_user("ivan"), &[u("ida")], false);
    assert!(matches!(r, Err(Error::NotAParticipant(_))), "{r:?}");
}

#[test]
fn rule_15_a_removed_participant_may_not_add() {
    let r = World::new().add_as(as_user("rita"), &[u("ida")], false);
    assert!(matches!(r, Err(Error::ParticipantRemoved(_))), "{r:?}");
}

#[test]
fn rules_6_and_24_archived_and_closed_conversations_take_no_one() {
    let mut w = World::new();
    w.conversation.state = ConversationState::Archived;
    assert!(matches!(
        w.add(&[u("ivan")]),
        Err(Error::ConversationArchived(_))
    ));
    w.conversation.state = ConversationState::Closed;
    assert!(matches!(
        w.add(&[u("ivan")]),
        Err(Error::ConversationClosed(_))
    ));
}

#[test]
fn rule_7_a_direct_conversation_takes_no_one() {
    let mut w = World::new();
    w.conversation.kind = ConversationKind::Direct;
    assert!(matches!(
        w.add(&[u("ivan")]),
        Err(Error::UnsupportedForDirect(_))
    ));
}

#[test]
fn groups_reaching_too_many_memberships_are_refused_before_judging() {
    let w = World::new().group("big", &["ivan", "ida"]);
    let mut state = w.state(owner(), &[g("big")]);
    state.group_reach = 3;
    let request = AddRequest {
        invitees: vec![g("big")],
        partial_success: true,
        invitation_ttl_micros: TTL,
        max_group_reach: 2,
    };
    let r = decide_add(state, request, || "id".into());
    assert!(
        matches!(r, Err(Error::GroupReachExceeded { reach: 3, max: 2 })),
        "{r:?}"
    );
    assert!(check_group_reach(2, 2).is_ok());
}

// ---- Adding directory users (rules 2, 4, 10, 11, 18, 21, 22) ----

#[test]
fn an_added_internal_user_gets_a_row_an_event_and_notifications() {
    let w = World::new();
    let plan = w.add_as(as_user("mia"), &[u("ivan")], false).expect("plan");
    let p = &plan.participants[0];
    assert_eq!(added_ids(&plan), ["ivan"]);
    assert_eq!(
        (p.kind, p.role, p.state, p.added_by.as_str(), p.join_time),
        (
            ParticipantKind::Internal,
            Role::Member,
            ParticipantState::Active,
            "mia",
            NOW
        )
    );
    // Rule 11: FULL history.
    assert_eq!(p.history_from, 1);
    // Rule 18: the event about an internal participant is internal only.
    assert_eq!(
        plan.items.iter().map(event_of).collect::<Vec<_>>(),
        [(
            11,
            EventType::ParticipantAdded,
            vec!["ivan".to_owned()],
            true
        )]
    );
    let c = plan.conversation.as_ref().expect("changed");
    assert_eq!((c.participant_count, c.last_seq), (4, 11));
    assert_eq!((c.version, c.update_time), (8, NOW));
    // Rule 18: nothing external viewers read moved.
    assert_eq!((c.shared_version, c.shared_update_time), (3, 30));
    assert_eq!(c.external_view_count, 2);
    // Rules 22 and 21.
    let notes: Vec<_> = plan
        .notifications
        .iter()
        .map(|n| (n.kind, n.recipient.clone(), n.subject_ids.clone()))
        .collect();
    assert_eq!(
        notes,
        [
            (
                Kind::AddedToConversation,
                Recipient::User("ivan".into()),
                vec!["ivan".to_owned()]
            ),
            (
                Kind::ParticipantAddedByOther,
                Recipient::User("owner".into()),
                vec!["ivan".to_owned()]
            ),
        ]
    );
    assert!(
        plan.notifications
            .iter()
            .all(|n| n.create_time == NOW && n.actor_id == "mia")
    );
    assert_eq!(outcomes(&plan), [(u("ivan"), None, "ADDED ivan".into())]);
}

#[test]
fn rule_21_the_owner_adding_is_not_told_about_it() {
    let plan = World::new().add(&[u("ivan")]).expect("plan");
    assert!(
        plan.notifications
            .iter()
            .all(|n| n.kind != Kind::ParticipantAddedByOther)
    );
}

#[test]
fn rule_11_since_join_history_starts_after_the_current_seq() {
    let mut w = World::new();
    w.conversation.policy.new_participant_history = History::SinceJoin;
    let plan = w.add(&[u("ivan")]).expect("plan");
    assert_eq!(plan.participants[0].history_from, 11);
}

#[test]
fn rule_18_an_added_external_is_seen_by_external_viewers() {
    let plan = World::new().add(&[u("ed"), u("ivan")]).expect("plan");
    assert_eq!(
        plan.items.iter().map(event_of).collect::<Vec<_>>(),
        [
            (
                11,
                EventType::ParticipantAdded,
                vec!["ivan".to_owned()],
                true
            ),
            (
                12,
                EventType::ParticipantAdded,
                vec!["ed".to_owned()],
                false
            ),
        ]
    );
    let c = plan.conversation.expect("changed");
    assert_eq!(
        (c.participant_count, c.external_view_count, c.last_seq),
        (5, 3, 12)
    );
    assert_eq!((c.shared_version, c.shared_update_time), (4, NOW));
    assert_eq!(plan.participants[0].kind, ParticipantKind::External);
}

#[test]
fn rule_2_internal_invitees_need_add_internal() {
    let mut w = World::new();
    w.conversation.policy.add_internal = Permission::Admins;
    let f = failures(w.add_as(as_user("mia"), &[u("ivan")], false));
    assert_eq!(f, [("invitees[0]".into(), ErrorReason::NoInvitePermission)]);
    // An admin satisfies ADMINS.
    w.rows[1].role = Role::Admin;
    assert!(w.add_as(as_user("mia"), &[u("ivan")], false).is_ok());
}

#[test]
fn rule_2_external_invitees_need_add_external() {
    let w = World::new();
    let f = failures(w.add_as(as_user("mia"), &[u("ed"), e("new@x.org")], false));
    assert_eq!(
        f,
        [
            (
                "invitees[0]".into(),
                ErrorReason::NoExternalInvitePermission
            ),
            (
                "invitees[1]".into(),
                ErrorReason::NoExternalInvitePermission
            ),
        ]
    );
}

#[test]
fn a_service_as_administrator_passes_every_policy() {
    let mut w = World::new();
    w.conversation.policy.add_internal = Permission::Owner;
    let plan = w
        .add_as(Actor::Admin("svc".into()), &[u("ivan"), u("ed")], false)
        .expect("plan");
    assert_eq!(plan.participants.len(), 2);
    assert!(plan.participants.iter().all(|p| p.added_by == "svc"));
    // The service is not the owner: the owner hears of it (rule 21).
    assert!(
        plan.notifications
            .iter()
            .any(|n| n.kind == Kind::ParticipantAddedByOther)
    );
}

#[test]
fn rule_4_per_invitee_failures() {
    let w = World::new();
    let f = failures(w.add_as(
        as_user("mia"),
        &[u("mia"), u("ghost"), u("dora"), u("ivan")],
        false,
    ));
    assert_eq!(
        f,
        [
            ("invitees[0]".into(), ErrorReason::CantInviteSelf),
            ("invitees[1]".into(), ErrorReason::UserNotFound),
            ("invitees[2]".into(), ErrorReason::UserDeactivated),
        ]
    );
}

#[test]
fn rule_4_an_active_participant_is_already_one_and_nothing_changes() {
    let plan = World::new().add(&[u("mia")]).expect("plan");
    assert_eq!(
        outcomes(&plan),
        [(u("mia"), None, "ALREADY_PARTICIPANT mia".into())]
    );
    assert!(plan.participants.is_empty() && plan.items.is_empty());
    assert!(plan.notifications.is_empty() && plan.conversation.is_none());
}

#[test]
fn rule_10_a_removed_participant_comes_back() {
    let plan = World::new().add(&[u("rita")]).expect("plan");
    assert_eq!(added_ids(&plan), ["rita"]);
    let p = &plan.participants[0];
    assert_eq!(p.state, ParticipantState::Active);
    assert_eq!((p.removed_by.as_ref(), p.removed_seq), (None, None));
}

// ---- Email invitees (rules 3, 4, 8, 23) ----

#[test]
fn rule_3_an_unknown_email_becomes_a_pending_invitation() {
    let plan = World::new().add(&[e("new@x.org")]).expect("plan");
    let i = &plan.invitations[0];
    assert_eq!(
        (
            i.id.as_str(),
            i.email.as_str(),
            i.state,
            i.create_time,
            i.expire_time
        ),
        ("id1", "new@x.org", InvitationState::Pending, NOW, NOW + TTL)
    );
    assert_eq!(
        plan.items.iter().map(event_of).collect::<Vec<_>>(),
        [(
            11,
            EventType::InvitationSent,
            vec!["new@x.org".to_owned()],
            false
        )]
    );
    // Rule 23: the notification names the invitation whose link it carries.
    let n = &plan.notifications[0];
    assert_eq!(
        (n.kind, &n.recipient, n.invitation_id.as_deref()),
        (
            Kind::Invitation,
            &Recipient::Email("new@x.org".into()),
            Some("id1")
        )
    );
    assert_eq!(
        plan.conversation
            .as_ref()
            .expect("changed")
            .participant_count,
        3
    );
    assert_eq!(
        outcomes(&plan),
        [(e("new@x.org"), None, "INVITED new@x.org".into())]
    );
}

#[test]
fn rule_3_an_email_of_a_directory_user_is_that_user() {
    let plan = World::new().add(&[e("ivan@example.com")]).expect("plan");
    assert_eq!(added_ids(&plan), ["ivan"]);
    assert!(plan.invitations.is_empty());
    assert_eq!(
        outcomes(&plan),
        [(e("ivan@example.com"), None, "ADDED ivan".into())]
    );
}

#[test]
fn rule_4_a_pending_invitee_is_sent_the_same_invitation_again() {
    let mut w = World::new();
    w.pending.push(pending("old@x.org"));
    let plan = w.add(&[e("old@x.org")]).expect("plan");
    assert!(plan.invitations.is_empty() && plan.items.is_empty());
    assert!(plan.conversation.is_none());
    assert_eq!(
        plan.resent
            .iter()
            .map(|i| i.id.as_str())
            .collect::<Vec<_>>(),
        ["inv-old@x.org"]
    );
    assert_eq!(
        plan.notifications[0].invitation_id.as_deref(),
        Some("inv-old@x.org")
    );
    assert_eq!(
        outcomes(&plan),
        [(e("old@x.org"), None, "ALREADY_INVITED old@x.org".into())]
    );
}

#[test]
fn rule_4_one_email_named_twice_makes_one_invitation() {
    let plan = World::new()
        .add(&[e("new@x.org"), e("new@x.org")])
        .expect("plan");
    assert_eq!(plan.invitations.len(), 1);
    assert_eq!(plan.notifications.len(), 1);
    assert_eq!(
        outcomes(&plan),
        [
            (e("new@x.org"), None, "INVITED new@x.org".into()),
            (e("new@x.org"), None, "ALREADY_INVITED new@x.org".into()),
        ]
    );
}

#[test]
fn rule_8_the_locked_roster_refuses_externals_and_new_invitations_only() {
    let mut w = World::new().locked();
    w.pending.push(pending("old@x.org"));
    let plan = w
        .add_as(
            owner(),
            &[u("ed"), e("new@x.org"), e("old@x.org"), u("ivan")],
            true,
        )
        .expect("plan");
    assert_eq!(
        outcomes(&plan),
        [
            (u("ed"), None, "FAILED EXTERNAL_ROSTER_LOCKED".into()),
            (e("new@x.org"), None, "FAILED EXTERNAL_ROSTER_LOCKED".into()),
            // Pending before the first message: those people were on the list.
            (e("old@x.org"), None, "ALREADY_INVITED old@x.org".into()),
            (u("ivan"), None, "ADDED ivan".into()),
        ]
    );
    // Without the lock option, the first message locks nothing.
    let mut w = World::new().locked();
    w.conversation.policy.lock_external_roster_on_first_message = false;
    assert_eq!(w.add(&[u("ed")]).expect("plan").participants.len(), 1);
}

// ---- Atomicity, the cap, groups (rules 5, 9, 3) ----

#[test]
fn rule_5_one_failure_and_nothing_is_applied() {
    let f = failures(World::new().add(&[u("ivan"), u("ghost"), e("new@x.org")]));
    assert_eq!(f, [("invitees[1]".into(), ErrorReason::UserNotFound)]);
}

#[test]
fn rule_5_partial_success_applies_the_valid_ones_and_reports_all() {
    let plan = World::new()
        .add_as(owner(), &[u("ivan"), u("ghost"), e("new@x.org")], true)
        .expect("plan");
    assert_eq!(
        outcomes(&plan),
        [
            (u("ivan"), None, "ADDED ivan".into()),
            (u("ghost"), None, "FAILED USER_NOT_FOUND".into()),
            (e("new@x.org"), None, "INVITED new@x.org".into()),
        ]
    );
    assert_eq!(added_ids(&plan), ["ivan"]);
    assert_eq!(plan.invitations.len(), 1);
}

#[test]
fn rule_9_the_cap_counts_active_participants() {
    let mut w = World::new();
    w.conversation.policy.max_participants = 4;
    assert!(w.add(&[u("ivan")]).is_ok());
    let r = w.add_as(owner(), &[u("ivan"), u("ida")], true);
    assert!(
        matches!(
            r,
            Err(Error::ParticipantLimitExceeded {
                max: 4,
                would_have: 5,
                ..
            })
        ),
        "{r:?}"
    );
    // Invitations are not counted, nor is a call that adds nobody.
    w.conversation.participant_count = 4;
    assert!(w.add(&[e("new@x.org"), u("mia")]).is_ok());
}

#[test]
fn rule_3_a_group_expands_to_its_active_members() {
    let w = World::new().group("team", &["ida", "dora", "ivan", "mia"]);
    let plan = w.add(&[g("team")]).expect("plan");
    let via = Some("team".to_owned());
    assert_eq!(
        outcomes(&plan),
        [
            (u("ida"), via.clone(), "ADDED ida".into()),
            (u("ivan"), via.clone(), "ADDED ivan".into()),
            (u("mia"), via, "ALREADY_PARTICIPANT mia".into()),
        ]
    );
    assert_eq!(added_ids(&plan), ["ida", "ivan"]);
    // One event for both, in id order.
    assert_eq!(
        event_of(&plan.items[0]).2,
        ["ida".to_owned(), "ivan".to_owned()]
    );
}

#[test]
fn rule_5_unknown_and_empty_groups_have_one_failed_result_each() {
    let w = World::new().group("gone", &["dora"]).group("none", &[]);
    let plan = w
        .add_as(owner(), &[u("ivan"), g("nope"), g("gone"), g("none")], true)
        .expect("plan");
    assert_eq!(
        outcomes(&plan),
        [
            (u("ivan"), None, "ADDED ivan".into()),
            (g("nope"), None, "FAILED GROUP_NOT_FOUND".into()),
            (g("gone"), None, "FAILED GROUP_EMPTY".into()),
            (g("none"), None, "FAILED GROUP_EMPTY".into()),
        ]
    );
    let f = failures(w.add(&[g("none"), u("ivan")]));
    assert_eq!(f, [("invitees[0]".into(), ErrorReason::GroupEmpty)]);
}

#[test]
fn rule_5_a_person_reached_twice_is_added_once() {
    let w = World::new().group("team", &["ivan"]);
    let plan = w.add(&[u("ivan"), g("team")]).expect("plan");
    assert_eq!(
        outcomes(&plan),
        [
            (u("ivan"), None, "ADDED ivan".into()),
            (
                u("ivan"),
                Some("team".into()),
                "ALREADY_PARTICIPANT ivan".into()
            ),
        ]
    );
    assert_eq!(plan.participants.len(), 1);
    assert_eq!(
        plan.conversation.expect("changed").participant_count,
        4,
        "counted once"
    );
}

#[test]
fn rule_4_the_caller_in_a_group_is_already_in_but_named_is_a_mistake() {
    let w = World::new().group("team", &["mia", "ivan"]);
    let plan = w
        .add_as(as_user("mia"), &[g("team"), u("mia")], true)
        .expect("plan");
    assert_eq!(
        outcomes(&plan),
        [
            (
                u("mia"),
                Some("team".into()),
                "ALREADY_PARTICIPANT mia".into()
            ),
            (u("ivan"), Some("team".into()), "ADDED ivan".into()),
            (u("mia"), None, "FAILED CANT_INVITE_SELF".into()),
        ]
    );
}

#[test]
fn failures_name_the_group_a_member_came_through() {
    let w = World::new().group("team", &["ed"]);
    match w.add_as(as_user("mia"), &[g("team")], false) {
        Err(Error::InviteesFailed { failures, .. }) => {
            assert_eq!(failures[0].field, "invitees[0]");
            assert_eq!(
                failures[0].description,
                "user ed (member of group team): NO_EXTERNAL_INVITE_PERMISSION"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn lookups_name_everyone_the_call_reaches() {
    let w = World::new().group("team", &["ida", "dora"]);
    let invitees = [u("ivan"), g("team"), e("ed@example.com"), e("new@x.org")];
    let state = w.state(owner(), &invitees);
    let l = lookups(&invitees, &state.groups, &state.users_by_email);
    assert_eq!(l.user_ids, ["ivan", "ida", "dora", "ed"]);
    assert_eq!(l.emails, ["new@x.org"]);
}

#[test]
fn ids_are_drawn_from_the_source_given() {
    let plan = World::new()
        .add_as(as_user("owner"), &[u("ivan"), e("a@x.org")], false)
        .expect("plan");
    // The notification to ivan, then the invitation and its notification.
    assert_eq!(plan.notifications[0].id, "id1");
    assert_eq!(plan.invitations[0].id, "id2");
    assert_eq!(plan.notifications[1].id, "id3");
}

// ---- RemoveParticipant (rules 13, 14, 8, 15) ----

fn remove_as(w: &World, actor: Actor, target: &str) -> Result<TargetPlan, Error> {
    decide_remove(w.target_state(actor, target), target)
}

#[test]
fn rule_14_nobody_removes_themselves() {
    let r = remove_as(&World::new(), owner(), "owner");
    assert!(matches!(r, Err(Error::CantRemoveSelf)), "{r:?}");
}

#[test]
fn rule_13_only_those_the_policy_allows_remove() {
    let r = remove_as(&World::new(), as_user("mia"), "xena");
    assert!(matches!(r, Err(Error::NoRemovePermission(_))), "{r:?}");
}

#[test]
fn rule_14_the_owner_cannot_be_removed_nor_a_non_participant() {
    let mut w = World::new();
    w.conversation.policy.remove = Permission::Admins;
    w.rows[1].role = Role::Admin;
    let r = remove_as(&w, as_user("mia"), "owner");
    assert!(matches!(r, Err(Error::CantRemoveOwner(_))), "{r:?}");
    for gone in ["rita", "ivan"] {
        let r = remove_as(&w, owner(), gone);
        assert!(
            matches!(r, Err(Error::ParticipantNotFound { .. })),
            "{gone}: {r:?}"
        );
    }
}

#[test]
fn rule_8_the_locked_roster_keeps_its_externals() {
    let w = World::new().locked();
    let r = remove_as(&w, owner(), "xena");
    assert!(matches!(r, Err(Error::ExternalRosterLocked(_))), "{r:?}");
    assert!(remove_as(&w, owner(), "mia").is_ok());
}

#[test]
fn removal_requires_an_open_group_conversation_and_an_active_caller() {
    let mut w = World::new();
    assert!(matches!(
        remove_as(&w, as_user("rita"), "mia"),
        Err(Error::ParticipantRemoved(_))
    ));
    w.conversation.state = ConversationState::Closed;
    assert!(matches!(
        remove_as(&w, owner(), "mia"),
        Err(Error::ConversationClosed(_))
    ));
    w.conversation.state = ConversationState::Active;
    w.conversation.kind = ConversationKind::Direct;
    assert!(matches!(
        remove_as(&w, owner(), "mia"),
        Err(Error::UnsupportedForDirect(_))
    ));
}

#[test]
fn rule_15_a_removed_participant_keeps_what_they_saw() {
    let plan = remove_as(&World::new(), owner(), "mia").expect("plan");
    let p = &plan.participant;
    assert_eq!(p.state, ParticipantState::Removed);
    assert_eq!(
        (p.removed_by.as_deref(), p.remove_time, p.removed_seq),
        (Some("owner"), Some(NOW), Some(11))
    );
    let c = plan.conversation.as_ref().expect("changed");
    assert_eq!((c.participant_count, c.last_seq, c.version), (2, 11, 8));
    // Rule 18: an internal's removal is hidden from external viewers.
    assert_eq!(c.shared_version, 3);
    assert_eq!(
        plan.items.iter().map(event_of).collect::<Vec<_>>(),
        [(
            11,
            EventType::ParticipantRemoved,
            vec!["mia".to_owned()],
            true
        )]
    );
    let view = p.removed_view.as_ref().expect("frozen view");
    assert_eq!((view.participant_count, view.etag.as_str()), (2, "\"8\""));
}

#[test]
fn rule_18_an_external_removal_is_seen_and_counted() {
    let plan = remove_as(&World::new(), owner(), "xena").expect("plan");
    let c = plan.conversation.expect("changed");
    assert_eq!((c.external_view_count, c.shared_version), (1, 4));
    assert!(!event_of(&plan.items[0]).3);
}

// ---- SetParticipantRole ----

fn set_role_as(w: &World, actor: Actor, target: &str, role: Role) -> Result<TargetPlan, Error> {
    decide_set_role(w.target_state(actor, target), target, role)
}

#[test]
fn only_the_owner_changes_roles() {
    let mut w = World::new();
    w.rows[1].role = Role::Admin;
    let r = set_role_as(&w, as_user("mia"), "xena", Role::Admin);
    assert!(matches!(r, Err(Error::NoPermission(_))), "{r:?}");
    // Checked before the conversation's state.
    w.conversation.state = ConversationState::Archived;
    let r = set_role_as(&w, as_user("mia"), "xena", Role::Admin);
    assert!(matches!(r, Err(Error::NoPermission(_))), "{r:?}");
    let r = set_role_as(&w, owner(), "xena", Role::Admin);
    assert!(matches!(r, Err(Error::ConversationArchived(_))), "{r:?}");
}

#[test]
fn roles_change_for_active_participants_other_than_the_owner() {
    let w = World::new();
    for gone in ["rita", "ivan"] {
        let r = set_role_as(&w, owner(), gone, Role::Admin);
        assert!(matches!(r, Err(Error::ParticipantNotFound { .. })), "{r:?}");
    }
    let r = set_role_as(&w, Actor::Admin("svc".into()), "owner", Role::Member);
    assert!(matches!(r, Err(Error::NoPermission(_))), "{r:?}");
}

#[test]
fn setting_the_same_role_changes_nothing() {
    let plan = set_role_as(&World::new(), owner(), "mia", Role::Member).expect("plan");
    assert!(plan.conversation.is_none() && plan.items.is_empty());
    assert_eq!(plan.participant.role, Role::Member);
}

#[test]
fn a_role_change_is_an_event() {
    let plan = set_role_as(&World::new(), owner(), "mia", Role::Admin).expect("plan");
    assert_eq!(plan.participant.role, Role::Admin);
    assert_eq!(
        plan.items.iter().map(event_of).collect::<Vec<_>>(),
        [(11, EventType::RoleChanged, vec!["mia".to_owned()], true)]
    );
    let c = plan.conversation.expect("changed");
    assert_eq!((c.last_seq, c.version, c.shared_version), (11, 8, 3));
    let plan = set_role_as(&World::new(), owner(), "xena", Role::Admin).expect("plan");
    assert!(
        !event_of(&plan.items[0]).3,
        "an external's change is shared"
    );
}
