//! The invitation deciders, one test per rule they implement, and the invariants every answer
//! keeps over random states (proptest).

use parley::pb::ErrorReason;

use super::*;
use crate::domain::conversation_ops::fixtures::{
    NOW, conversation, event_type, ok, owner_row, reason, removed, row,
};
use crate::domain::model::{ConversationState, Entry, History};

/// A pending invitation of "c" to guest@example.com by "ann", made at 100, expiring after NOW.
fn invitation() -> Invitation {
    Invitation {
        id: "i".into(),
        conversation_id: "c".into(),
        email: "guest@example.com".into(),
        invited_by: "ann".into(),
        state: InvitationState::Pending,
        accepted_by: None,
        create_time: 100,
        expire_time: NOW + 1,
    }
}

fn guest() -> Invitee<'static> {
    Invitee {
        user_id: "guest",
        email: Some("guest@example.com"),
    }
}

fn accept(
    c: Conversation,
    i: Invitation,
    existing: Option<Participant>,
) -> Result<Accepted, Error> {
    decide_accept(c, i, existing, guest(), NOW)
}

fn events(change: &Change) -> Vec<(i64, Option<EventType>, String, Vec<String>)> {
    change
        .items
        .iter()
        .map(|i| match &i.entry {
            Entry::Event {
                actor_id,
                subject_ids,
                ..
            } => (i.seq, event_type(i), actor_id.clone(), subject_ids.clone()),
            Entry::Message { .. } => (i.seq, None, String::new(), vec![]),
        })
        .collect()
}

// ---- rule 16: who may answer ------------------------------------------------------------------

#[test]
fn rule_16_only_a_pending_unexpired_invitation_is_answered() {
    let mut expired = invitation();
    expired.expire_time = NOW;
    assert_eq!(
        reason(accept(conversation(), expired.clone(), None)),
        ErrorReason::InvitationExpired
    );
    assert_eq!(
        reason(decide_decline(conversation(), expired, guest(), NOW)),
        ErrorReason::InvitationExpired
    );
    for state in [
        InvitationState::Accepted,
        InvitationState::Declined,
        InvitationState::Revoked,
    ] {
        let mut used = invitation();
        used.state = state;
        assert_eq!(
            reason(accept(conversation(), used.clone(), None)),
            ErrorReason::InvitationNotPending
        );
        assert_eq!(
            reason(decide_decline(conversation(), used, guest(), NOW)),
            ErrorReason::InvitationNotPending
        );
    }
}

#[test]
fn rule_16_the_email_claim_must_match_case_insensitively() {
    for email in [None, Some("other@example.com")] {
        let invitee = Invitee {
            user_id: "guest",
            email,
        };
        assert_eq!(
            reason(decide_accept(
                conversation(),
                invitation(),
                None,
                invitee,
                NOW
            )),
            ErrorReason::InvitationEmailMismatch
        );
        assert_eq!(
            reason(decide_decline(conversation(), invitation(), invitee, NOW)),
            ErrorReason::InvitationEmailMismatch
        );
    }
    let mut accented = invitation();
    accented.email = "émile@example.com".into();
    let invitee = Invitee {
        user_id: "guest",
        email: Some("Émile@Example.com"),
    };
    ok(decide_accept(conversation(), accented, None, invitee, NOW));
}

#[test]
fn rule_24_a_read_only_conversation_takes_no_answer() {
    for (state, expected) in [
        (
            ConversationState::Archived,
            ErrorReason::ConversationArchived,
        ),
        (ConversationState::Closed, ErrorReason::ConversationClosed),
    ] {
        let mut c = conversation();
        c.state = state;
        assert_eq!(reason(accept(c.clone(), invitation(), None)), expected);
        assert_eq!(
            reason(decide_decline(c.clone(), invitation(), guest(), NOW)),
            expected
        );
        assert_eq!(
            reason(decide_revoke(
                c,
                invitation(),
                &Actor::User("owner".into()),
                Some(&owner_row()),
                NOW
            )),
            expected
        );
    }
}

// ---- AcceptInvitation -------------------------------------------------------------------------

#[test]
fn rule_16_accepting_makes_the_caller_an_external_member() {
    let Accepted { plan, participant } = ok(accept(conversation(), invitation(), None));
    assert_eq!(participant.user_id, "guest");
    assert_eq!(participant.kind, ParticipantKind::External);
    assert_eq!(participant.role, Role::Member);
    assert!(participant.is_active());
    assert_eq!(participant.added_by, "ann");
    assert_eq!(participant.join_time, NOW);
    assert_eq!(plan.invitation.state, InvitationState::Accepted);
    assert_eq!(plan.invitation.accepted_by.as_deref(), Some("guest"));
    let joined = plan.joined.as_ref().map(|j| &j.participant);
    assert_eq!(joined, Some(&participant));
    let c = &plan.change.conversation;
    assert_eq!((c.participant_count, c.external_view_count), (4, 3));
    // Rule 10: PARTICIPANT_ADDED in the inviter's name, then INVITATION_ACCEPTED in the
    // invitee's; one version step, seen by external viewers too (rule 18).
    assert_eq!(
        events(&plan.change),
        [
            (
                6,
                Some(EventType::ParticipantAdded),
                "ann".into(),
                vec!["guest".into()]
            ),
            (
                7,
                Some(EventType::InvitationAccepted),
                "guest".into(),
                vec!["guest".into()]
            ),
        ]
    );
    assert_eq!((c.last_seq, c.version, c.shared_version), (7, 5, 4));
    assert_eq!((c.update_time, c.shared_update_time), (NOW, NOW));
}

#[test]
fn rule_11_the_new_participant_reads_as_the_policy_says() {
    let full = ok(accept(conversation(), invitation(), None));
    assert_eq!(full.participant.history_from, 1);
    let mut c = conversation();
    c.policy.new_participant_history = History::SinceJoin;
    let since_join = ok(accept(c, invitation(), None));
    // From their own PARTICIPANT_ADDED event on.
    assert_eq!(since_join.participant.history_from, 6);
}

#[test]
fn rules_21_and_22_the_invitee_and_the_owner_are_told() {
    let by_ann = ok(accept(conversation(), invitation(), None));
    let notices = by_ann.plan.joined.map(|j| j.notices);
    assert_eq!(
        notices,
        Some(AddNotices {
            actor_id: "ann".into(),
            added: vec!["guest".into()],
            owner: Some("owner".into()),
        })
    );
    // The owner's own invitation owes the owner nothing.
    let mut by_owner = invitation();
    by_owner.invited_by = "owner".into();
    let notices = ok(accept(conversation(), by_owner, None))
        .plan
        .joined
        .map(|j| j.notices);
    assert_eq!(notices.and_then(|n| n.owner), None);
}

#[test]
fn rule_8_invitations_sent_before_the_first_message_stay_acceptable() {
    let mut locked = conversation();
    locked.first_message_time = Some(500);
    let mut before = invitation();
    before.create_time = 499;
    ok(accept(locked.clone(), before, None));
    let mut after = invitation();
    after.create_time = 501;
    assert_eq!(
        reason(accept(locked.clone(), after.clone(), None)),
        ErrorReason::ExternalRosterLocked
    );
    // With the lock off, the first message fixes nothing.
    locked.policy.lock_external_roster_on_first_message = false;
    ok(accept(locked, after, None));
}

#[test]
fn rule_9_accepting_respects_the_cap() {
    let mut full = conversation();
    full.policy.max_participants = 3;
    match accept(full.clone(), invitation(), None) {
        Err(Error::ParticipantLimitExceeded {
            max, would_have, ..
        }) => assert_eq!((max, would_have), (3, 4)),
        other => panic!("expected PARTICIPANT_LIMIT_EXCEEDED, got {other:?}"),
    }
    // Someone already in takes no new seat.
    let already = row("guest", ParticipantKind::External, Role::Member);
    ok(accept(full, invitation(), Some(already)));
}

#[test]
fn an_active_participant_accepting_is_added_again_by_nobody() {
    let already = row("guest", ParticipantKind::Internal, Role::Admin);
    let Accepted { plan, participant } =
        ok(accept(conversation(), invitation(), Some(already.clone())));
    assert_eq!(participant, already, "their row stays as it is");
    assert_eq!(plan.joined, None);
    assert_eq!(plan.invitation.state, InvitationState::Accepted);
    assert_eq!(plan.change.conversation.participant_count, 3);
    assert_eq!(
        events(&plan.change),
        [(
            6,
            Some(EventType::InvitationAccepted),
            "guest".into(),
            vec!["guest".into()]
        )]
    );
}

#[test]
fn rule_10_a_removed_participant_accepting_becomes_active_again() {
    let gone = removed(row("guest", ParticipantKind::External, Role::Member));
    let Accepted { plan, participant } = ok(accept(conversation(), invitation(), Some(gone)));
    assert!(participant.is_active());
    assert_eq!(
        (participant.removed_by, participant.removed_seq),
        (None, None)
    );
    assert!(plan.joined.is_some());
    assert_eq!(plan.change.conversation.participant_count, 4);
    assert_eq!(
        event_type(&plan.change.items[0]),
        Some(EventType::ParticipantAdded)
    );
}

// ---- DeclineInvitation ------------------------------------------------------------------------

#[test]
fn rule_17_declining_records_the_email_and_adds_nobody() {
    let plan = ok(decide_decline(conversation(), invitation(), guest(), NOW));
    assert_eq!(plan.invitation.state, InvitationState::Declined);
    assert_eq!(plan.invitation.accepted_by, None);
    assert_eq!(plan.joined, None);
    assert_eq!(
        events(&plan.change),
        [(
            6,
            Some(EventType::InvitationDeclined),
            "guest".into(),
            vec!["guest@example.com".into()]
        )]
    );
    assert_eq!(plan.change.conversation.participant_count, 3);
    assert_eq!(plan.change.conversation.version, 5);
}

// ---- RevokeInvitation -------------------------------------------------------------------------

fn revoke_as(actor: &str, caller: Option<Participant>) -> Result<InvitationPlan, Error> {
    decide_revoke(
        conversation(),
        invitation(),
        &Actor::User(actor.into()),
        caller.as_ref(),
        NOW,
    )
}

#[test]
fn rules_1_and_15_only_active_participants_revoke() {
    assert_eq!(reason(revoke_as("ann", None)), ErrorReason::NotAParticipant);
    let gone = removed(row("ann", ParticipantKind::Internal, Role::Member));
    assert_eq!(
        reason(revoke_as("ann", Some(gone))),
        ErrorReason::ParticipantRemoved
    );
}

#[test]
fn rule_17_the_inviter_or_the_owner_revokes() {
    let bob = row("bob", ParticipantKind::Internal, Role::Admin);
    assert_eq!(
        reason(revoke_as("bob", Some(bob))),
        ErrorReason::NoPermission
    );
    let ann = row("ann", ParticipantKind::Internal, Role::Member);
    let plan = ok(revoke_as("ann", Some(ann)));
    assert_eq!(plan.invitation.state, InvitationState::Revoked);
    assert_eq!(
        events(&plan.change),
        [(
            6,
            Some(EventType::InvitationRevoked),
            "ann".into(),
            vec!["guest@example.com".into()]
        )]
    );
    ok(revoke_as("owner", Some(owner_row())));
    // A service acting as administrator, in its own name.
    let plan = ok(decide_revoke(
        conversation(),
        invitation(),
        &Actor::Admin("svc".into()),
        None,
        NOW,
    ));
    assert_eq!(events(&plan.change)[0].2, "svc");
}

#[test]
fn rule_17_only_a_pending_invitation_is_revoked() {
    let mut expired = invitation();
    expired.expire_time = NOW - 1;
    let mut accepted = invitation();
    accepted.state = InvitationState::Accepted;
    for i in [expired, accepted] {
        assert_eq!(
            reason(decide_revoke(
                conversation(),
                i,
                &Actor::User("owner".into()),
                Some(&owner_row()),
                NOW
            )),
            ErrorReason::InvitationNotPending
        );
    }
}

// ---- invariants over random states ------------------------------------------------------------

mod invariants {
    use proptest::prelude::*;

    use super::*;

    prop_compose! {
        fn any_conversation()(
            state in prop_oneof![
                Just(ConversationState::Active),
                Just(ConversationState::Archived),
                Just(ConversationState::Closed),
            ],
            first_message in proptest::option::of(1i64..1_000),
            lock in any::<bool>(),
            max in 2i32..10,
            count_below_max in 0i32..9,
        ) -> Conversation {
            let mut c = conversation();
            c.state = state;
            c.first_message_time = first_message;
            c.policy.lock_external_roster_on_first_message = lock;
            c.policy.max_participants = max;
            c.participant_count = (max - count_below_max).max(1);
            c
        }
    }

    prop_compose! {
        fn any_invitation()(
            state in prop_oneof![
                Just(InvitationState::Pending),
                Just(InvitationState::Accepted),
                Just(InvitationState::Declined),
                Just(InvitationState::Revoked),
            ],
            create_time in 1i64..1_000,
            expired in any::<bool>(),
            by_owner in any::<bool>(),
        ) -> Invitation {
            let mut i = invitation();
            i.state = state;
            i.create_time = create_time;
            i.expire_time = if expired { NOW } else { NOW + 1 };
            if by_owner {
                i.invited_by = "owner".into();
            }
            i
        }
    }

    fn any_existing() -> impl Strategy<Value = Option<Participant>> {
        proptest::option::of(any::<bool>().prop_map(|active| {
            let r = row("guest", ParticipantKind::External, Role::Member);
            if active { r } else { removed(r) }
        }))
    }

    proptest! {
        #[test]
        fn every_acceptance_keeps_the_roster_invariants(
            c in any_conversation(),
            i in any_invitation(),
            existing in any_existing(),
            matching_email in any::<bool>(),
        ) {
            let invitee = Invitee {
                user_id: "guest",
                email: Some(if matching_email { "GUEST@example.com" } else { "x@example.com" }),
            };
            let was_active = existing.as_ref().is_some_and(Participant::is_active);
            let outcome = decide_accept(c.clone(), i.clone(), existing, invitee, NOW);
            let Ok(Accepted { plan, participant }) = outcome else {
                return Ok(());
            };
            // Rule 16: only a pending, unexpired invitation to the caller's email; rule 24:
            // only into an active conversation.
            prop_assert_eq!(i.effective_state(NOW), InvitationState::Pending);
            prop_assert!(matching_email);
            prop_assert_eq!(c.state, ConversationState::Active);
            prop_assert_eq!(plan.invitation.state, InvitationState::Accepted);
            // Rule 8: never an external added after the first message with the lock on.
            if c.external_roster_locked() && plan.joined.is_some() {
                prop_assert!(c.first_message_time.is_some_and(|f| i.create_time <= f));
            }
            // Rule 9: never over the cap; a seat taken only by someone not already active.
            let after = &plan.change.conversation;
            prop_assert!(after.participant_count <= after.policy.max_participants);
            prop_assert_eq!(plan.joined.is_some(), !was_active);
            prop_assert_eq!(
                after.participant_count,
                c.participant_count + i32::from(!was_active)
            );
            prop_assert!(participant.is_active());
            // The timeline grows gaplessly; versions move one step.
            let seqs: Vec<i64> = plan.change.items.iter().map(|it| it.seq).collect();
            let expected: Vec<i64> = (c.last_seq + 1..=after.last_seq).collect();
            prop_assert_eq!(seqs, expected);
            prop_assert_eq!(after.version, c.version + 1);
            prop_assert_eq!(after.shared_version, c.shared_version + 1);
            // Rule 21: the owner is told exactly when someone else invited.
            if let Some(j) = &plan.joined {
                prop_assert_eq!(j.notices.owner.is_some(), i.invited_by != c.owner_id);
            }
        }
    }
}
