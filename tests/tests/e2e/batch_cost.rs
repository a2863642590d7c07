//! The cost of a batch: adding 1,000 people takes no more SQL statements than adding 10.

use parley_tests::*;
use pb::add_participants_result::Outcome;
use tonic::Code;

/// Most statements a single AddParticipants call may run, whatever its size.
const MAX_STATEMENTS: u64 = 30;
/// How much the large batch may exceed the small one.
const SLACK: u64 = 2;

/// Runs `call` and returns its output with the number of statements the server ran meanwhile.
async fn counted<T>(app: &TestApp, call: impl std::future::Future<Output = T>) -> (T, u64) {
    let before = app.statement_count();
    let out = call.await;
    (out, app.statement_count() - before)
}

fn refs(ids: &[String]) -> Vec<&str> {
    ids.iter().map(String::as_str).collect()
}

async fn adding_users_costs_the_same_at_any_size(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let users = seed_many(&app, "b", 1010).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group_with("big", &["bob"], Some(policy_with_max(5000)))
        .await
        .expect("create");
    // Warm up whatever a first call costs (the caller's directory check, caches).
    alice.add_users(&c.id, &["carol"]).await.expect("warm-up");

    let (small, small_cost) = counted(&app, alice.add_users(&c.id, &refs(&users[..10]))).await;
    let small = small.expect("add 10");
    assert_eq!(small.results.len(), 10);
    assert!(small.results.iter().all(|r| r.outcome() == Outcome::Added));

    let (large, large_cost) = counted(&app, alice.add_users(&c.id, &refs(&users[10..]))).await;
    let large = large.expect("add 1000");
    assert_eq!(large.results.len(), 1000);
    assert!(large.results.iter().all(|r| r.outcome() == Outcome::Added));
    eprintln!(
        "{db:?}: AddParticipants of 10 users ran {small_cost} statements, of 1000 users {large_cost}"
    );

    assert!(small_cost > 0, "the statement counter is installed");
    assert!(
        small_cost < MAX_STATEMENTS,
        "10 users took {small_cost} statements"
    );
    assert!(
        large_cost < MAX_STATEMENTS,
        "1000 users took {large_cost} statements"
    );
    assert!(
        large_cost <= small_cost + SLACK,
        "1000 users took {large_cost} statements, 10 took {small_cost}"
    );
    assert_eq!(alice.get(&c.id).await.expect("get").participant_count, 1013);
    assert_eq!(alice.active_ids(&c.id).await.expect("roster").len(), 1013);

    // A page_size above 1000 is clamped to 1000.
    let msg = pb::ListParticipantsRequest {
        conversation_id: c.id.clone(),
        page_size: 5000,
        ..Default::default()
    };
    let page = alice
        .part()
        .list_participants(alice.req(msg))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.participants.len(), 1000);
    assert!(!page.next_page_token.is_empty());

    // Adding them all again changes nothing and is no dearer.
    let (again, again_cost) = counted(&app, alice.add_users(&c.id, &refs(&users[10..]))).await;
    assert!(
        again
            .expect("again")
            .results
            .iter()
            .all(|r| r.outcome() == Outcome::AlreadyParticipant)
    );
    assert!(
        again_cost <= small_cost + SLACK,
        "re-adding 1000 took {again_cost} statements"
    );
}

async fn adding_groups_costs_the_same_at_any_size(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let users = seed_many(&app, "g", 505).await;
    seed_group(&app, TENANT, "small", &refs(&users[..5])).await;
    seed_group(&app, TENANT, "large", &refs(&users[5..])).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group_with("groups", &["bob"], Some(policy_with_max(1000)))
        .await
        .expect("create");
    alice.add_users(&c.id, &["carol"]).await.expect("warm-up");

    let (small, small_cost) =
        counted(&app, alice.add(&c.id, vec![group_invitee("small")], false)).await;
    assert_eq!(small.expect("add small group").results.len(), 5);
    let (large, large_cost) =
        counted(&app, alice.add(&c.id, vec![group_invitee("large")], false)).await;
    let large = large.expect("add large group");
    assert_eq!(large.results.len(), 500);
    assert!(
        large
            .results
            .iter()
            .all(|r| r.outcome() == Outcome::Added && r.via_group_id == "large")
    );
    eprintln!(
        "{db:?}: AddParticipants of a 5-member group ran {small_cost} statements, of a 500-member group {large_cost}"
    );

    assert!(
        small_cost < MAX_STATEMENTS && large_cost < MAX_STATEMENTS,
        "{small_cost} / {large_cost}"
    );
    assert!(
        large_cost <= small_cost + SLACK,
        "500 members took {large_cost} statements, 5 took {small_cost}"
    );
    assert_eq!(alice.get(&c.id).await.expect("get").participant_count, 508);
}

/// A group too large for one statement: 6,000 new participants bind 72,000 values, past both
/// SQLite's 32,766 and PostgreSQL's 65,535 a statement. All are added, with their events and
/// notifications, in a handful of statements more than a small group takes.
async fn a_group_too_large_for_one_statement(db: Db) {
    const MEMBERS: usize = 6_000;
    let app = spawn_app_with(db, |config| {
        config.limits.rate_limit_per_second = 1_000_000;
        config.limits.max_group_members = MEMBERS;
    })
    .await;
    seed_standard(&app).await;
    let users = seed_many(&app, "m", MEMBERS).await;
    seed_group(&app, TENANT, "everyone", &refs(&users)).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group("all hands", &["bob"])
        .await
        .expect("create");
    alice.add_users(&c.id, &["carol"]).await.expect("warm-up");

    let (added, cost) = counted(
        &app,
        alice.add(&c.id, vec![group_invitee("everyone")], false),
    )
    .await;
    let added = added.expect("add a 6,000-member group");
    assert_eq!(added.results.len(), MEMBERS);
    assert!(
        added
            .results
            .iter()
            .all(|r| r.outcome() == Outcome::Added && r.via_group_id == "everyone")
    );
    eprintln!("{db:?}: AddParticipants of a {MEMBERS}-member group ran {cost} statements");
    assert!(cost < MAX_STATEMENTS, "{cost} statements");

    let conversation = alice.get(&c.id).await.expect("get");
    assert_eq!(conversation.participant_count, MEMBERS as i32 + 3);
    assert_eq!(
        alice.active_ids(&c.id).await.expect("roster").len(),
        MEMBERS + 3
    );
    let added_events = alice
        .events_of(&c.id, pb::event::Type::ParticipantAdded)
        .await
        .expect("events");
    let subjects: usize = added_events.iter().map(|e| e.subject_ids.len()).sum();
    assert_eq!(subjects, MEMBERS + 2, "bob, carol and every member");
    let told = alice
        .snapshot(&c.id)
        .await
        .notifications
        .iter()
        .filter(|n| n.kind() == pb::notification::Kind::AddedToConversation)
        .count();
    assert_eq!(told, MEMBERS + 2, "everyone added was told");
}

/// A `request_id` costs two statements: the look-up before the call and the record written
/// with it (one upsert, which replaces an expired record in place). Each cost is the least of
/// three calls: the housekeeping sweep runs in the background and shares the counter.
async fn a_request_id_costs_a_look_up_and_one_record(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let send = |request_id: String| {
        let alice = alice.clone();
        let message = pb::SendMessageRequest {
            conversation_id: c.id.clone(),
            body: "hello".into(),
            request_id,
        };
        async move { alice.conv().send_message(alice.req(message)).await }
    };
    // Warm up whatever a first call costs.
    send(String::new()).await.expect("warm-up");

    let (mut plain_cost, mut retryable_cost) = (u64::MAX, u64::MAX);
    for _ in 0..3 {
        let (plain, cost) = counted(&app, send(String::new())).await;
        plain.expect("send without a request id");
        plain_cost = plain_cost.min(cost);
        let (retryable, cost) = counted(&app, send(request_id())).await;
        retryable.expect("send with a request id");
        retryable_cost = retryable_cost.min(cost);
    }
    eprintln!(
        "{db:?}: SendMessage ran {plain_cost} statements, {retryable_cost} with a request id"
    );
    assert_eq!(retryable_cost, plain_cost + 2);
}

/// UpsertUser writes and reads the user back in one statement, new or known (without a
/// request id, which costs the same two statements as anywhere).
async fn upserting_a_user_is_one_statement(db: Db) {
    let app = spawn_app(db).await;
    let service = app.service(TENANT);
    let upsert = |user: pb::User| {
        let service = service.clone();
        async move {
            service
                .dir()
                .upsert_user(service.req(pb::UpsertUserRequest {
                    user: Some(user),
                    request_id: String::new(),
                }))
                .await
                .map(|r| r.into_inner())
        }
    };
    let alice = pb::User {
        id: "alice".into(),
        display_name: "Alice".into(),
        email: email_of(TENANT, "alice"),
        kind: pb::user::Kind::Internal as i32,
        ..Default::default()
    };
    upsert(pb::User {
        id: "warm-up".into(),
        ..alice.clone()
    })
    .await
    .expect("warm-up");
    // The least of three calls each: the background sweep shares the counter.
    let (mut create_cost, mut update_cost) = (u64::MAX, u64::MAX);
    for i in 0..3 {
        let fresh = pb::User {
            id: format!("alice{i}"),
            ..alice.clone()
        };
        let (created, cost) = counted(&app, upsert(fresh.clone())).await;
        let created = created.expect("create");
        create_cost = create_cost.min(cost);
        let renamed = pb::User {
            display_name: format!("Renamed {i}"),
            ..fresh
        };
        let (updated, cost) = counted(&app, upsert(renamed)).await;
        let updated = updated.expect("rename");
        update_cost = update_cost.min(cost);
        assert_eq!(updated.display_name, format!("Renamed {i}"));
        assert_eq!(updated.create_time, created.create_time, "create_time kept");
    }
    eprintln!("{db:?}: UpsertUser ran {create_cost} statements new, {update_cost} known");
    assert_eq!((create_cost, update_cost), (1, 1), "{db:?}");
}

/// A read of one conversation reads the caller's directory entry, the conversation and the
/// caller's seat in one statement: GetConversation is that statement alone, a page of the
/// timeline or the roster that and the page. The directory's verdict still applies at once: a
/// deactivation is seen by the very next read.
async fn reads_of_one_conversation_read_the_caller_in_one_statement(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("reads", &["bob"]).await.expect("create");
    alice.send(&c.id, "hello").await.expect("send");

    let (got, cost) = counted(&app, alice.get(&c.id)).await;
    got.expect("get");
    assert_eq!(cost, 1, "{db:?}: GetConversation");
    let (items, cost) = counted(&app, alice.timeline(&c.id)).await;
    assert!(!items.expect("timeline").is_empty());
    assert_eq!(cost, 2, "{db:?}: one page of ListTimeline");
    let (people, cost) = counted(&app, alice.participants(&c.id)).await;
    assert_eq!(people.expect("participants").len(), 2);
    assert_eq!(
        cost, 1,
        "{db:?}: one page of ListParticipants, with its caller"
    );
    // An external viewer sees less than the page everyone sees (rule 18): its own page is
    // read again, on a read transaction of two statements.
    let shared = alice
        .create_group("reads-ext", &["bob", "ext1"])
        .await
        .expect("create");
    let ext1 = app.user(TENANT, "ext1");
    let (people, cost) = counted(&app, ext1.participants(&shared.id)).await;
    let mut shown: Vec<String> = people
        .expect("participants")
        .into_iter()
        .map(|p| p.user_id)
        .collect();
    shown.sort();
    assert_eq!(shown, ["alice", "ext1"], "{db:?}");
    assert_eq!(
        cost, 3,
        "{db:?}: an external viewer's page of ListParticipants"
    );

    // Another service acting for bob: the same one statement judges the act-as user.
    let svc = app.service_as(TENANT, "bob");
    let (got, cost) = counted(&app, svc.get(&c.id)).await;
    got.expect("get as bob");
    assert_eq!(cost, 1, "{db:?}: GetConversation acting for a user");

    app.service(TENANT)
        .deactivate_user("bob")
        .await
        .expect("deactivate bob");
    let bob = app.user(TENANT, "bob");
    let refused = bob.get(&c.id).await.expect_err("bob is deactivated");
    assert_error(
        &refused,
        Code::FailedPrecondition,
        ErrorReason::UserDeactivated,
    );
    let refused = svc.get(&c.id).await.expect_err("acting for bob");
    assert_error(
        &refused,
        Code::FailedPrecondition,
        ErrorReason::UserDeactivated,
    );
    // Deactivation first, even for a conversation that does not exist.
    let missing = uuid::Uuid::now_v7().to_string();
    let refused = bob.get(&missing).await.expect_err("bob is deactivated");
    assert_error(
        &refused,
        Code::FailedPrecondition,
        ErrorReason::UserDeactivated,
    );
    let refused = bob.timeline(&c.id).await.expect_err("bob is deactivated");
    assert_error(
        &refused,
        Code::FailedPrecondition,
        ErrorReason::UserDeactivated,
    );

    // A newcomer's first call, a read, still adds them to the directory.
    let dora = app.user(TENANT, "dora-newcomer");
    let refused = dora.get(&c.id).await.expect_err("not a participant");
    assert_error(
        &refused,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    let entry = app
        .service(TENANT)
        .get_user("dora-newcomer")
        .await
        .expect("the first call added dora to the directory");
    assert_eq!(entry.id, "dora-newcomer");
}

/// A mutation of one conversation reads the caller's directory entry in the statement that
/// locks the conversation and reads the caller's seat, and the directory's verdict applies at
/// once: to a deactivated caller, to a repeat of a request id recorded before the
/// deactivation, to a conversation that does not exist, and to a newcomer's first call.
async fn mutations_read_the_caller_in_the_locking_statement(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice
        .create_group("writes", &["bob"])
        .await
        .expect("create");
    alice.send(&c.id, "warm-up").await.expect("send");

    // SendMessage with a request id: the record look-up, the locking read, the message and
    // the conversation written in one statement, the record.
    let (sent, cost) = counted(&app, alice.send(&c.id, "hello")).await;
    sent.expect("send");
    eprintln!("{db:?}: SendMessage ran {cost} statements");
    assert_eq!(cost, 4, "{db:?}: SendMessage");

    // A request id recorded before bob's deactivation is not replayed to him after it.
    let repeat = pb::SendMessageRequest {
        conversation_id: c.id.clone(),
        body: "once".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    bob.conv()
        .send_message(bob.req(repeat.clone()))
        .await
        .expect("bob sends");
    app.service(TENANT)
        .deactivate_user("bob")
        .await
        .expect("deactivate bob");
    let before = alice.snapshot(&c.id).await;
    let refused = bob
        .conv()
        .send_message(bob.req(repeat))
        .await
        .expect_err("bob is deactivated");
    assert_error(
        &refused,
        Code::FailedPrecondition,
        ErrorReason::UserDeactivated,
    );
    let refused = bob
        .send(&c.id, "again")
        .await
        .expect_err("bob is deactivated");
    assert_error(
        &refused,
        Code::FailedPrecondition,
        ErrorReason::UserDeactivated,
    );
    let missing = uuid::Uuid::now_v7().to_string();
    let refused = bob
        .send(&missing, "x")
        .await
        .expect_err("bob is deactivated");
    assert_error(
        &refused,
        Code::FailedPrecondition,
        ErrorReason::UserDeactivated,
    );
    let refused = app
        .service_as(TENANT, "bob")
        .add_users(&c.id, &["carol"])
        .await
        .expect_err("acting for a deactivated user");
    assert_error(
        &refused,
        Code::FailedPrecondition,
        ErrorReason::UserDeactivated,
    );
    let refused = app
        .service_as(TENANT, "nobody-at-all")
        .send(&c.id, "x")
        .await
        .expect_err("acting for an unknown user");
    assert_error(&refused, Code::NotFound, ErrorReason::UserNotFound);
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");

    // A newcomer's first call, a mutation refused by the conversation, still adds them to the
    // directory.
    let erin = app.user(TENANT, "erin-newcomer");
    let refused = erin.send(&c.id, "hi").await.expect_err("not a participant");
    assert_error(
        &refused,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");
    let entry = app
        .service(TENANT)
        .get_user("erin-newcomer")
        .await
        .expect("the first call added erin to the directory");
    assert_eq!(entry.id, "erin-newcomer");
}

both_dbs!(
    mutations_read_the_caller_in_the_locking_statement,
    reads_of_one_conversation_read_the_caller_in_one_statement,
    adding_users_costs_the_same_at_any_size,
    adding_groups_costs_the_same_at_any_size,
    a_group_too_large_for_one_statement,
    a_request_id_costs_a_look_up_and_one_record,
    upserting_a_user_is_one_statement,
);
