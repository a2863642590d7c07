//! Reads that stay flat as tables grow: the outbox drain reads only unacknowledged rows, and
//! SearchUsers reads a range of an index, on both engines. Each test fills a table directly
//! (tens of thousands of rows in one statement), asks the engine for the plan of the exact
//! statement the server runs (the store builds it; `EXPLAIN` on PostgreSQL, `EXPLAIN QUERY
//! PLAN` on SQLite, through a connection of the test's own), and checks the answers through
//! the API. SearchUsers' matching and order are checked on tricky prefixes too.

use parley_server::store::{self, directory, outbox, participants};
use parley_tests::*;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, QueryTrait, Statement};

/// Acknowledged notifications written beside the few unacknowledged ones.
const ACKED: i64 = 50_000;
/// One notification in this many is left unacknowledged.
const UNACKED_EVERY: i64 = 1_000;
/// Directory entries written for the search plans.
const USERS: i64 = 20_000;
/// Conversations written beside the one read.
const CONVERSATIONS: i64 = 2_000;
/// The head of an insert of directory entries.
const USERS_INSERT: &str = "INSERT INTO users (tenant_id, id, display_name, name_lower, email, \
                            email_lower, kind, status, create_time, update_time)";

/// A connection of the test's own to the server's database.
async fn tables(app: &TestApp) -> DatabaseConnection {
    sea_orm::Database::connect(app.database_url())
        .await
        .expect("connect to the server's database")
}

async fn run(db: &DatabaseConnection, sql: &str) {
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Refreshes the planner's statistics on PostgreSQL, as autovacuum would after such a load.
/// SQLite is left without statistics, as a Parley database is: its plans must not need them.
async fn analyze(db: &DatabaseConnection, table: &str) {
    if db.get_database_backend() == DatabaseBackend::Postgres {
        run(db, &format!("ANALYZE {table}")).await;
    }
}

/// The engine's plan for `statement`, bound values and all, one line per plan node.
async fn plan(db: &DatabaseConnection, statement: Statement) -> String {
    let backend = db.get_database_backend();
    let explain = match backend {
        DatabaseBackend::Sqlite => "EXPLAIN QUERY PLAN",
        _ => "EXPLAIN",
    };
    let rows = db
        .query_all_raw(Statement {
            sql: format!("{explain} {}", statement.sql),
            ..statement
        })
        .await
        .expect("explain");
    rows.iter()
        .map(|row| match backend {
            DatabaseBackend::Sqlite => row.try_get::<String>("", "detail"),
            _ => row.try_get_by_index::<String>(0),
        })
        .collect::<Result<Vec<_>, _>>()
        .expect("plan lines")
        .join("\n")
}

/// `rows` rows made by `select` (which reads `i`, 1..=rows) on either engine, in one statement.
fn numbered(backend: DatabaseBackend, rows: i64, insert: &str, select: &str) -> String {
    match backend {
        DatabaseBackend::Sqlite => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) \
             {insert} SELECT {select} FROM n"
        ),
        _ => format!("{insert} SELECT {select} FROM generate_series(1, {rows}) AS n(i)"),
    }
}

/// A zero-padded 36-character id from the number `i`.
fn padded(backend: DatabaseBackend, expr: &str) -> String {
    match backend {
        DatabaseBackend::Sqlite => format!("printf('%036d', {expr})"),
        _ => format!("lpad(({expr})::text, 36, '0')"),
    }
}

async fn the_outbox_drain_reads_only_unacknowledged_rows(db: Db) {
    let app = spawn_app(db).await;
    let tables = tables(&app).await;
    let backend = tables.get_database_backend();
    let columns = "(id, tenant_id, kind, recipient_user_id, conversation_id, actor_id, \
                   subject_ids, create_time, ack_time)";
    let id = padded(backend, "i");
    // The tenant's backlog, one row in UNACKED_EVERY unacknowledged (in `notifications`), the
    // others acknowledged (moved to `notifications_acked`).
    for (table, which, ack_time) in [
        ("notifications", "=", "NULL"),
        ("notifications_acked", "<>", "i"),
    ] {
        run(
            &tables,
            &format!(
                "{} WHERE i % {UNACKED_EVERY} {which} 0",
                numbered(
                    backend,
                    ACKED,
                    &format!("INSERT INTO {table} {columns}"),
                    &format!("{id}, '{TENANT}', 1, 'bob', 'c', 'alice', '[]', i, {ack_time}"),
                )
            ),
        )
        .await;
    }
    // Another tenant's backlog, unacknowledged: it must not be read either.
    let other_id = padded(backend, &format!("i + {ACKED}"));
    run(
        &tables,
        &numbered(
            backend,
            1_000,
            &format!("INSERT INTO notifications {columns}"),
            &format!("{other_id}, '{OTHER_TENANT}', 1, 'bob', 'c', 'alice', '[]', i, NULL"),
        ),
    )
    .await;
    analyze(&tables, "notifications").await;
    analyze(&tables, "notifications_acked").await;

    let first_page = outbox::list_query(backend, TENANT, false, None, 51);
    let later_page =
        outbox::list_query(backend, TENANT, false, Some(&format!("{:036}", 10_000)), 51);
    for (what, query) in [("first page", first_page), ("later page", later_page)] {
        let plan = plan(&tables, query).await;
        eprintln!("{db:?} ListNotifications {what}:\n{plan}");
        match backend {
            DatabaseBackend::Sqlite => assert!(
                plan.contains("USING PRIMARY KEY (tenant_id=? AND id>?)")
                    && !plan.contains("SCAN")
                    && !plan.contains("TEMP B-TREE"),
                "{db:?}: the {what} is not a range of the outbox's key:\n{plan}"
            ),
            // PostgreSQL may sort what the range finds (here 50 rows) rather than walk it in
            // order: either way it reads the tenant's unacknowledged rows only.
            _ => assert!(
                plan.contains("notifications_pkey")
                    && !plan.contains("Seq Scan")
                    && !plan.contains("notifications_acked"),
                "{db:?}: the {what} is not a range of the outbox's key:\n{plan}"
            ),
        }
    }
    // With the acknowledged ones: a page of each table, each a range of its key, merged (a
    // sort of at most a page from each, whatever the tables hold).
    let everything = plan(&tables, outbox::list_query(backend, TENANT, true, None, 51)).await;
    eprintln!("{db:?} ListNotifications with acknowledged ones:\n{everything}");
    match backend {
        DatabaseBackend::Sqlite => assert!(
            everything
                .matches("USING PRIMARY KEY (tenant_id=? AND id>?)")
                .count()
                == 2
                && !everything.contains("SCAN notifications"),
            "{db:?}: not a range of each table's key:\n{everything}"
        ),
        _ => assert!(
            everything.contains("notifications_pkey")
                && everything.contains("notifications_acked_pkey")
                && !everything.contains("Seq Scan"),
            "{db:?}: not a range of each table's key:\n{everything}"
        ),
    }

    // The drain itself: every unacknowledged one of the tenant, in order, and nothing else.
    let listed: Vec<String> = app
        .unacked_notifications(TENANT)
        .await
        .into_iter()
        .map(|n| n.id)
        .collect();
    let expected: Vec<String> = (1..=ACKED / UNACKED_EVERY)
        .map(|k| format!("{:036}", k * UNACKED_EVERY))
        .collect();
    assert_eq!(listed, expected);
}

async fn search_users_reads_a_range_of_an_index(db: Db) {
    let app = spawn_app(db).await;
    let tables = tables(&app).await;
    let backend = tables.get_database_backend();
    // Names spread over the alphabet ("user-<i> q", "user-<i> r", …) so that a prefix of a few
    // letters matches a few rows, as in a real directory.
    let letter = match backend {
        DatabaseBackend::Sqlite => "char(97 + i % 26)",
        _ => "chr(97 + i % 26)",
    };
    let name = format!("{letter} || 'name' || i");
    run(
        &tables,
        &numbered(
            backend,
            USERS,
            USERS_INSERT,
            &format!(
                "'{TENANT}', 'u' || i, {name}, {name}, 'mail' || i || '@x.example', \
                 'mail' || i || '@x.example', 1, 1, 1, 1"
            ),
        ),
    )
    .await;
    analyze(&tables, "users").await;

    let (name_index, email_index) = match backend {
        DatabaseBackend::Sqlite => ("users_name", "users_email"),
        _ => ("users_name_prefix", "users_email_prefix"),
    };
    for prefix in ["Kname123", "mail777"] {
        let query = directory::search_users_query(backend, TENANT, prefix, 51);
        let plan = plan(&tables, query.build(backend)).await;
        eprintln!("{db:?} SearchUsers {prefix:?}:\n{plan}");
        assert!(
            plan.contains(name_index) && plan.contains(email_index),
            "{db:?}: {prefix:?} does not read {name_index} and {email_index}:\n{plan}"
        );
        if backend == DatabaseBackend::Sqlite {
            // Both ranges searched, not the tenant's whole directory walked in name order.
            assert!(
                plan.contains("name_lower>? AND name_lower<?")
                    && plan.contains("email_lower>? AND email_lower<?"),
                "{db:?}: not a range:\n{plan}"
            );
            assert!(!plan.contains("SCAN"), "{db:?}: a scan:\n{plan}");
        }
    }
    // On SQLite the plan holds for a prefix that matches much of the directory too.
    if backend == DatabaseBackend::Sqlite {
        let query = directory::search_users_query(backend, TENANT, "k", 51);
        let plan = plan(&tables, query.build(backend)).await;
        assert!(plan.contains("MULTI-INDEX OR"), "{db:?}:\n{plan}");
    }

    // The answers: "Kname123" matches the users i whose number starts with 123 and whose
    // name's letter is k (i % 26 = 10), in name order.
    let service = app.service(TENANT);
    let found = search_ordered(&service, "KNAME123").await;
    let mut expected: Vec<(String, String)> = std::iter::once(123)
        .chain(1230..=1239)
        .chain(12300..=12399)
        .filter(|i| i % 26 == 10)
        .map(|i| (format!("kname{i}"), format!("u{i}")))
        .collect();
    expected.sort();
    assert!(!expected.is_empty());
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
    assert_eq!(found, expected);
    assert_eq!(search_ordered(&service, "mail7777@").await, vec!["u7777"]);
}

/// SearchUsers' ids in the order the server returns them.
async fn search_ordered(service: &Caller, query: &str) -> Vec<String> {
    service
        .dir()
        .search_users(service.req(pb::SearchUsersRequest {
            query: query.to_owned(),
            page_size: 100,
        }))
        .await
        .unwrap_or_else(|e| panic!("search {query:?}: {e:?}"))
        .into_inner()
        .users
        .into_iter()
        .map(|u| u.id)
        .collect()
}

async fn search_users_matches_prefixes_exactly_in_name_order(db: Db) {
    let app = spawn_app(db).await;
    let service = app.service(TENANT);
    let people = [
        ("pct", "100% Sure", "pct@x.example"),
        ("hundred", "100 Percent", "hundred@x.example"),
        ("under", "A_b", "under@x.example"),
        ("plain", "Ab", "plain@x.example"),
        ("zoe-umlaut", "Zoë", "zoe2@x.example"),
        ("zoe", "Zoe", "zoe@x.example"),
        ("omega", "Ωmega", "omega@x.example"),
        ("omega2", "ωMEGA Two", "omega2@x.example"),
        ("top", "Top\u{10FFFF}", "top@x.example"),
        ("topper", "Top\u{10FFFF}per", "topper@x.example"),
        ("tops", "Tops", "tops@x.example"),
        ("sam2", "Sam", "sam-b@x.example"),
        ("sam1", "Sam", "sam-a@x.example"),
        ("slash", "Back\\slash", "slash@x.example"),
    ];
    for (id, name, email) in people {
        service
            .upsert(pb::User {
                id: id.to_owned(),
                display_name: name.to_owned(),
                email: email.to_owned(),
                kind: pb::user::Kind::Internal as i32,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("upsert {id}: {e:?}"));
    }
    let cases: &[(&str, &[&str])] = &[
        // LIKE's wildcards are plain characters.
        ("100%", &["pct"]),
        ("100", &["hundred", "pct"]),
        ("a_", &["under"]),
        ("A", &["under", "plain"]),
        ("back\\", &["slash"]),
        // Non-ASCII, upper-case queries of lower-cased names, names tied and ordered by id.
        ("zo", &["zoe", "zoe-umlaut"]),
        ("ZOË", &["zoe-umlaut"]),
        ("ωm", &["omega", "omega2"]),
        ("ΩMEGA T", &["omega2"]),
        ("sam", &["sam1", "sam2"]),
        // The last code point has no successor: the range ends where the prefix before it does.
        ("top\u{10FFFF}", &["top", "topper"]),
        ("top", &["tops", "top", "topper"]),
        ("tops", &["tops"]),
        // Email prefixes, and a name prefix that is also another user's email prefix.
        ("zoe2@", &["zoe-umlaut"]),
        ("sam-", &["sam1", "sam2"]),
        ("nobody", &[]),
    ];
    for (query, expected) in cases {
        assert_eq!(
            search_ordered(&service, query).await,
            expected.to_vec(),
            "{db:?}: {query:?}"
        );
    }
}

/// AddParticipants reads the people it names by the whole primary key of `users` and of
/// `participants`, one id at a time, whatever the statistics say. On PostgreSQL the plan it
/// checks is the generic one (made once, for all values) on statistics taken while the tenant
/// and the conversation were small, as in a fresh database's first minute: a join by `= ANY`
/// then read every user of the tenant and every participant of the conversation. SQLite has
/// no statistics at all. The call itself then adds into the large conversation.
async fn people_are_read_by_their_keys_whatever_the_statistics(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group_with("large", &["bob"], Some(policy_with_max(10_000)))
        .await
        .expect("create");
    let tables = tables(&app).await;
    let backend = tables.get_database_backend();
    // Statistics of small tables, then a large tenant and conversation they do not know of.
    analyze(&tables, "users").await;
    analyze(&tables, "participants").await;
    run(
        &tables,
        &numbered(
            backend,
            USERS,
            USERS_INSERT,
            &format!(
                "'{TENANT}', 'p' || i, 'P' || i, 'p' || i, 'p' || i || '@x.example', \
                 'p' || i || '@x.example', 1, 1, 1, 1"
            ),
        ),
    )
    .await;
    run(
        &tables,
        &numbered(
            backend,
            USERS - 1,
            "INSERT INTO participants (conversation_id, user_id, tenant_id, kind, role, state, \
             added_by, join_time, removed_by, remove_time, history_from, removed_seq, \
             removed_view)",
            &format!(
                "'{}', 'p' || i, '{TENANT}', 1, 3, 1, 'alice', 1, NULL, NULL, 1, NULL, NULL",
                c.id
            ),
        ),
    )
    .await;

    let (seated, new) = ("p7".to_owned(), format!("p{USERS}"));
    let statement =
        participants::people_statement(backend, TENANT, &c.id, &[&seated, &new]).expect("built");
    let plan = match backend {
        DatabaseBackend::Postgres => {
            // One connection: the prepared statement and the setting are the session's.
            let session = sea_orm::TransactionTrait::begin(&tables)
                .await
                .expect("begin");
            run_in(&session, "SET LOCAL plan_cache_mode = force_generic_plan").await;
            run_in(&session, &format!("PREPARE people AS {}", statement.sql)).await;
            let rows = session
                .query_all_raw(Statement::from_string(
                    backend,
                    format!(
                        "EXPLAIN EXECUTE people('{}', '{TENANT}', '[\"{seated}\", \"{new}\"]')",
                        c.id
                    ),
                ))
                .await
                .expect("explain");
            rows.iter()
                .map(|row| row.try_get_by_index::<String>(0).expect("a plan line"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        _ => plan(&tables, statement).await,
    };
    eprintln!("{db:?} AddParticipants' people:\n{plan}");
    match backend {
        DatabaseBackend::Postgres => {
            for key in [
                "Index Cond: (((tenant_id)::text = $2) AND ((id)::text = t.id))",
                "Index Cond: (((conversation_id)::text = $1) AND ((user_id)::text = t.id))",
            ] {
                assert!(plan.contains(key), "{db:?}: no lookup by {key}:\n{plan}");
            }
            for scan in ["Seq Scan", "Bitmap", "Hash"] {
                assert!(!plan.contains(scan), "{db:?}: a {scan}:\n{plan}");
            }
        }
        _ => {
            let lines: Vec<&str> = plan.lines().collect();
            assert!(
                lines.first().is_some_and(|l| l.starts_with("SCAN t")),
                "{db:?}: the ids are not the outer loop:\n{plan}"
            );
            for key in [
                "(tenant_id=? AND id=?)",
                "(conversation_id=? AND user_id=?)",
            ] {
                assert!(plan.contains(key), "{db:?}: no lookup by {key}:\n{plan}");
            }
            assert_eq!(plan.matches("SCAN").count(), 1, "{db:?}:\n{plan}");
            // Each person from the index that holds what the rules read, not the table's rows.
            assert!(
                plan.contains("USING COVERING INDEX users_person"),
                "{db:?}: the people are read from the table's rows:\n{plan}"
            );
        }
    }

    // Through the API: the seated one is already there, the new one is added.
    let added = alice.add_users(&c.id, &[&seated, &new]).await.expect("add");
    let outcomes: Vec<_> = added.results.iter().map(|r| r.outcome()).collect();
    assert_eq!(
        outcomes,
        vec![
            pb::add_participants_result::Outcome::AlreadyParticipant,
            pb::add_participants_result::Outcome::Added
        ]
    );
}

/// A conversation is read by its primary key whatever the statistics say. Before autovacuum
/// first analyzes the table (a fresh database's first minute), PostgreSQL rated an index that
/// starts with `tenant_id` (the DIRECT pairs' index, before it was made partial) as good as
/// the key, and then stepped over every conversation of the tenant on every call.
async fn conversations_are_read_by_their_key_whatever_the_statistics(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("read", &["bob"]).await.expect("create");
    let tables = tables(&app).await;
    let backend = tables.get_database_backend();
    run(
        &tables,
        &numbered(
            backend,
            CONVERSATIONS,
            "INSERT INTO conversations (id, tenant_id, kind, title, owner_id, state, \
             add_internal, add_external, remove_policy, lock_external, history, \
             max_participants, participant_count, last_seq, version, create_time, update_time, \
             shared_version, shared_update_time, external_view_count)",
            &format!(
                "{}, '{TENANT}', 2, 'c', 'alice', 1, 1, 1, 1, false, 1, 100, 0, 0, 1, 1, 1, 1, \
                 1, 0",
                padded(backend, "i")
            ),
        ),
    )
    .await;
    let statement = store::with_caller_statement(backend, TENANT, &c.id, Some("alice"));
    let plan = plan(&tables, statement).await;
    eprintln!("{db:?} GetConversation:\n{plan}");
    let key = match backend {
        DatabaseBackend::Postgres => "conversations_pkey",
        _ => "sqlite_autoindex_conversations_1",
    };
    assert!(plan.contains(key), "{db:?}: not read by its key:\n{plan}");
    assert!(
        !plan.contains("conversations_direct_pair"),
        "{db:?}: read by the tenant:\n{plan}"
    );
    // The plan above did not always show the hazard in a test's small database (in a
    // benchmark's it did, at 1,000 conversations): the DIRECT pairs' index holds DIRECT
    // conversations only, so no read by id can be planned on it.
    let definition = match backend {
        DatabaseBackend::Postgres => {
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'conversations_direct_pair'"
        }
        _ => "SELECT sql FROM sqlite_master WHERE name = 'conversations_direct_pair'",
    };
    let definition = tables
        .query_one_raw(Statement::from_string(backend, definition))
        .await
        .expect("read the index")
        .expect("the index exists")
        .try_get_by_index::<String>(0)
        .expect("its definition");
    assert!(
        definition.contains("WHERE")
            && definition.contains("direct_key")
            && definition.contains("NOT NULL"),
        "{db:?}: {definition}"
    );
    // Through the API, the conversation is still the one read.
    let read = alice.get(&c.id).await.expect("get");
    assert_eq!(read.id, c.id);
}

async fn run_in(tx: &sea_orm::DatabaseTransaction, sql: &str) {
    tx.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The pool is as large as configured, and on PostgreSQL every connection of it, not only the
/// first, plans as configured. PostgreSQL's pool is the server's own (`store::pg`), opened
/// with the server's `Db`; SQLite's readers are sqlx's where sea-orm opens them
/// (`store::connect`, the migrations' and the command line's connection).
async fn connections_are_as_configured(db: Db) {
    use parley_server::store::{Conn, SqliteSync, pg::Sizes};
    let app = spawn_app(db).await;
    let pool = parley_server::DbPool {
        max_connections: Some(3),
        min_connections: Some(3),
        ..Default::default()
    };
    if db == Db::Postgres {
        let opened = parley_server::store::Db::open(app.database_url(), &pool, SqliteSync::Normal)
            .await
            .expect("open");
        let Conn::Pg(pg) = &opened.read else {
            panic!("PostgreSQL's connections are the server's own pool");
        };
        assert_eq!(
            pg.sizes(),
            Sizes {
                open: 3,
                idle: 3,
                max: 3
            },
            "the minimum is opened at once"
        );
        // Three transactions at once hold three distinct connections.
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(opened.read.begin_read().await.expect("begin"));
        }
        assert_eq!(pg.sizes().idle, 0, "all three are taken");
        let mut backends = std::collections::HashSet::new();
        for tx in &open {
            let row = tx
                .query_one_raw(Statement::from_string(
                    DatabaseBackend::Postgres,
                    "SELECT current_setting('plan_cache_mode'), pg_backend_pid()",
                ))
                .await
                .expect("show")
                .expect("a row");
            assert_eq!(
                row.try_get_by_index::<String>(0).expect("a setting"),
                "auto",
                "PostgreSQL's own plan caching by default"
            );
            backends.insert(row.try_get_by_index::<i32>(1).expect("a backend pid"));
        }
        assert_eq!(backends.len(), 3, "three connections");
        drop(open);
        // `--pg-plan-cache-mode force-custom-plan` holds on every connection of the pool.
        let forced = parley_server::DbPool {
            max_connections: Some(2),
            min_connections: Some(2),
            pg_plan_cache: parley_server::store::PgPlanCache::ForceCustomPlan,
            pg_max_reads: None,
        };
        let opened =
            parley_server::store::Db::open(app.database_url(), &forced, SqliteSync::Normal)
                .await
                .expect("open");
        let (a, b) = (
            opened.read.begin_read().await.expect("begin"),
            opened.read.begin_read().await.expect("begin"),
        );
        for tx in [&a, &b] {
            let row = tx
                .query_one_raw(Statement::from_string(
                    DatabaseBackend::Postgres,
                    "SELECT current_setting('plan_cache_mode')",
                ))
                .await
                .expect("show")
                .expect("a row");
            assert_eq!(
                row.try_get_by_index::<String>(0).expect("a setting"),
                "force_custom_plan"
            );
        }
        drop((a, b));
        // Reads hold at most `--pg-max-reads` of the connections at once; writes take the
        // others meanwhile.
        let limited = parley_server::DbPool {
            max_connections: Some(3),
            min_connections: Some(1),
            pg_max_reads: Some(1),
            ..Default::default()
        };
        let opened =
            parley_server::store::Db::open(app.database_url(), &limited, SqliteSync::Normal)
                .await
                .expect("open");
        let wait = std::time::Duration::from_secs(10);
        let first = opened.read.begin_read().await.expect("a read");
        let second = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            opened.read.begin_read(),
        )
        .await;
        assert!(second.is_err(), "a second read waits for the first");
        let write = tokio::time::timeout(wait, opened.writer.conn().begin_write())
            .await
            .expect("a write does not wait for the reads")
            .expect("begin");
        write
            .execute_unprepared("SELECT 1")
            .await
            .expect("the write runs");
        drop(first);
        let second = tokio::time::timeout(wait, opened.read.begin_read())
            .await
            .expect("a read once the first ended")
            .expect("begin");
        drop((write, second));
        let unset = parley_server::store::Db::open(
            app.database_url(),
            &Default::default(),
            SqliteSync::Normal,
        )
        .await
        .expect("open with the defaults");
        let Conn::Pg(pg) = &unset.read else {
            panic!("PostgreSQL's connections are the server's own pool");
        };
        assert_eq!(pg.sizes().max, 8, "the default maximum");
    } else {
        let conn = parley_server::store::connect(app.database_url(), &pool)
            .await
            .expect("connect");
        let options = conn.get_sqlite_connection_pool().options();
        assert_eq!(
            (options.get_min_connections(), options.get_max_connections()),
            (3, 3)
        );
        let unset = parley_server::store::connect(app.database_url(), &Default::default())
            .await
            .expect("connect with the defaults");
        assert_eq!(
            unset
                .get_sqlite_connection_pool()
                .options()
                .get_max_connections(),
            8
        );
    }
    let inverted = parley_server::DbPool {
        max_connections: Some(2),
        min_connections: Some(3),
        ..Default::default()
    };
    let refused = parley_server::store::connect(app.database_url(), &inverted).await;
    assert!(refused.is_err(), "a minimum above the maximum is refused");
    let refused =
        parley_server::store::Db::open(app.database_url(), &inverted, SqliteSync::Normal).await;
    assert!(refused.is_err(), "the server's pool refuses it too");
}

/// In a fresh database the caller's directory entry is read by the key of `users`. PostgreSQL
/// had no statistics of a new table until autovacuum's first ANALYZE, up to a minute later,
/// and without them rated every index that starts with `tenant_id` as good as the key: each
/// read of a user then stepped over every user of the tenant. The server analyzes a table it
/// writes to as soon as the table has rows. SQLite keeps no statistics and needs none.
async fn a_fresh_directory_is_read_by_its_key(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("read", &["bob"]).await.expect("create");
    let tables = tables(&app).await;
    let backend = tables.get_database_backend();
    // Written beside the server, as a bulk import would be: nobody analyzes the table here.
    run(
        &tables,
        &numbered(
            backend,
            2_000,
            USERS_INSERT,
            &format!(
                "'{TENANT}', 'f' || i, 'F' || i, 'f' || i, 'f' || i || '@x.example', \
                 'f' || i || '@x.example', 1, 1, 1, 1"
            ),
        ),
    )
    .await;
    if backend == DatabaseBackend::Postgres {
        // The server looks every second; twenty is the margin for the engine's own counters,
        // which a connection reports within a second or so of its last statement.
        let analyzed = "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'users' \
                        AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)";
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let n = tables
                .query_one_raw(Statement::from_string(backend, analyzed))
                .await
                .expect("read the statistics' state")
                .and_then(|row| row.try_get_by_index::<i64>(0).ok())
                .unwrap_or(0);
            if n == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{db:?}: the server did not analyze users within 20 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    let statement = store::with_caller_statement(backend, TENANT, &c.id, Some("alice"));
    let plan = plan(&tables, statement).await;
    eprintln!("{db:?} the caller's directory entry:\n{plan}");
    let key = match backend {
        DatabaseBackend::Postgres => "users_pkey",
        _ => "sqlite_autoindex_users_1",
    };
    assert!(
        plan.contains(key),
        "{db:?}: the user is not read by key:\n{plan}"
    );
    for other in ["users_email", "users_name"] {
        assert!(
            !plan.contains(other),
            "{db:?}: read through {other}:\n{plan}"
        );
    }
    let read = alice.get(&c.id).await.expect("get");
    assert_eq!(read.id, c.id);
}

/// A PostgreSQL transaction dropped before its end (a call whose client went away) lets go of
/// its locks at once, not when its connection is next taken from the pool: the conversation a
/// write had locked must not stay locked while that connection waits unused. (On SQLite a
/// dropped transaction is rolled back where it is dropped.)
async fn a_dropped_transaction_lets_go_of_its_locks_at_once(db: Db) {
    use parley_server::store::SqliteSync;
    if db != Db::Postgres {
        return;
    }
    let app = spawn_app(db).await;
    let pool = parley_server::DbPool {
        max_connections: Some(4),
        min_connections: Some(4),
        ..Default::default()
    };
    let opened = parley_server::store::Db::open(app.database_url(), &pool, SqliteSync::Normal)
        .await
        .expect("open");
    let lock = |sql: &str| Statement::from_string(DatabaseBackend::Postgres, sql.to_owned());
    let dropped = opened.read.begin_write().await.expect("begin");
    dropped
        .execute_raw(lock("SELECT pg_advisory_xact_lock(4242)"))
        .await
        .expect("lock");
    drop(dropped);
    // The other three connections, held together: the pool hands out the longest idle first,
    // so none of them is the dropped one.
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(opened.read.begin_write().await.expect("begin"));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    'wait: loop {
        for tx in &others {
            let row = tx
                .query_one_raw(lock("SELECT pg_try_advisory_xact_lock(4242)"))
                .await
                .expect("try")
                .expect("a row");
            if row.try_get_by_index::<bool>(0).expect("a boolean") {
                break 'wait;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped transaction still holds its lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Items seeded into the timeline read by the page plan.
const ITEMS: i64 = 20_000;

async fn a_timeline_page_is_a_range_of_its_key_whatever_the_depth(db: Db) {
    use parley_server::domain::visibility::ReadWindow;
    use store::timeline::{Only, Page};
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("deep", &["bob"]).await.expect("create");
    let tables = tables(&app).await;
    let backend = tables.get_database_backend();
    // Entries from seq 1,001 on, past what the creation wrote, the counter following: messages,
    // and one event in a hundred (bob added again), so that a page of events is rare among
    // them.
    let message_id = padded(backend, "i");
    let event = "(i % 100 = 0)";
    run(
        &tables,
        &numbered(
            backend,
            ITEMS,
            "INSERT INTO timeline (conversation_id, seq, item_type, message_id, sender_id, body, \
             event_type, actor_id, subject_ids, internal_only, create_time)",
            &format!(
                "'{}', 1000 + i, CASE WHEN {event} THEN 2 ELSE 1 END, \
                 CASE WHEN {event} THEN NULL ELSE {message_id} END, \
                 CASE WHEN {event} THEN NULL ELSE 'alice' END, \
                 CASE WHEN {event} THEN NULL ELSE 'deep' END, \
                 CASE WHEN {event} THEN 1 END, CASE WHEN {event} THEN 'alice' END, \
                 CASE WHEN {event} THEN '[\"bob\"]' END, false, 1",
                c.id,
            ),
        ),
    )
    .await;
    run(
        &tables,
        &format!(
            "UPDATE conversations SET last_seq = {} WHERE id = '{}'",
            1000 + ITEMS,
            c.id
        ),
    )
    .await;
    analyze(&tables, "timeline").await;
    for (only, newest_first, hide_internal_events) in [
        (Only::All, true, false),
        (Only::All, false, false),
        (Only::Messages, true, true),
        (Only::Events, false, true),
    ] {
        let page = Page {
            window: ReadWindow {
                from: 2,
                until: None,
                hide_internal_events,
            },
            only,
            newest_first,
            after: Some(1000 + ITEMS / 2),
            limit: 101,
        };
        let statement = page.statement(backend, &c.id).expect("a page to read");
        let plan = plan(&tables, statement).await;
        eprintln!("{db:?} {page:?}:\n{plan}");
        // A page of the rare kind is a range of the index by type; of all entries, a range of
        // the key. PostgreSQL may read the common kind either way (from the key it passes
        // over one event in a hundred); SQLite, which has no statistics, is told which.
        let keys: &[&str] = match (backend, only) {
            (DatabaseBackend::Postgres, Only::All) => &["timeline_pkey"],
            (DatabaseBackend::Postgres, Only::Events) => &["timeline_by_type"],
            (DatabaseBackend::Postgres, Only::Messages) => &["timeline_pkey", "timeline_by_type"],
            (_, Only::All) => {
                &["sqlite_autoindex_timeline_1 (conversation_id=? AND seq>? AND seq<?)"]
            }
            _ => &["timeline_by_type (conversation_id=? AND item_type=? AND seq>? AND seq<?)"],
        };
        assert!(
            keys.iter().any(|key| plan.contains(key)),
            "{db:?}: not a range of {keys:?}:\n{plan}"
        );
        if backend == DatabaseBackend::Postgres {
            let bounds = plan
                .lines()
                .find(|l| l.trim_start().starts_with("Index Cond"));
            assert!(
                bounds.is_some_and(|l| l.contains("seq >=") && l.contains("seq <")),
                "{db:?}: the seqs are not the range read:\n{plan}"
            );
        }
        for sort in ["Sort", "TEMP B-TREE", "Seq Scan", "Bitmap", "SCAN timeline"] {
            assert!(!plan.contains(sort), "{db:?}: {sort} in\n{plan}");
        }
    }
    // A token past the window reads nothing at all.
    let past = Page {
        window: ReadWindow {
            from: 5,
            until: Some(9),
            hide_internal_events: false,
        },
        only: Only::All,
        newest_first: false,
        after: Some(8),
        limit: 10,
    };
    assert!(past.statement(backend, &c.id).is_none());
    // Through the API, the newest page is the deepest items, newest first.
    let page = alice
        .conv()
        .list_timeline(alice.req(pb::ListTimelineRequest {
            conversation_id: c.id.clone(),
            order: pb::Order::NewestFirst as i32,
            page_size: 100,
            page_token: String::new(),
        }))
        .await
        .expect("ListTimeline")
        .into_inner();
    let seqs: Vec<i64> = page.items.iter().map(|i| i.seq).collect();
    let want: Vec<i64> = (0..100).map(|k| 1000 + ITEMS - k).collect();
    assert_eq!(seqs, want);
    // And the newest page of events is the deepest events, newest first.
    let events = alice
        .part()
        .list_events(alice.req(pb::ListEventsRequest {
            conversation_id: c.id.clone(),
            order: pb::Order::NewestFirst as i32,
            page_size: 10,
            page_token: String::new(),
        }))
        .await
        .expect("ListEvents")
        .into_inner();
    let seqs: Vec<i64> = events.events.iter().map(|e| e.seq).collect();
    let want: Vec<i64> = (0..10).map(|k| 1000 + ITEMS - 100 * k).collect();
    assert_eq!(seqs, want);
}

both_dbs!(
    connections_are_as_configured,
    a_dropped_transaction_lets_go_of_its_locks_at_once,
    the_outbox_drain_reads_only_unacknowledged_rows,
    search_users_reads_a_range_of_an_index,
    search_users_matches_prefixes_exactly_in_name_order,
    people_are_read_by_their_keys_whatever_the_statistics,
    conversations_are_read_by_their_key_whatever_the_statistics,
    a_fresh_directory_is_read_by_its_key,
    a_timeline_page_is_a_range_of_its_key_whatever_the_depth,
);
