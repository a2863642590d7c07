//! ParticipantService: adding (users, groups, emails; atomic and partial), policies, the
//! external roster lock, the participant limit, removing, re-adding, history_from, listing.

use parley_tests::*;
use pb::{
    add_participants_result::Outcome,
    event::Type as EventType,
    participant::{Kind as PKind, Role, State as PState},
    policy::Permission,
};
use tonic::Code;

async fn a_member_adds_internal_users(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice.create_group("t", &["bob"]).await.expect("create");

    let response = bob
        .add_users(&c.id, &["dave", "frank"])
        .await
        .expect("bob adds");
    assert_eq!(
        outcomes(&response),
        vec![
            ("dave".to_owned(), Outcome::Added),
            ("frank".to_owned(), Outcome::Added)
        ]
    );
    for result in &response.results {
        let p = result
            .participant
            .as_ref()
            .expect("ADDED carries the participant");
        assert_eq!(Some(p.user_id.as_str()), result_user(result));
        assert_eq!(p.conversation_id, c.id);
        assert_eq!(
            (p.kind(), p.role(), p.state()),
            (PKind::Internal, Role::Member, PState::Active)
        );
        assert_eq!(p.added_by, "bob");
        assert_eq!(p.history_from, 1);
        assert!(p.join_time.is_some());
        assert!(result.via_group_id.is_empty());
    }
    assert_eq!(alice.get(&c.id).await.expect("get").participant_count, 4);
    assert_eq!(
        alice.active_ids(&c.id).await.expect("roster"),
        vec!["alice", "bob", "dave", "frank"]
    );
    let added = alice
        .events_of(&c.id, EventType::ParticipantAdded)
        .await
        .expect("events");
    let last = added.last().expect("a PARTICIPANT_ADDED event");
    assert_eq!(last.actor_id, "bob");
    assert_eq!(sorted(last.subject_ids.clone()), vec!["dave", "frank"]);
    assert_eq!(
        app.user(TENANT, "dave")
            .get(&c.id)
            .await
            .expect("dave reads")
            .id,
        c.id
    );
}

async fn adding_externals_needs_add_external(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice.create_group("t", &["bob"]).await.expect("create");

    let before = alice.snapshot(&c.id).await;
    expect_err(
        bob.add_users(&c.id, &["ext1"]).await,
        Code::PermissionDenied,
        ErrorReason::NoExternalInvitePermission,
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");

    let response = alice
        .add_users(&c.id, &["ext1", "dave", "ext2"])
        .await
        .expect("the owner adds");
    assert!(
        response
            .results
            .iter()
            .all(|r| r.outcome() == Outcome::Added)
    );
    let ext1 = alice
        .participant(&c.id, "ext1")
        .await
        .expect("GetParticipant");
    assert_eq!(ext1.kind(), PKind::External);

    // Internal and external additions are separate events.
    let added: Vec<pb::Event> = alice
        .events_of(&c.id, EventType::ParticipantAdded)
        .await
        .expect("events");
    let mut subjects: Vec<Vec<String>> = added
        .iter()
        .map(|e| sorted(e.subject_ids.clone()))
        .collect();
    subjects.sort();
    assert!(subjects.contains(&vec!["dave".to_owned()]), "{subjects:?}");
    assert!(
        subjects.contains(&vec!["ext1".to_owned(), "ext2".to_owned()]),
        "{subjects:?}"
    );

    // With add_external = PARTICIPANTS a member may.
    let open = pb::Policy {
        add_external: Permission::Participants as i32,
        ..Default::default()
    };
    let c2 = alice
        .create_group_with("open", &["bob"], Some(open))
        .await
        .expect("create");
    bob.add_users(&c2.id, &["ext1"])
        .await
        .expect("bob adds an external");
}

async fn add_internal_policy(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    for permission in [Permission::Owner, Permission::Admins] {
        let policy = pb::Policy {
            add_internal: permission as i32,
            ..Default::default()
        };
        let c = alice
            .create_group_with("t", &["bob"], Some(policy))
            .await
            .expect("create");
        let before = alice.snapshot(&c.id).await;
        expect_err(
            bob.add_users(&c.id, &["dave"]).await,
            Code::PermissionDenied,
            ErrorReason::NoInvitePermission,
        );
        assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");
        alice
            .add_users(&c.id, &["dave"])
            .await
            .expect("the owner may");
    }
}

/// ADMINS admits the owner and participants with role ADMIN, for internal and external adds.
async fn admins_policy_admits_admins(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let carol = app.user(TENANT, "carol");
    let policy = pb::Policy {
        add_internal: Permission::Admins as i32,
        add_external: Permission::Admins as i32,
        ..Default::default()
    };
    let c = alice
        .create_group_with("t", &["bob", "carol"], Some(policy))
        .await
        .expect("create");
    alice
        .set_role(&c.id, "bob", Role::Admin)
        .await
        .expect("bob becomes an admin");

    let before = alice.snapshot(&c.id).await;
    expect_err(
        carol.add_users(&c.id, &["dave"]).await,
        Code::PermissionDenied,
        ErrorReason::NoInvitePermission,
    );
    expect_err(
        carol.add_users(&c.id, &["ext1"]).await,
        Code::PermissionDenied,
        ErrorReason::NoExternalInvitePermission,
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");

    bob.add_users(&c.id, &["dave", "ext1"])
        .await
        .expect("an admin adds internal and external users");
    assert_eq!(
        alice.active_ids(&c.id).await.expect("roster"),
        vec!["alice", "bob", "carol", "dave", "ext1"]
    );
}

/// Adding a group you belong to is not inviting yourself: you are already in.
async fn the_caller_in_a_group_is_already_a_participant(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    seed_group(&app, TENANT, "team", &["alice", "bob", "carol"]).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");

    let response = alice
        .add(&c.id, vec![group_invitee("team")], false)
        .await
        .expect("an atomic add of a group with the caller in it succeeds");
    assert_eq!(
        outcomes(&response),
        vec![
            ("alice".to_owned(), Outcome::AlreadyParticipant),
            ("bob".to_owned(), Outcome::AlreadyParticipant),
            ("carol".to_owned(), Outcome::Added),
        ]
    );
    assert!(response.results.iter().all(|r| r.via_group_id == "team"));

    // Naming yourself is still a mistake, before or after the group.
    let before = alice.snapshot(&c.id).await;
    for (invitees, at) in [
        (vec![group_invitee("team"), user_invitee("alice")], 1),
        (vec![user_invitee("alice"), group_invitee("team")], 0),
    ] {
        let status = expect_err(
            alice.add(&c.id, invitees, false).await,
            Code::InvalidArgument,
            ErrorReason::CantInviteSelf,
        );
        assert_invitee_violations(&status, &[(at, ErrorReason::CantInviteSelf)]);
    }
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");
}

/// The groups of one call may hold at most `max_group_reach` memberships together (counted
/// before any group is loaded); past it the call is TOO_MANY_INVITEES and nothing is written.
async fn groups_past_the_reach_limit_are_refused(db: Db) {
    let app = spawn_app_with(db, |config| config.limits.max_group_reach = 5).await;
    seed_standard(&app).await;
    seed_group(&app, TENANT, "a", &["bob", "carol", "dave"]).await;
    seed_group(&app, TENANT, "b", &["carol", "dave", "frank"]).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");

    let before = alice.snapshot(&c.id).await;
    let status = expect_err(
        alice
            .add(&c.id, vec![group_invitee("a"), group_invitee("b")], true)
            .await,
        Code::InvalidArgument,
        ErrorReason::TooManyInvitees,
    );
    assert!(
        status.message().contains("6 memberships"),
        "{}",
        status.message()
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");

    let response = alice
        .add(
            &c.id,
            vec![group_invitee("a"), user_invitee("frank")],
            false,
        )
        .await
        .expect("three memberships and a user are within the limit");
    assert_eq!(
        outcomes(&response),
        vec![
            ("bob".to_owned(), Outcome::AlreadyParticipant),
            ("carol".to_owned(), Outcome::Added),
            ("dave".to_owned(), Outcome::Added),
            ("frank".to_owned(), Outcome::Added),
        ]
    );
}

async fn atomic_adds_write_nothing_on_failure(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let before = alice.snapshot(&c.id).await;

    let status = alice
        .add_users(&c.id, &["dave", "nobody", "erin"])
        .await
        .expect_err("atomic");
    assert_error(&status, Code::NotFound, ErrorReason::UserNotFound);
    assert_invitee_violations(
        &status,
        &[
            (1, ErrorReason::UserNotFound),
            (2, ErrorReason::UserDeactivated),
        ],
    );

    let status = alice
        .add_users(&c.id, &["erin", "dave", "nobody"])
        .await
        .expect_err("atomic");
    assert_error(
        &status,
        Code::FailedPrecondition,
        ErrorReason::UserDeactivated,
    );
    assert_invitee_violations(
        &status,
        &[
            (0, ErrorReason::UserDeactivated),
            (2, ErrorReason::UserNotFound),
        ],
    );

    let status = alice
        .add_users(&c.id, &["dave", "alice"])
        .await
        .expect_err("self");
    assert_error(&status, Code::InvalidArgument, ErrorReason::CantInviteSelf);
    assert_invitee_violations(&status, &[(1, ErrorReason::CantInviteSelf)]);

    let status = bob
        .add_users(&c.id, &["dave", "ext1", "nobody"])
        .await
        .expect_err("permission");
    assert_error(
        &status,
        Code::PermissionDenied,
        ErrorReason::NoExternalInvitePermission,
    );
    assert_invitee_violations(
        &status,
        &[
            (1, ErrorReason::NoExternalInvitePermission),
            (2, ErrorReason::UserNotFound),
        ],
    );

    let status = alice
        .add(
            &c.id,
            vec![user_invitee("dave"), group_invitee("ghosts")],
            false,
        )
        .await
        .expect_err("group");
    assert_error(&status, Code::NotFound, ErrorReason::GroupNotFound);
    assert_invitee_violations(&status, &[(1, ErrorReason::GroupNotFound)]);

    expect_err(
        alice.add_users(&c.id, &["mallory"]).await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");
}

async fn partial_success_applies_the_valid_invitees(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice.create_group("t", &["bob"]).await.expect("create");

    let invitees = ["dave", "nobody", "erin", "bob", "alice"]
        .map(user_invitee)
        .to_vec();
    let response = alice
        .add(&c.id, invitees, true)
        .await
        .expect("partial success");
    assert_eq!(
        response.results.len(),
        5,
        "one result per user invitee: {response:?}"
    );
    let by_user = |id: &str| {
        response
            .results
            .iter()
            .find(|r| result_user(r) == Some(id))
            .unwrap_or_else(|| panic!("no result for {id}"))
    };
    assert_eq!(by_user("dave").outcome(), Outcome::Added);
    assert!(by_user("dave").participant.is_some());
    for (id, outcome, reason) in [
        ("nobody", Outcome::Failed, ErrorReason::UserNotFound),
        ("erin", Outcome::Failed, ErrorReason::UserDeactivated),
        (
            "bob",
            Outcome::AlreadyParticipant,
            ErrorReason::AlreadyParticipant,
        ),
        ("alice", Outcome::Failed, ErrorReason::CantInviteSelf),
    ] {
        assert_eq!(
            (by_user(id).outcome(), by_user(id).reason()),
            (outcome, reason),
            "{id}"
        );
        assert!(by_user(id).participant.is_none() || outcome == Outcome::AlreadyParticipant);
    }
    assert_eq!(
        alice.active_ids(&c.id).await.expect("roster"),
        vec!["alice", "bob", "dave"]
    );
    assert_eq!(alice.get(&c.id).await.expect("get").participant_count, 3);

    // bob may add internals but not externals.
    let response = bob
        .add(
            &c.id,
            vec![user_invitee("frank"), user_invitee("ext1")],
            true,
        )
        .await
        .expect("partial");
    assert_eq!(
        outcomes(&response),
        vec![
            ("ext1".to_owned(), Outcome::Failed),
            ("frank".to_owned(), Outcome::Added)
        ]
    );
    let ext = response
        .results
        .iter()
        .find(|r| result_user(r) == Some("ext1"))
        .expect("ext1");
    assert_eq!(ext.reason(), ErrorReason::NoExternalInvitePermission);

    // Nothing valid at all: still OK, nothing written.
    let before = alice.snapshot(&c.id).await;
    let response = alice
        .add(
            &c.id,
            vec![user_invitee("nobody"), group_invitee("ghosts")],
            true,
        )
        .await
        .expect("partial");
    assert_eq!(response.results.len(), 2);
    assert!(
        response
            .results
            .iter()
            .all(|r| r.outcome() == Outcome::Failed)
    );
    assert!(
        response
            .results
            .iter()
            .any(|r| r.reason() == ErrorReason::GroupNotFound)
    );
    assert_eq!(alice.snapshot(&c.id).await, before);
}

async fn adding_a_participant_again_changes_nothing(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let before = alice.snapshot(&c.id).await;
    let response = alice
        .add_users(&c.id, &["bob"])
        .await
        .expect("already there is not a failure");
    assert_eq!(response.results.len(), 1);
    assert_eq!(response.results[0].outcome(), Outcome::AlreadyParticipant);
    assert_eq!(
        response.results[0].reason(),
        ErrorReason::AlreadyParticipant
    );
    let response = alice
        .add_users(&c.id, &["bob", "bob"])
        .await
        .expect("twice in one call");
    assert!(
        response
            .results
            .iter()
            .all(|r| r.outcome() == Outcome::AlreadyParticipant)
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");
}

async fn groups_expand_to_their_active_members(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    seed_group(&app, TENANT, "eng", &["bob", "dave", "frank", "erin"]).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");

    let seq_before = alice
        .timeline(&c.id)
        .await
        .expect("timeline")
        .last()
        .expect("an item")
        .seq;
    let response = alice
        .add(
            &c.id,
            vec![group_invitee("eng"), user_invitee("dave")],
            false,
        )
        .await
        .expect("add");
    // dave directly and through eng: added once.
    let dave: Vec<&pb::AddParticipantsResult> = response
        .results
        .iter()
        .filter(|r| result_user(r) == Some("dave"))
        .collect();
    assert_eq!(
        dave.iter()
            .filter(|r| r.outcome() == Outcome::Added)
            .count(),
        1,
        "{response:?}"
    );
    let frank = response
        .results
        .iter()
        .find(|r| result_user(r) == Some("frank"))
        .expect("frank's result");
    assert_eq!(
        (frank.outcome(), frank.via_group_id.as_str()),
        (Outcome::Added, "eng")
    );
    let bob = response
        .results
        .iter()
        .find(|r| result_user(r) == Some("bob"))
        .expect("bob's result");
    assert_eq!(
        (bob.outcome(), bob.via_group_id.as_str()),
        (Outcome::AlreadyParticipant, "eng")
    );
    assert!(
        response
            .results
            .iter()
            .all(|r| result_user(r) != Some("erin")),
        "deactivated members are skipped"
    );
    assert_eq!(
        alice.active_ids(&c.id).await.expect("roster"),
        vec!["alice", "bob", "dave", "frank"]
    );
    assert_eq!(alice.get(&c.id).await.expect("get").participant_count, 4);
    let added = alice
        .events_of(&c.id, EventType::ParticipantAdded)
        .await
        .expect("events");
    let subjects: Vec<String> = sorted(
        added
            .iter()
            .filter(|e| e.seq > seq_before)
            .flat_map(|e| e.subject_ids.clone())
            .collect(),
    );
    assert_eq!(
        subjects,
        vec!["dave", "frank"],
        "each added person appears once"
    );

    // An unknown group in partial mode: one FAILED result.
    let response = alice
        .add(
            &c.id,
            vec![group_invitee("ghosts"), user_invitee("carol")],
            true,
        )
        .await
        .expect("partial");
    assert_eq!(response.results.len(), 2, "{response:?}");
    let failed: Vec<_> = response
        .results
        .iter()
        .filter(|r| r.outcome() == Outcome::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].reason(), ErrorReason::GroupNotFound);

    // Another tenant's group is unknown.
    seed_group(&app, OTHER_TENANT, "red", &["mallory"]).await;
    expect_err(
        alice.add(&c.id, vec![group_invitee("red")], false).await,
        Code::NotFound,
        ErrorReason::GroupNotFound,
    );
}

async fn email_invitees_matching_a_user(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let response = alice
        .add(
            &c.id,
            vec![email_invitee(&email_of(TENANT, "dave").to_uppercase())],
            false,
        )
        .await
        .expect("add by email");
    assert_eq!(response.results.len(), 1);
    assert_eq!(response.results[0].outcome(), Outcome::Added);
    assert_eq!(
        response.results[0]
            .participant
            .as_ref()
            .map(|p| p.user_id.as_str()),
        Some("dave")
    );
    let response = alice
        .add(&c.id, vec![email_invitee(&email_of(TENANT, "bob"))], false)
        .await
        .expect("bob by email");
    assert_eq!(response.results[0].outcome(), Outcome::AlreadyParticipant);
    // An external user's email needs add_external.
    let bob = app.user(TENANT, "bob");
    let status = bob
        .add(&c.id, vec![email_invitee(&email_of(TENANT, "ext1"))], false)
        .await
        .expect_err("external");
    assert_error(
        &status,
        Code::PermissionDenied,
        ErrorReason::NoExternalInvitePermission,
    );
    assert_eq!(
        alice.active_ids(&c.id).await.expect("roster"),
        vec!["alice", "bob", "dave"]
    );
}

/// A participant's row and a timeline item are written only for a conversation found and
/// locked: adding to one that does not exist is NOT_FOUND and writes no row. SQLite's schema
/// refuses such a row as well; on PostgreSQL no key checks them row by row (migrations 12 and
/// 17: a quarter of AddParticipants(1000)'s work there, a trigger's query per call for every
/// mutation), and migrating down puts the keys back, up takes them away again.
async fn a_participant_row_needs_its_conversation(db: Db) {
    use parley_migration::{Migrator, MigratorTrait};
    use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let missing = "01a24282-647b-70f1-99b9-65c7b7e81c6b";
    let status = alice
        .add_users(missing, &["bob"])
        .await
        .expect_err("no such conversation");
    assert_error(&status, Code::NotFound, ErrorReason::ConversationNotFound);

    let tables = sea_orm::Database::connect(app.database_url())
        .await
        .expect("connect to the server's database");
    let backend = tables.get_database_backend();
    let count = |sql: &'static str| {
        let tables = &tables;
        async move {
            tables
                .query_one_raw(Statement::from_string(backend, sql))
                .await
                .expect("count")
                .expect("a row")
                .try_get_by_index::<i64>(0)
                .expect("a number")
        }
    };
    assert_eq!(
        count("SELECT count(*) FROM participants WHERE conversation_id = '01a24282-647b-70f1-99b9-65c7b7e81c6b'").await,
        0,
        "{db:?}: nothing written"
    );
    assert_eq!(
        count("SELECT count(*) FROM timeline WHERE conversation_id = '01a24282-647b-70f1-99b9-65c7b7e81c6b'").await,
        0,
        "{db:?}: no item written"
    );
    let orphan = r#"INSERT INTO participants (conversation_id, user_id, tenant_id, kind, role,
        state, added_by, join_time, history_from) VALUES ('no-such-conversation', 'bob', 't',
        1, 0, 0, 'ann', 5, 0)"#;
    if backend != DatabaseBackend::Postgres {
        let refused = tables.execute_unprepared(orphan).await;
        assert!(
            refused.is_err_and(|e| e.to_string().contains("FOREIGN KEY")),
            "{db:?}: SQLite checks the key"
        );
        return;
    }
    let keys = "SELECT count(*) FROM pg_constraint \
                WHERE conrelid = 'participants'::regclass AND contype = 'f'";
    let item_keys = "SELECT count(*) FROM pg_constraint \
                     WHERE conrelid = 'timeline'::regclass AND contype = 'f'";
    assert_eq!(count(keys).await, 0, "no key on participants");
    assert_eq!(count(item_keys).await, 0, "no key on the timeline");
    // Down through migration 12, whatever migrations came after it.
    let names: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let twelve = names
        .iter()
        .position(|n| n.ends_with("_000012_participants_unchecked_parent"))
        .expect("migration 12");
    let steps = u32::try_from(names.len() - twelve).expect("a few migrations");
    Migrator::down(&tables, Some(steps)).await.expect("down");
    assert_eq!(count(keys).await, 1, "down puts the key back");
    assert_eq!(
        count(item_keys).await,
        1,
        "down puts the timeline's key back"
    );
    let refused = tables.execute_unprepared(orphan).await;
    assert!(
        refused.is_err_and(|e| e.to_string().contains("foreign key")),
        "the key checks the row"
    );
    Migrator::up(&tables, None).await.expect("up");
    assert_eq!(count(keys).await, 0, "up takes it away");
    assert_eq!(count(item_keys).await, 0, "up takes the timeline's away");
}

both_dbs!(
    groups_past_the_reach_limit_are_refused,
    admins_policy_admits_admins,
    the_caller_in_a_group_is_already_a_participant,
    a_member_adds_internal_users,
    adding_externals_needs_add_external,
    add_internal_policy,
    atomic_adds_write_nothing_on_failure,
    partial_success_applies_the_valid_invitees,
    adding_a_participant_again_changes_nothing,
    groups_expand_to_their_active_members,
    email_invitees_matching_a_user,
    a_participant_row_needs_its_conversation,
);
