//! PostgreSQL connections in a pool of Parley's own (deadpool), each a sqlx connection.
//!
//! sqlx's pool tests every connection as it comes back (`return_to_pool` sends a `Sync` and
//! waits for PostgreSQL's answer), whatever its options say: one more round trip for every
//! statement run outside a transaction and every transaction, taken on the server's and the
//! engine's CPU. GetConversation and ListParticipants are one statement each, so that was half
//! their exchanges with PostgreSQL; measured with the test taken out, ListParticipants(50) at
//! 16 in flight went from 4.4-4.5k to 5.2-5.4k calls/s. Here a connection goes back to the pool
//! as it is, and is checked only when it is taken again: one idle for a second or more is
//! pinged first, as before.
//!
//! A call dropped half-way (its client gone) leaves its connection as sqlx left it: sqlx reads
//! whatever answers are still due before its next statement. A transaction dropped before its
//! end is rolled back at once ([`PgTx`]), and one whose end failed before the connection
//! serves again ([`Manager`]'s `recycle`).
//!
//! A write transaction's `BEGIN` goes in one message with its first statements
//! ([`PgTx::each_opening`]): those are kept prepared on the connection by SQL's `PREPARE` and run
//! by `EXECUTE` with their values written as literals, as sqlx pipelines nothing.
//!
//! Results are sea-orm's own ([`QueryResult`], [`ExecResult`] from sqlx's), and errors sea-orm's
//! ([`DbErr`] around the sqlx error), so the rest of the store reads them as it read them from
//! sea-orm's connections; rows read by position ([`super::cells::EachRow`]) are sqlx's own,
//! decoded in place (`Cells for PgRow`).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use futures::TryStreamExt;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgRow};
use sea_orm::sqlx::{self, ConnectOptions as _, Connection as _, PgConnection};
use sea_orm::{DbErr, ExecResult, QueryResult, RuntimeErr, Statement, Value};
use sea_query_sqlx::SqlxValues;

use super::cells::{Cells, Kind, Opening, RowSink};
use super::lite::Callback;

/// A pooled connection and whether a transaction of it may still be open.
#[derive(Debug)]
pub struct PgConn {
    raw: PgConnection,
    in_transaction: bool,
    /// The statement that opens the transaction of a [`Pool::begin_deferred`], not sent yet:
    /// it goes with the transaction's first statement.
    deferred: Option<&'static str>,
    /// The names of the statements kept prepared on the connection by SQL's `PREPARE`
    /// ([`PgTx::each_opening`]).
    named: Vec<&'static str>,
    /// A message that may have prepared a named statement did not finish: whether it did is
    /// unknown, so the connection is closed rather than reused.
    doubtful: bool,
}

impl PgConn {
    /// Sends the deferred opening of the transaction, if it is still to be sent.
    async fn started(&mut self) -> Result<(), DbErr> {
        if let Some(begin) = self.deferred.take() {
            self.in_transaction = true;
            unprepared(&mut self.raw, begin).await?;
        }
        Ok(())
    }
}

/// Opens and recycles [`PgConn`]s.
#[derive(Debug)]
pub struct Manager {
    options: PgConnectOptions,
    ping_if_idle_for: Duration,
}

impl managed::Manager for Manager {
    type Type = PgConn;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<PgConn, sqlx::Error> {
        Ok(PgConn {
            raw: PgConnection::connect_with(&self.options).await?,
            in_transaction: false,
            deferred: None,
            named: Vec::new(),
            doubtful: false,
        })
    }

    async fn recycle(&self, conn: &mut PgConn, metrics: &Metrics) -> RecycleResult<sqlx::Error> {
        conn.deferred = None;
        if conn.doubtful {
            return Err(RecycleError::message(
                "a statement kept prepared may or may not be",
            ));
        }
        if conn.in_transaction {
            sqlx::Executor::execute(&mut conn.raw, "ROLLBACK")
                .await
                .map_err(RecycleError::Backend)?;
            conn.in_transaction = false;
        } else if metrics.last_used() >= self.ping_if_idle_for {
            conn.raw.ping().await.map_err(RecycleError::Backend)?;
        }
        Ok(())
    }
}

/// A pool of PostgreSQL connections, or a view of one for reads ([`Pool::reader`]).
pub struct Pool {
    pool: managed::Pool<Manager>,
    /// Shared by a pool and its readers' view.
    callback: Arc<RwLock<Option<Callback>>>,
    /// In a view for reads, the permits of the reads that may hold a connection at once.
    reads: Option<Arc<tokio::sync::Semaphore>>,
}

/// A connection taken from a [`Pool`], with the read permit it was taken under, if any: both
/// go back when it is dropped.
struct Lease {
    conn: managed::Object<Manager>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl std::ops::Deref for Lease {
    type Target = PgConn;

    fn deref(&self) -> &PgConn {
        &self.conn
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConn {
        &mut self.conn
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("status", &self.pool.status())
            .finish()
    }
}

/// The open connections of a pool, those waiting in it, and the most it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub open: usize,
    pub idle: usize,
    pub max: usize,
}

impl Pool {
    /// A pool of at most `max` connections to `url`, `min` of them opened now; `plan_cache`
    /// is the `plan_cache_mode` of every connection.
    pub async fn open(
        url: &str,
        min: usize,
        max: usize,
        plan_cache: &str,
        ping_if_idle_for: Duration,
    ) -> Result<Arc<Self>, DbErr> {
        let options: PgConnectOptions = url.parse().map_err(conn_err)?;
        let options = options
            .options([("plan_cache_mode", plan_cache)])
            .disable_statement_logging();
        let pool = managed::Pool::builder(Manager {
            options,
            ping_if_idle_for,
        })
        .max_size(max.max(1))
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(10)))
        .recycle_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| DbErr::Custom(format!("cannot build PostgreSQL's pool: {e}")))?;
        let pool = Arc::new(Self {
            pool,
            callback: Arc::new(RwLock::new(None)),
            reads: None,
        });
        // The first `min` connections, opened together now rather than by the first calls.
        let first = futures::future::try_join_all((0..min.min(max)).map(|_| pool.get())).await?;
        drop(first);
        tokio::spawn(close_idle(Arc::downgrade(&pool), min));
        Ok(pool)
    }

    /// The same connections, for reads of which at most `permits` hold one at once (at
    /// least 1). Its statements are counted with the pool's ([`Self::set_callback`]).
    ///
    /// A read keeps PostgreSQL busy for as long as it holds its connection (its rows are in
    /// memory), so past a couple of reads per core the engine's processes only take turns,
    /// each switch costing CPU the others could use. Writes, which wait on the disk and on
    /// row locks, take connections up to the pool's size. On 2 cores, ListParticipants(50)
    /// with 16 in flight cost PostgreSQL 1.37-1.43 times the load generator's CPU per call
    /// through 4 connections, 1.67-1.80 through 8 or 16, and the server 1.86-1.94 against
    /// 2.09-2.16; AddParticipants(1) through 4 connections ran at 0.6-0.7 of its rate through
    /// 8, hence a limit on reads rather than a smaller pool. On another 2-core machine later,
    /// PostgreSQL's CPU per call was the same through 4, 6 and 8 connections, and 6 served
    /// about 5 % more calls than 4 (fewer calls waiting for a turn), hence three per core by
    /// default (`DbPool::pg_reads`).
    pub fn reader(&self, permits: usize) -> Arc<Self> {
        Arc::new(Self {
            pool: self.pool.clone(),
            callback: self.callback.clone(),
            reads: Some(Arc::new(tokio::sync::Semaphore::new(permits.max(1)))),
        })
    }

    /// A connection, waiting for one to be free if all are taken (and, in a view for reads,
    /// for a read's permit first).
    async fn get(&self) -> Result<Lease, DbErr> {
        let permit = match &self.reads {
            Some(reads) => Some(reads.clone().acquire_owned().await.map_err(|_| {
                DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::ConnectionClosed)
            })?),
            None => None,
        };
        let conn = self.pool.get().await.map_err(|e| match e {
            managed::PoolError::Backend(e) => conn_err(e),
            managed::PoolError::Closed => {
                DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::ConnectionClosed)
            }
            _ => DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout),
        })?;
        Ok(Lease {
            conn,
            _permit: permit,
        })
    }

    /// Counts every statement with `callback` (the tests' statement counts).
    pub fn set_callback(&self, callback: Option<Callback>) {
        if let Ok(mut slot) = self.callback.write() {
            *slot = callback;
        }
    }

    fn callback(&self) -> Option<Callback> {
        self.callback.read().ok().and_then(|c| c.clone())
    }

    /// The pool's connections now.
    pub fn sizes(&self) -> Sizes {
        let status = self.pool.status();
        Sizes {
            open: status.size,
            idle: status.available,
            max: status.max_size,
        }
    }

    /// Runs `stmt` on a connection of the pool.
    pub async fn execute(&self, stmt: &Statement) -> Result<ExecResult, DbErr> {
        let mut conn = self.get().await?;
        timed(self.callback(), stmt, execute(&mut conn.raw, stmt)).await
    }

    /// Runs `sql`, without parameters, on a connection of the pool.
    pub async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let mut conn = self.get().await?;
        unprepared(&mut conn.raw, sql).await
    }

    /// Runs `stmt` on a connection of the pool and returns its rows.
    pub async fn query_all(&self, stmt: &Statement) -> Result<Vec<QueryResult>, DbErr> {
        let mut conn = self.get().await?;
        timed(self.callback(), stmt, query_all(&mut conn.raw, stmt)).await
    }

    /// Runs `stmt` on a connection of the pool and hands each row to `each`.
    pub async fn each(&self, stmt: &Statement, each: &mut RowSink<'_>) -> Result<(), DbErr> {
        let mut conn = self.get().await?;
        timed(self.callback(), stmt, each_row(&mut conn.raw, stmt, each)).await
    }

    /// Whether PostgreSQL answers, on a connection of the pool.
    pub async fn ping(&self) -> Result<(), DbErr> {
        let mut conn = self.get().await?;
        conn.raw.ping().await.map_err(conn_err)
    }

    /// Starts a transaction with `begin` (`BEGIN …`) on a connection of its own.
    pub async fn begin(&self, begin: &str) -> Result<PgTx, DbErr> {
        let mut conn = self.get().await?;
        conn.deferred = None;
        conn.in_transaction = true;
        unprepared(&mut conn.raw, begin).await?;
        Ok(PgTx {
            conn: Some(tokio::sync::Mutex::new(conn)),
            callback: self.callback(),
        })
    }

    /// A transaction opened by `begin` on a connection of the pool, `begin` sent with its first
    /// statement rather than on its own: a write's first statement is its savepoint
    /// (`store::Writer`), and the two go as one message, a round trip less per write. A
    /// transaction that ends before any statement sends nothing at all.
    pub async fn begin_deferred(&self, begin: &'static str) -> Result<PgTx, DbErr> {
        let mut conn = self.get().await?;
        conn.deferred = Some(begin);
        Ok(PgTx {
            conn: Some(tokio::sync::Mutex::new(conn)),
            callback: self.callback(),
        })
    }
}

/// Closes, every [`IDLE_CHECK_EVERY`], the connections unused for [`IDLE_FOR`] beyond the first
/// `min` idle ones, for as long as the pool lives.
async fn close_idle(pool: std::sync::Weak<Pool>, min: usize) {
    loop {
        tokio::time::sleep(IDLE_CHECK_EVERY).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut kept = 0;
        let closed = pool.pool.retain(|_, metrics| {
            let keep = kept < min || metrics.last_used() < IDLE_FOR;
            kept += usize::from(keep);
            keep
        });
        drop(pool);
        for conn in closed.removed {
            // Said goodbye to, so that PostgreSQL does not log a connection lost.
            let _ = conn.raw.close().await;
        }
    }
}

/// How long a connection beyond the pool's minimum may stay unused before it is closed.
pub const IDLE_FOR: Duration = Duration::from_secs(600);

/// How often the pool looks for connections unused for [`IDLE_FOR`].
const IDLE_CHECK_EVERY: Duration = Duration::from_secs(30);

/// A transaction on a connection of a [`Pool`]. Dropped before its end, it is rolled back at
/// once, by a task of its own, before its connection goes back to the pool: left to the next
/// user of the connection, its locks (a conversation's row) would be held for as long as the
/// connection waited unused.
pub struct PgTx {
    /// `None` once ended.
    conn: Option<tokio::sync::Mutex<Lease>>,
    callback: Option<Callback>,
}

impl std::fmt::Debug for PgTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTx").finish_non_exhaustive()
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let mut conn = conn.into_inner();
        conn.deferred = None;
        if !conn.in_transaction {
            return;
        }
        // Without a runtime (at exit) the connection rolls back when it is next taken.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if unprepared(&mut conn.raw, "ROLLBACK").await.is_ok() {
                    conn.in_transaction = false;
                }
            });
        }
    }
}

impl PgTx {
    fn conn(&self) -> Result<&tokio::sync::Mutex<Lease>, DbErr> {
        self.conn
            .as_ref()
            .ok_or_else(|| DbErr::Custom("the transaction has ended".into()))
    }

    /// Ends the transaction with `end` (`COMMIT` or `ROLLBACK`).
    pub async fn end(mut self, end: &str) -> Result<(), DbErr> {
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        let mut conn = conn.into_inner();
        if conn.deferred.take().is_some() {
            // Nothing was sent: there is nothing to end.
            return Ok(());
        }
        // Should this fail or be cancelled, the connection rolls back before it serves again.
        unprepared(&mut conn.raw, end).await?;
        conn.in_transaction = false;
        Ok(())
    }

    pub async fn execute(&self, stmt: &Statement) -> Result<ExecResult, DbErr> {
        let mut conn = self.conn()?.lock().await;
        conn.started().await?;
        timed(self.callback.clone(), stmt, execute(&mut conn.raw, stmt)).await
    }

    /// Runs `sql` (statements without values), after the deferred opening of the transaction
    /// in the same message if that is still to be sent.
    pub async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let mut conn = self.conn()?.lock().await;
        match conn.deferred.take() {
            Some(begin) => {
                conn.in_transaction = true;
                unprepared(&mut conn.raw, &format!("{begin}; {sql}")).await
            }
            None => unprepared(&mut conn.raw, sql).await,
        }
    }

    pub async fn query_all(&self, stmt: &Statement) -> Result<Vec<QueryResult>, DbErr> {
        let mut conn = self.conn()?.lock().await;
        conn.started().await?;
        timed(self.callback.clone(), stmt, query_all(&mut conn.raw, stmt)).await
    }

    pub async fn each(&self, stmt: &Statement, each: &mut RowSink<'_>) -> Result<(), DbErr> {
        let mut conn = self.conn()?.lock().await;
        conn.started().await?;
        timed(
            self.callback.clone(),
            stmt,
            each_row(&mut conn.raw, stmt, each),
        )
        .await
    }

    /// Runs `statements` in order as [`Self::each`] does; but as the transaction's first
    /// statements, the opening of the transaction still to be sent ([`Pool::begin_deferred`]),
    /// they go with it as one message: `BEGIN; EXECUTE a(…); EXECUTE b(…)`, each statement kept
    /// prepared on the connection under its name by SQL's `PREPARE` (in that message, the first
    /// time).
    ///
    /// sqlx sends a statement with values only once every answer due has been read, so a
    /// transaction's `BEGIN` was a round trip of its own, and each costs both sides CPU: one
    /// more simple statement per AddParticipants(1) on PostgreSQL, 16 in flight, took its rate
    /// from 2.66-2.71k to 2.41-2.47k calls/s (3 alternations; the server's CPU per call +20 us,
    /// PostgreSQL's +50 us). A message of SQL text carries its values as literals and takes its
    /// rows as text, which sqlx decodes as it does binary ones; values of other kinds than text,
    /// integers and booleans (or a text holding a NUL, which no literal can) go the usual way,
    /// one statement at a time.
    pub async fn each_opening(&self, statements: &mut [Opening<'_, '_>]) -> Result<(), DbErr> {
        let mut conn = self.conn()?.lock().await;
        let values: Option<Vec<Literals>> = statements.iter().map(|s| literals(&s.stmt)).collect();
        let (Some(begin), Some(values)) = (conn.deferred, values) else {
            drop(conn);
            for s in statements.iter_mut() {
                self.each(&s.stmt, s.each).await?;
            }
            return Ok(());
        };
        let mut sql = String::with_capacity(256);
        sql.push_str(begin);
        let mut prepared: Vec<&'static str> = Vec::new();
        for (s, v) in statements.iter().zip(&values) {
            if conn.named.contains(&s.name) || prepared.contains(&s.name) {
                continue;
            }
            // Not undone by a rollback: a prepared statement lives as long as its session.
            push_call(&mut sql, "; PREPARE ", s.name, &v.types);
            sql.push_str(" AS ");
            sql.push_str(&s.stmt.sql);
            prepared.push(s.name);
        }
        for (s, v) in statements.iter().zip(&values) {
            push_call(&mut sql, "; EXECUTE ", s.name, &v.text);
        }
        conn.deferred = None;
        conn.in_transaction = true;
        // Until its answer is read whole, whether the message prepared the statements is
        // unknown.
        conn.doubtful = true;
        let start = Instant::now();
        // Before the statements' results: the opening's, and each preparation's.
        let skip = 1 + prepared.len();
        let out = text_rows(&mut conn.raw, &sql, skip, statements).await;
        if let Some(callback) = self.callback.clone() {
            for s in statements.iter() {
                callback(&sea_orm::metric::Info {
                    elapsed: start.elapsed(),
                    statement: &s.stmt,
                    failed: out.is_err(),
                });
            }
        }
        out?;
        conn.doubtful = false;
        conn.named.extend(prepared);
        Ok(())
    }
}

/// Appends `command` and `name`, followed by `list` in parentheses unless it is empty.
fn push_call(sql: &mut String, command: &str, name: &str, list: &str) {
    sql.push_str(command);
    sql.push_str(name);
    if !list.is_empty() {
        sql.push('(');
        sql.push_str(list);
        sql.push(')');
    }
}

/// The values of a statement as SQL literals, and their types, each list joined by commas.
struct Literals {
    text: String,
    types: String,
}

/// `stmt`'s values as [`Literals`], if each is of a kind written here: text (as an escape
/// string, `E'…'`, whose meaning no setting changes), integers and booleans.
fn literals(stmt: &Statement) -> Option<Literals> {
    use std::fmt::Write as _;
    let mut out = Literals {
        text: String::new(),
        types: String::new(),
    };
    for (i, value) in stmt.values.iter().flat_map(|v| v.0.iter()).enumerate() {
        if i > 0 {
            out.text.push_str(", ");
            out.types.push_str(", ");
        }
        let (kind, written) = match value {
            Value::String(s) => match s {
                Some(s) => ("text", Some(escaped(s)?)),
                None => ("text", None),
            },
            // Quoted, so that no sign is read as an operator (`-9223372036854775808::int8` is
            // the negation of a number too large).
            Value::Int(n) => ("int4", n.map(|n| format!("'{n}'"))),
            Value::BigInt(n) => ("int8", n.map(|n| format!("'{n}'"))),
            Value::SmallInt(n) => ("int2", n.map(|n| format!("'{n}'"))),
            Value::Bool(b) => ("bool", b.map(|b| b.to_string())),
            _ => return None,
        };
        out.types.push_str(kind);
        match written {
            // Typed, as the statement's values are bound by type.
            Some(w) => write!(out.text, "{w}::{kind}").ok()?,
            None => write!(out.text, "NULL::{kind}").ok()?,
        }
    }
    Some(out)
}

/// `s` as an escape string literal; none for a text with a NUL, which PostgreSQL's text cannot
/// hold.
fn escaped(s: &str) -> Option<String> {
    if s.contains('\0') {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 4);
    out.push_str("E'");
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    Some(out)
}

/// Runs `sql`, statements without values in one message, the results of its first `skip`
/// returning no rows, and hands the rows of each after them to the statement of `statements`
/// in its place (rows in text, which sqlx decodes as it does binary).
async fn text_rows(
    conn: &mut PgConnection,
    sql: &str,
    skip: usize,
    statements: &mut [Opening<'_, '_>],
) -> Result<(), DbErr> {
    let mut results = sqlx::Executor::fetch_many(conn, sqlx::AssertSqlSafe(sql));
    // The results ended so far.
    let mut ended: usize = 0;
    while let Some(result) = results.try_next().await.map_err(query_err)? {
        match result {
            sqlx::Either::Left(_) => ended += 1,
            sqlx::Either::Right(row) => {
                let at = ended.checked_sub(skip).and_then(|i| statements.get_mut(i));
                let Some(statement) = at else {
                    return Err(DbErr::Custom(format!(
                        "a row in result {} of a message of {} statements",
                        ended + 1,
                        skip + statements.len()
                    )));
                };
                (statement.each)(&row)?;
            }
        }
    }
    Ok(())
}

/// Reports `stmt` to `callback`, if any, once `run` ends.
async fn timed<T>(
    callback: Option<Callback>,
    stmt: &Statement,
    run: impl Future<Output = Result<T, DbErr>>,
) -> Result<T, DbErr> {
    let start = Instant::now();
    let out = run.await;
    if let Some(callback) = callback {
        callback(&sea_orm::metric::Info {
            elapsed: start.elapsed(),
            statement: stmt,
            failed: out.is_err(),
        });
    }
    out
}

/// sqlx's query for `stmt`, its values bound.
fn query(stmt: &Statement) -> sqlx::query::Query<'_, sqlx::Postgres, SqlxValues> {
    let values = stmt
        .values
        .as_ref()
        .map_or(sea_orm::Values(Vec::new()), |values| values.clone());
    sqlx::query_with(sqlx::AssertSqlSafe(stmt.sql.as_str()), SqlxValues(values))
}

async fn execute(conn: &mut PgConnection, stmt: &Statement) -> Result<ExecResult, DbErr> {
    query(stmt)
        .execute(conn)
        .await
        .map(ExecResult::from)
        .map_err(exec_err)
}

async fn unprepared(conn: &mut PgConnection, sql: &str) -> Result<ExecResult, DbErr> {
    sqlx::Executor::execute(conn, sqlx::AssertSqlSafe(sql))
        .await
        .map(ExecResult::from)
        .map_err(exec_err)
}

async fn query_all(conn: &mut PgConnection, stmt: &Statement) -> Result<Vec<QueryResult>, DbErr> {
    query(stmt)
        .fetch_all(conn)
        .await
        .map(|rows| rows.into_iter().map(QueryResult::from).collect())
        .map_err(query_err)
}

async fn each_row(
    conn: &mut PgConnection,
    stmt: &Statement,
    each: &mut RowSink<'_>,
) -> Result<(), DbErr> {
    let mut rows = query(stmt).fetch(conn);
    while let Some(row) = rows.try_next().await.map_err(query_err)? {
        let row: PgRow = row;
        each(&row)?;
    }
    Ok(())
}

/// A row read by position, its cells decoded where sqlx left them. Read through sea-orm's
/// [`QueryResult`], each cell's type was checked against every type its Rust type may decode
/// from (a `String`'s list builds and drops type descriptions) before it was decoded: a fifth
/// of the server's CPU under ListParticipants(50). Here the column's type is matched by its
/// number against the types Parley's columns have; a cell of any other type takes sqlx's
/// checked path.
impl Cells for PgRow {
    fn value(&self, i: usize, kind: Kind) -> Result<Value, DbErr> {
        use sqlx::{Row as _, TypeInfo as _, ValueRef as _};
        let raw = self.try_get_raw(i).map_err(query_err)?;
        let oid = raw.type_info().oid().map(|o| o.0);
        let known = raw.type_info().is_null()
            || raw.is_null()
            || match kind {
                Kind::Int => oid == Some(INT4),
                Kind::BigInt => oid == Some(INT8),
                Kind::Bool => oid == Some(BOOL),
                Kind::Text | Kind::Natural => oid.is_some_and(|o| TEXTS.contains(&o)),
                Kind::Bytes => oid == Some(BYTEA),
                Kind::Double => oid == Some(FLOAT8),
            };
        // A cell of a known type is decoded from the value already found (sqlx's own
        // `try_get_unchecked` would find it again); any other takes sqlx's checked path.
        fn cell<'r, T>(
            row: &'r PgRow,
            raw: sqlx::postgres::PgValueRef<'r>,
            i: usize,
            known: bool,
        ) -> Result<Option<T>, DbErr>
        where
            T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
        {
            if known {
                <Option<T> as sqlx::Decode<'r, sqlx::Postgres>>::decode(raw).map_err(|source| {
                    query_err(sqlx::Error::ColumnDecode {
                        index: i.to_string(),
                        source,
                    })
                })
            } else {
                row.try_get(i).map_err(query_err)
            }
        }
        Ok(match kind {
            Kind::Int => Value::Int(cell(self, raw, i, known)?),
            Kind::BigInt => Value::BigInt(cell(self, raw, i, known)?),
            Kind::Bool => Value::Bool(cell(self, raw, i, known)?),
            Kind::Text | Kind::Natural => Value::String(cell(self, raw, i, known)?),
            Kind::Bytes => Value::Bytes(cell(self, raw, i, known)?),
            Kind::Double => Value::Double(cell(self, raw, i, known)?),
        })
    }
}

// The numbers of PostgreSQL's built-in types (`Cells for PgRow`), fixed in its catalog.
const BOOL: u32 = 16;
const BYTEA: u32 = 17;
const INT8: u32 = 20;
const INT4: u32 = 23;
const FLOAT8: u32 = 701;
/// `text`, `varchar`, `bpchar` and `name`, which a `String` decodes alike.
const TEXTS: [u32; 4] = [25, 1043, 1042, 19];

// sqlx's errors as sea-orm wraps them, so that the store classifies them alike.
fn conn_err(e: sqlx::Error) -> DbErr {
    DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e)))
}

fn exec_err(e: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e)))
}

fn query_err(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(sea_orm::DatabaseBackend::Postgres, "SELECT 1", values)
    }

    /// Text is written as an escape string whose quotes and backslashes are escaped, each value
    /// typed as it would be bound, a missing one as a typed NULL.
    #[test]
    fn values_are_written_as_typed_literals() {
        let written = literals(&statement(vec![
            Value::from(r"o'brien\"),
            Value::String(None),
            Value::Int(Some(-3)),
            Value::BigInt(Some(i64::MIN)),
            Value::SmallInt(None),
            Value::Bool(Some(true)),
        ]))
        .expect("every kind is written");
        assert_eq!(
            written.text,
            r"E'o\'brien\\'::text, NULL::text, '-3'::int4, '-9223372036854775808'::int8, NULL::int2, true::bool"
        );
        assert_eq!(written.types, "text, text, int4, int8, int2, bool");
        let none = literals(&statement(Vec::new())).expect("no values");
        assert_eq!((none.text.as_str(), none.types.as_str()), ("", ""));
    }

    /// A value no literal here can carry sends the statement the usual way.
    #[test]
    fn other_values_are_not_written() {
        assert!(literals(&statement(vec![Value::from("a\0b")])).is_none());
        assert!(literals(&statement(vec![Value::from("a"), Value::Double(Some(1.5))])).is_none());
        assert!(literals(&statement(vec![Value::Bytes(Some(vec![1]))])).is_none());
    }
}
