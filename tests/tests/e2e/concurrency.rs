//! Invariants under concurrent calls: never over the cap, never two rows for one user, never an
//! external added after the first message, gapless seq, one DIRECT conversation per pair.

use parley_tests::*;
use pb::{
    add_participants_result::Outcome, event::Type as EventType, participant::State as PState,
};
use tonic::Code;

async fn concurrent_adds_never_exceed_the_cap(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let users = seed_many(&app, "c", 50).await;
    let alice = app.user(TENANT, "alice");
    // alice and bob, plus room for exactly ten more.
    let c = alice
        .create_group_with("capped", &["bob"], Some(policy_with_max(12)))
        .await
        .expect("create");

    let calls = users
        .iter()
        .map(|user| {
            let alice = alice.clone();
            let (id, user) = (c.id.clone(), user.clone());
            async move { alice.add_users(&id, &[&user]).await }
        })
        .collect();
    let results = all_at_once(calls).await;

    let mut succeeded = 0;
    for result in results {
        match result {
            Ok(response) => {
                assert_eq!(response.results.len(), 1);
                assert_eq!(response.results[0].outcome(), Outcome::Added);
                succeeded += 1;
            }
            Err(status) => assert_error(
                &status,
                Code::FailedPrecondition,
                ErrorReason::ParticipantLimitExceeded,
            ),
        }
    }
    assert_eq!(succeeded, 10, "exactly the room there was");
    let active = alice.active_ids(&c.id).await.expect("roster");
    assert_eq!(active.len(), 12);
    assert_eq!(alice.get(&c.id).await.expect("get").participant_count, 12);
    let added: usize = alice
        .events_of(&c.id, EventType::ParticipantAdded)
        .await
        .expect("events")
        .iter()
        .filter(|e| e.subject_ids.iter().any(|s| s.starts_with("c0")))
        .map(|e| e.subject_ids.len())
        .sum();
    assert_eq!(added, 10, "one event subject per added user");
}

async fn concurrent_adds_of_one_user_make_one_row(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("race", &["bob"]).await.expect("create");

    let calls = (0..20)
        .map(|i| {
            // Half by the owner, half by a member: both may add internals.
            let caller = if i % 2 == 0 {
                alice.clone()
            } else {
                app.user(TENANT, "bob")
            };
            let id = c.id.clone();
            async move { caller.add_users(&id, &["dave"]).await }
        })
        .collect();
    let results = all_at_once(calls).await;

    let mut added = 0;
    for result in results {
        let response = result.expect("every call succeeds");
        assert_eq!(response.results.len(), 1);
        match response.results[0].outcome() {
            Outcome::Added => added += 1,
            Outcome::AlreadyParticipant => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(added, 1, "exactly one call added dave");
    let rows: Vec<_> = alice
        .participants(&c.id)
        .await
        .expect("all")
        .into_iter()
        .filter(|p| p.user_id == "dave")
        .collect();
    assert_eq!(rows.len(), 1, "one participant row");
    let events: Vec<_> = alice
        .events_of(&c.id, EventType::ParticipantAdded)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.subject_ids.contains(&"dave".to_owned()))
        .collect();
    assert_eq!(events.len(), 1, "one PARTICIPANT_ADDED event naming dave");
    assert_eq!(events[0].subject_ids, vec!["dave".to_owned()]);
    assert_eq!(alice.get(&c.id).await.expect("get").participant_count, 3);
}

async fn no_external_is_added_after_the_first_message(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let (mut locked, mut before_message) = (0, 0);
    for round in 0..10 {
        let c = alice
            .create_group(&format!("round {round}"), &["bob"])
            .await
            .expect("create");
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let send = tokio::spawn({
            let (alice, id, barrier) = (alice.clone(), c.id.clone(), barrier.clone());
            async move {
                barrier.wait().await;
                alice.send(&id, "first").await
            }
        });
        let add = tokio::spawn({
            let (alice, id, barrier) = (alice.clone(), c.id.clone(), barrier.clone());
            async move {
                barrier.wait().await;
                alice.add_users(&id, &["ext1"]).await
            }
        });
        let (send, add) = (send.await.expect("no panic"), add.await.expect("no panic"));
        let message = send.expect("the first message is sent");
        match add {
            Err(status) => {
                assert_error(
                    &status,
                    Code::FailedPrecondition,
                    ErrorReason::ExternalRosterLocked,
                );
                let active = alice.active_ids(&c.id).await.expect("roster");
                assert!(
                    !active.contains(&"ext1".to_owned()),
                    "a failed add left ext1 in: {active:?}"
                );
                locked += 1;
            }
            Ok(response) => {
                assert_eq!(response.results[0].outcome(), Outcome::Added);
                let event = alice
                    .events_of(&c.id, EventType::ParticipantAdded)
                    .await
                    .expect("events")
                    .into_iter()
                    .find(|e| e.subject_ids.contains(&"ext1".to_owned()))
                    .expect("ext1's PARTICIPANT_ADDED event");
                assert!(
                    event.seq < message.seq,
                    "ext1 added at seq {} after the first message at seq {}",
                    event.seq,
                    message.seq
                );
                before_message += 1;
            }
        }
    }
    assert_eq!(locked + before_message, 10);
}

async fn concurrent_messages_get_distinct_gapless_seqs(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group("chatty", &["bob", "carol"])
        .await
        .expect("create");
    let calls = (0..30)
        .map(|i| {
            let caller = app.user(TENANT, ["alice", "bob", "carol"][i % 3]);
            let id = c.id.clone();
            async move { caller.send(&id, &format!("message {i}")).await }
        })
        .collect();
    let mut seqs: Vec<i64> = all_at_once(calls)
        .await
        .into_iter()
        .map(|r| r.expect("send").seq)
        .collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 30, "distinct seqs");
    let timeline = alice.timeline(&c.id).await.expect("timeline");
    let all: Vec<i64> = timeline.iter().map(|i| i.seq).collect();
    assert_eq!(
        all,
        (1..=timeline.len() as i64).collect::<Vec<_>>(),
        "gapless"
    );
    assert_eq!(alice.messages(&c.id).await.expect("messages").len(), 30);
}

async fn concurrent_direct_creation_makes_one_conversation(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let calls = (0..10)
        .map(|i| {
            let (me, other) = if i % 2 == 0 {
                ("alice", "bob")
            } else {
                ("bob", "alice")
            };
            let caller = app.user(TENANT, me);
            async move { caller.create_direct(other).await }
        })
        .collect();
    let mut ids: Vec<String> = all_at_once(calls)
        .await
        .into_iter()
        .map(|r| r.expect("create DIRECT").id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "one DIRECT conversation per pair");
    assert_eq!(
        app.user(TENANT, "alice")
            .list_conversations()
            .await
            .expect("list")
            .len(),
        1
    );
}

/// Two replicas of the server on one database: the cap and one-row-per-user hold across them,
/// a request id recorded by one is honoured by the other, and a page token sealed by one opens
/// on the other. Nothing lives in a server's memory.
async fn invariants_hold_across_replicas(db: Db) {
    let app = spawn_app(db).await;
    let replica = app.replica().await;
    seed_standard(&app).await;
    let users = seed_many(&app, "r", 50).await;
    let alice = app.user(TENANT, "alice");
    let alice_elsewhere = replica.serve(&alice);
    let c = alice
        .create_group_with("capped", &["bob"], Some(policy_with_max(12)))
        .await
        .expect("create");

    // The cap: 50 concurrent adds, alternating replicas, into room for ten.
    let calls = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let caller = if i % 2 == 0 {
                alice.clone()
            } else {
                alice_elsewhere.clone()
            };
            let (id, user) = (c.id.clone(), user.clone());
            async move { caller.add_users(&id, &[&user]).await }
        })
        .collect();
    let mut added = 0;
    for result in all_at_once(calls).await {
        match result {
            Ok(_) => added += 1,
            Err(status) => assert_error(
                &status,
                Code::FailedPrecondition,
                ErrorReason::ParticipantLimitExceeded,
            ),
        }
    }
    assert_eq!(added, 10, "exactly the room there was, across replicas");
    assert_eq!(alice.get(&c.id).await.expect("get").participant_count, 12);

    // One row per user: the same person added 20 times at once through both replicas.
    let open = alice.create_group("open", &["bob"]).await.expect("create");
    let calls = (0..20)
        .map(|i| {
            let caller = if i % 2 == 0 {
                alice.clone()
            } else {
                alice_elsewhere.clone()
            };
            let id = open.id.clone();
            async move { caller.add_users(&id, &["carol"]).await }
        })
        .collect();
    for result in all_at_once(calls).await {
        result.expect("added, or already a participant");
    }
    let rows = alice.participants(&open.id).await.expect("roster");
    assert_eq!(rows.iter().filter(|p| p.user_id == "carol").count(), 1);
    let subjects: usize = alice
        .events_of(&open.id, EventType::ParticipantAdded)
        .await
        .expect("events")
        .iter()
        .filter(|e| e.subject_ids.contains(&"carol".to_owned()))
        .count();
    assert_eq!(subjects, 1, "one PARTICIPANT_ADDED for carol");

    // A request id recorded by one replica is honoured by the other.
    let send = pb::SendMessageRequest {
        conversation_id: open.id.clone(),
        body: "once".into(),
        request_id: request_id(),
    };
    let first = alice
        .conv()
        .send_message(alice.req(send.clone()))
        .await
        .expect("send")
        .into_inner();
    let again = alice_elsewhere
        .conv()
        .send_message(alice_elsewhere.req(send))
        .await
        .expect("the retry, on the other replica")
        .into_inner();
    assert_eq!(again, first);
    assert_eq!(alice.messages(&open.id).await.expect("messages").len(), 1);

    // A page token sealed by one replica opens on the other.
    let page = |caller: &Caller, token: String| {
        let msg = pb::ListParticipantsRequest {
            conversation_id: c.id.clone(),
            page_size: 5,
            page_token: token,
            ..Default::default()
        };
        let caller = caller.clone();
        async move {
            caller
                .part()
                .list_participants(caller.req(msg))
                .await
                .expect("a page")
                .into_inner()
        }
    };
    let first_page = page(&alice, String::new()).await;
    assert_eq!(first_page.participants.len(), 5);
    let second_page = page(&alice_elsewhere, first_page.next_page_token).await;
    assert_eq!(second_page.participants.len(), 5);
    assert!(
        first_page.participants.last().map(|p| &p.user_id)
            < second_page.participants.first().map(|p| &p.user_id),
        "the second page follows the first"
    );
}

/// A caller removed while its AddParticipants waits for the conversation's lock is refused: the
/// add is judged on the seat the removal left, not on the seat the call's first read saw. (On
/// PostgreSQL a locking read that waited joins the newest conversation row to the rows of its
/// older snapshot.)
async fn a_caller_removed_while_waiting_for_the_lock_is_refused(db: Db) {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice.create_group("race", &["bob"]).await.expect("create");

    // Another writer removes bob as RemoveParticipant would write it (his seat, the
    // conversation's version and count), and holds the conversation's lock a moment.
    let raw = sea_orm::Database::connect(app.database_url())
        .await
        .expect("a connection of the test's own");
    let writer = raw.begin().await.expect("begin");
    writer
        .execute_unprepared(&format!(
            "UPDATE conversations SET version = version + 1, \
             participant_count = participant_count - 1 WHERE id = '{}'",
            c.id
        ))
        .await
        .expect("lock the conversation");
    writer
        .execute_unprepared(&format!(
            "UPDATE participants SET state = {} WHERE conversation_id = '{}' AND user_id = 'bob'",
            PState::Removed as i32,
            c.id
        ))
        .await
        .expect("remove bob");
    let add = {
        let id = c.id.clone();
        tokio::spawn(async move { bob.add_users(&id, &["carol"]).await })
    };
    // Long enough for the add to be waiting for the lock (had it not, it reads the removal
    // anyway: the test cannot pass wrongly, only fail to exercise the wait).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    writer.commit().await.expect("commit the removal");

    let refused = add
        .await
        .expect("the call's task")
        .expect_err("bob was removed before his add took the lock");
    assert_error(
        &refused,
        Code::PermissionDenied,
        ErrorReason::ParticipantRemoved,
    );
    let active = alice.active_ids(&c.id).await.expect("roster");
    assert_eq!(active, ["alice"], "nothing was added");
}

both_dbs!(
    invariants_hold_across_replicas,
    a_caller_removed_while_waiting_for_the_lock_is_refused,
    concurrent_adds_never_exceed_the_cap,
    concurrent_adds_of_one_user_make_one_row,
    no_external_is_added_after_the_first_message,
    concurrent_messages_get_distinct_gapless_seqs,
    concurrent_direct_creation_makes_one_conversation,
);
