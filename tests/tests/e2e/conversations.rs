//! ConversationService: create (GROUP and DIRECT), get, list, archive/unarchive/close, send.

use parley_tests::*;
use pb::{
    conversation::{Kind as ConvKind, State as ConvState},
    event::Type as EventType,
    participant::{Role, State as PState},
    policy::{History, Permission},
};
use tonic::Code;

fn sorted_ids(conversations: &[pb::Conversation]) -> Vec<String> {
    let mut ids: Vec<String> = conversations.iter().map(|c| c.id.clone()).collect();
    ids.sort();
    ids
}

async fn create_group_with_defaults(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group("Launch", &["bob", "carol"])
        .await
        .expect("create");

    let uuid = uuid::Uuid::parse_str(&c.id).expect("the id is a UUID");
    assert_eq!(uuid.get_version_num(), 7, "ids are UUIDv7");
    assert_eq!(c.kind(), ConvKind::Group);
    assert_eq!(c.title, "Launch");
    assert_eq!(c.owner_id, "alice");
    assert_eq!(c.state(), ConvState::Active);
    assert_eq!(c.participant_count, 3);
    assert!(c.first_message_time.is_none());
    assert!(c.create_time.is_some() && c.update_time.is_some());
    assert!(!c.etag.is_empty());
    let policy = c.policy.expect("the policy is returned");
    assert_eq!(policy.add_internal(), Permission::Participants);
    assert_eq!(policy.add_external(), Permission::Owner);
    assert_eq!(policy.remove(), Permission::Owner);
    assert_eq!(policy.lock_external_roster_on_first_message, Some(true));
    assert_eq!(policy.new_participant_history(), History::Full);
    assert_eq!(policy.max_participants, 10_000);

    // Every participant reads the same conversation.
    for reader in ["alice", "bob", "carol"] {
        let got = app
            .user(TENANT, reader)
            .get(&c.id)
            .await
            .expect("GetConversation");
        assert_eq!(
            got, c,
            "GetConversation as {reader} differs from what CreateConversation returned"
        );
    }

    let participants = alice.participants(&c.id).await.expect("participants");
    assert_eq!(participants.len(), 3);
    for p in &participants {
        assert_eq!(p.conversation_id, c.id);
        assert_eq!(p.state(), PState::Active);
        assert_eq!(p.kind(), pb::participant::Kind::Internal);
        assert_eq!(p.history_from, 1);
        assert!(p.join_time.is_some());
        let role = if p.user_id == "alice" {
            Role::Owner
        } else {
            Role::Member
        };
        assert_eq!(p.role(), role, "{}", p.user_id);
    }

    let events = alice.events(&c.id).await.expect("events");
    assert_eq!(events[0].seq, 1);
    assert_eq!(events[0].r#type(), EventType::ConversationCreated);
    assert_eq!(events[0].actor_id, "alice");
    assert_eq!(events[0].conversation_id, c.id);
}

async fn create_group_with_a_policy(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let policy = pb::Policy {
        add_internal: Permission::Owner as i32,
        add_external: Permission::Participants as i32,
        remove: Permission::Admins as i32,
        lock_external_roster_on_first_message: Some(false),
        new_participant_history: History::SinceJoin as i32,
        max_participants: 2,
    };
    let c = alice
        .create_group_with("p", &["ext1"], Some(policy))
        .await
        .expect("create");
    assert_eq!(c.policy, Some(policy));
    assert_eq!(c.participant_count, 2);
    let external = alice
        .participant(&c.id, "ext1")
        .await
        .expect("GetParticipant");
    assert_eq!(
        external.kind(),
        pb::participant::Kind::External,
        "the kind comes from the directory"
    );

    // An untitled group is fine.
    let untitled = alice.create_group("", &["bob"]).await.expect("untitled");
    assert_eq!(untitled.title, "");
}

async fn create_rejects_bad_rosters_and_policies(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let many = seed_many(&app, "m", 10).await;
    let many: Vec<&str> = many.iter().map(String::as_str).collect();

    expect_err(
        alice.create_group("x", &["bob", "nobody"]).await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    expect_err(
        alice.create_group("x", &["bob", "erin"]).await,
        Code::FailedPrecondition,
        ErrorReason::UserDeactivated,
    );
    expect_err(
        alice.create_group("x", &many).await,
        Code::InvalidArgument,
        ErrorReason::TooManyInitialParticipants,
    );
    for (field, policy) in [
        (
            "max_participants",
            pb::Policy {
                max_participants: 10_001,
                ..Default::default()
            },
        ),
        (
            "max_participants",
            pb::Policy {
                max_participants: 1,
                ..Default::default()
            },
        ),
        (
            "max_participants",
            pb::Policy {
                max_participants: -3,
                ..Default::default()
            },
        ),
        (
            "remove",
            pb::Policy {
                remove: Permission::Participants as i32,
                ..Default::default()
            },
        ),
    ] {
        expect_invalid(
            alice.create_group_with("x", &["bob"], Some(policy)).await,
            field,
        );
    }
    assert!(
        alice.list_conversations().await.expect("list").is_empty(),
        "nothing was created"
    );
    assert!(
        app.user(TENANT, "bob")
            .list_conversations()
            .await
            .expect("list")
            .is_empty()
    );

    // Ten people, the creator included, is the limit.
    let c = alice
        .create_group("ten", &many[..9])
        .await
        .expect("ten people");
    assert_eq!(c.participant_count, 10);
    // Duplicates collapse and the creator in participant_ids is ignored.
    let c = alice
        .create_group("dups", &["bob", "bob", "alice", "carol", "carol"])
        .await
        .expect("duplicates");
    assert_eq!(c.participant_count, 3);
    assert_eq!(
        alice.active_ids(&c.id).await.expect("roster"),
        vec!["alice", "bob", "carol"]
    );
    // The raw list is bounded before it is de-duplicated (SPEC §4 "Bounds"): ten people, but
    // twelve ids, duplicates and the creator counted.
    let mut with_dups: Vec<&str> = many[..9].to_vec();
    with_dups.extend(["alice", many[0], many[8]]);
    expect_err(
        alice.create_group("ten again", &with_dups).await,
        Code::InvalidArgument,
        ErrorReason::TooManyInitialParticipants,
    );
}

async fn direct_conversations(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");

    let d = alice.create_direct("bob").await.expect("create DIRECT");
    assert_eq!(d.kind(), ConvKind::Direct);
    assert_eq!(d.participant_count, 2);
    assert_eq!(d.owner_id, "alice");
    assert_eq!(
        alice.active_ids(&d.id).await.expect("roster"),
        vec!["alice", "bob"]
    );

    // The existing one comes back, whoever asks.
    assert_eq!(alice.create_direct("bob").await.expect("again").id, d.id);
    assert_eq!(bob.create_direct("alice").await.expect("from bob").id, d.id);
    let with_carol = alice.create_direct("carol").await.expect("another pair");
    assert_ne!(with_carol.id, d.id);
    assert_eq!(alice.list_conversations().await.expect("list").len(), 2);

    // Exactly one other person, no title.
    let direct = |others: &[&str], title: &str| pb::CreateConversationRequest {
        request_id: request_id(),
        kind: ConvKind::Direct as i32,
        title: title.to_owned(),
        participant_ids: others.iter().map(|s| (*s).to_owned()).collect(),
        policy: None,
    };
    expect_invalid(
        alice.create(direct(&["bob", "carol"], "")).await,
        "participant_ids",
    );
    expect_invalid(alice.create(direct(&[], "")).await, "participant_ids");
    expect_invalid(
        alice.create(direct(&["alice"], "")).await,
        "participant_ids",
    );
    expect_invalid(alice.create(direct(&["dave"], "Hello")).await, "title");
    expect_err(
        alice.create(direct(&["nobody"], "")).await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    expect_err(
        alice.create(direct(&["erin"], "")).await,
        Code::FailedPrecondition,
        ErrorReason::UserDeactivated,
    );
    assert_eq!(
        alice.list_conversations().await.expect("list").len(),
        2,
        "nothing was created"
    );

    // The roster never changes.
    let before = alice.snapshot(&d.id).await;
    expect_err(
        alice.add_users(&d.id, &["carol"]).await,
        Code::FailedPrecondition,
        ErrorReason::UnsupportedForDirect,
    );
    expect_err(
        alice.remove(&d.id, "bob").await,
        Code::FailedPrecondition,
        ErrorReason::UnsupportedForDirect,
    );
    expect_err(
        app.service(TENANT).add_users(&d.id, &["carol"]).await,
        Code::FailedPrecondition,
        ErrorReason::UnsupportedForDirect,
    );
    assert_eq!(alice.snapshot(&d.id).await, before, "nothing was written");

    // But both may talk.
    bob.send(&d.id, "hi alice").await.expect("bob sends");
    alice.send(&d.id, "hi bob").await.expect("alice sends");
}

async fn get_requires_participation(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let c = app
        .user(TENANT, "alice")
        .create_group("t", &["bob"])
        .await
        .expect("create");
    let carol = app.user(TENANT, "carol");
    expect_err(
        carol.get(&c.id).await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    expect_err(
        carol.send(&c.id, "let me in").await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    expect_err(
        carol.timeline(&c.id).await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    expect_err(
        carol.participants(&c.id).await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    expect_err(
        carol.archive(&c.id).await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    expect_err(
        app.external(TENANT, "ext1").get(&c.id).await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    expect_err(
        app.user(OTHER_TENANT, "mallory").get(&c.id).await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );
}

async fn list_conversations_of_the_caller(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c1 = alice.create_group("1", &["bob"]).await.expect("c1");
    let c2 = alice
        .create_group("2", &["bob", "carol"])
        .await
        .expect("c2");
    let c3 = alice.create_group("3", &["carol"]).await.expect("c3");
    let d = bob.create_direct("dave").await.expect("d");

    assert_eq!(
        sorted_ids(&alice.list_conversations().await.expect("alice")),
        sorted_ids(&[c1.clone(), c2.clone(), c3.clone()])
    );
    assert_eq!(
        sorted_ids(&bob.list_conversations().await.expect("bob")),
        sorted_ids(&[c1.clone(), c2.clone(), d.clone()])
    );
    assert!(
        app.user(TENANT, "frank")
            .list_conversations()
            .await
            .expect("frank")
            .is_empty()
    );

    // Paging one at a time visits each exactly once.
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let msg = pb::ListConversationsRequest {
            page_size: 1,
            page_token: token.clone(),
            include_removed: false,
        };
        let page = alice
            .conv()
            .list_conversations(alice.req(msg))
            .await
            .expect("page")
            .into_inner();
        assert!(page.conversations.len() <= 1);
        seen.extend(page.conversations);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert!(token.is_empty(), "paging ends");
    assert_eq!(seen.len(), 3);
    assert_eq!(
        sorted_ids(&seen),
        sorted_ids(&[c1.clone(), c2.clone(), c3.clone()])
    );
    // Newest first.
    assert_eq!(
        seen.iter().map(|c| c.title.as_str()).collect::<Vec<_>>(),
        vec!["3", "2", "1"]
    );

    // A removed participant no longer lists it.
    alice.remove(&c2.id, "bob").await.expect("remove bob");
    assert_eq!(
        sorted_ids(&bob.list_conversations().await.expect("bob")),
        sorted_ids(&[c1, d])
    );
}

async fn archive_unarchive_close(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice
        .create_group("lifecycle", &["bob", "carol"])
        .await
        .expect("create");
    let id = c.id.as_str();

    // Members may not.
    let before = alice.snapshot(id).await;
    expect_err(
        bob.archive(id).await,
        Code::PermissionDenied,
        ErrorReason::NoPermission,
    );
    expect_err(
        bob.close(id).await,
        Code::PermissionDenied,
        ErrorReason::NoPermission,
    );
    assert_eq!(alice.snapshot(id).await, before, "nothing was written");

    let archived = alice.archive(id).await.expect("archive");
    assert_eq!(archived.state(), ConvState::Archived);
    assert_ne!(
        archived.etag, c.etag,
        "the etag changes with the conversation"
    );
    let last = alice
        .events(id)
        .await
        .expect("events")
        .pop()
        .expect("an event");
    assert_eq!(
        (last.r#type(), last.actor_id.as_str()),
        (EventType::ConversationArchived, "alice")
    );

    // Read-only while archived, and still readable.
    let before = alice.snapshot(id).await;
    assert_eq!(before.conversation.state(), ConvState::Archived);
    expect_err(
        bob.send(id, "hello?").await,
        Code::FailedPrecondition,
        ErrorReason::ConversationArchived,
    );
    expect_err(
        alice.add_users(id, &["dave"]).await,
        Code::FailedPrecondition,
        ErrorReason::ConversationArchived,
    );
    expect_err(
        alice.remove(id, "bob").await,
        Code::FailedPrecondition,
        ErrorReason::ConversationArchived,
    );
    expect_err(
        bob.unarchive(id).await,
        Code::PermissionDenied,
        ErrorReason::NoPermission,
    );
    bob.timeline(id).await.expect("bob still reads");
    assert_eq!(alice.snapshot(id).await, before, "nothing was written");

    let unarchived = alice.unarchive(id).await.expect("unarchive");
    assert_eq!(unarchived.state(), ConvState::Active);
    let last = alice
        .events(id)
        .await
        .expect("events")
        .pop()
        .expect("an event");
    assert_eq!(last.r#type(), EventType::ConversationUnarchived);
    bob.send(id, "back again")
        .await
        .expect("send after unarchive");

    // A service principal (the tenant's admin) may archive too.
    let by_service = app
        .service(TENANT)
        .archive(id)
        .await
        .expect("service archives");
    assert_eq!(by_service.state(), ConvState::Archived);
    app.service(TENANT)
        .unarchive(id)
        .await
        .expect("service unarchives");

    let closed = alice.close(id).await.expect("close");
    assert_eq!(closed.state(), ConvState::Closed);
    let last = alice
        .events(id)
        .await
        .expect("events")
        .pop()
        .expect("an event");
    assert_eq!(last.r#type(), EventType::ConversationClosed);

    let before = alice.snapshot(id).await;
    expect_err(
        bob.send(id, "anyone?").await,
        Code::FailedPrecondition,
        ErrorReason::ConversationClosed,
    );
    expect_err(
        alice.send(id, "anyone?").await,
        Code::FailedPrecondition,
        ErrorReason::ConversationClosed,
    );
    expect_err(
        alice.add_users(id, &["dave"]).await,
        Code::FailedPrecondition,
        ErrorReason::ConversationClosed,
    );
    expect_err(
        alice.remove(id, "bob").await,
        Code::FailedPrecondition,
        ErrorReason::ConversationClosed,
    );
    expect_err(
        alice.unarchive(id).await,
        Code::FailedPrecondition,
        ErrorReason::ConversationClosed,
    );
    bob.messages(id).await.expect("still readable");
    assert_eq!(alice.snapshot(id).await, before, "nothing was written");

    // Closing an archived conversation works too.
    let c2 = alice
        .create_group("second", &["bob"])
        .await
        .expect("create");
    alice.archive(&c2.id).await.expect("archive");
    assert_eq!(
        alice.close(&c2.id).await.expect("close archived").state(),
        ConvState::Closed
    );
}

async fn send_message(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice.create_group("chat", &["bob"]).await.expect("create");
    let id = c.id.as_str();
    let created_seq = alice
        .timeline(id)
        .await
        .expect("timeline")
        .last()
        .expect("an item")
        .seq;

    let m1 = bob.send(id, "first!").await.expect("send");
    assert!(!m1.id.is_empty());
    assert_eq!(m1.conversation_id, c.id);
    assert_eq!(m1.sender_id, "bob");
    assert_eq!(m1.body, "first!");
    assert_eq!(m1.seq, created_seq + 1);
    assert!(m1.create_time.is_some());

    let after_first = alice.get(id).await.expect("get");
    assert!(
        after_first.first_message_time.is_some(),
        "the first message sets first_message_time"
    );
    let m2 = alice.send(id, "second").await.expect("send");
    assert_eq!(m2.seq, m1.seq + 1);
    let after_second = alice.get(id).await.expect("get");
    assert_eq!(
        after_second.first_message_time, after_first.first_message_time,
        "only the first one sets it"
    );

    let messages = bob.messages(id).await.expect("messages");
    assert_eq!(messages, vec![m1, m2]);

    // A service acting as a participant posts as them.
    let via = app
        .service_as(TENANT, "bob")
        .send(id, "via service")
        .await
        .expect("send via service");
    assert_eq!(via.sender_id, "bob");
    expect_err(
        app.service_as(TENANT, "carol").send(id, "hi").await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );

    // A service as its tenant's administrator has no seat to post from (rule 25); its first
    // message would also have locked the external roster.
    let fresh = alice.create_group("quiet", &["bob"]).await.expect("create");
    let before = alice.snapshot(&fresh.id).await;
    expect_err(
        app.service(TENANT).send(&fresh.id, "from nobody").await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    assert_eq!(
        alice.snapshot(&fresh.id).await,
        before,
        "nothing was written"
    );
    assert!(before.conversation.first_message_time.is_none());
}

both_dbs!(
    create_group_with_defaults,
    create_group_with_a_policy,
    create_rejects_bad_rosters_and_policies,
    direct_conversations,
    get_requires_participation,
    list_conversations_of_the_caller,
    archive_unarchive_close,
    send_message,
);
