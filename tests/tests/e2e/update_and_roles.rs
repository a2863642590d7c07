//! UpdateConversation (field mask, etag, owner only, validation, policy taking effect) and
//! SetParticipantRole (owner only, ADMIN/MEMBER, what an admin may then do).

use parley_tests::*;
use pb::{
    event::Type as EventType,
    participant::{Role, State as PState},
    policy::{History, Permission},
};
use tonic::{Code, Status};

async fn update(
    caller: &Caller,
    conversation: pb::Conversation,
    paths: &[&str],
) -> Result<pb::Conversation, Status> {
    let msg = pb::UpdateConversationRequest {
        conversation: Some(conversation),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
        request_id: request_id(),
    };
    Ok(caller
        .conv()
        .update_conversation(caller.req(msg))
        .await?
        .into_inner())
}

fn titled(id: &str, etag: &str, title: &str) -> pb::Conversation {
    pb::Conversation {
        id: id.to_owned(),
        etag: etag.to_owned(),
        title: title.to_owned(),
        ..Default::default()
    }
}

fn with_policy(id: &str, etag: &str, policy: pb::Policy) -> pb::Conversation {
    pb::Conversation {
        id: id.to_owned(),
        etag: etag.to_owned(),
        policy: Some(policy),
        ..Default::default()
    }
}

async fn set_role(
    caller: &Caller,
    id: &str,
    user: &str,
    role: Role,
) -> Result<pb::Participant, Status> {
    caller.set_role(id, user, role).await
}

async fn the_owner_updates_title_and_policy(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice
        .create_group("before", &["bob"])
        .await
        .expect("create");
    assert!(!c.etag.is_empty());

    let renamed = update(&alice, titled(&c.id, &c.etag, "after"), &["title"])
        .await
        .expect("rename");
    assert_eq!(renamed.title, "after");
    assert_ne!(renamed.etag, c.etag, "a new etag");
    assert_eq!(renamed.policy, c.policy, "the policy is untouched");
    assert_eq!(alice.get(&c.id).await.expect("get"), renamed);
    let titles = alice
        .events_of(&c.id, EventType::TitleChanged)
        .await
        .expect("events");
    assert_eq!(titles.len(), 1);
    assert_eq!(titles[0].actor_id, "alice");

    // One policy field by its path; the others stay.
    let open = pb::Policy {
        add_external: Permission::Participants as i32,
        add_internal: Permission::Owner as i32,
        ..Default::default()
    };
    expect_err(
        bob.add_users(&c.id, &["ext1"]).await,
        Code::PermissionDenied,
        ErrorReason::NoExternalInvitePermission,
    );
    let opened = update(
        &alice,
        with_policy(&c.id, &renamed.etag, open),
        &["policy.add_external"],
    )
    .await
    .expect("open add_external");
    let policy = opened.policy.expect("policy");
    let old = c.policy.expect("policy");
    assert_eq!(policy.add_external(), Permission::Participants);
    assert_eq!(policy.add_internal, old.add_internal, "not in the mask");
    assert_eq!(
        (policy.remove, policy.max_participants),
        (old.remove, old.max_participants)
    );
    assert_eq!(opened.title, "after");
    assert_ne!(opened.etag, renamed.etag);
    let changed = alice
        .events_of(&c.id, EventType::PolicyChanged)
        .await
        .expect("events");
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].actor_id, "alice");
    // It takes effect at once.
    bob.add_users(&c.id, &["ext1"])
        .await
        .expect("a member adds an external now");

    // An empty etag skips the check; several paths at once.
    let policy = pb::Policy {
        remove: Permission::Admins as i32,
        new_participant_history: History::SinceJoin as i32,
        max_participants: 50,
        lock_external_roster_on_first_message: Some(false),
        ..Default::default()
    };
    let updated = update(
        &alice,
        pb::Conversation {
            title: "again".into(),
            ..with_policy(&c.id, "", policy)
        },
        &[
            "title",
            "policy.remove",
            "policy.new_participant_history",
            "policy.max_participants",
            "policy.lock_external_roster_on_first_message",
        ],
    )
    .await
    .expect("update without an etag");
    let p = updated.policy.expect("policy");
    assert_eq!(updated.title, "again");
    assert_eq!(
        (p.remove(), p.new_participant_history()),
        (Permission::Admins, History::SinceJoin)
    );
    assert_eq!(
        (p.max_participants, p.lock_external_roster_on_first_message),
        (50, Some(false))
    );
    assert_eq!(p.add_external(), Permission::Participants, "kept");
    assert_eq!(alice.get(&c.id).await.expect("get").policy, Some(p));

    // The whole policy by "policy".
    let whole = pb::Policy {
        add_internal: Permission::Admins as i32,
        add_external: Permission::Owner as i32,
        remove: Permission::Owner as i32,
        lock_external_roster_on_first_message: Some(true),
        new_participant_history: History::Full as i32,
        max_participants: 20,
    };
    let replaced = update(
        &alice,
        with_policy(&c.id, &updated.etag, whole),
        &["policy"],
    )
    .await
    .expect("replace the policy");
    assert_eq!(replaced.policy, Some(whole));
    assert_eq!(
        alice
            .events_of(&c.id, EventType::PolicyChanged)
            .await
            .expect("events")
            .len(),
        3
    );
}

async fn updates_are_checked(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let carol = app.user(TENANT, "carol");
    let c = alice
        .create_group("t", &["bob", "carol", "dave"])
        .await
        .expect("create");
    set_role(&alice, &c.id, "bob", Role::Admin)
        .await
        .expect("bob is an admin");
    let stale = alice.get(&c.id).await.expect("get").etag;
    let current = update(&alice, titled(&c.id, &stale, "changed once"), &["title"])
        .await
        .expect("update")
        .etag;
    let before = alice.snapshot(&c.id).await;

    for who in [&bob, &carol] {
        expect_err(
            update(who, titled(&c.id, &current, "mine"), &["title"]).await,
            Code::PermissionDenied,
            ErrorReason::NoPermission,
        );
    }
    expect_err(
        update(
            &app.user(TENANT, "frank"),
            titled(&c.id, "", "x"),
            &["title"],
        )
        .await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    expect_err(
        update(
            &app.user(OTHER_TENANT, "mallory"),
            titled(&c.id, "", "x"),
            &["title"],
        )
        .await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );
    expect_err(
        update(&alice, titled(&c.id, &stale, "stale"), &["title"]).await,
        Code::Aborted,
        ErrorReason::EtagMismatch,
    );
    expect_invalid(
        update(
            &alice,
            titled(&c.id, &current, &"x".repeat(201)),
            &["title"],
        )
        .await,
        "title",
    );
    expect_invalid(
        update(&alice, titled(&c.id, &current, "x"), &["owner_id"]).await,
        "update_mask",
    );
    expect_invalid(
        update(&alice, titled(&c.id, &current, "x"), &["title", "nope"]).await,
        "update_mask",
    );
    let bad_remove = pb::Policy {
        remove: Permission::Participants as i32,
        ..Default::default()
    };
    expect_invalid(
        update(
            &alice,
            with_policy(&c.id, &current, bad_remove),
            &["policy.remove"],
        )
        .await,
        "policy.remove",
    );
    // Four active participants: the cap may not go below.
    expect_err(
        update(
            &alice,
            with_policy(&c.id, &current, policy_with_max(3)),
            &["policy.max_participants"],
        )
        .await,
        Code::FailedPrecondition,
        ErrorReason::ParticipantLimitExceeded,
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing changed");

    // Exactly the active count is fine; a 200-character title too.
    let ok = update(
        &alice,
        with_policy(&c.id, &current, policy_with_max(4)),
        &["policy.max_participants"],
    )
    .await
    .expect("down to the active count");
    assert_eq!(ok.policy.expect("policy").max_participants, 4);
    update(&alice, titled(&c.id, "", &"y".repeat(200)), &["title"])
        .await
        .expect("200 characters");

    // Archived: read-only.
    alice.archive(&c.id).await.expect("archive");
    let before = alice.snapshot(&c.id).await;
    expect_err(
        update(&alice, titled(&c.id, "", "archived"), &["title"]).await,
        Code::FailedPrecondition,
        ErrorReason::ConversationArchived,
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing changed");
}

async fn the_owner_sets_roles(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let dave = app.user(TENANT, "dave");
    let policy = pb::Policy {
        remove: Permission::Admins as i32,
        ..Default::default()
    };
    let c = alice
        .create_group_with("t", &["bob", "carol", "dave", "frank"], Some(policy))
        .await
        .expect("create");

    let before = alice.snapshot(&c.id).await;
    expect_err(
        bob.remove(&c.id, "carol").await,
        Code::PermissionDenied,
        ErrorReason::NoRemovePermission,
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing changed");

    let p = set_role(&alice, &c.id, "bob", Role::Admin)
        .await
        .expect("make bob an admin");
    assert_eq!(
        (p.user_id.as_str(), p.role(), p.state()),
        ("bob", Role::Admin, PState::Active)
    );
    assert_eq!(
        alice.participant(&c.id, "bob").await.expect("get").role(),
        Role::Admin
    );
    let changed = alice
        .events_of(&c.id, EventType::RoleChanged)
        .await
        .expect("events");
    assert_eq!(changed.len(), 1);
    assert_eq!(
        (changed[0].actor_id.as_str(), changed[0].subject_ids.clone()),
        ("alice", vec!["bob".to_owned()])
    );

    // An admin may remove a member under remove = ADMINS; a member may not.
    let removed = bob
        .remove(&c.id, "carol")
        .await
        .expect("the admin removes carol");
    assert_eq!(
        (removed.state(), removed.removed_by.as_str()),
        (PState::Removed, "bob")
    );
    let before = alice.snapshot(&c.id).await;
    expect_err(
        dave.remove(&c.id, "frank").await,
        Code::PermissionDenied,
        ErrorReason::NoRemovePermission,
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing changed");

    // Admins may archive and unarchive.
    bob.archive(&c.id).await.expect("the admin archives");
    bob.unarchive(&c.id).await.expect("the admin unarchives");

    // Back to MEMBER: the admin powers go.
    let p = set_role(&alice, &c.id, "bob", Role::Member)
        .await
        .expect("demote bob");
    assert_eq!(p.role(), Role::Member);
    expect_err(
        bob.remove(&c.id, "frank").await,
        Code::PermissionDenied,
        ErrorReason::NoRemovePermission,
    );
    expect_err(
        bob.archive(&c.id).await,
        Code::PermissionDenied,
        ErrorReason::NoPermission,
    );
    assert_eq!(
        alice
            .events_of(&c.id, EventType::RoleChanged)
            .await
            .expect("events")
            .len(),
        2
    );
}

async fn roles_are_checked(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice
        .create_group("t", &["bob", "carol", "dave"])
        .await
        .expect("create");
    set_role(&alice, &c.id, "bob", Role::Admin)
        .await
        .expect("bob is an admin");
    alice.remove(&c.id, "dave").await.expect("remove dave");
    let before = alice.snapshot(&c.id).await;

    for (who, target) in [(&bob, "carol"), (&app.user(TENANT, "carol"), "bob")] {
        expect_err(
            set_role(who, &c.id, target, Role::Admin).await,
            Code::PermissionDenied,
            ErrorReason::NoPermission,
        );
    }
    expect_invalid(set_role(&alice, &c.id, "carol", Role::Owner).await, "role");
    expect_invalid(
        set_role(&alice, &c.id, "carol", Role::Unspecified).await,
        "role",
    );
    for role in [Role::Admin, Role::Member] {
        expect_err(
            set_role(&alice, &c.id, "alice", role).await,
            Code::PermissionDenied,
            ErrorReason::NoPermission,
        );
    }
    for target in ["nobody", "frank", "dave"] {
        expect_err(
            set_role(&alice, &c.id, target, Role::Admin).await,
            Code::NotFound,
            ErrorReason::ParticipantNotFound,
        );
    }
    expect_err(
        set_role(
            &app.user(OTHER_TENANT, "mallory"),
            &c.id,
            "carol",
            Role::Admin,
        )
        .await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing changed");
}

both_dbs!(
    the_owner_updates_title_and_policy,
    updates_are_checked,
    the_owner_sets_roles,
    roles_are_checked,
);
