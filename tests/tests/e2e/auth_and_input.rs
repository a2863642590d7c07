//! Tokens, act-as, service principals, tenant isolation, health and reflection.

use parley_tests::*;
use tonic::Code;

async fn get_conversation_with(
    caller: &Caller,
    id: &str,
) -> Result<pb::Conversation, tonic::Status> {
    caller.get(id).await
}

async fn health_needs_no_token(db: Db) {
    let app = spawn_app(db).await;
    let response = app
        .health()
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Health/Check without a token")
        .into_inner();
    assert_eq!(
        response.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

async fn reflection_lists_the_services(db: Db) {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn_app(db).await;
    let mut client = ServerReflectionClient::new(app.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .expect("reflection without a token")
        .into_inner();
    let response = stream
        .message()
        .await
        .expect("a reflection answer")
        .expect("one message");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "parley.v1.ConversationService",
        "parley.v1.ParticipantService",
        "parley.v1.DirectoryService",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

async fn tokens_are_checked(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let conversation = app
        .user(TENANT, "alice")
        .create_group("t", &["bob"])
        .await
        .expect("create");
    let id = conversation.id.as_str();

    let missing = app.anonymous();
    expect_err(
        get_conversation_with(&missing, id).await,
        Code::Unauthenticated,
        ErrorReason::TokenMissing,
    );
    expect_err(
        missing.list_conversations().await,
        Code::Unauthenticated,
        ErrorReason::TokenMissing,
    );
    expect_err(
        missing.get_user("bob").await,
        Code::Unauthenticated,
        ErrorReason::TokenMissing,
    );
    expect_err(
        missing.add_users(id, &["carol"]).await,
        Code::Unauthenticated,
        ErrorReason::TokenMissing,
    );

    for (label, caller) in [
        ("garbage", app.with_token("not-a-jwt")),
        ("three garbage parts", app.with_token("aaa.bbb.ccc")),
        ("forged", app.with_token(app.forged_token(TENANT, "alice"))),
    ] {
        let status = get_conversation_with(&caller, id).await.expect_err(label);
        assert_error(&status, Code::Unauthenticated, ErrorReason::TokenInvalid);
        expect_err(
            caller.add_users(id, &["carol"]).await,
            Code::Unauthenticated,
            ErrorReason::TokenInvalid,
        );
    }

    // Not a bearer header at all.
    let mut request = tonic::Request::new(pb::GetConversationRequest { id: id.to_owned() });
    request.metadata_mut().insert(
        "authorization",
        "Basic YWxpY2U6c2VjcmV0".parse().expect("ascii"),
    );
    let status = app
        .user(TENANT, "alice")
        .conv()
        .get_conversation(request)
        .await
        .expect_err("Basic auth");
    assert_error(&status, Code::Unauthenticated, ErrorReason::TokenInvalid);

    let expired = app.with_token(app.expired_token(TENANT, "alice"));
    expect_err(
        get_conversation_with(&expired, id).await,
        Code::Unauthenticated,
        ErrorReason::TokenExpired,
    );
    expect_err(
        expired.send(id, "hi").await,
        Code::Unauthenticated,
        ErrorReason::TokenExpired,
    );

    // None of the rejected calls wrote anything.
    let alice = app.user(TENANT, "alice");
    assert_eq!(
        alice.active_ids(id).await.expect("roster"),
        vec!["alice", "bob"]
    );
    assert!(alice.messages(id).await.expect("messages").is_empty());
}

async fn service_principals_act_as_users_or_as_admin(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;

    // A service cannot create a conversation as itself…
    let service = app.service(TENANT);
    let as_itself = service.create_group("svc", &["bob"]).await;
    expect_err(as_itself, Code::PermissionDenied, ErrorReason::NoPermission);
    // …but can as a user, who becomes the owner.
    let as_alice = app.service_as(TENANT, "alice");
    let conversation = as_alice
        .create_group("by service", &["bob"])
        .await
        .expect("create as alice");
    assert_eq!(conversation.owner_id, "alice");
    let id = conversation.id.as_str();
    assert_eq!(
        app.user(TENANT, "alice")
            .get(id)
            .await
            .expect("alice reads it")
            .owner_id,
        "alice"
    );

    // Judged as that user: carol is not a participant.
    expect_err(
        app.service_as(TENANT, "carol").get(id).await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    // Unknown and foreign users to act as.
    expect_err(
        app.service_as(TENANT, "nobody").get(id).await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    expect_err(
        app.service_as(TENANT, "mallory").get(id).await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    expect_err(
        app.service_as(TENANT, "nobody")
            .create_group("x", &["bob"])
            .await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );

    // Acting as bob (a member) the default policy forbids adding externals.
    let as_bob = app.service_as(TENANT, "bob");
    expect_err(
        as_bob.add_users(id, &["ext1"]).await,
        Code::PermissionDenied,
        ErrorReason::NoExternalInvitePermission,
    );
    let sent = as_bob
        .send(id, "from bob via a service")
        .await
        .expect("send as bob");
    assert_eq!(sent.sender_id, "bob");

    // Without act-as, the service is the tenant's administrator: policy checks pass.
    service.get(id).await.expect("admin reads");
    let conversation2 = app
        .user(TENANT, "alice")
        .create_group("second", &["bob"])
        .await
        .expect("create");
    let added = service
        .add_users(&conversation2.id, &["ext1"])
        .await
        .expect("admin adds an external");
    assert_eq!(added.results.len(), 1);
    assert_eq!(
        added.results[0].outcome(),
        pb::add_participants_result::Outcome::Added
    );
    let archived = service
        .archive(&conversation2.id)
        .await
        .expect("admin archives");
    assert_eq!(archived.state(), pb::conversation::State::Archived);

    // An act-as header from a user principal does not let alice become bob.
    let alice_as_bob = app.user(TENANT, "alice").acting_as("bob");
    let before = as_bob.snapshot(id).await;
    expect_err(
        alice_as_bob.send(id, "who am I").await,
        Code::PermissionDenied,
        ErrorReason::NoPermission,
    );
    assert_eq!(as_bob.snapshot(id).await, before, "nothing was written");
}

async fn other_tenants_see_nothing(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let conversation = alice
        .create_group("secret", &["bob"])
        .await
        .expect("create");
    let id = conversation.id.as_str();
    let before = alice.snapshot(id).await;

    let mallory = app.user(OTHER_TENANT, "mallory");
    let nf = |r: Result<(), tonic::Status>| {
        expect_err(r, Code::NotFound, ErrorReason::ConversationNotFound);
    };
    nf(mallory.get(id).await.map(|_| ()));
    nf(mallory.send(id, "hello").await.map(|_| ()));
    nf(mallory.add_users(id, &["mallory"]).await.map(|_| ()));
    nf(mallory.remove(id, "bob").await.map(|_| ()));
    nf(mallory.participants(id).await.map(|_| ()));
    nf(mallory.participant(id, "alice").await.map(|_| ()));
    nf(mallory.events(id).await.map(|_| ()));
    nf(mallory.timeline(id).await.map(|_| ()));
    nf(mallory.messages(id).await.map(|_| ()));
    nf(mallory.archive(id).await.map(|_| ()));
    nf(mallory.close(id).await.map(|_| ()));
    let other_service = app.service(OTHER_TENANT);
    nf(other_service.get(id).await.map(|_| ()));
    nf(other_service.add_users(id, &["mallory"]).await.map(|_| ()));
    assert!(mallory.list_conversations().await.expect("list").is_empty());

    // Users of another tenant cannot be put into a conversation.
    expect_err(
        alice.create_group("x", &["mallory"]).await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    expect_err(
        alice.add_users(id, &["mallory"]).await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    // A same-named user in another tenant is a different person.
    seed_users(&app, OTHER_TENANT, &[("bob", Kind::Internal)]).await;
    nf(app.user(OTHER_TENANT, "bob").get(id).await.map(|_| ()));
    assert_eq!(alice.snapshot(id).await, before, "nothing was written");
}

/// Ids are values wherever they go, including into the text of a statement (on PostgreSQL a
/// write's first statements are sent as SQL text with their values written in,
/// `pg::PgTx::each_opening`):
/// a tenant and users whose ids hold quotes, backslashes and SQL work as any other, and a
/// tenant whose id is another's with a piece cut off is another tenant.
async fn ids_holding_quotes_and_backslashes_are_only_values(db: Db) {
    let app = spawn_app(db).await;
    let (tenant, cut) = (r"o'brien\';--", r"o'brien\");
    let (alice, bob, carol) = (
        r"al'ice\",
        r"b\'ob",
        "carol');DROP/**/TABLE/**/participants;--",
    );
    seed_users(
        &app,
        tenant,
        &[
            (alice, Kind::Internal),
            (bob, Kind::Internal),
            (carol, Kind::Internal),
        ],
    )
    .await;
    let owner = app.user(tenant, alice);
    let conversation = owner.create_group("quotes", &[bob]).await.expect("create");
    let id = conversation.id.as_str();
    owner.add_users(id, &[carol]).await.expect("add");
    owner.remove(id, bob).await.expect("remove");
    let active: Vec<String> = owner
        .participants_in(id, pb::participant::State::Active)
        .await
        .expect("list")
        .into_iter()
        .map(|p| p.user_id)
        .collect();
    let mut expected = vec![alice.to_owned(), carol.to_owned()];
    expected.sort();
    assert_eq!(active, expected);
    // Each of them writes as themselves, the statement's first value a quoted one.
    app.user(tenant, carol)
        .send(id, "it's \\ fine")
        .await
        .expect("carol sends");
    // A tenant whose id is this one's cut short before its quote is another tenant.
    seed_users(&app, cut, &[(alice, Kind::Internal), (bob, Kind::Internal)]).await;
    let before = owner.snapshot(id).await;
    expect_err(
        app.user(cut, alice).add_users(id, &[bob]).await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );
    expect_err(
        app.user(cut, alice).remove(id, carol).await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );
    assert_eq!(owner.snapshot(id).await, before, "nothing was written");
}

both_dbs!(
    ids_holding_quotes_and_backslashes_are_only_values,
    health_needs_no_token,
    reflection_lists_the_services,
    tokens_are_checked,
    service_principals_act_as_users_or_as_admin,
    other_tenants_see_nothing,
);
