//! A write that loses to a concurrent one is reported as ABORTED `WRITE_CONFLICT` (rolled back,
//! safe to retry, and retried by the SDK), never as INTERNAL. The conflicts are real ones, made
//! on each engine: a serialization failure on PostgreSQL and a busy database on SQLite; the
//! server's error mapping is what is tested.

use std::{str::FromStr, time::Duration};

use parley_server::error::Error;
use parley_tests::*;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, IsolationLevel, SqlxSqliteConnector, TransactionTrait,
    sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions},
};
use tonic::Code;

/// What the server would answer for `error`.
fn assert_write_conflict(error: sea_orm::DbErr) {
    let mapped = Error::from(error);
    assert!(matches!(mapped, Error::WriteConflict(_)), "{mapped:?}");
    let status = tonic::Status::from(mapped);
    assert_error(&status, Code::Aborted, ErrorReason::WriteConflict);
}

#[tokio::test]
async fn sqlite_busy_is_a_write_conflict() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("busy.db").display());
    // No busy timeout: the second writer fails at once instead of waiting.
    let options = SqliteConnectOptions::from_str(&url)
        .expect("options")
        .create_if_missing(true)
        .busy_timeout(Duration::ZERO);
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .expect("open");
    let db = SqlxSqliteConnector::from_sqlx_sqlite_pool(pool);
    db.execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .expect("create");

    let first = db.begin().await.expect("begin");
    first
        .execute_unprepared("INSERT INTO t VALUES (1)")
        .await
        .expect("the first writer holds the lock");
    let second = db.begin().await.expect("begin");
    let error = second
        .execute_unprepared("INSERT INTO t VALUES (2)")
        .await
        .expect_err("the database is locked");
    assert_write_conflict(error);
    first.commit().await.expect("commit");
}

#[tokio::test]
async fn postgres_serialization_failure_is_a_write_conflict() {
    let url = std::env::var("PARLEY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let db: DatabaseConnection = sea_orm::Database::connect(&url).await.expect("connect");
    let table = format!("parley_conflict_{}", uuid::Uuid::new_v4().simple());
    db.execute_unprepared(&format!(
        "CREATE TABLE {table} (id INT PRIMARY KEY, v INT NOT NULL); INSERT INTO {table} VALUES (1, 0)"
    ))
    .await
    .expect("create");

    let a = db
        .begin_with_config(Some(IsolationLevel::RepeatableRead), None)
        .await
        .expect("begin a");
    let b = db
        .begin_with_config(Some(IsolationLevel::RepeatableRead), None)
        .await
        .expect("begin b");
    for tx in [&a, &b] {
        tx.execute_unprepared(&format!("SELECT v FROM {table} WHERE id = 1"))
            .await
            .expect("each takes its snapshot");
    }
    a.execute_unprepared(&format!("UPDATE {table} SET v = v + 1 WHERE id = 1"))
        .await
        .expect("a updates");
    a.commit().await.expect("a commits");
    let error = b
        .execute_unprepared(&format!("UPDATE {table} SET v = v + 1 WHERE id = 1"))
        .await
        .expect_err("b updates a row changed since its snapshot");
    assert_write_conflict(error);
    drop(b);

    db.execute_unprepared(&format!("DROP TABLE {table}"))
        .await
        .expect("drop");
}
