//! The order in which AddParticipants and RemoveParticipant judge a call: the conversation,
//! the caller, the conversation's state, DIRECT, then each invitee or the target; and that a
//! refused call writes nothing.

use parley_tests::*;
use pb::policy::Permission;
use tonic::Code;

async fn add_checks_the_call_first(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group("t", &["bob", "carol"])
        .await
        .expect("create");
    alice.remove(&c.id, "carol").await.expect("remove carol");
    let before = alice.snapshot(&c.id).await;

    expect_err(
        alice.add(&c.id, vec![], false).await,
        Code::InvalidArgument,
        ErrorReason::InvalidField,
    );
    let many: Vec<pb::Invitee> = (0..1001).map(|i| user_invitee(&format!("u{i}"))).collect();
    expect_err(
        alice.add(&c.id, many.clone(), false).await,
        Code::InvalidArgument,
        ErrorReason::TooManyInvitees,
    );
    expect_err(
        alice.add(&c.id, many, true).await,
        Code::InvalidArgument,
        ErrorReason::TooManyInvitees,
    );
    expect_err(
        app.user(TENANT, "dave").add_users(&c.id, &["frank"]).await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    // Even when the invitees are bad, who calls is judged first.
    expect_err(
        app.user(TENANT, "dave").add_users(&c.id, &["nobody"]).await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    expect_err(
        app.user(TENANT, "carol").add_users(&c.id, &["frank"]).await,
        Code::PermissionDenied,
        ErrorReason::ParticipantRemoved,
    );
    expect_err(
        app.user(TENANT, "carol").add_users(&c.id, &["carol"]).await,
        Code::PermissionDenied,
        ErrorReason::ParticipantRemoved,
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");
}
async fn remove_checks(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice
        .create_group("t", &["bob", "carol", "dave"])
        .await
        .expect("create");
    alice.remove(&c.id, "dave").await.expect("remove dave");
    let before = alice.snapshot(&c.id).await;

    expect_err(
        bob.remove(&c.id, "carol").await,
        Code::PermissionDenied,
        ErrorReason::NoRemovePermission,
    );
    expect_err(
        bob.remove(&c.id, "alice").await,
        Code::PermissionDenied,
        ErrorReason::NoRemovePermission,
    );
    expect_err(
        bob.remove(&c.id, "bob").await,
        Code::InvalidArgument,
        ErrorReason::CantRemoveSelf,
    );
    expect_err(
        alice.remove(&c.id, "alice").await,
        Code::InvalidArgument,
        ErrorReason::CantRemoveSelf,
    );
    expect_err(
        alice.remove(&c.id, "frank").await,
        Code::NotFound,
        ErrorReason::ParticipantNotFound,
    );
    expect_err(
        alice.remove(&c.id, "nobody").await,
        Code::NotFound,
        ErrorReason::ParticipantNotFound,
    );
    expect_err(
        alice.remove(&c.id, "dave").await,
        Code::NotFound,
        ErrorReason::ParticipantNotFound,
    );
    expect_err(
        app.service(TENANT).remove(&c.id, "alice").await,
        Code::PermissionDenied,
        ErrorReason::CantRemoveOwner,
    );
    // Nor can an admin whom the policy lets remove (checked on a conversation of its own, so
    // this one's snapshot stays as it was).
    let admins = pb::Policy {
        remove: pb::policy::Permission::Admins as i32,
        ..Default::default()
    };
    let other = alice
        .create_group_with("admins remove", &["bob", "carol"], Some(admins))
        .await
        .expect("create");
    alice
        .set_role(&other.id, "bob", pb::participant::Role::Admin)
        .await
        .expect("bob becomes an admin");
    let other_before = alice.snapshot(&other.id).await;
    expect_err(
        bob.remove(&other.id, "alice").await,
        Code::PermissionDenied,
        ErrorReason::CantRemoveOwner,
    );
    assert_eq!(alice.snapshot(&other.id).await, other_before);
    bob.remove(&other.id, "carol")
        .await
        .expect("the admin removes a member");
    expect_err(
        app.user(TENANT, "frank").remove(&c.id, "bob").await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    expect_err(
        app.user(TENANT, "dave").remove(&c.id, "bob").await,
        Code::PermissionDenied,
        ErrorReason::ParticipantRemoved,
    );
    expect_err(
        app.user(OTHER_TENANT, "mallory").remove(&c.id, "bob").await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");

    // remove = ADMINS still excludes plain members.
    let policy = pb::Policy {
        remove: Permission::Admins as i32,
        ..Default::default()
    };
    let c2 = alice
        .create_group_with("admins", &["bob", "carol"], Some(policy))
        .await
        .expect("create");
    expect_err(
        bob.remove(&c2.id, "carol").await,
        Code::PermissionDenied,
        ErrorReason::NoRemovePermission,
    );
    alice.remove(&c2.id, "carol").await.expect("the owner may");
}

async fn checks_run_in_the_documented_order(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let service = app.service(TENANT);
    service
        .upsert_user("ext3", Kind::External)
        .await
        .expect("upsert ext3");
    service
        .deactivate_user("ext3")
        .await
        .expect("deactivate ext3");
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");

    // Who calls comes before the conversation's state.
    let c = alice
        .create_group("t", &["bob", "carol"])
        .await
        .expect("create");
    alice.remove(&c.id, "carol").await.expect("remove carol");
    alice.archive(&c.id).await.expect("archive");
    let before = alice.snapshot(&c.id).await;
    let dave = app.user(TENANT, "dave");
    expect_err(
        dave.add_users(&c.id, &["frank"]).await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    expect_err(
        dave.remove(&c.id, "bob").await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    let carol = app.user(TENANT, "carol");
    expect_err(
        carol.add_users(&c.id, &["frank"]).await,
        Code::PermissionDenied,
        ErrorReason::ParticipantRemoved,
    );
    // The state comes before the invitees and the caller's permissions.
    expect_err(
        bob.add_users(&c.id, &["nobody"]).await,
        Code::FailedPrecondition,
        ErrorReason::ConversationArchived,
    );
    expect_err(
        bob.add_users(&c.id, &["ext1"]).await,
        Code::FailedPrecondition,
        ErrorReason::ConversationArchived,
    );
    expect_err(
        bob.remove(&c.id, "bob").await,
        Code::FailedPrecondition,
        ErrorReason::ConversationArchived,
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");

    // A closed DIRECT conversation is CLOSED before it is DIRECT.
    let d = alice.create_direct("bob").await.expect("direct");
    alice.close(&d.id).await.expect("close");
    expect_err(
        alice.add_users(&d.id, &["carol"]).await,
        Code::FailedPrecondition,
        ErrorReason::ConversationClosed,
    );
    expect_err(
        alice.remove(&d.id, "bob").await,
        Code::FailedPrecondition,
        ErrorReason::ConversationClosed,
    );

    // For one invitee: existence and status come before the caller's permission.
    let open = alice.create_group("open", &["bob"]).await.expect("create");
    let before = alice.snapshot(&open.id).await;
    expect_err(
        bob.add_users(&open.id, &["ext3"]).await,
        Code::FailedPrecondition,
        ErrorReason::UserDeactivated,
    );
    let status = bob
        .add_users(&open.id, &["ext1", "ext3"])
        .await
        .expect_err("two failures");
    assert_error(
        &status,
        Code::PermissionDenied,
        ErrorReason::NoExternalInvitePermission,
    );
    assert_invitee_violations(
        &status,
        &[
            (0, ErrorReason::NoExternalInvitePermission),
            (1, ErrorReason::UserDeactivated),
        ],
    );
    // Self-invitation is judged before anything else about an invitee.
    expect_err(
        bob.add_users(&open.id, &["bob"]).await,
        Code::InvalidArgument,
        ErrorReason::CantInviteSelf,
    );
    // Removing: self before permission, permission before the target.
    expect_err(
        bob.remove(&open.id, "bob").await,
        Code::InvalidArgument,
        ErrorReason::CantRemoveSelf,
    );
    expect_err(
        bob.remove(&open.id, "nobody").await,
        Code::PermissionDenied,
        ErrorReason::NoRemovePermission,
    );
    assert_eq!(
        alice.snapshot(&open.id).await,
        before,
        "nothing was written"
    );
}

both_dbs!(
    add_checks_the_call_first,
    remove_checks,
    checks_run_in_the_documented_order,
);
