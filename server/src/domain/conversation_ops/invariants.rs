//! Invariants every conversation decision keeps, over random conversations, callers and
//! operations (proptest).

use parley::pb::ErrorReason;
use proptest::prelude::*;

use super::fixtures::*;
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
