//! The connections the store runs statements on: sea-orm's (SQLite in memory), a SQLite
//! file's own, run on the caller's thread ([`super::lite`]), or PostgreSQL's in a pool of
//! Parley's own ([`super::pg`]).

use std::sync::Arc;

use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr,
    ExecResult, IsolationLevel, QueryResult, SqliteTransactionMode, Statement, TransactionOptions,
    TransactionTrait,
};

use super::cells::{EachRow, RowSink};
use super::{lite, pg};

/// A pool of connections to the database.
#[derive(Clone, Debug)]
pub enum Conn {
    Sea(DatabaseConnection),
    Lite(Arc<lite::Pool>),
    Pg(Arc<pg::Pool>),
}

impl Default for Conn {
    fn default() -> Self {
        Conn::Sea(DatabaseConnection::default())
    }
}

impl From<DatabaseConnection> for Conn {
    fn from(db: DatabaseConnection) -> Self {
        Conn::Sea(db)
    }
}

impl Conn {
    /// A write transaction: on SQLite the write lock is taken at once (`BEGIN IMMEDIATE`), so
    /// that no statement of it waits for the lock half-way.
    pub async fn begin_write(&self) -> Result<Tx, DbErr> {
        Ok(match self {
            Conn::Sea(db) => Tx::Sea(match db.get_database_backend() {
                DatabaseBackend::Sqlite => {
                    db.begin_with_options(TransactionOptions {
                        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                        ..Default::default()
                    })
                    .await?
                }
                _ => db.begin().await?,
            }),
            Conn::Lite(pool) => Tx::Lite(pool.begin(true).await?),
            // Sent with the write's first statement, its savepoint.
            Conn::Pg(pool) => Tx::Pg(pool.begin_deferred("BEGIN").await?),
        })
    }

    /// A read transaction: every statement of it sees one snapshot. PostgreSQL: REPEATABLE
    /// READ, READ ONLY; SQLite: a deferred transaction, whose first read fixes the snapshot
    /// (WAL).
    pub async fn begin_read(&self) -> Result<Tx, DbErr> {
        Ok(match self {
            Conn::Sea(db) => Tx::Sea(match db.get_database_backend() {
                DatabaseBackend::Postgres => {
                    db.begin_with_config(
                        Some(IsolationLevel::RepeatableRead),
                        Some(AccessMode::ReadOnly),
                    )
                    .await?
                }
                _ => db.begin().await?,
            }),
            Conn::Lite(pool) => Tx::Lite(pool.begin(false).await?),
            Conn::Pg(pool) => Tx::Pg(
                pool.begin("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?,
            ),
        })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), DbErr> {
        match self {
            Conn::Sea(db) => db.ping().await,
            Conn::Lite(pool) => pool.batch("SELECT 1").await.map(|_| ()),
            Conn::Pg(pool) => pool.ping().await,
        }
    }

    /// sea-orm's connection, if this is one.
    pub fn sea(&self) -> Option<&DatabaseConnection> {
        match self {
            Conn::Sea(db) => Some(db),
            Conn::Lite(_) | Conn::Pg(_) => None,
        }
    }

    /// Counts every statement with `callback` (the tests' statement counts).
    pub fn set_metric_callback(&mut self, callback: lite::Callback) {
        match self {
            Conn::Sea(db) => db.set_metric_callback(move |info| callback(info)),
            Conn::Lite(pool) => pool.set_callback(Some(callback)),
            Conn::Pg(pool) => pool.set_callback(Some(callback)),
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Conn {
    fn get_database_backend(&self) -> DatabaseBackend {
        match self {
            Conn::Sea(db) => db.get_database_backend(),
            Conn::Lite(_) => DatabaseBackend::Sqlite,
            Conn::Pg(_) => DatabaseBackend::Postgres,
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Conn::Sea(db) => db.execute_raw(stmt).await,
            Conn::Lite(pool) => Ok(lite::exec_result(pool.run(&stmt, false).await?.1)),
            Conn::Pg(pool) => pool.execute(&stmt).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Conn::Sea(db) => db.execute_unprepared(sql).await,
            Conn::Lite(pool) => pool.batch(sql).await.map(lite::exec_result),
            Conn::Pg(pool) => pool.execute_unprepared(sql).await,
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Conn::Sea(db) => db.query_one_raw(stmt).await,
            Conn::Lite(pool) => Ok(pool.run(&stmt, true).await?.0.into_iter().next()),
            Conn::Pg(pool) => Ok(pool.query_all(&stmt).await?.into_iter().next()),
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Conn::Sea(db) => db.query_all_raw(stmt).await,
            Conn::Lite(pool) => Ok(pool.run(&stmt, true).await?.0),
            Conn::Pg(pool) => pool.query_all(&stmt).await,
        }
    }

    fn support_returning(&self) -> bool {
        match self {
            Conn::Sea(db) => db.support_returning(),
            Conn::Lite(_) => DatabaseBackend::Sqlite.support_returning(),
            Conn::Pg(_) => DatabaseBackend::Postgres.support_returning(),
        }
    }
}

#[async_trait::async_trait]
impl EachRow for Conn {
    async fn each_row(&self, stmt: Statement, each: &mut RowSink<'_>) -> Result<(), DbErr> {
        match self {
            Conn::Sea(db) => db.each_row(stmt, each).await,
            Conn::Lite(pool) => pool.each(&stmt, each).await,
            Conn::Pg(pool) => pool.each(&stmt, each).await,
        }
    }
}

/// A transaction of a [`Conn`]; rolled back if dropped before its end.
#[derive(Debug)]
pub enum Tx {
    Sea(DatabaseTransaction),
    Lite(lite::LiteTx),
    Pg(pg::PgTx),
}

impl Tx {
    pub async fn commit(self) -> Result<(), DbErr> {
        match self {
            Tx::Sea(tx) => tx.commit().await,
            Tx::Lite(tx) => tx.end("COMMIT").await,
            Tx::Pg(tx) => tx.end("COMMIT").await,
        }
    }

    pub async fn rollback(self) -> Result<(), DbErr> {
        match self {
            Tx::Sea(tx) => tx.rollback().await,
            Tx::Lite(tx) => tx.end("ROLLBACK").await,
            Tx::Pg(tx) => tx.end("ROLLBACK").await,
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Tx {
    fn get_database_backend(&self) -> DatabaseBackend {
        match self {
            Tx::Sea(tx) => tx.get_database_backend(),
            Tx::Lite(_) => DatabaseBackend::Sqlite,
            Tx::Pg(_) => DatabaseBackend::Postgres,
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Tx::Sea(tx) => tx.execute_raw(stmt).await,
            Tx::Lite(tx) => Ok(lite::exec_result(tx.run(&stmt, false)?.1)),
            Tx::Pg(tx) => tx.execute(&stmt).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Tx::Sea(tx) => tx.execute_unprepared(sql).await,
            Tx::Lite(tx) => tx.batch(sql).map(lite::exec_result),
            Tx::Pg(tx) => tx.execute_unprepared(sql).await,
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Tx::Sea(tx) => tx.query_one_raw(stmt).await,
            Tx::Lite(tx) => Ok(tx.run(&stmt, true)?.0.into_iter().next()),
            Tx::Pg(tx) => Ok(tx.query_all(&stmt).await?.into_iter().next()),
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Tx::Sea(tx) => tx.query_all_raw(stmt).await,
            Tx::Lite(tx) => Ok(tx.run(&stmt, true)?.0),
            Tx::Pg(tx) => tx.query_all(&stmt).await,
        }
    }

    fn support_returning(&self) -> bool {
        match self {
            Tx::Sea(tx) => tx.support_returning(),
            Tx::Lite(_) => DatabaseBackend::Sqlite.support_returning(),
            Tx::Pg(_) => DatabaseBackend::Postgres.support_returning(),
        }
    }
}

#[async_trait::async_trait]
impl EachRow for Tx {
    async fn each_row(&self, stmt: Statement, each: &mut RowSink<'_>) -> Result<(), DbErr> {
        match self {
            Tx::Sea(tx) => tx.each_row(stmt, each).await,
            Tx::Lite(tx) => tx.each(&stmt, each),
            Tx::Pg(tx) => tx.each(&stmt, each).await,
        }
    }

    async fn each_row_opening(
        &self,
        mut statements: Vec<super::cells::Opening<'_, '_>>,
    ) -> Result<(), DbErr> {
        match self {
            Tx::Pg(tx) => tx.each_opening(&mut statements).await,
            other => {
                for super::cells::Opening { stmt, each, .. } in statements {
                    other.each_row(stmt, each).await?;
                }
                Ok(())
            }
        }
    }
}
