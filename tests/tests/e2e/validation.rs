//! Input validation: malformed ids, field lengths, unknown enum values, page sizes and page
//! tokens (garbage, tampered, foreign).

use parley_tests::*;
use tonic::Code;

async fn events_page(
    caller: &Caller,
    conversation_id: &str,
    order: i32,
    page_size: i32,
    page_token: &str,
) -> Result<pb::ListEventsResponse, tonic::Status> {
    let msg = pb::ListEventsRequest {
        conversation_id: conversation_id.to_owned(),
        order,
        page_size,
        page_token: page_token.to_owned(),
    };
    Ok(caller
        .part()
        .list_events(caller.req(msg))
        .await?
        .into_inner())
}

async fn conversations_page(
    caller: &Caller,
    page_size: i32,
    page_token: &str,
) -> Result<pb::ListConversationsResponse, tonic::Status> {
    let msg = pb::ListConversationsRequest {
        page_size,
        page_token: page_token.to_owned(),
        include_removed: false,
    };
    Ok(caller
        .conv()
        .list_conversations(caller.req(msg))
        .await?
        .into_inner())
}

async fn timeline_page(
    caller: &Caller,
    conversation_id: &str,
    order: i32,
    page_size: i32,
) -> Result<pb::ListTimelineResponse, tonic::Status> {
    let msg = pb::ListTimelineRequest {
        conversation_id: conversation_id.to_owned(),
        order,
        page_size,
        page_token: String::new(),
    };
    Ok(caller
        .conv()
        .list_timeline(caller.req(msg))
        .await?
        .into_inner())
}

const OLDEST: i32 = pb::Order::OldestFirst as i32;

async fn malformed_ids_are_invalid(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let conversation = alice.create_group("t", &["bob"]).await.expect("create");
    let before = alice.snapshot(&conversation.id).await;

    expect_invalid(alice.get("").await, "id");
    expect_invalid(alice.get("not-a-uuid").await, "id");
    expect_invalid(alice.archive("123").await, "id");
    expect_invalid(alice.send("", "hi").await, "conversation_id");
    expect_invalid(alice.send("nope", "hi").await, "conversation_id");
    expect_invalid(alice.add_users("nope", &["carol"]).await, "conversation_id");
    expect_invalid(alice.remove("nope", "bob").await, "conversation_id");
    expect_invalid(alice.events("nope").await, "conversation_id");
    expect_invalid(alice.timeline("").await, "conversation_id");
    expect_invalid(alice.messages("x").await, "conversation_id");
    expect_invalid(alice.participants("x").await, "conversation_id");

    // A well-formed id nobody has.
    let unknown = uuid::Uuid::now_v7().to_string();
    expect_err(
        alice.get(&unknown).await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );
    expect_err(
        alice.send(&unknown, "hi").await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );
    expect_err(
        alice.add_users(&unknown, &["carol"]).await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );

    // User ids: 1..128 characters, no whitespace or control characters.
    let id = conversation.id.as_str();
    for bad in ["", "has space", "new\nline", &"u".repeat(129)] {
        let status = alice
            .add_users(id, &[bad])
            .await
            .expect_err("a bad user id");
        assert_error(&status, Code::InvalidArgument, ErrorReason::InvalidField);
        let status = alice.remove(id, bad).await.expect_err("a bad user id");
        assert_invalid_field(&status, "user_id");
    }
    expect_err(
        alice.create_group("x", &["bad id"]).await,
        Code::InvalidArgument,
        ErrorReason::InvalidField,
    );
    assert_eq!(alice.snapshot(id).await, before, "nothing was written");
}

async fn field_lengths_are_enforced(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");

    expect_invalid(
        alice.create_group(&"t".repeat(201), &["bob"]).await,
        "title",
    );
    assert!(
        alice.list_conversations().await.expect("list").is_empty(),
        "nothing was created"
    );
    let conversation = alice
        .create_group(&"t".repeat(200), &["bob"])
        .await
        .expect("a 200-char title");
    assert_eq!(conversation.title.chars().count(), 200);
    // Characters, not bytes.
    alice
        .create_group(&"é".repeat(200), &["bob"])
        .await
        .expect("200 two-byte characters");

    let id = conversation.id.as_str();
    let before = alice.snapshot(id).await;
    expect_invalid(alice.send(id, "").await, "body");
    expect_invalid(alice.send(id, &"b".repeat(4001)).await, "body");
    assert_eq!(alice.snapshot(id).await, before, "nothing was written");
    let message = alice
        .send(id, &"b".repeat(4000))
        .await
        .expect("a 4000-char body");
    assert_eq!(message.body.len(), 4000);
    alice
        .send(id, &"ü".repeat(4000))
        .await
        .expect("4000 two-byte characters");
}

async fn unknown_enum_values_are_invalid(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let conversation = alice.create_group("t", &["bob"]).await.expect("create");
    let id = conversation.id.as_str();

    let mut request = pb::CreateConversationRequest {
        request_id: request_id(),
        kind: 99,
        title: "x".to_owned(),
        participant_ids: vec!["bob".to_owned()],
        policy: None,
    };
    expect_invalid(alice.create(request.clone()).await, "kind");
    request.kind = pb::conversation::Kind::Unspecified as i32;
    expect_invalid(alice.create(request.clone()).await, "kind");
    request.kind = pb::conversation::Kind::Group as i32;
    request.policy = Some(pb::Policy {
        add_internal: 99,
        ..Default::default()
    });
    expect_invalid(alice.create(request.clone()).await, "add_internal");
    request.policy = Some(pb::Policy {
        new_participant_history: 7,
        ..Default::default()
    });
    expect_invalid(
        alice.create(request.clone()).await,
        "new_participant_history",
    );
    assert_eq!(
        alice.list_conversations().await.expect("list").len(),
        1,
        "nothing was created"
    );

    expect_invalid(events_page(&alice, id, 42, 0, "").await, "order");
    expect_invalid(timeline_page(&alice, id, 42, 0).await, "order");
    let msg = pb::ListMessagesRequest {
        conversation_id: id.to_owned(),
        order: 42,
        page_size: 0,
        page_token: String::new(),
    };
    expect_invalid(alice.conv().list_messages(alice.req(msg)).await, "order");
    let msg = pb::ListParticipantsRequest {
        conversation_id: id.to_owned(),
        page_size: 0,
        page_token: String::new(),
        state: 9,
        kind: 0,
    };
    expect_invalid(
        alice.part().list_participants(alice.req(msg)).await,
        "state",
    );
    // ORDER_UNSPECIFIED means oldest first.
    let page = events_page(&alice, id, 0, 0, "")
        .await
        .expect("order unspecified");
    assert_eq!(page.events.first().map(|e| e.seq), Some(1));
}

async fn page_sizes_are_checked(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let conversation = alice.create_group("t", &["bob"]).await.expect("create");
    let id = conversation.id.as_str();
    for i in 0..3 {
        alice.send(id, &format!("m{i}")).await.expect("send");
    }
    expect_invalid(events_page(&alice, id, OLDEST, -1, "").await, "page_size");
    expect_invalid(timeline_page(&alice, id, OLDEST, -5).await, "page_size");
    expect_invalid(conversations_page(&alice, -1, "").await, "page_size");
    let all = timeline_page(&alice, id, OLDEST, 0)
        .await
        .expect("page_size 0");
    assert!(all.items.len() >= 4 && all.next_page_token.is_empty());
    let clamped = timeline_page(&alice, id, OLDEST, 1_000_000)
        .await
        .expect("huge page_size is clamped");
    assert_eq!(clamped.items, all.items);
}

async fn bad_page_tokens_are_invalid(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let a = alice.create_group("a", &["bob"]).await.expect("create a");
    let b = alice.create_group("b", &["bob"]).await.expect("create b");
    for id in [&a.id, &b.id] {
        alice.send(id, "one").await.expect("send");
        alice.send(id, "two").await.expect("send");
    }

    let first = events_page(&alice, &a.id, OLDEST, 1, "")
        .await
        .expect("page 1");
    let token = first.next_page_token.clone();
    assert!(!token.is_empty(), "a next page exists");
    events_page(&alice, &a.id, OLDEST, 1, &token)
        .await
        .expect("the token works where it came from");

    expect_invalid(
        events_page(&alice, &a.id, OLDEST, 1, "garbage").await,
        "page_token",
    );
    expect_invalid(
        events_page(&alice, &a.id, OLDEST, 1, "!!!not base64!!!").await,
        "page_token",
    );
    expect_invalid(
        events_page(&alice, &a.id, OLDEST, 1, &tamper(&token)).await,
        "page_token",
    );
    expect_invalid(
        events_page(&alice, &a.id, OLDEST, 1, &format!("{token}x")).await,
        "page_token",
    );
    expect_invalid(
        events_page(&alice, &b.id, OLDEST, 1, &token).await,
        "page_token",
    );

    // A ListUsers token is not a ListConversations token.
    let service = app.service(TENANT);
    let users = service
        .dir()
        .list_users(service.req(pb::ListUsersRequest {
            page_size: 1,
            page_token: String::new(),
        }))
        .await
        .expect("ListUsers")
        .into_inner();
    assert!(!users.next_page_token.is_empty());
    expect_invalid(
        conversations_page(&alice, 1, &users.next_page_token).await,
        "page_token",
    );

    let conversations = conversations_page(&alice, 1, "")
        .await
        .expect("ListConversations");
    assert!(!conversations.next_page_token.is_empty());
    conversations_page(&alice, 1, &conversations.next_page_token)
        .await
        .expect("its own token works");
    expect_invalid(
        conversations_page(&alice, 1, &tamper(&conversations.next_page_token)).await,
        "page_token",
    );
    expect_invalid(
        events_page(&alice, &a.id, OLDEST, 1, &conversations.next_page_token).await,
        "page_token",
    );

    // A timeline token of one conversation does not page another's timeline.
    let msg = pb::ListTimelineRequest {
        conversation_id: a.id.clone(),
        order: OLDEST,
        page_size: 1,
        page_token: String::new(),
    };
    let timeline = alice
        .conv()
        .list_timeline(alice.req(msg))
        .await
        .expect("timeline")
        .into_inner();
    assert!(!timeline.next_page_token.is_empty());
    let msg = pb::ListTimelineRequest {
        conversation_id: b.id.clone(),
        order: OLDEST,
        page_size: 1,
        page_token: timeline.next_page_token.clone(),
    };
    expect_invalid(
        alice.conv().list_timeline(alice.req(msg)).await,
        "page_token",
    );
}

/// NUL, which PostgreSQL's text cannot hold, is refused as a bad field on both engines, in
/// every free-text field, before anything is written.
async fn nul_characters_are_invalid_fields(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    expect_invalid(alice.create_group("a\0b", &["bob"]).await, "title");
    assert!(
        alice.list_conversations().await.expect("list").is_empty(),
        "nothing was created"
    );
    let conversation = alice.create_group("t", &["bob"]).await.expect("a group");
    let id = conversation.id.as_str();
    let before = alice.snapshot(id).await;
    expect_invalid(alice.send(id, "hello\0").await, "body");
    assert_eq!(alice.snapshot(id).await, before, "nothing was written");
    let sync = app.service(TENANT);
    expect_invalid(
        sync.dir()
            .search_users(sync.req(pb::SearchUsersRequest {
                query: "al\0".into(),
                page_size: 0,
            }))
            .await,
        "query",
    );
    expect_invalid(
        sync.upsert(pb::User {
            id: "nadia".into(),
            display_name: "Na\0dia".into(),
            email: "nadia@example.com".into(),
            kind: pb::user::Kind::Internal as i32,
            ..Default::default()
        })
        .await,
        "display_name",
    );
    let missing = sync
        .get_user("nadia")
        .await
        .expect_err("nadia was not stored");
    assert_error(&missing, Code::NotFound, ErrorReason::UserNotFound);
}

both_dbs!(
    nul_characters_are_invalid_fields,
    malformed_ids_are_invalid,
    field_lengths_are_enforced,
    unknown_enum_values_are_invalid,
    page_sizes_are_checked,
    bad_page_tokens_are_invalid,
);
