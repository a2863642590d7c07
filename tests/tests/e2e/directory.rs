//! DirectoryService: users, search, groups, service-only access, self-upsert from claims.

use parley_tests::*;
use tonic::Code;

fn user(id: &str, kind: pb::user::Kind) -> pb::User {
    pb::User {
        id: id.to_owned(),
        display_name: display_name(id),
        email: email_of(TENANT, id),
        kind: kind as i32,
        status: 0,
        create_time: None,
        update_time: None,
    }
}

async fn list_users_page(
    service: &Caller,
    page_size: i32,
    page_token: &str,
) -> Result<pb::ListUsersResponse, tonic::Status> {
    let msg = pb::ListUsersRequest {
        page_size,
        page_token: page_token.to_owned(),
    };
    Ok(service
        .dir()
        .list_users(service.req(msg))
        .await?
        .into_inner())
}

async fn all_user_ids(service: &Caller) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = list_users_page(service, 1000, &token)
            .await
            .expect("ListUsers");
        ids.extend(page.users.into_iter().map(|u| u.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

async fn search(service: &Caller, query: &str) -> Result<Vec<String>, tonic::Status> {
    let msg = pb::SearchUsersRequest {
        query: query.to_owned(),
        page_size: 0,
    };
    let mut ids: Vec<String> = service
        .dir()
        .search_users(service.req(msg))
        .await?
        .into_inner()
        .users
        .into_iter()
        .map(|u| u.id)
        .collect();
    ids.sort();
    Ok(ids)
}

async fn get_group(service: &Caller, id: &str) -> Result<pb::Group, tonic::Status> {
    Ok(service
        .dir()
        .get_group(service.req(pb::GetGroupRequest { id: id.to_owned() }))
        .await?
        .into_inner())
}

async fn delete_group(service: &Caller, id: &str) -> Result<(), tonic::Status> {
    service
        .dir()
        .delete_group(service.req(pb::DeleteGroupRequest {
            id: id.to_owned(),
            request_id: request_id(),
        }))
        .await?;
    Ok(())
}

async fn upsert_group(
    service: &Caller,
    id: &str,
    members: &[&str],
) -> Result<pb::Group, tonic::Status> {
    let group = pb::Group {
        id: id.to_owned(),
        name: format!("Group {id}"),
        member_ids: members.iter().map(|m| (*m).to_owned()).collect(),
        update_time: None,
    };
    Ok(service
        .dir()
        .upsert_group(service.req(pb::UpsertGroupRequest {
            group: Some(group),
            request_id: request_id(),
        }))
        .await?
        .into_inner())
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn upsert_and_get_user(db: Db) {
    let app = spawn_app(db).await;
    let service = app.service(TENANT);

    let created = service
        .upsert(user("alice", pb::user::Kind::Internal))
        .await
        .expect("UpsertUser");
    assert_eq!(created.id, "alice");
    assert_eq!(created.display_name, "Alice");
    assert_eq!(created.email, email_of(TENANT, "alice"));
    assert_eq!(created.kind(), pb::user::Kind::Internal);
    assert_eq!(
        created.status(),
        pb::user::Status::Active,
        "status defaults to ACTIVE"
    );
    assert!(created.create_time.is_some() && created.update_time.is_some());

    let fetched = service.get_user("alice").await.expect("GetUser");
    assert_eq!(fetched, created);

    // Upserting again updates in place.
    let mut changed = user("alice", pb::user::Kind::External);
    changed.display_name = "Alice Liddell".to_owned();
    let updated = service.upsert(changed).await.expect("UpsertUser again");
    assert_eq!(updated.display_name, "Alice Liddell");
    assert_eq!(updated.kind(), pb::user::Kind::External);
    assert_eq!(updated.create_time, created.create_time);
    assert_eq!(
        service
            .get_user("alice")
            .await
            .expect("GetUser")
            .display_name,
        "Alice Liddell"
    );
    assert_eq!(all_user_ids(&service).await, vec!["alice".to_owned()]);

    // A 128-character id is fine.
    let long = "x".repeat(128);
    service
        .upsert(user(&long, pb::user::Kind::Internal))
        .await
        .expect("128-char id");
}

async fn unknown_and_foreign_users_are_not_found(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let service = app.service(TENANT);
    expect_err(
        service.get_user("nobody").await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    // mallory exists, but in the other tenant.
    expect_err(
        service.get_user("mallory").await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    expect_err(
        service.deactivate_user("mallory").await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    expect_err(
        service.deactivate_user("nobody").await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    assert!(!all_user_ids(&service).await.contains(&"mallory".to_owned()));
    assert_eq!(
        all_user_ids(&app.service(OTHER_TENANT)).await,
        vec!["mallory".to_owned()]
    );
}

async fn upsert_user_rejects_bad_input(db: Db) {
    let app = spawn_app(db).await;
    let service = app.service(TENANT);
    seed_users(&app, TENANT, &[("alice", Kind::Internal)]).await;

    expect_invalid(
        service.upsert(user("", pb::user::Kind::Internal)).await,
        "id",
    );
    expect_invalid(
        service
            .upsert(user(&"x".repeat(129), pb::user::Kind::Internal))
            .await,
        "id",
    );
    expect_invalid(
        service
            .upsert(user("has space", pb::user::Kind::Internal))
            .await,
        "id",
    );
    expect_invalid(
        service
            .upsert(user("tab\there", pb::user::Kind::Internal))
            .await,
        "id",
    );
    expect_invalid(
        service
            .upsert(user("bob", pb::user::Kind::Unspecified))
            .await,
        "kind",
    );
    let mut bad_kind = user("bob", pb::user::Kind::Internal);
    bad_kind.kind = 99;
    expect_invalid(service.upsert(bad_kind).await, "kind");
    let missing = service
        .dir()
        .upsert_user(service.req(pb::UpsertUserRequest {
            user: None,
            request_id: request_id(),
        }))
        .await;
    expect_err(missing, Code::InvalidArgument, ErrorReason::InvalidField);

    assert_eq!(
        all_user_ids(&service).await,
        vec!["alice".to_owned()],
        "nothing was written"
    );
}

async fn list_users_pages_by_id(db: Db) {
    let app = spawn_app(db).await;
    let service = app.service(TENANT);
    let ids = ["gus", "amy", "fay", "dan", "bea", "eve", "cal"];
    seed_users(&app, TENANT, &ids.map(|id| (id, Kind::Internal))).await;
    seed_users(&app, OTHER_TENANT, &[("mallory", Kind::Internal)]).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list_users_page(&service, 3, &token)
            .await
            .expect("ListUsers");
        assert!(page.users.len() <= 3);
        seen.extend(page.users.into_iter().map(|u| u.id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 10, "ListUsers does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        vec!["amy", "bea", "cal", "dan", "eve", "fay", "gus"],
        "paged by id, no repeats"
    );

    // page_size 0 means 50 and more than 1000 is clamped: both return everything here.
    for size in [0, 5000] {
        let page = list_users_page(&service, size, "")
            .await
            .expect("ListUsers");
        assert_eq!(page.users.len(), 7);
        assert!(page.next_page_token.is_empty());
    }
    expect_invalid(list_users_page(&service, -1, "").await, "page_size");

    let first = list_users_page(&service, 2, "").await.expect("ListUsers");
    assert!(!first.next_page_token.is_empty());
    expect_invalid(list_users_page(&service, 2, "garbage!").await, "page_token");
    expect_invalid(
        list_users_page(&service, 2, &tamper(&first.next_page_token)).await,
        "page_token",
    );
    let next = list_users_page(&service, 2, &first.next_page_token)
        .await
        .expect("the real token works");
    assert_eq!(
        next.users.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        vec!["cal", "dan"]
    );
}

async fn page_size_zero_means_fifty(db: Db) {
    let app = spawn_app(db).await;
    let service = app.service(TENANT);
    seed_many(&app, "u", 60).await;
    let page = list_users_page(&service, 0, "").await.expect("ListUsers");
    assert_eq!(page.users.len(), 50);
    assert!(!page.next_page_token.is_empty());
    let rest = list_users_page(&service, 0, &page.next_page_token)
        .await
        .expect("ListUsers");
    assert_eq!(rest.users.len(), 10);
    assert!(rest.next_page_token.is_empty());
}

async fn search_users_by_name_or_email_prefix(db: Db) {
    let app = spawn_app(db).await;
    let service = app.service(TENANT);
    seed_users(
        &app,
        TENANT,
        &[
            ("alice", Kind::Internal),
            ("alicia", Kind::External),
            ("bob", Kind::Internal),
        ],
    )
    .await;
    let mut zed = user("zed", pb::user::Kind::Internal);
    zed.display_name = "Zed Alistair".to_owned();
    zed.email = "z.top@elsewhere.example".to_owned();
    service.upsert(zed).await.expect("UpsertUser zed");
    seed_users(&app, OTHER_TENANT, &[("alina", Kind::Internal)]).await;

    assert_eq!(
        search(&service, "ali").await.expect("search"),
        vec!["alice", "alicia"]
    );
    assert_eq!(
        search(&service, "ALI").await.expect("search"),
        vec!["alice", "alicia"],
        "case-insensitive"
    );
    assert_eq!(
        search(&service, "Alice").await.expect("search"),
        vec!["alice"]
    );
    assert_eq!(
        search(&service, "bob@").await.expect("search"),
        vec!["bob"],
        "email prefix"
    );
    assert_eq!(
        search(&service, "Z.TOP").await.expect("search"),
        vec!["zed"],
        "email prefix, any case"
    );
    assert_eq!(search(&service, "zed").await.expect("search"), vec!["zed"]);
    assert!(search(&service, "nobody").await.expect("search").is_empty());
    assert!(
        search(&service, "alina").await.expect("search").is_empty(),
        "other tenants stay hidden"
    );
    expect_invalid(search(&service, "").await, "query");
}

async fn deactivate_user(db: Db) {
    let app = spawn_app(db).await;
    let service = app.service(TENANT);
    seed_users(&app, TENANT, &[("alice", Kind::Internal)]).await;
    let deactivated = service
        .deactivate_user("alice")
        .await
        .expect("DeactivateUser");
    assert_eq!(deactivated.status(), pb::user::Status::Deactivated);
    assert_eq!(
        service.get_user("alice").await.expect("GetUser").status(),
        pb::user::Status::Deactivated
    );
}

async fn groups_lifecycle(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let service = app.service(TENANT);

    let group = upsert_group(&service, "eng", &["bob", "alice"])
        .await
        .expect("UpsertGroup");
    assert_eq!(group.id, "eng");
    assert_eq!(sorted(group.member_ids.clone()), vec!["alice", "bob"]);
    let fetched = get_group(&service, "eng").await.expect("GetGroup");
    assert_eq!(fetched.name, "Group eng");
    assert_eq!(sorted(fetched.member_ids), vec!["alice", "bob"]);

    // Upserting replaces the member list.
    upsert_group(&service, "eng", &["carol", "dave", "dave"])
        .await
        .expect("UpsertGroup again");
    assert_eq!(
        sorted(
            get_group(&service, "eng")
                .await
                .expect("GetGroup")
                .member_ids
        ),
        vec!["carol", "dave"]
    );

    // Unknown (or foreign) members are rejected and nothing changes.
    expect_err(
        upsert_group(&service, "eng", &["carol", "nobody"]).await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    expect_err(
        upsert_group(&service, "eng", &["mallory"]).await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    expect_err(
        upsert_group(&service, "new", &["nobody"]).await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    assert_eq!(
        sorted(
            get_group(&service, "eng")
                .await
                .expect("GetGroup")
                .member_ids
        ),
        vec!["carol", "dave"]
    );
    expect_err(
        get_group(&service, "new").await,
        Code::NotFound,
        ErrorReason::GroupNotFound,
    );
    expect_invalid(upsert_group(&service, "bad id", &["carol"]).await, "id");

    // Other tenants do not see it.
    let other = app.service(OTHER_TENANT);
    expect_err(
        get_group(&other, "eng").await,
        Code::NotFound,
        ErrorReason::GroupNotFound,
    );
    expect_err(
        delete_group(&other, "eng").await,
        Code::NotFound,
        ErrorReason::GroupNotFound,
    );

    delete_group(&service, "eng").await.expect("DeleteGroup");
    expect_err(
        get_group(&service, "eng").await,
        Code::NotFound,
        ErrorReason::GroupNotFound,
    );
    expect_err(
        delete_group(&service, "eng").await,
        Code::NotFound,
        ErrorReason::GroupNotFound,
    );
}

async fn directory_is_for_services_only(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let before = all_user_ids(&app.service(TENANT)).await;
    for caller in [app.user(TENANT, "alice"), app.external(TENANT, "ext1")] {
        expect_err(
            caller
                .upsert(user("sneaky", pb::user::Kind::Internal))
                .await,
            Code::PermissionDenied,
            ErrorReason::NoPermission,
        );
        expect_err(
            caller.get_user("bob").await,
            Code::PermissionDenied,
            ErrorReason::NoPermission,
        );
        expect_err(
            caller.deactivate_user("bob").await,
            Code::PermissionDenied,
            ErrorReason::NoPermission,
        );
        expect_err(
            list_users_page(&caller, 0, "").await,
            Code::PermissionDenied,
            ErrorReason::NoPermission,
        );
        expect_err(
            search(&caller, "b").await,
            Code::PermissionDenied,
            ErrorReason::NoPermission,
        );
        expect_err(
            upsert_group(&caller, "g", &["bob"]).await,
            Code::PermissionDenied,
            ErrorReason::NoPermission,
        );
        expect_err(
            get_group(&caller, "g").await,
            Code::PermissionDenied,
            ErrorReason::NoPermission,
        );
        expect_err(
            delete_group(&caller, "g").await,
            Code::PermissionDenied,
            ErrorReason::NoPermission,
        );
    }
    let service = app.service(TENANT);
    assert_eq!(all_user_ids(&service).await, before, "nothing was written");
    assert_eq!(
        service.get_user("bob").await.expect("GetUser").status(),
        pb::user::Status::Active
    );
}

async fn a_users_first_call_upserts_its_directory_entry(db: Db) {
    let app = spawn_app(db).await;
    let service = app.service(TENANT);
    expect_err(
        service.get_user("zoe").await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );

    app.user(TENANT, "zoe")
        .list_conversations()
        .await
        .expect("ListConversations as zoe");
    let zoe = service
        .get_user("zoe")
        .await
        .expect("zoe is in the directory now");
    assert_eq!(zoe.kind(), pb::user::Kind::Internal);
    assert_eq!(zoe.email, email_of(TENANT, "zoe"));
    assert_eq!(zoe.status(), pb::user::Status::Active);

    app.external(TENANT, "guest")
        .list_conversations()
        .await
        .expect("ListConversations as guest");
    assert_eq!(
        service
            .get_user("guest")
            .await
            .expect("GetUser guest")
            .kind(),
        pb::user::Kind::External
    );

    // Only in the caller's own tenant.
    expect_err(
        app.service(OTHER_TENANT).get_user("zoe").await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );

    // A service principal is not a directory user.
    app.service(TENANT).list_conversations().await.ok();
    expect_err(
        service.get_user("svc-identity").await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );

    // An existing entry is the directory's, not the token's: ext1 stays EXTERNAL and Bob
    // keeps his name even when their tokens say otherwise.
    seed_users(
        &app,
        TENANT,
        &[("bob", Kind::Internal), ("ext1", Kind::External)],
    )
    .await;
    let bob = app.user(TENANT, "bob");
    let ext1_claiming_internal = app.user(TENANT, "ext1");
    ext1_claiming_internal
        .list_conversations()
        .await
        .expect("ext1 calls");
    let ext1 = service.get_user("ext1").await.expect("GetUser ext1");
    assert_eq!(ext1.kind(), pb::user::Kind::External);
    let c = bob.create_group("kinds", &["ext1"]).await.expect("create");
    assert_eq!(
        service
            .get_user("bob")
            .await
            .expect("GetUser bob")
            .display_name,
        "Bob"
    );
    let participant = bob
        .participant(&c.id, "ext1")
        .await
        .expect("GetParticipant");
    assert_eq!(participant.kind(), pb::participant::Kind::External);
}

/// The collation of `table.column` on PostgreSQL (`default` for the database's).
async fn collation(tables: &sea_orm::DatabaseConnection, table: &str, column: &str) -> String {
    use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
    let sql = format!(
        "SELECT coalesce(collation_name, 'default') FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = '{table}' \
         AND column_name = '{column}'"
    );
    tables
        .query_one_raw(Statement::from_string(DatabaseBackend::Postgres, sql))
        .await
        .expect("read the column")
        .unwrap_or_else(|| panic!("no column {table}.{column}"))
        .try_get_by_index::<String>(0)
        .expect("a collation")
}

/// Ids are ordered by their bytes in the database as on the server, whatever the database's
/// locale: pages of ids that a linguistic collation orders otherwise (capitals after small
/// letters, accented letters beside their base) come in the bytes' order, each once. On
/// PostgreSQL every identifier column compares by bytes (`COLLATE "C"`, migration 11), and a
/// display name keeps the database's collation.
async fn ids_page_in_the_order_of_their_bytes(db: Db) {
    use sea_orm::{ConnectionTrait, DatabaseBackend};
    let app = spawn_app(db).await;
    let service = app.service(TENANT);
    let ids = ["zoe", "Émile", "a", "ßa", "Zed", "B"];
    seed_users(&app, TENANT, &ids.map(|id| (id, Kind::Internal))).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = list_users_page(&service, 2, &token)
            .await
            .expect("ListUsers");
        seen.extend(page.users.into_iter().map(|u| u.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut by_bytes = ids.map(str::to_owned).to_vec();
    by_bytes.sort();
    assert_eq!(
        seen, by_bytes,
        "ListUsers pages in the bytes' order, each id once"
    );
    assert_eq!(seen, ["B", "Zed", "a", "zoe", "Émile", "ßa"]);

    let tables = sea_orm::Database::connect(app.database_url())
        .await
        .expect("connect to the server's database");
    if tables.get_database_backend() != DatabaseBackend::Postgres {
        return;
    }
    let identifiers: Vec<&(&str, &[(&str, &str)])> =
        parley_migration::m20261204_000011_identifier_collation::IDENTIFIERS
            .iter()
            .chain(parley_migration::m20261205_000016_notification_leases::IDENTIFIERS)
            .chain(parley_migration::m20261205_000018_export_cursors::IDENTIFIERS)
            .collect();
    for (table, columns) in identifiers.iter().copied() {
        for (column, _) in *columns {
            assert_eq!(
                collation(&tables, table, column).await,
                "C",
                "{table}.{column}"
            );
        }
    }
    // Every other text column holds words or JSON, not ids: a column added later is one or
    // the other, and this list or `IDENTIFIERS` says which.
    let words = [
        ("conversations", "title"),
        ("groups", "name"),
        ("notifications", "subject_ids"),
        ("participants", "removed_view"),
        ("timeline", "body"),
        ("timeline", "subject_ids"),
        ("users", "display_name"),
        ("users", "name_lower"),
    ];
    let rows = tables
        .query_all_raw(sea_orm::Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT table_name::text, column_name::text, coalesce(collation_name, 'default') \
             FROM information_schema.columns WHERE table_schema = current_schema() \
             AND data_type IN ('character varying', 'text') AND table_name <> 'seaql_migrations'",
        ))
        .await
        .expect("read the columns");
    for row in rows {
        let get = |i| row.try_get_by_index::<String>(i).expect("a name");
        let (table, column, collation) = (get(0), get(1), get(2));
        // The acknowledged notifications' table has the outbox's columns (migration 14).
        let table = match table.as_str() {
            "notifications_acked" => "notifications".to_owned(),
            _ => table,
        };
        let identifier = identifiers
            .iter()
            .any(|(t, cs)| *t == table && cs.iter().any(|(c, _)| *c == column));
        let word = words.contains(&(table.as_str(), column.as_str()));
        assert!(
            identifier != word,
            "{table}.{column}: an identifier or words?"
        );
        let expected = if identifier { "C" } else { "default" };
        assert_eq!(collation, expected, "{table}.{column}");
    }
}

both_dbs!(
    upsert_and_get_user,
    unknown_and_foreign_users_are_not_found,
    upsert_user_rejects_bad_input,
    list_users_pages_by_id,
    ids_page_in_the_order_of_their_bytes,
    page_size_zero_means_fifty,
    search_users_by_name_or_email_prefix,
    deactivate_user,
    groups_lifecycle,
    directory_is_for_services_only,
    a_users_first_call_upserts_its_directory_entry,
);
