//! parley-sdk against a real server, part 2: the roster and invitation errors, including the
//! per-invitee failures of an atomic AddParticipants batch.

use std::time::Duration;

use crate::sdk_support::{
    active_ids, assert_status, external, group, invite, service, unwrap_err, user,
};
use parley_sdk::{AddParticipants, Error, ErrorReason, NewConversation, PolicyBuilder};
use parley_tests::*;
use tonic::Code;

async fn no_invite_permission(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let policy = PolicyBuilder::new().add_internal(parley_sdk::Permission::Owner);
    let c = alice
        .conversations()
        .create(NewConversation::group(["bob"]).policy(policy))
        .await
        .expect("create");
    let error = unwrap_err(
        user(&app, "bob")
            .participants()
            .add(AddParticipants::new(&c.id).user("dave"))
            .await,
    );
    assert_status(
        &error,
        Code::PermissionDenied,
        ErrorReason::NoInvitePermission,
    );
    let Error::NoInvitePermission {
        conversation_id,
        invitees,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(conversation_id, &c.id);
    assert_eq!(invitees.len(), 1);
    assert_eq!(
        (invitees[0].index, invitees[0].reason),
        (0, Some(ErrorReason::NoInvitePermission))
    );
    assert_eq!(active_ids(&alice, &c.id).await, vec!["alice", "bob"]);
}

async fn no_external_invite_permission(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let c = group(&alice, &["bob"]).await;
    let error = unwrap_err(
        user(&app, "bob")
            .participants()
            .add(AddParticipants::new(&c.id).users(["dave", "ext1", "nobody"]))
            .await,
    );
    assert_status(
        &error,
        Code::PermissionDenied,
        ErrorReason::NoExternalInvitePermission,
    );
    let failures: Vec<(usize, Option<ErrorReason>)> = error
        .invitee_failures()
        .iter()
        .map(|f| (f.index, f.reason))
        .collect();
    assert_eq!(
        failures,
        vec![
            (1, Some(ErrorReason::NoExternalInvitePermission)),
            (2, Some(ErrorReason::UserNotFound))
        ]
    );
    assert!(matches!(error, Error::NoExternalInvitePermission { .. }));
    assert_eq!(active_ids(&alice, &c.id).await, vec!["alice", "bob"]);
}

async fn no_remove_permission(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let c = group(&user(&app, "alice"), &["bob", "carol"]).await;
    let error = unwrap_err(
        user(&app, "bob")
            .participants()
            .remove(&c.id, "carol")
            .await,
    );
    assert_status(
        &error,
        Code::PermissionDenied,
        ErrorReason::NoRemovePermission,
    );
    assert!(
        matches!(&error, Error::NoRemovePermission { conversation_id, .. } if *conversation_id == c.id)
    );
}

async fn participant_not_found(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let c = group(&user(&app, "alice"), &["bob"]).await;
    let error = unwrap_err(
        user(&app, "alice")
            .participants()
            .remove(&c.id, "dave")
            .await,
    );
    assert_status(&error, Code::NotFound, ErrorReason::ParticipantNotFound);
    let Error::ParticipantNotFound {
        conversation_id,
        user_id,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(
        (conversation_id.as_str(), user_id.as_str()),
        (c.id.as_str(), "dave")
    );
}

async fn user_not_found(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    // One user named by one call.
    let error = unwrap_err(service(&app).directory().get_user("nobody").await);
    assert_status(&error, Code::NotFound, ErrorReason::UserNotFound);
    assert!(
        matches!(&error, Error::UserNotFound { user_id: Some(u), invitees, .. } if u == "nobody" && invitees.is_empty()),
        "{error:?}"
    );
    // One invitee of a batch.
    let alice = user(&app, "alice");
    let c = group(&alice, &["bob"]).await;
    let error = unwrap_err(
        alice
            .participants()
            .add(AddParticipants::new(&c.id).users(["dave", "ghost"]))
            .await,
    );
    assert_status(&error, Code::NotFound, ErrorReason::UserNotFound);
    let Error::UserNotFound { invitees, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(invitees.len(), 1);
    assert_eq!(
        (invitees[0].index, invitees[0].field.as_str()),
        (1, "invitees[1]")
    );
    assert_eq!(
        active_ids(&alice, &c.id).await,
        vec!["alice", "bob"],
        "atomic"
    );
}

async fn group_not_found(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let error = unwrap_err(service(&app).directory().get_group("ghosts").await);
    assert_status(&error, Code::NotFound, ErrorReason::GroupNotFound);
    assert!(matches!(&error, Error::GroupNotFound { group_id: Some(g), .. } if g == "ghosts"));

    let alice = user(&app, "alice");
    let c = group(&alice, &["bob"]).await;
    let error = unwrap_err(
        alice
            .participants()
            .add(AddParticipants::new(&c.id).user("dave").group("ghosts"))
            .await,
    );
    assert_status(&error, Code::NotFound, ErrorReason::GroupNotFound);
    assert_eq!(error.invitee_failures().len(), 1);
    assert_eq!(error.invitee_failures()[0].index, 1);
}

async fn cant_invite_self(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let c = group(&alice, &["bob"]).await;
    let error = unwrap_err(
        alice
            .participants()
            .add(AddParticipants::new(&c.id).users(["dave", "alice"]))
            .await,
    );
    assert_status(&error, Code::InvalidArgument, ErrorReason::CantInviteSelf);
    let Error::CantInviteSelf { invitees, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(invitees.len(), 1);
    assert_eq!(
        (invitees[0].index, invitees[0].reason),
        (1, Some(ErrorReason::CantInviteSelf))
    );
    assert_eq!(
        active_ids(&alice, &c.id).await,
        vec!["alice", "bob"],
        "atomic"
    );
}

async fn too_many_invitees(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let c = group(&alice, &["bob"]).await;
    let many = (0..1001).map(|i| format!("u{i}"));
    let error = unwrap_err(
        alice
            .participants()
            .add(AddParticipants::new(&c.id).users(many))
            .await,
    );
    assert_status(&error, Code::InvalidArgument, ErrorReason::TooManyInvitees);
    assert!(
        matches!(
            error,
            Error::TooManyInvitees {
                max: Some(1000),
                ..
            }
        ),
        "{error:?}"
    );
}

async fn cant_remove_self(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let c = group(&alice, &["bob"]).await;
    let error = unwrap_err(alice.participants().remove(&c.id, "alice").await);
    assert_status(&error, Code::InvalidArgument, ErrorReason::CantRemoveSelf);
    assert!(matches!(error, Error::CantRemoveSelf { .. }));
}

async fn cant_remove_owner(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let c = group(&user(&app, "alice"), &["bob"]).await;
    let error = unwrap_err(service(&app).participants().remove(&c.id, "alice").await);
    assert_status(&error, Code::PermissionDenied, ErrorReason::CantRemoveOwner);
    assert!(
        matches!(&error, Error::CantRemoveOwner { conversation_id, .. } if *conversation_id == c.id)
    );
}

async fn unsupported_for_direct(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let d = alice
        .conversations()
        .create(NewConversation::direct("bob"))
        .await
        .expect("direct");
    let error = unwrap_err(
        alice
            .participants()
            .add(AddParticipants::new(&d.id).user("carol"))
            .await,
    );
    assert_status(
        &error,
        Code::FailedPrecondition,
        ErrorReason::UnsupportedForDirect,
    );
    assert!(
        matches!(&error, Error::UnsupportedForDirect { conversation_id, .. } if *conversation_id == d.id)
    );
}

async fn external_roster_locked(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let c = group(&alice, &["bob"]).await;
    alice
        .conversations()
        .send_message(&c.id, "first")
        .await
        .expect("send");
    let error = unwrap_err(
        alice
            .participants()
            .add(AddParticipants::new(&c.id).user("ext1"))
            .await,
    );
    assert_status(
        &error,
        Code::FailedPrecondition,
        ErrorReason::ExternalRosterLocked,
    );
    let Error::ExternalRosterLocked {
        conversation_id,
        invitees,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(conversation_id, &c.id);
    assert_eq!(invitees.len(), 1);
}

async fn participant_limit_exceeded(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let c = alice
        .conversations()
        .create(NewConversation::group(["bob"]).policy(PolicyBuilder::new().max_participants(3)))
        .await
        .expect("create");
    let error = unwrap_err(
        alice
            .participants()
            .add(AddParticipants::new(&c.id).users(["carol", "dave"]))
            .await,
    );
    assert_status(
        &error,
        Code::FailedPrecondition,
        ErrorReason::ParticipantLimitExceeded,
    );
    let Error::ParticipantLimitExceeded {
        conversation_id,
        max_participants,
        would_have,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(
        (conversation_id.as_str(), *max_participants, *would_have),
        (c.id.as_str(), Some(3), Some(4))
    );
}

async fn invitation_not_found(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let error = unwrap_err(
        external(&app, "guest")
            .participants()
            .accept_invitation("not-a-token")
            .await,
    );
    assert_status(&error, Code::NotFound, ErrorReason::InvitationNotFound);
    assert!(matches!(error, Error::InvitationNotFound { .. }));
}

async fn invitation_expired(db: Db) {
    let app = spawn_app_with(db, |c| c.limits.invitation_ttl = Duration::from_secs(1)).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let c = group(&alice, &["bob"]).await;
    let token = invite(&app, &alice, &c.id, &email_of(TENANT, "guest")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let error = unwrap_err(
        external(&app, "guest")
            .participants()
            .accept_invitation(&token)
            .await,
    );
    assert_status(
        &error,
        Code::FailedPrecondition,
        ErrorReason::InvitationExpired,
    );
    assert!(matches!(error, Error::InvitationExpired { .. }));
}

async fn invitation_not_pending(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let c = group(&alice, &["bob"]).await;
    let token = invite(&app, &alice, &c.id, &email_of(TENANT, "guest")).await;
    let guest = external(&app, "guest");
    guest
        .participants()
        .decline_invitation(&token)
        .await
        .expect("decline");
    let error = unwrap_err(guest.participants().accept_invitation(&token).await);
    assert_status(
        &error,
        Code::FailedPrecondition,
        ErrorReason::InvitationNotPending,
    );
    assert!(matches!(error, Error::InvitationNotPending { .. }));
}

async fn invitation_email_mismatch(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let c = group(&alice, &["bob"]).await;
    let token = invite(&app, &alice, &c.id, &email_of(TENANT, "guest")).await;
    let error = unwrap_err(
        external(&app, "stranger")
            .participants()
            .accept_invitation(&token)
            .await,
    );
    assert_status(
        &error,
        Code::PermissionDenied,
        ErrorReason::InvitationEmailMismatch,
    );
    assert!(matches!(error, Error::InvitationEmailMismatch { .. }));
    // The right person still can.
    let p = external(&app, "guest")
        .participants()
        .accept_invitation(&token)
        .await
        .expect("accept");
    assert_eq!(p.user_id, "guest");
}

both_dbs!(
    no_invite_permission,
    no_external_invite_permission,
    no_remove_permission,
    participant_not_found,
    user_not_found,
    group_not_found,
    cant_invite_self,
    too_many_invitees,
    cant_remove_self,
    cant_remove_owner,
    unsupported_for_direct,
    external_roster_locked,
    participant_limit_exceeded,
    invitation_not_found,
    invitation_expired,
    invitation_not_pending,
    invitation_email_mismatch,
);
