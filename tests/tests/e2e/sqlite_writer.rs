//! SQLite's one writer: write transactions take turns on one connection, queued rather than
//! sleeping in the busy handler, while reads run on connections that cannot write; and
//! `--sqlite-synchronous` sets how each commit is synced. How queued writes commit together is
//! in `write_groups`, on both engines.

use std::time::Duration;

use super::write_groups::{ids, until_queued};
use futures::future::join_all;
use parley::pb;
use parley_server::{
    DbPool,
    store::{Db as Store, SqliteSync},
};
use parley_tests::*;
use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};

async fn pragma(conn: &impl ConnectionTrait, name: &str) -> i64 {
    conn.query_one_raw(Statement::from_string(
        DatabaseBackend::Sqlite,
        format!("PRAGMA {name}"),
    ))
    .await
    .expect("a pragma reads")
    .expect("a row")
    .try_get_by_index::<i64>(0)
    .expect("an integer")
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("parley.db").display()
    )
}

#[tokio::test]
async fn the_writer_syncs_as_configured_and_readers_cannot_write() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = sqlite_url(&dir);
    // SQLite's values: 1 NORMAL, 2 FULL.
    for (sync, expected) in [(SqliteSync::Full, 2), (SqliteSync::Normal, 1)] {
        let db = Store::open(&url, &DbPool::default(), sync)
            .await
            .expect("open");
        let writer = db.sqlite_writer().expect("SQLite has a writer of its own");
        assert_eq!(pragma(writer.conn(), "synchronous").await, expected);
        assert_eq!(pragma(&db.read, "synchronous").await, expected);
        assert_eq!(pragma(writer.conn(), "query_only").await, 0);
        assert_eq!(pragma(&db.read, "query_only").await, 1);
        // The writer keeps a page cache of 16 MiB for large directories; readers the default.
        assert_eq!(pragma(writer.conn(), "cache_size").await, -16384);
        assert_eq!(pragma(&db.read, "cache_size").await, -2000);
    }
    let db = Store::open(&url, &DbPool::default(), SqliteSync::Normal)
        .await
        .expect("open");
    let writer = db.sqlite_writer().expect("a writer");
    writer
        .conn()
        .execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .expect("the writer writes");
    let refused = db
        .read
        .execute_unprepared("INSERT INTO t VALUES (1)")
        .await
        .expect_err("a reader may not write");
    assert!(
        refused.to_string().contains("readonly"),
        "the reader is query-only: {refused}"
    );
}

#[tokio::test]
async fn a_second_write_waits_in_the_queue_instead_of_failing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = Store::open(&sqlite_url(&dir), &DbPool::default(), SqliteSync::Normal)
        .await
        .expect("open");
    let writer = db.sqlite_writer().expect("a writer").clone();
    writer
        .conn()
        .execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .expect("create");
    assert_eq!(writer.queue_depth(), 0);

    let first = writer.begin().await.expect("the first write begins");
    first
        .execute_unprepared("INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    let second = tokio::spawn({
        let writer = writer.clone();
        async move {
            let tx = writer
                .begin()
                .await
                .expect("the second write begins in turn");
            tx.execute_unprepared("INSERT INTO t VALUES (2)")
                .await
                .expect("insert");
            tx.commit().await.expect("commit");
        }
    });
    // A missed wake-up would hang here: the bound only proves the absence of that.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while writer.queue_depth() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second write never queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // While the first holds the writer, reads go on.
    let rows = db
        .read
        .query_one_raw(Statement::from_string(
            DatabaseBackend::Sqlite,
            "SELECT COUNT(*) FROM t",
        ))
        .await
        .expect("a read runs beside the writer")
        .expect("a row")
        .try_get_by_index::<i64>(0)
        .expect("a count");
    assert_eq!(rows, 0, "the first write is not committed yet");
    first.commit().await.expect("commit");
    tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second write ran once the first committed")
        .expect("the task");
    assert_eq!(writer.queue_depth(), 0);
    let rows = db
        .read
        .query_one_raw(Statement::from_string(
            DatabaseBackend::Sqlite,
            "SELECT COUNT(*) FROM t",
        ))
        .await
        .expect("count")
        .expect("a row")
        .try_get_by_index::<i64>(0)
        .expect("a count");
    assert_eq!(rows, 2);
}

/// 64 writers at once through gRPC on SQLite: every one is applied (none gives up as a write
/// conflict after the busy handler's sleeps), and each conversation's seqs are gapless.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_writes_all_succeed_on_sqlite() {
    let app = spawn_app_with(Db::Sqlite, |c| c.limits.rate_limit_per_second = 0).await;
    let owner = app.user("acme", "alice");
    let conversation = owner
        .create_group("busy", &[])
        .await
        .expect("a conversation");
    let sends = (0..64).map(|i| {
        let owner = owner.clone();
        let id = conversation.id.clone();
        async move { owner.send(&id, &format!("m{i}")).await }
    });
    let results = join_all(sends).await;
    let mut seqs: Vec<i64> = results
        .into_iter()
        .map(|r| r.expect("every write is applied").seq)
        .collect();
    seqs.sort_unstable();
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..first + 64).collect::<Vec<_>>(),
        "distinct, gapless seqs"
    );
    let items = owner
        .timeline(&conversation.id)
        .await
        .expect("the timeline");
    let messages = items
        .iter()
        .filter(|i| matches!(i.item, Some(pb::timeline_item::Item::Message(_))))
        .count();
    assert_eq!(messages, 64);
}

/// A write begun on `writer` that has run `sql`.
async fn begun(writer: &parley_server::store::Writer, sql: &str) -> parley_server::store::WriteTx {
    let tx = writer.begin().await.expect("a write begins");
    tx.execute_unprepared(sql)
        .await
        .expect("the write's statement");
    tx
}

/// A fresh SQLite database in a directory of its own, its writer, and `ddl` applied.
async fn writer_with(ddl: &str) -> (tempfile::TempDir, Store, parley_server::store::Writer) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = Store::open(&sqlite_url(&dir), &DbPool::default(), SqliteSync::Normal)
        .await
        .expect("open");
    let writer = db.sqlite_writer().expect("a writer").clone();
    writer.conn().execute_unprepared(ddl).await.expect("create");
    (dir, db, writer)
}

/// A write dropped uncommitted with nobody behind it (a cancelled call) does not leave the
/// writer's transaction open: it is rolled back, and a write outside any transaction, which
/// needs the writer's connection, runs.
#[tokio::test]
async fn a_write_dropped_alone_frees_the_writer() {
    let (_dir, db, writer) = writer_with("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    let dropped = begun(&writer, "INSERT INTO t VALUES (1)").await;
    drop(dropped);
    tokio::time::timeout(
        Duration::from_secs(10),
        writer.conn().execute_unprepared("INSERT INTO t VALUES (2)"),
    )
    .await
    .expect("the writer's connection came back")
    .expect("insert");
    let tx = begun(&writer, "INSERT INTO t VALUES (3)").await;
    tx.commit().await.expect("commit");
    assert_eq!(ids(&db.read, "t").await, vec![2, 3]);
}

/// A write that runs no statement (a call refused before it read anything) opens no savepoint,
/// and the write after it in the same group runs as if it had not been there.
#[tokio::test]
async fn a_write_that_runs_nothing_leaves_its_group_as_it_was() {
    let (_dir, db, writer) = writer_with("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    for end in ["commit", "drop"] {
        let empty = writer.begin().await.expect("a write begins");
        let next = tokio::spawn({
            let writer = writer.clone();
            async move {
                let tx = writer.begin().await.expect("the next write begins");
                let inserted = tx
                    .execute_unprepared("INSERT INTO t DEFAULT VALUES")
                    .await
                    .expect("insert");
                assert_eq!(inserted.rows_affected(), 1, "its own count");
                tx.commit().await.expect("the next write commits");
            }
        });
        until_queued(&writer, 1).await;
        match end {
            "commit" => empty.commit().await.expect("an empty write commits"),
            _ => drop(empty),
        }
        tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .expect("the next write ended")
            .expect("the task");
    }
    assert_eq!(ids(&db.read, "t").await, vec![1, 2]);
}

/// SQLite's log is copied into the database file soon after a commit by a checkpointer of its
/// own, not only when the writer's commit crosses 1,000 pages of log (where every queued write
/// waits for the copy): a few pages written reach the database file by themselves.
#[tokio::test]
async fn the_log_is_checkpointed_soon_after_commits() {
    let (dir, _db, writer) = writer_with("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)").await;
    let file = dir.path().join("parley.db");
    let before = std::fs::metadata(&file).expect("the database file").len();
    // About 50 pages: far below the writer's own checkpoint at 1,000.
    let tx = begun(&writer, "INSERT INTO t (b) SELECT zeroblob(200000)").await;
    tx.commit().await.expect("commit");
    // A checkpointer that never runs would fail here: the bound only proves it runs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = std::fs::metadata(&file).expect("the database file").len();
        if now >= before + 200_000 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log was not checkpointed: the file has {now} bytes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// SQLite runs on the server's own threads (`store::lite`), so the writer must not wait for
/// another process's write lock in SQLite's busy handler, which would hold the thread that
/// serves every other call: it retries after asynchronous sleeps. On a runtime of one thread,
/// a timer still fires on time while the write waits, and the write goes through once the lock
/// is released. (The bound on the timer is ten times its due time: it proves the thread was
/// not held, not how fast anything is.)
#[tokio::test(flavor = "current_thread")]
async fn waiting_for_another_process_lock_holds_no_thread() {
    use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
    let (dir, db, writer) = writer_with("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    let other = sea_orm::Database::connect(sqlite_url(&dir))
        .await
        .expect("another connection");
    let locked = other
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await
        .expect("the other connection takes the write lock");
    let write = tokio::spawn(async move {
        let tx = writer
            .begin()
            .await
            .expect("the write begins once the lock is free");
        tx.execute_unprepared("INSERT INTO t VALUES (7)")
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
    });
    for _ in 0..5 {
        let started = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "the thread was held for {:?} while the write waited",
            started.elapsed()
        );
    }
    assert!(!write.is_finished(), "the write waits for the lock");
    locked.rollback().await.expect("the lock is released");
    tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("the write ended")
        .expect("the write's task");
    assert_eq!(ids(&db.read, "t").await, vec![7]);
}
