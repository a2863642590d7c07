//! The conversation deciders, one test per rule they implement, and the invariants every
//! decision keeps over random states (proptest).

use parley::pb::ErrorReason;

use super::*;
use crate::domain::model::UserKind;
use crate::domain::principal::PrincipalKind;

// ---- fixtures, shared with the invitation deciders' tests ----------------------------------

pub(crate) const NOW: Micros = 1_000_000;

/// A GROUP conversation: the owner, one internal member, one external member; five items.
pub(crate) fn conversation() -> Conversation {
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
            max_participants: 10,
        },
        participant_count: 3,
        last_seq: 5,
        first_message_time: None,
        version: 4,
        create_time: 1,
        update_time: 50,
        shared_version: 3,
        shared_update_time: 40,
        external_view_count: 2,
    }
}

pub(crate) fn row(user_id: &str, kind: ParticipantKind, role: Role) -> Participant {
    Participant {
        conversation_id: "c".into(),
        user_id: user_id.into(),
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

pub(crate) fn owner_row() -> Participant {
    row("owner", ParticipantKind::Internal, Role::Owner)
}

pub(crate) fn removed(mut p: Participant) -> Participant {
    p.state = ParticipantState::Removed;
    p.removed_by = Some("owner".into());
    p.remove_time = Some(2);
    p.removed_seq = Some(3);
    p
}

pub(crate) fn principal(id: &str, kind: PrincipalKind) -> Principal {
    Principal {
        tenant_id: "t".into(),
        id: id.into(),
        kind,
        email: None,
        name: None,
        acting_for: None,
        directory_kind: None,
    }
}

pub(crate) fn internal(id: &str) -> Principal {
    principal(id, PrincipalKind::Internal)
}

/// A service acting as its tenant's administrator.
pub(crate) fn admin() -> Principal {
    principal("svc", PrincipalKind::Service)
}

pub(crate) fn user(id: &str, kind: UserKind, status: UserStatus) -> User {
    User {
        tenant_id: "t".into(),
        id: id.into(),
        display_name: id.into(),
        email: format!("{id}@example.com"),
        kind,
        status,
        create_time: 1,
        update_time: 1,
    }
}

pub(crate) fn ok<T>(r: Result<T, Error>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("expected success, got {e:?}"),
    }
}

pub(crate) fn reason<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorReason {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.reason(),
    }
}

/// The change of a decision that must change something.
pub(crate) fn change_of<R>(d: Decision<R>) -> Change {
    match d.change {
        Some(c) => c,
        None => panic!("expected a change"),
    }
}

pub(crate) fn event_type(item: &TimelineItem) -> Option<EventType> {
    match &item.entry {
        Entry::Event { event_type, .. } => Some(*event_type),
        Entry::Message { .. } => None,
    }
}

// ---- CreateConversation ---------------------------------------------------------------------

fn new_group(others: &[&str]) -> NewConversation {
    NewConversation {
        kind: ConversationKind::Group,
        title: "plans".into(),
        policy: conversation().policy,
        owner_id: "owner".into(),
        other_ids: others.iter().map(|s| s.to_string()).collect(),
    }
}

fn new_direct(other: &str) -> NewConversation {
    NewConversation {
        kind: ConversationKind::Direct,
        title: String::new(),
        ..new_group(&[other])
    }
}

fn directory(users: &[User]) -> CreateState {
    CreateState {
        users: users.iter().map(|u| (u.id.clone(), u.clone())).collect(),
        existing_direct: None,
    }
}

fn people() -> Vec<User> {
    vec![
        user("owner", UserKind::Internal, UserStatus::Active),
        user("ann", UserKind::Internal, UserStatus::Active),
        user("bob", UserKind::Internal, UserStatus::Active),
        user("xia", UserKind::External, UserStatus::Active),
        user("gone", UserKind::Internal, UserStatus::Deactivated),
    ]
}

fn created(plan: CreatePlan) -> (Created, ConversationView) {
    match plan {
        CreatePlan::New { created, reply } => (*created, reply),
        CreatePlan::Existing(v) => panic!("expected a new conversation, got {v:?}"),
    }
}

fn created_group(others: &[&str]) -> (Created, ConversationView) {
    created(ok(decide_create(
        &internal("owner"),
        new_group(others),
        directory(&people()),
        "new".into(),
        NOW,
    )))
}

#[test]
fn rule_12_the_creator_becomes_owner_and_the_others_members() {
    let (created, reply) = created_group(&["ann", "xia"]);
    let roles: Vec<(&str, Role, ParticipantKind)> = created
        .participants
        .iter()
        .map(|p| (p.user_id.as_str(), p.role, p.kind))
        .collect();
    assert_eq!(
        roles,
        [
            ("owner", Role::Owner, ParticipantKind::Internal),
            ("ann", Role::Member, ParticipantKind::Internal),
            ("xia", Role::Member, ParticipantKind::External),
        ]
    );
    // Rule 11: nothing precedes anyone; everyone reads from seq 1.
    assert!(created.participants.iter().all(|p| p.history_from == 1
        && p.added_by == "owner"
        && p.is_active()
        && p.conversation_id == "new"));
    let c = &created.conversation;
    assert_eq!((c.id.as_str(), c.owner_id.as_str()), ("new", "owner"));
    assert_eq!((c.participant_count, c.external_view_count), (3, 2));
    assert_eq!((c.version, c.shared_version, c.create_time), (1, 1, NOW));
    assert_eq!(c.last_seq, created.items.len() as i64);
    assert_eq!(created.direct_key, None);
    assert_eq!(reply.etag, c.etag());
    assert_eq!(reply.viewer_state, Some(ParticipantState::Active));
}

#[test]
fn rule_18_internal_and_external_people_are_added_in_events_of_their_own() {
    let (created, _) = created_group(&["ann", "xia", "bob"]);
    let events: Vec<(i64, Option<EventType>, Vec<String>, bool)> = created
        .items
        .iter()
        .map(|i| match &i.entry {
            Entry::Event {
                event_type,
                subject_ids,
                internal_only,
                ..
            } => (
                i.seq,
                Some(*event_type),
                subject_ids.clone(),
                *internal_only,
            ),
            Entry::Message { .. } => (i.seq, None, vec![], false),
        })
        .collect();
    assert_eq!(
        events,
        [
            (1, Some(EventType::ConversationCreated), vec![], false),
            (
                2,
                Some(EventType::ParticipantAdded),
                vec!["ann".into(), "bob".into()],
                true
            ),
            (
                3,
                Some(EventType::ParticipantAdded),
                vec!["xia".into()],
                false
            ),
        ]
    );
    // With internal people only, no external add event.
    let (only_internal, _) = created_group(&["ann"]);
    assert_eq!(only_internal.items.len(), 2);
}

#[test]
fn rule_22_each_person_added_at_creation_is_told() {
    let (created, _) = created_group(&["ann", "xia"]);
    assert_eq!(
        created.notices,
        AddNotices {
            actor_id: "owner".into(),
            added: vec!["ann".into(), "xia".into()],
            // Rule 21: the owner made the add.
            owner: None,
        }
    );
}

#[test]
fn rule_4_unknown_and_deactivated_people_are_refused_at_creation() {
    let create = |others: &[&str], users: &[User]| {
        decide_create(
            &internal("owner"),
            new_group(others),
            directory(users),
            "new".into(),
            NOW,
        )
    };
    assert_eq!(
        reason(create(&["ann", "nobody"], &people())),
        ErrorReason::UserNotFound
    );
    assert_eq!(
        reason(create(&["ann", "gone"], &people())),
        ErrorReason::UserDeactivated
    );
    // The owner needs a directory entry too.
    assert_eq!(
        reason(create(&["ann"], &people()[1..])),
        ErrorReason::UserNotFound
    );
}

#[test]
fn rule_12_a_direct_conversation_that_exists_is_returned_and_nothing_is_written() {
    let mut existing = conversation();
    existing.kind = ConversationKind::Direct;
    existing.id = "old".into();
    let mut state = directory(&people());
    state.existing_direct = Some((existing.clone(), Some(owner_row())));
    let plan = ok(decide_create(
        &internal("owner"),
        new_direct("ann"),
        state,
        "new".into(),
        NOW,
    ));
    match plan {
        CreatePlan::Existing(view) => {
            assert_eq!(view.conversation.id, "old");
            assert_eq!(view.etag, existing.etag());
        }
        CreatePlan::New { .. } => panic!("a second DIRECT conversation for one pair"),
    }
    // The people are still judged first: a deactivated other is refused, existing or not.
    let mut state = directory(&people());
    state.existing_direct = Some((existing, Some(owner_row())));
    assert_eq!(
        reason(decide_create(
            &internal("owner"),
            new_direct("gone"),
            state,
            "new".into(),
            NOW
        )),
        ErrorReason::UserDeactivated
    );
}

#[test]
fn rule_12_a_new_direct_conversation_carries_the_pair_key() {
    let request = new_direct("ann");
    let key = request.direct_key();
    assert_eq!(key, Some(rules::direct_key("ann", "owner")));
    let (created, _) = created(ok(decide_create(
        &internal("owner"),
        request,
        directory(&people()),
        "new".into(),
        NOW,
    )));
    assert_eq!(created.direct_key, key);
    assert_eq!(created.conversation.kind, ConversationKind::Direct);
    assert_eq!(new_group(&["ann"]).direct_key(), None);
}

// ---- Archive, unarchive, close ----------------------------------------------------------------

fn transition(
    state: ConversationState,
    p: &Principal,
    caller: Option<Participant>,
    to: Transition,
) -> Result<Decision<ConversationView>, Error> {
    let mut c = conversation();
    c.state = state;
    decide_transition(c, p, caller, to, NOW)
}

#[test]
fn rules_1_and_15_only_active_participants_change_the_lifecycle() {
    use ConversationState as S;
    assert_eq!(
        reason(transition(
            S::Active,
            &internal("x"),
            None,
            Transition::Archive
        )),
        ErrorReason::NotAParticipant
    );
    let gone = removed(row("ann", ParticipantKind::Internal, Role::Admin));
    assert_eq!(
        reason(transition(
            S::Active,
            &internal("ann"),
            Some(gone),
            Transition::Archive
        )),
        ErrorReason::ParticipantRemoved
    );
}

#[test]
fn rule_24_the_owner_or_an_admin_archives_unarchives_and_closes() {
    use ConversationState as S;
    let member = row("ann", ParticipantKind::Internal, Role::Member);
    for to in [
        Transition::Archive,
        Transition::Unarchive,
        Transition::Close,
    ] {
        assert_eq!(
            reason(transition(
                S::Archived,
                &internal("ann"),
                Some(member.clone()),
                to
            )),
            ErrorReason::NoPermission
        );
    }
    let admin_row = row("ann", ParticipantKind::Internal, Role::Admin);
    let d = ok(transition(
        S::Active,
        &internal("ann"),
        Some(admin_row),
        Transition::Archive,
    ));
    assert_eq!(d.reply.conversation.state, S::Archived);
    let d = ok(transition(
        S::Active,
        &internal("owner"),
        Some(owner_row()),
        Transition::Close,
    ));
    assert_eq!(d.reply.conversation.state, S::Closed);
    // A service acting as administrator passes the check.
    let d = ok(transition(
        S::Archived,
        &admin(),
        None,
        Transition::Unarchive,
    ));
    assert_eq!(d.reply.conversation.state, S::Active);
}

#[test]
fn rule_24_a_transition_appends_its_event_and_moves_every_version() {
    use ConversationState as S;
    let cases = [
        (
            S::Active,
            Transition::Archive,
            S::Archived,
            EventType::ConversationArchived,
        ),
        (
            S::Archived,
            Transition::Unarchive,
            S::Active,
            EventType::ConversationUnarchived,
        ),
        (
            S::Active,
            Transition::Close,
            S::Closed,
            EventType::ConversationClosed,
        ),
        (
            S::Archived,
            Transition::Close,
            S::Closed,
            EventType::ConversationClosed,
        ),
    ];
    for (from, to, next, event) in cases {
        let change = change_of(ok(transition(
            from,
            &internal("owner"),
            Some(owner_row()),
            to,
        )));
        let c = &change.conversation;
        assert_eq!(c.state, next);
        assert_eq!(c.last_seq, 6);
        assert_eq!((c.version, c.update_time), (5, NOW));
        assert_eq!((c.shared_version, c.shared_update_time), (4, NOW));
        assert_eq!(change.items.len(), 1);
        assert_eq!(change.items[0].seq, 6);
        assert_eq!(event_type(&change.items[0]), Some(event));
    }
}

#[test]
fn rule_24_repeating_a_transition_changes_nothing_and_closed_is_final() {
    use ConversationState as S;
    for (state, to) in [
        (S::Archived, Transition::Archive),
        (S::Active, Transition::Unarchive),
        (S::Closed, Transition::Close),
    ] {
        let d = ok(transition(state, &internal("owner"), Some(owner_row()), to));
        assert_eq!(d.change, None);
        assert_eq!(d.reply.conversation.state, state);
        assert_eq!(d.reply.etag, conversation().etag());
    }
    for to in [Transition::Archive, Transition::Unarchive] {
        assert_eq!(
            reason(transition(
                S::Closed,
                &internal("owner"),
                Some(owner_row()),
                to
            )),
            ErrorReason::ConversationClosed
        );
    }
}

// ---- SendMessage ------------------------------------------------------------------------------

fn send(
    c: Conversation,
    actor: &Actor,
    caller: Option<&Participant>,
) -> Result<Decision<TimelineItem>, Error> {
    decide_send(c, actor, caller, "hello".into(), "m1".into(), NOW)
}

#[test]
fn rule_25_only_an_active_participant_posts() {
    let ann = row("ann", ParticipantKind::Internal, Role::Member);
    let as_ann = Actor::User("ann".into());
    assert_eq!(
        reason(send(conversation(), &as_ann, None)),
        ErrorReason::NotAParticipant
    );
    assert_eq!(
        reason(send(conversation(), &as_ann, Some(&removed(ann.clone())))),
        ErrorReason::ParticipantRemoved
    );
    // A service has no seat to post from, administrator or not.
    assert_eq!(
        reason(send(conversation(), &Actor::Admin("svc".into()), None)),
        ErrorReason::NotAParticipant
    );
    let d = ok(send(conversation(), &as_ann, Some(&ann)));
    assert_eq!(
        d.reply.entry,
        Entry::Message {
            id: "m1".into(),
            sender_id: "ann".into(),
            body: "hello".into()
        }
    );
    assert_eq!((d.reply.seq, d.reply.create_time), (6, NOW));
}

#[test]
fn rule_24_read_only_conversations_take_no_message() {
    let ann = row("ann", ParticipantKind::Internal, Role::Member);
    let as_ann = Actor::User("ann".into());
    for (state, expected) in [
        (
            ConversationState::Archived,
            ErrorReason::ConversationArchived,
        ),
        (ConversationState::Closed, ErrorReason::ConversationClosed),
    ] {
        let mut c = conversation();
        c.state = state;
        assert_eq!(reason(send(c, &as_ann, Some(&ann))), expected);
    }
}

#[test]
fn rule_25_the_first_message_sets_first_message_time_and_later_ones_leave_the_record() {
    let ann = row("ann", ParticipantKind::Internal, Role::Member);
    let as_ann = Actor::User("ann".into());
    let first = change_of(ok(send(conversation(), &as_ann, Some(&ann))));
    let c = &first.conversation;
    assert_eq!(c.first_message_time, Some(NOW));
    // Rule 8: with the lock on, the external roster is now fixed.
    assert!(c.external_roster_locked());
    assert_eq!((c.last_seq, c.version, c.shared_version), (6, 5, 4));
    let second = change_of(ok(decide_send(
        first.conversation.clone(),
        &as_ann,
        Some(&ann),
        "again".into(),
        "m2".into(),
        NOW + 1,
    )));
    let c2 = &second.conversation;
    assert_eq!(c2.first_message_time, Some(NOW));
    assert_eq!(c2.last_seq, 7);
    assert_eq!((c2.version, c2.update_time), (c.version, c.update_time));
    assert_eq!(second.items.len(), 1);
}

// ---- UpdateConversation -----------------------------------------------------------------------

fn update(
    c: Conversation,
    p: &Principal,
    caller: Option<Participant>,
    etag: &str,
    patch: ConversationPatch,
) -> Result<Decision<ConversationView>, Error> {
    decide_update(c, p, caller, etag, patch, NOW)
}

/// An update by the owner, without an etag.
fn owner_update(
    c: Conversation,
    patch: ConversationPatch,
) -> Result<Decision<ConversationView>, Error> {
    update(c, &internal("owner"), Some(owner_row()), "", patch)
}

fn retitle(title: &str) -> ConversationPatch {
    ConversationPatch {
        title: Some(title.into()),
        ..Default::default()
    }
}

#[test]
fn only_the_owner_updates_a_conversation() {
    for role in [Role::Member, Role::Admin] {
        let ann = row("ann", ParticipantKind::Internal, role);
        assert_eq!(
            reason(update(
                conversation(),
                &internal("ann"),
                Some(ann),
                "",
                retitle("x")
            )),
            ErrorReason::NoPermission
        );
    }
    // Rule 1: a non-participant is told so first.
    assert_eq!(
        reason(update(
            conversation(),
            &internal("x"),
            None,
            "",
            retitle("x")
        )),
        ErrorReason::NotAParticipant
    );
    let d = ok(update(conversation(), &admin(), None, "", retitle("x")));
    assert_eq!(d.reply.conversation.title, "x");
}

#[test]
fn the_etag_guards_an_update_as_the_caller_reads_it() {
    let c = conversation();
    let by =
        |p: &Principal, etag: &str| update(c.clone(), p, Some(owner_row()), etag, retitle("x"));
    let owner = internal("owner");
    assert_eq!(reason(by(&owner, "\"3\"")), ErrorReason::EtagMismatch);
    ok(by(&owner, &c.etag()));
    ok(by(&owner, ""));
    // Rule 18: an owner judged external reads (and so sends) the shared etag.
    let external_owner = principal("owner", PrincipalKind::External);
    assert_eq!(
        reason(by(&external_owner, &c.etag())),
        ErrorReason::EtagMismatch
    );
    ok(by(&external_owner, &c.shared_etag()));
}

#[test]
fn rule_24_read_only_conversations_take_no_update() {
    for (state, expected) in [
        (
            ConversationState::Archived,
            ErrorReason::ConversationArchived,
        ),
        (ConversationState::Closed, ErrorReason::ConversationClosed),
    ] {
        let mut c = conversation();
        c.state = state;
        assert_eq!(reason(owner_update(c, retitle("x"))), expected);
    }
}

#[test]
fn rule_12_a_direct_conversation_takes_no_title() {
    let mut c = conversation();
    c.kind = ConversationKind::Direct;
    c.title = String::new();
    assert_eq!(
        reason(owner_update(c.clone(), retitle("x"))),
        ErrorReason::InvalidField
    );
    // Setting the title it has (none) changes nothing and is no error.
    let d = ok(owner_update(c, retitle("")));
    assert_eq!(d.change, None);
}

#[test]
fn a_title_change_appends_title_changed() {
    let change = change_of(ok(owner_update(conversation(), retitle("new title"))));
    assert_eq!(change.conversation.title, "new title");
    assert_eq!(change.items.len(), 1);
    assert_eq!(event_type(&change.items[0]), Some(EventType::TitleChanged));
    assert_eq!(change.conversation.version, 5);
    // The same title again changes nothing.
    let d = ok(owner_update(conversation(), retitle("title")));
    assert_eq!(d.change, None);
    assert_eq!(d.reply.conversation, conversation());
}

#[test]
fn rule_9_the_cap_is_never_set_below_the_active_participants() {
    let cap = |max: i32| ConversationPatch {
        max_participants: Some(max),
        ..Default::default()
    };
    match owner_update(conversation(), cap(2)) {
        Err(Error::ParticipantLimitExceeded {
            max, would_have, ..
        }) => assert_eq!((max, would_have), (2, 3)),
        other => panic!("expected PARTICIPANT_LIMIT_EXCEEDED, got {other:?}"),
    }
    let change = change_of(ok(owner_update(conversation(), cap(3))));
    assert_eq!(change.conversation.policy.max_participants, 3);
}

#[test]
fn a_title_and_policy_change_is_two_events_and_one_version() {
    let patch = ConversationPatch {
        title: Some("t2".into()),
        add_external: Some(Permission::Participants),
        new_participant_history: Some(History::SinceJoin),
        ..Default::default()
    };
    let change = change_of(ok(owner_update(conversation(), patch)));
    let types: Vec<_> = change
        .items
        .iter()
        .map(|i| (i.seq, event_type(i)))
        .collect();
    assert_eq!(
        types,
        [
            (6, Some(EventType::TitleChanged)),
            (7, Some(EventType::PolicyChanged))
        ]
    );
    let c = &change.conversation;
    assert_eq!(c.policy.add_external, Permission::Participants);
    assert_eq!(c.policy.new_participant_history, History::SinceJoin);
    assert_eq!(c.policy.remove, Permission::Owner, "unnamed fields stay");
    assert_eq!((c.last_seq, c.version, c.shared_version), (7, 5, 4));
}

#[test]
fn a_patch_that_changes_nothing_writes_nothing() {
    let same = ConversationPatch {
        title: Some("title".into()),
        add_internal: Some(Permission::Participants),
        max_participants: Some(10),
        ..Default::default()
    };
    let d = ok(owner_update(conversation(), same));
    assert_eq!(d.change, None);
}

// ---- invariants over random states ------------------------------------------------------------

mod invariants {
    use proptest::prelude::*;

    use super::*;

    fn any_state() -> impl Strategy<Value = ConversationState> {
        prop_oneof![
            Just(ConversationState::Active),
            Just(ConversationState::Archived),
            Just(ConversationState::Closed),
        ]
    }

    fn any_permission() -> impl Strategy<Value = Permission> {
        prop_oneof![
            Just(Permission::Owner),
            Just(Permission::Admins),
            Just(Permission::Participants),
        ]
    }

    prop_compose! {
        fn any_conversation()(
            state in any_state(),
            direct in any::<bool>(),
            first_message in proptest::option::of(1i64..NOW),
            max in 2i32..20,
            count_below_max in 0i32..19,
            last_seq in 1i64..1_000,
            version in 1i64..100,
            shared_lag in 0i64..50,
            untitled in any::<bool>(),
        ) -> Conversation {
            let mut c = conversation();
            c.state = state;
            c.kind = if direct { ConversationKind::Direct } else { ConversationKind::Group };
            c.first_message_time = first_message;
            c.policy.max_participants = max;
            c.participant_count = (max - count_below_max).max(1);
            c.last_seq = last_seq;
            c.version = version + shared_lag;
            c.shared_version = version;
            if untitled {
                c.title = String::new();
            }
            c
        }
    }

    /// Who calls, and their participant row.
    #[derive(Clone, Debug)]
    enum Caller {
        Admin,
        Stranger,
        /// Role, kind, active.
        Member(Role, ParticipantKind, bool),
    }

    fn any_caller() -> impl Strategy<Value = Caller> {
        let role = prop_oneof![Just(Role::Owner), Just(Role::Admin), Just(Role::Member)];
        let kind = prop_oneof![
            Just(ParticipantKind::Internal),
            Just(ParticipantKind::External)
        ];
        prop_oneof![
            Just(Caller::Admin),
            Just(Caller::Stranger),
            (role, kind, any::<bool>()).prop_map(|(r, k, active)| Caller::Member(r, k, active)),
        ]
    }

    impl Caller {
        fn principal(&self) -> Principal {
            match self {
                Caller::Admin => admin(),
                _ => internal("me"),
            }
        }

        fn row(&self) -> Option<Participant> {
            match self {
                Caller::Member(role, kind, active) => {
                    let r = row("me", *kind, *role);
                    Some(if *active { r } else { removed(r) })
                }
                _ => None,
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Transition(Transition),
        Send,
        Update(ConversationPatch),
    }

    fn any_op() -> impl Strategy<Value = Op> {
        let title = prop_oneof![
            Just(String::new()),
            Just("title".to_owned()),
            Just("other".to_owned())
        ];
        let patch = (
            proptest::option::of(title),
            proptest::option::of(any_permission()),
            proptest::option::of(any_permission()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(2i32..20),
        )
            .prop_map(
                |(title, add_internal, add_external, lock, max)| ConversationPatch {
                    title,
                    add_internal,
                    add_external,
                    lock_external_roster_on_first_message: lock,
                    max_participants: max,
                    ..Default::default()
                },
            );
        prop_oneof![
            Just(Op::Transition(Transition::Archive)),
            Just(Op::Transition(Transition::Unarchive)),
            Just(Op::Transition(Transition::Close)),
            Just(Op::Send),
            patch.prop_map(Op::Update),
        ]
    }

    /// Runs one operation: its change (if any), or the error's reason.
    fn run(c: &Conversation, caller: &Caller, op: &Op) -> Result<Option<Change>, ErrorReason> {
        let p = caller.principal();
        let row = caller.row();
        let r = match op {
            Op::Transition(to) => decide_transition(c.clone(), &p, row, *to, NOW).map(|d| d.change),
            Op::Send => decide_send(
                c.clone(),
                &p.actor(),
                row.as_ref(),
                "hi".into(),
                "m".into(),
                NOW,
            )
            .map(|d| d.change),
            Op::Update(patch) => {
                decide_update(c.clone(), &p, row, "", patch.clone(), NOW).map(|d| d.change)
            }
        };
        r.map_err(|e| e.reason())
    }

    proptest! {
        #[test]
        fn every_decision_keeps_the_conversation_invariants(
            c in any_conversation(),
            caller in any_caller(),
            op in any_op(),
        ) {
            let outcome = run(&c, &caller, &op);
            // Rules 1 and 15: a user who is not an active participant changes nothing.
            if matches!(caller, Caller::Stranger | Caller::Member(_, _, false)) {
                prop_assert!(outcome.is_err());
            }
            // Rules 6 and 24: read-only conversations take no message and no update, and a
            // closed one never changes.
            if c.state != ConversationState::Active && matches!(op, Op::Send | Op::Update(_)) {
                prop_assert!(outcome.is_err());
            }
            if c.state == ConversationState::Closed {
                prop_assert!(!matches!(outcome, Ok(Some(_))));
            }
            // Rule 25: a service acting as administrator never posts.
            if matches!((&caller, &op), (Caller::Admin, Op::Send)) {
                prop_assert_eq!(outcome.clone(), Err(ErrorReason::NotAParticipant));
            }
            // Rule 24: plain members never move the lifecycle.
            if matches!((&caller, &op), (Caller::Member(Role::Member, _, _), Op::Transition(_))) {
                prop_assert!(outcome.is_err());
            }
            if let Ok(Some(change)) = outcome {
                let after = &change.conversation;
                // The state moves only along the allowed graph (rule 24).
                use ConversationState as S;
                prop_assert!(matches!(
                    (c.state, after.state),
                    (S::Active, S::Active | S::Archived | S::Closed)
                        | (S::Archived, S::Active | S::Closed)
                ));
                // The timeline grows gaplessly from where it was, by one item at least.
                prop_assert!(!change.items.is_empty());
                let seqs: Vec<i64> = change.items.iter().map(|i| i.seq).collect();
                let expected: Vec<i64> = (c.last_seq + 1..=after.last_seq).collect();
                prop_assert_eq!(seqs, expected);
                prop_assert!(change.items.iter().all(|i| i.conversation_id == c.id));
                // Versions only move forward, one step per change; the shared one never alone.
                prop_assert!(after.version == c.version || after.version == c.version + 1);
                prop_assert!(
                    after.shared_version == c.shared_version
                        || after.shared_version == c.shared_version + 1
                );
                prop_assert!(after.shared_version == c.shared_version || after.version > c.version);
                // Rule 9: never over the cap. Rule 25: first_message_time is set once and kept.
                prop_assert!(after.participant_count <= after.policy.max_participants);
                if c.first_message_time.is_some() {
                    prop_assert_eq!(after.first_message_time, c.first_message_time);
                }
                // What none of these operations may change.
                prop_assert_eq!(&after.id, &c.id);
                prop_assert_eq!(&after.owner_id, &c.owner_id);
                prop_assert_eq!(after.kind, c.kind);
                prop_assert_eq!(after.participant_count, c.participant_count);
                // Rule 12: a DIRECT conversation never gets a title.
                if c.kind == ConversationKind::Direct {
                    prop_assert_eq!(&after.title, &c.title);
                }
            }
        }
    }
}
