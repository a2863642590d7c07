//! A model-based property test of the roster and visibility rules (SPEC §3): random sequences
//! of adds (by id and by email), removals, acceptances, messages, archiving, role changes and
//! directory kind changes, by the owner, members, external people, removed people, strangers,
//! guests and a service, run both on a real server and on a small model of the spec
//! ([`spec::Model`]). After every call the reply (success, or the gRPC code, the ErrorInfo
//! reason and, for an atomic AddParticipants, the per-invitee failures) must be the model's, and
//! so must everything each person of the scenario reads: GetConversation, ListParticipants,
//! ListTimeline and ListConversations {include_removed}. A failed call that wrote anything shows
//! up there, since the model changes nothing on failure.
//!
//! One server per database; each case has a conversation and people of its own. The case count
//! is 12 per database unless `PROPTEST_CASES` says otherwise (`PROPTEST_RNG_SEED` replays a
//! run). A failure is shrunk to a short sequence and printed. Sequences it found where the
//! server was wrong are kept as plain tests in [`regressions`].

mod regressions;
mod server;
mod spec;

use parley_tests::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use server::Scenario;
use spec::{Perm, Policy, Step, Target, Who};

/// Cases per database when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 12;

/// Who makes calls: the owner most often, then members, external people, a stranger, a guest
/// and the service.
const CALLERS: &[Who] = &[
    Who::Owner,
    Who::Owner,
    Who::Owner,
    Who::Owner,
    Who::I1,
    Who::I1,
    Who::I2,
    Who::X1,
    Who::X1,
    Who::X2,
    Who::S1,
    Who::G1,
    Who::Service,
    Who::Service,
];

/// Whom calls are about.
const SUBJECTS: &[Who] = &[
    Who::Owner,
    Who::I1,
    Who::I2,
    Who::I3,
    Who::X1,
    Who::X2,
    Who::S1,
    Who::G1,
    Who::G2,
];

const PERMISSIONS: &[Perm] = &[Perm::Owner, Perm::Admins, Perm::Participants];

fn policy() -> impl Strategy<Value = Policy> {
    (
        select(PERMISSIONS),
        select(PERMISSIONS),
        select(&[Perm::Owner, Perm::Admins][..]),
        any::<bool>(),
        any::<bool>(),
        // At least the four people a conversation may start with; 0 is the server default.
        select(&[0, 4, 5, 6][..]),
    )
        .prop_map(
            |(add_internal, add_external, remove, lock, since_join, max_participants)| Policy {
                add_internal,
                add_external,
                remove,
                lock_external_roster_on_first_message: lock,
                since_join,
                max_participants,
            },
        )
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        6 => select(SUBJECTS).prop_map(Target::User),
        // Mostly the guests (invitations), also directory users reached by email.
        4 => select(&[Who::G1, Who::G2, Who::G1, Who::G2, Who::G1, Who::G2, Who::X2, Who::I3][..])
            .prop_map(Target::Email),
        1 => Just(Target::Unknown),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let guests = &[Who::G1, Who::G2][..];
    prop_oneof![
        7 => (select(CALLERS), vec(target(), 1..=2), any::<bool>())
            .prop_map(|(by, targets, partial)| Step::Add { by, targets, partial }),
        3 => (select(CALLERS), select(SUBJECTS))
            .prop_map(|(by, target)| Step::Remove { by, target }),
        2 => select(guests).prop_map(|g| Step::Accept { by: g, invitation_of: g }),
        1 => (select(&[Who::G2, Who::X1][..]), select(guests))
            .prop_map(|(by, invitation_of)| Step::Accept { by, invitation_of }),
        2 => select(CALLERS).prop_map(|by| Step::Message { by }),
        1 => select(CALLERS).prop_map(|by| Step::Archive { by }),
        1 => select(CALLERS).prop_map(|by| Step::Unarchive { by }),
        1 => (select(CALLERS), select(SUBJECTS), any::<bool>())
            .prop_map(|(by, target, admin)| Step::SetRole { by, target, admin }),
        1 => select(&[Who::Owner, Who::I1, Who::I2, Who::I3, Who::S1][..])
            .prop_map(|user| Step::MakeExternal { user }),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        policy(),
        subsequence(&[Who::I1, Who::I2, Who::X1, Who::X2][..], 1..=3),
        vec(step(), 1..=25),
    )
        .prop_map(|(policy, others, steps)| Scenario {
            policy,
            others,
            steps,
        })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// SPEC §3 rules 1-11, 13-19, 24, 25, against the model, on random call sequences.
async fn roster_and_visibility_follow_the_model(db: Db) {
    // Many calls by one principal in a short time: the rate limit is not what is tested here.
    let app = spawn_app_with(db, |c| c.limits.rate_limit_per_second = 0).await;
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        // Each shrink step runs a whole case on the server: bound the search.
        max_shrink_iters: 300,
        max_shrink_time: 180_000,
        ..Config::default()
    };
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(config);
    let outcome = tokio::task::block_in_place(|| {
        runner.run(&scenario(), |case| {
            handle
                .block_on(server::run(&app, &case))
                .map_err(TestCaseError::fail)
        })
    });
    if let Err(e) = outcome {
        panic!("{db:?}: the server and the model of SPEC §3 disagree\n{e}");
    }
}

both_dbs!(roster_and_visibility_follow_the_model);
