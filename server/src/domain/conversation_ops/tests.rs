//! The conversation deciders, one test per rule they implement.

use parley::pb::ErrorReason;

use super::fixtures::*;
use super::*;
use crate::domain::model::UserKind;
use crate::domain::principal::PrincipalKind;

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
