//! parley-sdk against a real server, part 1: authentication, access and conversation-level
//! errors. Every error reason the server produces arrives as its own typed `parley_sdk::Error`
//! variant, with its metadata and the original status as its source (the roster and
//! invitation reasons are in `sdk_errors_roster.rs`).

use crate::sdk_support::{assert_status, client_with, group, unwrap_err, user};
use parley_sdk::{
    AddParticipants, Client, Error, ErrorReason, NewConversation, Role, UpdateConversation,
};
use parley_tests::*;
use tonic::Code;

async fn not_a_participant(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let c = group(&user(&app, "alice"), &["bob"]).await;
    let error = unwrap_err(user(&app, "carol").conversations().get(&c.id).await);
    assert_status(&error, Code::PermissionDenied, ErrorReason::NotAParticipant);
    let Error::NotAParticipant {
        conversation_id, ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(conversation_id, &c.id);
    assert_eq!(error.conversation_id(), Some(c.id.as_str()));
}

async fn participant_removed(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let c = group(&alice, &["bob", "carol"]).await;
    alice
        .participants()
        .remove(&c.id, "bob")
        .await
        .expect("remove");
    let error = unwrap_err(
        user(&app, "bob")
            .conversations()
            .send_message(&c.id, "still here?")
            .await,
    );
    assert_status(
        &error,
        Code::PermissionDenied,
        ErrorReason::ParticipantRemoved,
    );
    assert!(
        matches!(&error, Error::ParticipantRemoved { conversation_id, .. } if *conversation_id == c.id)
    );
}

async fn conversation_not_found(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let id = uuid::Uuid::now_v7().to_string();
    let error = unwrap_err(user(&app, "alice").conversations().get(&id).await);
    assert_status(&error, Code::NotFound, ErrorReason::ConversationNotFound);
    assert!(
        matches!(&error, Error::ConversationNotFound { conversation_id, .. } if *conversation_id == id)
    );
    // Another tenant's conversation does not exist either.
    let c = group(&user(&app, "alice"), &["bob"]).await;
    let mallory = client_with(
        &app,
        app.token(OTHER_TENANT, "mallory", Kind::Internal, None),
    );
    let error = unwrap_err(mallory.conversations().archive(&c.id).await);
    assert!(
        matches!(error, Error::ConversationNotFound { .. }),
        "{error:?}"
    );
}

async fn conversation_archived(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let c = group(&alice, &["bob"]).await;
    alice.conversations().archive(&c.id).await.expect("archive");
    let error = unwrap_err(alice.conversations().send_message(&c.id, "hi").await);
    assert_status(
        &error,
        Code::FailedPrecondition,
        ErrorReason::ConversationArchived,
    );
    assert!(
        matches!(&error, Error::ConversationArchived { conversation_id, .. } if *conversation_id == c.id)
    );
}

async fn conversation_closed(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let c = group(&alice, &["bob"]).await;
    alice.conversations().close(&c.id).await.expect("close");
    let error = unwrap_err(
        alice
            .participants()
            .add(AddParticipants::new(&c.id).user("dave"))
            .await,
    );
    assert_status(
        &error,
        Code::FailedPrecondition,
        ErrorReason::ConversationClosed,
    );
    assert!(
        matches!(&error, Error::ConversationClosed { conversation_id, .. } if *conversation_id == c.id)
    );
}

async fn user_deactivated(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let error = unwrap_err(
        alice
            .conversations()
            .create(NewConversation::group(["bob", "erin"]))
            .await,
    );
    assert_status(
        &error,
        Code::FailedPrecondition,
        ErrorReason::UserDeactivated,
    );
    assert!(matches!(&error, Error::UserDeactivated { user_id: Some(u), .. } if u == "erin"));

    let c = group(&alice, &["bob"]).await;
    let error = unwrap_err(
        alice
            .participants()
            .add(AddParticipants::new(&c.id).user("erin"))
            .await,
    );
    assert!(
        matches!(&error, Error::UserDeactivated { invitees, .. } if invitees.len() == 1),
        "{error:?}"
    );
}

async fn too_many_initial_participants(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let others = (0..10).map(|i| format!("u{i}"));
    let error = unwrap_err(
        user(&app, "alice")
            .conversations()
            .create(NewConversation::group(others))
            .await,
    );
    assert_status(
        &error,
        Code::InvalidArgument,
        ErrorReason::TooManyInitialParticipants,
    );
    assert!(
        matches!(
            error,
            Error::TooManyInitialParticipants { max: Some(10), .. }
        ),
        "{error:?}"
    );
}

async fn etag_mismatch(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let c = group(&alice, &["bob"]).await;
    let updated = alice
        .conversations()
        .update(UpdateConversation::of(&c).title("new"))
        .await
        .expect("update");
    assert_eq!(updated.title, "new");
    assert_ne!(updated.etag, c.etag);
    let error = unwrap_err(
        alice
            .conversations()
            .update(UpdateConversation::of(&c).title("stale"))
            .await,
    );
    assert_status(&error, Code::Aborted, ErrorReason::EtagMismatch);
    assert!(matches!(error, Error::EtagMismatch { .. }));
    assert_eq!(
        alice.conversations().get(&c.id).await.expect("get").title,
        "new"
    );
}

async fn request_id_reused(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let id = uuid::Uuid::new_v4().to_string();
    let create = |title: &str| {
        NewConversation::group(["bob"])
            .title(title)
            .request_id(id.clone())
    };
    let first = alice
        .conversations()
        .create(create("a"))
        .await
        .expect("create");
    let again = alice
        .conversations()
        .create(create("a"))
        .await
        .expect("repeat");
    assert_eq!(again, first, "a repeated request id gets the first reply");
    let error = unwrap_err(alice.conversations().create(create("b")).await);
    assert_status(&error, Code::InvalidArgument, ErrorReason::RequestIdReused);
    assert!(
        matches!(&error, Error::RequestIdReused { request_id, .. } if *request_id == id),
        "{error:?}"
    );
    // The same through a handle's request id.
    let conversations = alice.conversations().with_request_id(id.clone());
    let error = unwrap_err(conversations.archive(&first.id).await);
    assert!(matches!(error, Error::RequestIdReused { .. }), "{error:?}");
}

async fn invalid_field(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let error = unwrap_err(
        alice
            .conversations()
            .create(NewConversation::group(["bob"]).title("x".repeat(201)))
            .await,
    );
    assert_status(&error, Code::InvalidArgument, ErrorReason::InvalidField);
    let Error::InvalidField { violations, .. } = &error else {
        panic!("{error:?}");
    };
    assert!(
        violations.iter().any(|v| v.field == "title"),
        "{violations:?}"
    );
    let error = unwrap_err(alice.conversations().get("not-a-uuid").await);
    assert!(
        error.field_violations().iter().any(|v| v.field == "id"),
        "{error:?}"
    );
}

async fn token_missing(db: Db) {
    let app = spawn_app(db).await;
    let anonymous = Client::builder(format!("http://{}", app.addr))
        .build_with_channel(app.channel())
        .expect("client");
    let error = unwrap_err(anonymous.conversations().list(Default::default()).await);
    assert_status(&error, Code::Unauthenticated, ErrorReason::TokenMissing);
    assert!(matches!(error, Error::TokenMissing { .. }));
}

async fn token_invalid(db: Db) {
    let app = spawn_app(db).await;
    let forged = client_with(&app, app.forged_token(TENANT, "alice"));
    let error = unwrap_err(forged.conversations().list(Default::default()).await);
    assert_status(&error, Code::Unauthenticated, ErrorReason::TokenInvalid);
    assert!(matches!(error, Error::TokenInvalid { .. }));
}

async fn token_expired(db: Db) {
    let app = spawn_app(db).await;
    let expired = client_with(&app, app.expired_token(TENANT, "alice"));
    let error = unwrap_err(expired.conversations().list(Default::default()).await);
    assert_status(&error, Code::Unauthenticated, ErrorReason::TokenExpired);
    assert!(matches!(error, Error::TokenExpired { .. }));
}

async fn no_permission(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let error = unwrap_err(alice.directory().get_user("bob").await);
    assert_status(&error, Code::PermissionDenied, ErrorReason::NoPermission);
    assert!(matches!(error, Error::NoPermission { .. }));
    // A user may not act for another.
    let error = unwrap_err(
        alice
            .act_as("bob")
            .expect("header")
            .conversations()
            .list(Default::default())
            .await,
    );
    assert!(matches!(error, Error::NoPermission { .. }), "{error:?}");
    // Roles are typed too: only the owner sets them.
    let c = group(&alice, &["bob", "carol"]).await;
    let error = unwrap_err(
        user(&app, "bob")
            .participants()
            .set_role(&c.id, "carol", Role::Admin)
            .await,
    );
    assert_eq!(error.code(), Code::PermissionDenied, "{error:?}");
}

both_dbs!(
    not_a_participant,
    participant_removed,
    conversation_not_found,
    conversation_archived,
    conversation_closed,
    user_deactivated,
    too_many_initial_participants,
    etag_mismatch,
    request_id_reused,
    invalid_field,
    token_missing,
    token_invalid,
    token_expired,
    no_permission,
);
