//! Writes to one conversation commit in groups on both engines (`Writer::begin_on`): on SQLite
//! every write shares the one writer's group; on PostgreSQL the writes to one conversation
//! share a group of their own, while writes to other conversations run beside them. Each write
//! is still all or nothing, and told it was written only once its group has committed.

use std::time::Duration;

use parley_server::{
    DbPool,
    store::{Db as Store, SqliteSync, WriteTx, Writer},
};
use parley_tests::*;
use sea_orm::{ConnectionTrait, Statement};

/// The server's database, opened again by the test, with table `t` made by `ddl`.
async fn store_with(app: &TestApp, ddl: &str) -> Store {
    let db = Store::open(app.database_url(), &DbPool::default(), SqliteSync::Normal)
        .await
        .expect("open");
    db.writer
        .conn()
        .execute_unprepared(ddl)
        .await
        .expect("create");
    db
}

/// A write on conversation `key` that has run `sql`.
async fn begun(writer: &Writer, key: &str, sql: &str) -> WriteTx {
    let tx = writer.begin_on(key).await.expect("a write begins");
    tx.execute_unprepared(sql)
        .await
        .expect("the write's statement");
    tx
}

/// The ids in `table`, in order.
pub(crate) async fn ids(conn: &impl ConnectionTrait, table: &str) -> Vec<i64> {
    conn.query_all_raw(Statement::from_string(
        conn.get_database_backend(),
        format!("SELECT id FROM {table} ORDER BY id"),
    ))
    .await
    .expect("a read")
    .iter()
    .map(|row| row.try_get_by_index::<i64>(0).expect("an id"))
    .collect()
}

/// Waits until `n` writes wait for the writer. A missed wake-up would hang here: the bound only
/// proves the absence of that.
pub(crate) async fn until_queued(writer: &Writer, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while writer.queue_depth() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} writes never queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Three writes to one conversation queue behind one another: they share one commit, yet each
/// is all or nothing. The second fails on the first's row (which it sees: same group) and is
/// undone alone, PostgreSQL's aborted transaction included; the third commits with the first.
async fn writes_to_one_conversation_commit_together(db: Db) {
    let app = spawn_app(db).await;
    let store = store_with(&app, "CREATE TABLE t (id BIGINT PRIMARY KEY)").await;
    let writer = store.writer.clone();

    let first = begun(&writer, "c1", "INSERT INTO t VALUES (1)").await;
    let second = tokio::spawn({
        let writer = writer.clone();
        async move {
            let tx = begun(&writer, "c1", "INSERT INTO t VALUES (20)").await;
            tx.execute_unprepared("INSERT INTO t VALUES (1)")
                .await
                .expect_err("the first write's row is there")
                .to_string()
        }
    });
    until_queued(&writer, 1).await;
    let third = tokio::spawn({
        let (writer, read) = (writer.clone(), store.read.clone());
        async move {
            let tx = begun(&writer, "c1", "INSERT INTO t VALUES (3)").await;
            tx.commit().await.expect("the third write commits");
            ids(&read, "t").await
        }
    });
    until_queued(&writer, 2).await;
    assert_eq!(
        ids(&store.read, "t").await,
        Vec::<i64>::new(),
        "{db:?}: nothing committed yet"
    );

    first.commit().await.expect("the first write commits");
    assert_eq!(ids(&store.read, "t").await, vec![1, 3], "{db:?}");
    let failure = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second write ended")
        .expect("the task");
    assert!(
        failure.contains("UNIQUE") || failure.contains("duplicate key"),
        "{db:?}: a unique violation: {failure}"
    );
    let seen_by_third = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("the third write ended")
        .expect("the task");
    assert_eq!(
        seen_by_third,
        vec![1, 3],
        "{db:?}: committed when it returned"
    );
    assert_eq!(writer.queue_depth(), 0);
}

/// A group whose commit fails fails every write in it, and none of them is applied.
async fn a_group_that_cannot_commit_fails_each_of_its_writes(db: Db) {
    let app = spawn_app(db).await;
    // A deferred foreign key is checked only at COMMIT: the way to make one fail here.
    let store = store_with(
        &app,
        "CREATE TABLE parent (id BIGINT PRIMARY KEY);
         CREATE TABLE child (id BIGINT PRIMARY KEY,
           parent BIGINT REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
    )
    .await;
    let writer = store.writer.clone();
    let first = begun(&writer, "c1", "INSERT INTO child VALUES (1, NULL)").await;
    let second = tokio::spawn({
        let writer = writer.clone();
        async move {
            let tx = begun(&writer, "c1", "INSERT INTO child VALUES (2, 99)").await;
            tx.commit().await
        }
    });
    until_queued(&writer, 1).await;
    let first = first.commit().await;
    let second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second write ended")
        .expect("the task");
    for (which, outcome) in [("first", first), ("second", second)] {
        let error = outcome.expect_err("the group did not commit");
        assert_eq!(
            error.code(),
            tonic::Code::Internal,
            "{db:?} {which}: {error:?}"
        );
    }
    assert_eq!(ids(&store.read, "child").await, Vec::<i64>::new(), "{db:?}");
    // The conversation's writes go on.
    let tx = begun(&writer, "c1", "INSERT INTO child VALUES (3, NULL)").await;
    tx.commit().await.expect("commit");
    assert_eq!(ids(&store.read, "child").await, vec![3], "{db:?}");
}

/// A write dropped uncommitted with nobody behind it (a cancelled call) is rolled back, and the
/// conversation's next write runs.
async fn a_dropped_write_is_rolled_back(db: Db) {
    let app = spawn_app(db).await;
    let store = store_with(&app, "CREATE TABLE t (id BIGINT PRIMARY KEY)").await;
    let writer = store.writer.clone();
    drop(begun(&writer, "c1", "INSERT INTO t VALUES (1)").await);
    let tx = tokio::time::timeout(
        Duration::from_secs(10),
        begun(&writer, "c1", "INSERT INTO t VALUES (2)"),
    )
    .await
    .expect("the next write begins");
    tx.commit().await.expect("commit");
    assert_eq!(ids(&store.read, "t").await, vec![2], "{db:?}");
}

/// The first write of a group fails midway (on PostgreSQL its transaction is then aborted):
/// rolled back, or dropped, it leaves nothing, and the conversation's next write, queued behind
/// it, commits alone. On PostgreSQL such a write runs without a savepoint, so undoing it is
/// rolling back the group's whole transaction, which held nothing else.
async fn a_first_write_that_fails_is_undone_whole(db: Db) {
    let app = spawn_app(db).await;
    let store = store_with(&app, "CREATE TABLE t (id BIGINT PRIMARY KEY)").await;
    let writer = store.writer.clone();
    begun(&writer, "c1", "INSERT INTO t VALUES (7)")
        .await
        .commit()
        .await
        .expect("a row to collide with");
    for end in ["rolled back", "dropped"] {
        let first = begun(&writer, "c1", "INSERT INTO t VALUES (1)").await;
        first
            .execute_unprepared("INSERT INTO t VALUES (7)")
            .await
            .expect_err("the row is there");
        let next = tokio::spawn({
            let writer = writer.clone();
            async move {
                begun(&writer, "c1", "INSERT INTO t VALUES (2)")
                    .await
                    .commit()
                    .await
            }
        });
        until_queued(&writer, 1).await;
        match end {
            "rolled back" => first.rollback().await.expect("the rollback succeeds"),
            _ => drop(first),
        }
        tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .expect("the next write ended")
            .expect("the task")
            .expect("the next write commits");
        assert_eq!(
            ids(&store.read, "t").await,
            vec![2, 7],
            "{db:?}: after a first write {end}"
        );
        begun(&writer, "c1", "DELETE FROM t WHERE id = 2")
            .await
            .commit()
            .await
            .expect("cleared");
    }
    assert_eq!(writer.queue_depth(), 0);
}

/// An insert of `id` into `t` with its value as a parameter, on `db`'s engine.
fn insert_bound(backend: sea_orm::DatabaseBackend, id: i64) -> Statement {
    let sql = match backend {
        sea_orm::DatabaseBackend::Postgres => "INSERT INTO t VALUES ($1)",
        _ => "INSERT INTO t VALUES (?)",
    };
    Statement::from_sql_and_values(backend, sql, [id.into()])
}

/// A write transaction holds its statements from the first, whether that one carries values or
/// not (on PostgreSQL its `BEGIN` goes with its first statement), and one that ran nothing ends,
/// committed, rolled back or dropped, leaving its connection ready for the next.
async fn a_write_transaction_holds_its_first_statement(db: Db) {
    let app = spawn_app(db).await;
    let store = store_with(&app, "CREATE TABLE t (id BIGINT PRIMARY KEY)").await;
    let conn = store.writer.conn();
    let backend = conn.get_database_backend();

    let tx = conn.begin_write().await.expect("begin");
    tx.execute_unprepared("INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    tx.execute_raw(insert_bound(backend, 2))
        .await
        .expect("insert");
    tx.rollback().await.expect("rollback");
    assert!(
        ids(&store.read, "t").await.is_empty(),
        "{db:?}: unprepared first"
    );

    let tx = conn.begin_write().await.expect("begin");
    tx.execute_raw(insert_bound(backend, 3))
        .await
        .expect("insert");
    tx.execute_unprepared("INSERT INTO t VALUES (4)")
        .await
        .expect("insert");
    tx.rollback().await.expect("rollback");
    assert!(
        ids(&store.read, "t").await.is_empty(),
        "{db:?}: bound first"
    );

    conn.begin_write()
        .await
        .expect("begin")
        .commit()
        .await
        .expect("a commit of nothing");
    conn.begin_write()
        .await
        .expect("begin")
        .rollback()
        .await
        .expect("a rollback of nothing");
    drop(conn.begin_write().await.expect("begin"));
    let tx = conn.begin_write().await.expect("begin");
    tx.execute_unprepared("INSERT INTO t VALUES (5)")
        .await
        .expect("insert");
    tx.commit().await.expect("commit");
    assert_eq!(ids(&store.read, "t").await, vec![5], "{db:?}");
}

/// PostgreSQL: a write to another conversation neither waits for an open group nor joins it:
/// it commits on its own while the first conversation's write is still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_conversations_do_not_wait_on_postgres() {
    let app = spawn_app(Db::Postgres).await;
    let store = store_with(&app, "CREATE TABLE t (id BIGINT PRIMARY KEY)").await;
    let writer = store.writer.clone();
    let open = begun(&writer, "c1", "INSERT INTO t VALUES (1)").await;
    let other = tokio::time::timeout(
        Duration::from_secs(10),
        begun(&writer, "c2", "INSERT INTO t VALUES (2)"),
    )
    .await
    .expect("another conversation's write did not wait");
    tokio::time::timeout(Duration::from_secs(10), other.commit())
        .await
        .expect("its commit did not wait for the open group")
        .expect("commit");
    assert_eq!(ids(&store.read, "t").await, vec![2], "alone in its commit");
    open.commit().await.expect("commit");
    assert_eq!(ids(&store.read, "t").await, vec![1, 2]);
}

/// PostgreSQL: the writer keeps a slot per conversation only while writes use it, so a replica
/// that writes to ever more conversations does not grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conversation_slots_are_dropped_when_unused_on_postgres() {
    let app = spawn_app(Db::Postgres).await;
    let store = store_with(&app, "CREATE TABLE t (id BIGINT PRIMARY KEY)").await;
    let writer = store.writer.clone();
    let held = begun(&writer, "held", "INSERT INTO t VALUES (0)").await;
    for i in 1..=3_000 {
        writer
            .begin_on(&format!("c{i}"))
            .await
            .expect("begin")
            .commit()
            .await
            .expect("commit");
        assert!(
            writer.slots_kept() <= 1_024,
            "{} slots kept after {i} conversations",
            writer.slots_kept()
        );
    }
    // The slot in use was kept through every sweep: its write still commits.
    held.commit().await.expect("commit");
    assert_eq!(ids(&store.read, "t").await, vec![0]);
}

both_dbs!(
    a_write_transaction_holds_its_first_statement,
    writes_to_one_conversation_commit_together,
    a_group_that_cannot_commit_fails_each_of_its_writes,
    a_dropped_write_is_rolled_back,
    a_first_write_that_fails_is_undone_whole,
);
