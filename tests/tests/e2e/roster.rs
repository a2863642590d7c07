//! Roster rules: the external roster lock, the participant limit, removing, re-adding,
//! history_from, listing participants.

use parley_tests::*;
use pb::{
    add_participants_result::Outcome,
    event::Type as EventType,
    participant::{Kind as PKind, State as PState},
    policy::History,
};
use tonic::Code;

async fn external_roster_locks_on_the_first_message(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group("locked", &["bob", "ext1"])
        .await
        .expect("create");

    // Before any message, externals come and go.
    alice
        .add_users(&c.id, &["ext2"])
        .await
        .expect("add ext2 before the first message");
    alice
        .remove(&c.id, "ext2")
        .await
        .expect("remove ext2 before the first message");

    alice.send(&c.id, "the first message").await.expect("send");
    let before = alice.snapshot(&c.id).await;
    expect_err(
        alice.add_users(&c.id, &["ext2"]).await,
        Code::FailedPrecondition,
        ErrorReason::ExternalRosterLocked,
    );
    expect_err(
        alice.remove(&c.id, "ext1").await,
        Code::FailedPrecondition,
        ErrorReason::ExternalRosterLocked,
    );
    let by_email = alice
        .add(&c.id, vec![email_invitee(&email_of(TENANT, "ext2"))], false)
        .await;
    expect_err(
        by_email,
        Code::FailedPrecondition,
        ErrorReason::ExternalRosterLocked,
    );
    // The tenant admin is bound by the invariant too.
    let service = app.service(TENANT);
    expect_err(
        service.add_users(&c.id, &["ext2"]).await,
        Code::FailedPrecondition,
        ErrorReason::ExternalRosterLocked,
    );
    let status = alice
        .add_users(&c.id, &["dave", "ext2"])
        .await
        .expect_err("atomic");
    assert_error(
        &status,
        Code::FailedPrecondition,
        ErrorReason::ExternalRosterLocked,
    );
    assert_invitee_violations(&status, &[(1, ErrorReason::ExternalRosterLocked)]);
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");

    // Internal changes still work, and partial mode applies them.
    let response = alice
        .add(
            &c.id,
            vec![user_invitee("dave"), user_invitee("ext2")],
            true,
        )
        .await
        .expect("partial");
    assert_eq!(
        outcomes(&response),
        vec![
            ("dave".to_owned(), Outcome::Added),
            ("ext2".to_owned(), Outcome::Failed)
        ]
    );
    alice
        .remove(&c.id, "bob")
        .await
        .expect("remove an internal");
    assert_eq!(
        alice.active_ids(&c.id).await.expect("roster"),
        vec!["alice", "dave", "ext1"]
    );

    // With the lock off, externals may change after messages.
    let open = pb::Policy {
        lock_external_roster_on_first_message: Some(false),
        ..Default::default()
    };
    let c2 = alice
        .create_group_with("open", &["ext1"], Some(open))
        .await
        .expect("create");
    alice.send(&c2.id, "hello").await.expect("send");
    alice
        .add_users(&c2.id, &["ext2"])
        .await
        .expect("add an external after a message");
    alice
        .remove(&c2.id, "ext1")
        .await
        .expect("remove an external after a message");
}

async fn participant_limit(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group_with("small", &["bob"], Some(policy_with_max(3)))
        .await
        .expect("create");

    let before = alice.snapshot(&c.id).await;
    for partial in [false, true] {
        let result = alice
            .add(
                &c.id,
                vec![user_invitee("carol"), user_invitee("dave")],
                partial,
            )
            .await;
        expect_err(
            result,
            Code::FailedPrecondition,
            ErrorReason::ParticipantLimitExceeded,
        );
    }
    let eng = seed_group(&app, TENANT, "eng", &["carol", "dave"]).await;
    expect_err(
        alice.add(&c.id, vec![group_invitee(&eng.id)], false).await,
        Code::FailedPrecondition,
        ErrorReason::ParticipantLimitExceeded,
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");

    alice
        .add_users(&c.id, &["carol"])
        .await
        .expect("room for one");
    assert_eq!(alice.get(&c.id).await.expect("get").participant_count, 3);
    expect_err(
        alice.add_users(&c.id, &["dave"]).await,
        Code::FailedPrecondition,
        ErrorReason::ParticipantLimitExceeded,
    );
    // Someone already in does not count twice.
    let response = alice
        .add_users(&c.id, &["bob"])
        .await
        .expect("already a participant at the cap");
    assert_eq!(response.results[0].outcome(), Outcome::AlreadyParticipant);
    // Removed participants do not count.
    alice.remove(&c.id, "bob").await.expect("remove");
    alice.add_users(&c.id, &["dave"]).await.expect("room again");
    expect_err(
        alice.add_users(&c.id, &["bob"]).await,
        Code::FailedPrecondition,
        ErrorReason::ParticipantLimitExceeded,
    );
    assert_eq!(
        alice.active_ids(&c.id).await.expect("roster"),
        vec!["alice", "carol", "dave"]
    );
}

async fn remove_a_participant(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group("t", &["bob", "carol"])
        .await
        .expect("create");

    let removed = alice.remove(&c.id, "bob").await.expect("remove");
    assert_eq!(removed.user_id, "bob");
    assert_eq!(removed.state(), PState::Removed);
    assert_eq!(removed.removed_by, "alice");
    assert!(removed.remove_time.is_some());
    assert_eq!(
        alice
            .participant(&c.id, "bob")
            .await
            .expect("GetParticipant"),
        removed
    );
    assert_eq!(alice.get(&c.id).await.expect("get").participant_count, 2);
    assert_eq!(
        alice.active_ids(&c.id).await.expect("roster"),
        vec!["alice", "carol"]
    );
    let all = alice.participants(&c.id).await.expect("all states");
    assert_eq!(
        all.len(),
        3,
        "removed participants are still listed without a state filter"
    );
    let removed_only = alice
        .participants_in(&c.id, PState::Removed)
        .await
        .expect("removed");
    assert_eq!(
        removed_only
            .iter()
            .map(|p| p.user_id.as_str())
            .collect::<Vec<_>>(),
        vec!["bob"]
    );
    let event = alice
        .events(&c.id)
        .await
        .expect("events")
        .pop()
        .expect("an event");
    assert_eq!(event.r#type(), EventType::ParticipantRemoved);
    assert_eq!(
        (event.actor_id.as_str(), event.subject_ids.clone()),
        ("alice", vec!["bob".to_owned()])
    );

    // The tenant admin may remove too.
    let by_service = app
        .service(TENANT)
        .remove(&c.id, "carol")
        .await
        .expect("service removes");
    assert_eq!(by_service.state(), PState::Removed);
}

async fn a_removed_participant_can_be_added_again(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    alice.remove(&c.id, "bob").await.expect("remove");
    let added_before = alice
        .events_of(&c.id, EventType::ParticipantAdded)
        .await
        .expect("events")
        .len();

    // Bob's row comes back in place, dave's is new: one call writes both kinds.
    let response = alice
        .add_users(&c.id, &["bob", "dave"])
        .await
        .expect("add again");
    assert_eq!(response.results[0].outcome(), Outcome::Added);
    assert_eq!(response.results[1].outcome(), Outcome::Added);
    let bob = alice
        .participant(&c.id, "bob")
        .await
        .expect("GetParticipant");
    assert_eq!(bob.state(), PState::Active);
    assert_eq!(bob.added_by, "alice");
    let rows: Vec<_> = alice
        .participants(&c.id)
        .await
        .expect("all")
        .into_iter()
        .filter(|p| p.user_id == "bob")
        .collect();
    assert_eq!(rows.len(), 1, "one row per user");
    assert_eq!(alice.get(&c.id).await.expect("get").participant_count, 3);
    assert_eq!(
        alice.active_ids(&c.id).await.expect("roster"),
        vec!["alice", "bob", "dave"]
    );
    let added = alice
        .events_of(&c.id, EventType::ParticipantAdded)
        .await
        .expect("events");
    assert_eq!(added.len(), added_before + 1);
    assert_eq!(
        added.last().expect("event").subject_ids,
        vec!["bob".to_owned(), "dave".to_owned()]
    );
    app.user(TENANT, "bob")
        .send(&c.id, "I'm back")
        .await
        .expect("bob posts again");
}

async fn history_from_follows_the_policy(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let dave = app.user(TENANT, "dave");

    let full = alice.create_group("full", &["bob"]).await.expect("create");
    alice.send(&full.id, "before dave").await.expect("send");
    let response = alice.add_users(&full.id, &["dave"]).await.expect("add");
    assert_eq!(
        response.results[0]
            .participant
            .as_ref()
            .expect("participant")
            .history_from,
        1
    );
    assert_eq!(
        dave.messages(&full.id).await.expect("messages").len(),
        1,
        "FULL shows the whole history"
    );
    assert_eq!(
        dave.timeline(&full.id)
            .await
            .expect("timeline")
            .first()
            .map(|i| i.seq),
        Some(1)
    );

    let policy = pb::Policy {
        new_participant_history: History::SinceJoin as i32,
        ..Default::default()
    };
    let since = alice
        .create_group_with("since", &["bob"], Some(policy))
        .await
        .expect("create");
    alice.send(&since.id, "one").await.expect("send");
    let last = alice.send(&since.id, "two").await.expect("send").seq;
    let response = alice.add_users(&since.id, &["dave"]).await.expect("add");
    let participant = response.results[0]
        .participant
        .clone()
        .expect("participant");
    assert_eq!(participant.history_from, last + 1);
    assert_eq!(
        alice
            .participant(&since.id, "dave")
            .await
            .expect("get")
            .history_from,
        last + 1
    );

    assert!(dave.messages(&since.id).await.expect("messages").is_empty());
    let timeline = dave.timeline(&since.id).await.expect("timeline");
    assert!(timeline.iter().all(|i| i.seq > last), "{timeline:?}");
    assert!(
        dave.events(&since.id)
            .await
            .expect("events")
            .iter()
            .all(|e| e.seq > last)
    );
    let later = alice.send(&since.id, "three").await.expect("send");
    assert_eq!(
        dave.messages(&since.id).await.expect("messages"),
        vec![later]
    );
}

async fn list_participants_filters_and_pages(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group("t", &["bob", "carol", "dave", "frank", "ext1", "ext2"])
        .await
        .expect("create");
    alice.remove(&c.id, "dave").await.expect("remove");

    let page = |state: PState, kind: PKind, size: i32, token: String| pb::ListParticipantsRequest {
        conversation_id: c.id.clone(),
        page_size: size,
        page_token: token,
        state: state as i32,
        kind: kind as i32,
    };
    let externals = alice
        .part()
        .list_participants(alice.req(page(PState::Unspecified, PKind::External, 0, String::new())))
        .await;
    let mut ids: Vec<String> = externals
        .expect("externals")
        .into_inner()
        .participants
        .into_iter()
        .map(|p| p.user_id)
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["ext1", "ext2"]);
    let internal_active = alice
        .part()
        .list_participants(alice.req(page(PState::Active, PKind::Internal, 0, String::new())))
        .await;
    let mut ids: Vec<String> = internal_active
        .expect("internal")
        .into_inner()
        .participants
        .into_iter()
        .map(|p| p.user_id)
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["alice", "bob", "carol", "frank"]);

    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let response = alice
            .part()
            .list_participants(alice.req(page(PState::Unspecified, PKind::Unspecified, 2, token)))
            .await;
        let response = response.expect("page").into_inner();
        assert!(response.participants.len() <= 2);
        seen.extend(response.participants.into_iter().map(|p| p.user_id));
        token = response.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(
        sorted(seen),
        vec!["alice", "bob", "carol", "dave", "ext1", "ext2", "frank"],
        "each exactly once"
    );
    // Every filter with every page token: one participant a page.
    for (state, kind, expected) in [
        (PState::Removed, PKind::Unspecified, vec!["dave"]),
        (
            PState::Active,
            PKind::Unspecified,
            vec!["alice", "bob", "carol", "ext1", "ext2", "frank"],
        ),
        (PState::Unspecified, PKind::External, vec!["ext1", "ext2"]),
        (
            PState::Active,
            PKind::Internal,
            vec!["alice", "bob", "carol", "frank"],
        ),
    ] {
        let mut seen = Vec::new();
        let mut token = String::new();
        for _ in 0..10 {
            let response = alice
                .part()
                .list_participants(alice.req(page(state, kind, 1, token)))
                .await
                .expect("a filtered page")
                .into_inner();
            assert!(response.participants.len() <= 1);
            seen.extend(response.participants.into_iter().map(|p| p.user_id));
            token = response.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(seen, expected, "{state:?} {kind:?}: in order, each once");
    }
    let bad = alice
        .part()
        .list_participants(alice.req(page(
            PState::Unspecified,
            PKind::Unspecified,
            2,
            "junk".to_owned(),
        )))
        .await;
    expect_invalid(bad, "page_token");
}

both_dbs!(
    external_roster_locks_on_the_first_message,
    participant_limit,
    remove_a_participant,
    a_removed_participant_can_be_added_again,
    history_from_follows_the_policy,
    list_participants_filters_and_pages,
);
