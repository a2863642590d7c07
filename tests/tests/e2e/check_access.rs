//! CheckAccess: what a user may do in a conversation, asked by a sibling service about anyone or
//! by a user about themselves; owners, members, admins, removed participants, strangers, archived
//! conversations, history bounds and SINCE_JOIN.

use parley_tests::*;
use pb::{
    event::Type as EventType,
    participant::Role,
    policy::{History, Permission},
};
use tonic::{Code, Status};

async fn check(caller: &Caller, id: &str, user: &str) -> Result<pb::CheckAccessResponse, Status> {
    let msg = pb::CheckAccessRequest {
        conversation_id: id.to_owned(),
        user_id: user.to_owned(),
    };
    Ok(caller
        .conv()
        .check_access(caller.req(msg))
        .await?
        .into_inner())
}

/// `(can_read, can_post, can_add_internal, can_add_external, can_remove)`.
fn flags(a: &pb::CheckAccessResponse) -> (bool, bool, bool, bool, bool) {
    (
        a.can_read,
        a.can_post,
        a.can_add_internal,
        a.can_add_external,
        a.can_remove,
    )
}

const ALL: (bool, bool, bool, bool, bool) = (true, true, true, true, true);
const NOTHING: (bool, bool, bool, bool, bool) = (false, false, false, false, false);
const MEMBER: (bool, bool, bool, bool, bool) = (true, true, true, false, false);

async fn owners_and_members(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let service = app.service(TENANT);
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice
        .create_group("t", &["bob", "ext1"])
        .await
        .expect("create");

    let owner = check(&service, &c.id, "alice")
        .await
        .expect("the service asks");
    assert_eq!(flags(&owner), ALL);
    assert_eq!((owner.history_from, owner.history_until), (1, 0));
    let member = check(&service, &c.id, "bob").await.expect("check");
    assert_eq!(flags(&member), MEMBER);
    assert_eq!((member.history_from, member.history_until), (1, 0));
    let external = check(&service, &c.id, "ext1").await.expect("check");
    assert_eq!(flags(&external), MEMBER);

    // A user asks about themselves, and gets what the service gets.
    assert_eq!(check(&alice, &c.id, "alice").await.expect("self"), owner);
    assert_eq!(check(&bob, &c.id, "bob").await.expect("self"), member);
    assert_eq!(
        check(&service.acting_as("bob"), &c.id, "bob")
            .await
            .expect("act as"),
        member
    );
    for (who, about) in [(&bob, "alice"), (&alice, "bob"), (&bob, "dave")] {
        expect_err(
            check(who, &c.id, about).await,
            Code::PermissionDenied,
            ErrorReason::NoPermission,
        );
    }

    // The first message locks the external roster.
    alice.send(&c.id, "hello").await.expect("send");
    let owner = check(&service, &c.id, "alice").await.expect("check");
    assert_eq!(flags(&owner), (true, true, true, false, true));
    assert_eq!(
        flags(&check(&service, &c.id, "bob").await.expect("check")),
        MEMBER
    );

    // Policies shape the answers: admins under ADMINS.
    let policy = pb::Policy {
        add_internal: Permission::Admins as i32,
        add_external: Permission::Admins as i32,
        remove: Permission::Admins as i32,
        ..Default::default()
    };
    let d = alice
        .create_group_with("d", &["bob", "carol"], Some(policy))
        .await
        .expect("create");
    assert_eq!(
        flags(&check(&service, &d.id, "bob").await.expect("check")),
        (true, true, false, false, false)
    );
    let msg = pb::SetParticipantRoleRequest {
        conversation_id: d.id.clone(),
        user_id: "bob".into(),
        role: Role::Admin as i32,
        request_id: request_id(),
    };
    alice
        .part()
        .set_participant_role(alice.req(msg))
        .await
        .expect("bob is an admin");
    assert_eq!(
        flags(&check(&service, &d.id, "bob").await.expect("check")),
        ALL
    );
    assert_eq!(
        flags(&check(&service, &d.id, "carol").await.expect("check")),
        (true, true, false, false, false)
    );
}

async fn removed_participants_read_up_to_their_removal(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let service = app.service(TENANT);
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group("t", &["bob", "carol"])
        .await
        .expect("create");
    alice.send(&c.id, "before").await.expect("send");
    let before = check(&service, &c.id, "carol").await.expect("check");
    alice.remove(&c.id, "carol").await.expect("remove carol");
    alice.send(&c.id, "after").await.expect("send");

    let removal = alice
        .events_of(&c.id, EventType::ParticipantRemoved)
        .await
        .expect("events")
        .pop()
        .expect("a removal");
    let carol = check(&service, &c.id, "carol").await.expect("check");
    assert_eq!(flags(&carol), (true, false, false, false, false));
    assert_eq!(carol.history_from, before.history_from);
    assert_eq!(carol.history_until, removal.seq);
    assert_eq!(
        check(&app.user(TENANT, "carol"), &c.id, "carol")
            .await
            .expect("self"),
        carol
    );

    // Added again: unbounded again.
    alice.add_users(&c.id, &["carol"]).await.expect("re-add");
    let again = check(&service, &c.id, "carol").await.expect("check");
    assert_eq!(flags(&again), MEMBER);
    assert_eq!(again.history_until, 0);
}

/// A deactivated user's own calls fail, so CheckAccess allows them nothing either, and allows
/// everything again once the directory reactivates them.
async fn deactivated_users_may_do_nothing(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let service = app.service(TENANT);
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    assert_eq!(
        flags(&check(&service, &c.id, "bob").await.expect("check")),
        MEMBER
    );

    service
        .deactivate_user("bob")
        .await
        .expect("deactivate bob");
    let bob = check(&service, &c.id, "bob").await.expect("check");
    assert_eq!(flags(&bob), NOTHING);
    assert_eq!((bob.history_from, bob.history_until), (0, 0));
    expect_err(
        app.service_as(TENANT, "bob").send(&c.id, "hi").await,
        Code::FailedPrecondition,
        ErrorReason::UserDeactivated,
    );

    service
        .upsert_user("bob", Kind::Internal)
        .await
        .expect("reactivate bob");
    assert_eq!(
        flags(&check(&service, &c.id, "bob").await.expect("check")),
        MEMBER
    );
}

async fn strangers_and_unknowns(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let service = app.service(TENANT);
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");

    for user in ["dave", "ext2", "erin", "nobody"] {
        let a = check(&service, &c.id, user).await.expect("check");
        assert_eq!(flags(&a), NOTHING, "{user}");
        assert_eq!((a.history_from, a.history_until), (0, 0), "{user}");
    }
    let dave = app.user(TENANT, "dave");
    let a = check(&dave, &c.id, "dave")
        .await
        .expect("a stranger may ask about themselves");
    assert_eq!(flags(&a), NOTHING);

    let unknown = uuid::Uuid::now_v7().to_string();
    expect_err(
        check(&service, &unknown, "alice").await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );
    expect_err(
        check(&alice, &unknown, "alice").await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );
    expect_err(
        check(&app.service(OTHER_TENANT), &c.id, "alice").await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );
    expect_err(
        check(&app.user(OTHER_TENANT, "mallory"), &c.id, "mallory").await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );
    expect_invalid(
        check(&service, "not-a-uuid", "alice").await,
        "conversation_id",
    );
    expect_invalid(check(&service, &c.id, "").await, "user_id");
}

async fn archived_and_closed_are_read_only(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let service = app.service(TENANT);
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    alice.archive(&c.id).await.expect("archive");
    for user in ["alice", "bob"] {
        let a = check(&service, &c.id, user).await.expect("check");
        assert!(a.can_read && !a.can_post, "{user}: {a:?}");
        assert!(
            !a.can_add_internal && !a.can_add_external && !a.can_remove,
            "{user}: {a:?}"
        );
    }
    alice.unarchive(&c.id).await.expect("unarchive");
    assert_eq!(
        flags(&check(&service, &c.id, "bob").await.expect("check")),
        MEMBER
    );
    alice.close(&c.id).await.expect("close");
    let a = check(&service, &c.id, "alice").await.expect("check");
    assert_eq!(flags(&a), (true, false, false, false, false));
}

async fn no_lag_and_since_join(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let service = app.service(TENANT);
    let alice = app.user(TENANT, "alice");
    let policy = pb::Policy {
        new_participant_history: History::SinceJoin as i32,
        ..Default::default()
    };
    let c = alice
        .create_group_with("t", &["bob"], Some(policy))
        .await
        .expect("create");
    alice.send(&c.id, "one").await.expect("send");
    alice.send(&c.id, "two").await.expect("send");

    let seq = alice.last_seq(&c.id).await;
    assert_eq!(
        flags(&check(&service, &c.id, "dave").await.expect("check")),
        NOTHING
    );
    alice.add_users(&c.id, &["dave"]).await.expect("add dave");
    let dave = check(&service, &c.id, "dave")
        .await
        .expect("immediately after the add");
    assert_eq!(flags(&dave), MEMBER);
    assert_eq!(dave.history_from, seq + 1);
    assert_eq!(
        dave.history_from,
        alice
            .participant(&c.id, "dave")
            .await
            .expect("get")
            .history_from
    );

    // Under FULL: from the start.
    let d = alice.create_group("full", &["bob"]).await.expect("create");
    alice.send(&d.id, "one").await.expect("send");
    alice.add_users(&d.id, &["dave"]).await.expect("add dave");
    assert_eq!(
        check(&service, &d.id, "dave")
            .await
            .expect("check")
            .history_from,
        1
    );

    // And immediately after a removal.
    alice.remove(&d.id, "dave").await.expect("remove dave");
    assert!(
        !check(&service, &d.id, "dave")
            .await
            .expect("check")
            .can_post
    );
}

both_dbs!(
    deactivated_users_may_do_nothing,
    owners_and_members,
    removed_participants_read_up_to_their_removal,
    strangers_and_unknowns,
    archived_and_closed_are_read_only,
    no_lag_and_since_join,
);
