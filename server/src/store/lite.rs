//! SQLite run on the caller's thread.
//!
//! sqlx gives every SQLite connection a thread of its own and hands each statement to it and
//! its rows back through channels: two thread switches per statement. On this service's
//! statements, which take microseconds, the switches were the largest cost of a call:
//! profiled under GetConversation at 16 in flight, a third of the server's CPU went to
//! scheduling and waking those threads. Here a statement runs where it is called, on a
//! connection taken from a pool, as an embedded engine is meant to be used.
//!
//! A statement that runs inline holds the task's thread for its duration. Parley's statements
//! are bounded (pages, batches of at most [`super::ROWS_PER_INSERT`] rows), so that is the
//! cost of the work itself. One wait is not: the writer waiting for another process's write
//! lock. The writer therefore takes its lock without SQLite's busy handler, retrying with an
//! asynchronous sleep ([`Pool::begin`]).
//!
//! Rows are handed to sea-orm as its in-memory rows (the `mock` feature's [`MockRow`]: the one
//! way sea-orm takes rows it did not read itself; its `proxy` feature does not build with
//! sqlx-sqlite in sea-orm 2.0.4), whose values must be of the variant the decoding field
//! expects (an `i32` field decodes only from `Value::Int`). SQLite's
//! declared types cannot tell `i32` from `i64`, so a column read from a table takes the type
//! its entity declares (`kinds`); a computed column takes its value's own type.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::types::{ToSqlOutput, ValueRef};
use sea_orm::{
    ColumnTrait, DatabaseBackend, DbErr, EntityTrait, ExecResult, IdenStatic, IntoMockRow,
    Iterable, MockDatabase, MockDatabaseTrait, MockExecResult, MockRow, QueryResult, RuntimeErr,
    Statement, Value,
};

use super::cells::{Cells, Kind, RowSink};
use super::entities;
use crate::lock;

/// A statement's callback for the tests' statement counts (see [`super::Db::set_metric_callback`]).
pub type Callback = Arc<dyn Fn(&sea_orm::metric::Info<'_>) + Send + Sync>;

/// An error SQLite returned, as a sqlx database error so that [`crate::error`] and
/// [`super::is_unique_violation`] classify it as they do sqlx's.
#[derive(Debug)]
pub struct LiteError {
    /// SQLite's extended result code.
    pub code: i32,
    message: String,
}

impl std::fmt::Display for LiteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (SQLite code {})", self.message, self.code)
    }
}

impl std::error::Error for LiteError {}

impl sea_orm::sqlx::error::DatabaseError for LiteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sea_orm::sqlx::error::ErrorKind {
        use sea_orm::sqlx::error::ErrorKind;
        match self.code {
            // SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY
            2067 | 1555 => ErrorKind::UniqueViolation,
            // SQLITE_CONSTRAINT_FOREIGNKEY
            787 => ErrorKind::ForeignKeyViolation,
            // SQLITE_CONSTRAINT_NOTNULL
            1299 => ErrorKind::NotNullViolation,
            // SQLITE_CONSTRAINT_CHECK
            275 => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// SQLITE_BUSY, whatever its extended code.
const BUSY: i32 = 5;

fn lite_err(e: rusqlite::Error) -> DbErr {
    let (code, message) = match &e {
        rusqlite::Error::SqliteFailure(f, message) => (
            f.extended_code,
            message.clone().unwrap_or_else(|| f.to_string()),
        ),
        other => (1, other.to_string()),
    };
    let error = sea_orm::sqlx::Error::Database(Box::new(LiteError { code, message }));
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(error)))
}

fn is_busy(e: &DbErr) -> bool {
    let DbErr::Query(RuntimeErr::SqlxError(inner)) = e else {
        return false;
    };
    let sea_orm::sqlx::Error::Database(db) = inner.as_ref() else {
        return false;
    };
    db.try_downcast_ref::<LiteError>()
        .is_some_and(|l| l.code & 0xff == BUSY)
}

/// Every table column's [`Kind`], from the entities.
fn kinds() -> &'static HashMap<(String, String), Kind> {
    static KINDS: OnceLock<HashMap<(String, String), Kind>> = OnceLock::new();
    KINDS.get_or_init(|| {
        let mut map = HashMap::new();
        fn add<E: EntityTrait + Default>(map: &mut HashMap<(String, String), Kind>) {
            let table = E::default().table_name().to_owned();
            for column in E::Column::iter() {
                let kind = Kind::of(column.def().get_column_type());
                map.insert((table.clone(), column.as_str().to_owned()), kind);
            }
        }
        add::<entities::users::Entity>(&mut map);
        add::<entities::groups::Entity>(&mut map);
        add::<entities::group_members::Entity>(&mut map);
        add::<entities::conversations::Entity>(&mut map);
        add::<entities::participants::Entity>(&mut map);
        add::<entities::timeline::Entity>(&mut map);
        add::<entities::invitations::Entity>(&mut map);
        add::<entities::notifications::Entity>(&mut map);
        add::<entities::request_records::Entity>(&mut map);
        map
    })
}

/// A statement's result columns: names and kinds, found once per statement text.
struct Shape {
    names: Vec<Arc<str>>,
    kinds: Vec<Kind>,
}

/// What a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Creates the file; the one writer.
    Writer,
    /// Reads only (`PRAGMA query_only`).
    Reader,
    /// The checkpointer.
    Any,
}

/// How to open connections to one database file.
#[derive(Clone, Debug)]
pub struct Opener {
    pub path: String,
    pub role: Role,
    pub synchronous: &'static str,
}

/// The writer's page cache (`PRAGMA cache_size`; negative: KiB).
pub const WRITER_CACHE_SIZE: i64 = -16384;

/// Pages of log past which the writer copies the log itself, inside a commit
/// (`PRAGMA wal_autocheckpoint`). The checkpointer task (`store::checkpoints`) copies it soon
/// after commits on a connection of its own; this is the writer's backstop should that fall
/// behind, set well above what a burst of large writes leaves between two of its rounds.
pub const WRITER_AUTOCHECKPOINT: i64 = 8000;

/// How long a reader waits for a lock another process holds (WAL readers take none but while
/// a log is recovered).
const READER_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl Opener {
    fn open(&self) -> Result<LiteConn, DbErr> {
        use rusqlite::OpenFlags;
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if self.role == Role::Writer {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = rusqlite::Connection::open_with_flags(&self.path, flags).map_err(lite_err)?;
        // Planned once per statement text, whatever its values (see `sqlite_stable_plans`).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(lite_err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let busy = match self.role {
            // The writer waits for a lock with an asynchronous sleep instead (`Pool::begin`).
            Role::Writer => Duration::ZERO,
            Role::Reader | Role::Any => READER_BUSY_TIMEOUT,
        };
        conn.busy_timeout(busy).map_err(lite_err)?;
        // Statement journals and sorts in memory: a savepoint's journal is otherwise a file
        // opened, written and deleted within a write.
        let mut setup = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; \
             PRAGMA temp_store = MEMORY;",
            self.synchronous
        );
        match self.role {
            Role::Reader => setup.push_str(" PRAGMA query_only = ON;"),
            Role::Writer => setup.push_str(&format!(
                " PRAGMA cache_size = {WRITER_CACHE_SIZE}; PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT};"
            )),
            Role::Any => {}
        }
        conn.execute_batch(&setup).map_err(lite_err)?;
        Ok(LiteConn {
            conn,
            shapes: HashMap::new(),
        })
    }
}

/// Prepared statements kept per connection: more than Parley has statement texts on a path.
const STATEMENT_CACHE: usize = 256;

/// One connection, with the shapes of the statements it ran.
pub struct LiteConn {
    conn: rusqlite::Connection,
    shapes: HashMap<String, Arc<Shape>>,
}

impl LiteConn {
    /// Runs every statement of `stmt` (several may be separated by `;`, each binding the
    /// next of the values) and returns the rows they produced and the rows changed by the last.
    fn run(&mut self, stmt: &Statement, rows: bool) -> Result<(Vec<QueryResult>, u64), DbErr> {
        let mut out: Vec<MockRow> = Vec::new();
        let changed = self.exec(stmt, &mut |row, shape| {
            if rows {
                out.push(decode(row, shape)?);
            }
            Ok(())
        })?;
        Ok((results(out)?, changed))
    }

    /// Runs every statement of `stmt` as [`Self::run`] does, handing each row produced to
    /// `each`, and returns the rows changed by the last.
    fn exec(
        &mut self,
        stmt: &Statement,
        each: &mut dyn FnMut(&rusqlite::Row<'_>, &Shape) -> Result<(), DbErr>,
    ) -> Result<u64, DbErr> {
        let values: &[Value] = stmt.values.as_ref().map_or(&[], |v| &v.0);
        let mut next = 0;
        let mut changed = 0;
        for sql in split(&stmt.sql) {
            let mut prepared = self.conn.prepare_cached(sql).map_err(lite_err)?;
            let count = prepared.parameter_count();
            let Some(bound) = values.get(next..next + count) else {
                return Err(DbErr::Custom(format!(
                    "a statement takes {count} values past the {next} bound, of {}",
                    values.len()
                )));
            };
            for (i, v) in bound.iter().enumerate() {
                prepared
                    .raw_bind_parameter(i + 1, Bind(v))
                    .map_err(lite_err)?;
            }
            next += count;
            if prepared.column_count() > 0 {
                let shape = match self.shapes.get(sql) {
                    Some(shape) => shape.clone(),
                    None => {
                        let shape = Arc::new(shape_of(&prepared)?);
                        self.shapes.insert(sql.to_owned(), shape.clone());
                        shape
                    }
                };
                let mut cursor = prepared.raw_query();
                while let Some(row) = cursor.next().map_err(lite_err)? {
                    each(row, &shape)?;
                }
                drop(cursor);
                changed = self.conn.changes();
            } else {
                changed = prepared.raw_execute().map_err(lite_err)? as u64;
            }
        }
        if next != values.len() {
            return Err(DbErr::Custom(format!(
                "a statement bound {next} of its {} values",
                values.len()
            )));
        }
        Ok(changed)
    }
}

impl LiteConn {
    /// Runs `sql`, a statement of `width` parameters, once per row of `values` (row after
    /// row, `width` values each) and returns the rows it changed in all. A parameter is bound
    /// again only where its value differs from the row before: a value stays bound across
    /// runs, and binding text copies it.
    fn rows(&mut self, sql: &str, width: usize, values: &[Value]) -> Result<u64, DbErr> {
        let mut prepared = self.conn.prepare_cached(sql).map_err(lite_err)?;
        if width == 0 || prepared.parameter_count() != width || !values.len().is_multiple_of(width)
        {
            return Err(DbErr::Custom(format!(
                "a statement of {} parameters run on rows of {width} of {} values",
                prepared.parameter_count(),
                values.len()
            )));
        }
        let mut changed = 0;
        let mut before: Option<&[Value]> = None;
        for row in values.chunks(width) {
            for (i, v) in row.iter().enumerate() {
                if before.is_none_or(|b| b[i] != *v) {
                    prepared
                        .raw_bind_parameter(i + 1, Bind(v))
                        .map_err(lite_err)?;
                }
            }
            changed += prepared.raw_execute().map_err(lite_err)? as u64;
            before = Some(row);
        }
        Ok(changed)
    }
}

impl Cells for rusqlite::Row<'_> {
    fn value(&self, i: usize, kind: Kind) -> Result<Value, DbErr> {
        let raw = self.get_ref(i).map_err(lite_err)?;
        value(raw, kind, || {
            self.as_ref()
                .column_name(i)
                .map_or_else(|_| format!("#{i}"), str::to_owned)
        })
    }
}

/// `sql`'s statements, split at each `;` outside quotes (empty ones left out).
fn split(sql: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(sql);
    std::iter::from_fn(move || {
        let text = rest?;
        let mut quote: Option<u8> = None;
        for (i, b) in text.bytes().enumerate() {
            match quote {
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None if b == b'\'' || b == b'"' => quote = Some(b),
                None if b == b';' => {
                    rest = Some(&text[i + 1..]);
                    return Some(&text[..i]);
                }
                None => {}
            }
        }
        rest = None;
        Some(text)
    })
    .filter(|s| !s.trim().is_empty())
}

fn shape_of(stmt: &rusqlite::Statement<'_>) -> Result<Shape, DbErr> {
    let kinds_of = kinds();
    let n = stmt.column_count();
    let mut names = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    for i in 0..n {
        names.push(Arc::from(stmt.column_name(i).map_err(lite_err)?));
        let kind = match stmt.column_metadata(i).map_err(lite_err)? {
            Some((_, table, origin, ..)) => {
                let key = (
                    table.to_string_lossy().into_owned(),
                    origin.to_string_lossy().into_owned(),
                );
                kinds_of.get(&key).copied().unwrap_or(Kind::Natural)
            }
            None => Kind::Natural,
        };
        kinds.push(kind);
    }
    Ok(Shape { names, kinds })
}

fn decode(row: &rusqlite::Row<'_>, shape: &Shape) -> Result<MockRow, DbErr> {
    let mut values = BTreeMap::new();
    for (i, (name, kind)) in shape.names.iter().zip(&shape.kinds).enumerate() {
        let raw = row.get_ref(i).map_err(lite_err)?;
        values.insert(name.to_string(), value(raw, *kind, || name.to_string())?);
    }
    Ok(values.into_mock_row())
}

/// `rows` as sea-orm's query results: what its in-memory database answers when given them.
fn results(rows: Vec<MockRow>) -> Result<Vec<QueryResult>, DbErr> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut answer = MockDatabase::new(DatabaseBackend::Sqlite).append_query_results([rows]);
    answer.query(
        0,
        Statement::from_string(DatabaseBackend::Sqlite, String::new()),
    )
}

fn value(raw: ValueRef<'_>, kind: Kind, name: impl Fn() -> String) -> Result<Value, DbErr> {
    let text = |b: &[u8]| {
        String::from_utf8(b.to_vec())
            .map_err(|_| DbErr::Custom(format!("column {} holds text that is not UTF-8", name())))
    };
    Ok(match (raw, kind) {
        (ValueRef::Null, Kind::Int) => Value::Int(None),
        (ValueRef::Null, Kind::BigInt) => Value::BigInt(None),
        (ValueRef::Null, Kind::Bool) => Value::Bool(None),
        (ValueRef::Null, Kind::Bytes) => Value::Bytes(None),
        (ValueRef::Null, Kind::Double) => Value::Double(None),
        (ValueRef::Null, Kind::Text | Kind::Natural) => Value::String(None),
        (ValueRef::Integer(x), Kind::Int) => Value::Int(Some(i32::try_from(x).map_err(|_| {
            DbErr::Custom(format!(
                "column {} holds {x}, past a 32-bit integer",
                name()
            ))
        })?)),
        (ValueRef::Integer(x), Kind::Bool) => Value::Bool(Some(x != 0)),
        (ValueRef::Integer(x), Kind::Double) => Value::Double(Some(x as f64)),
        (ValueRef::Integer(x), _) => Value::BigInt(Some(x)),
        (ValueRef::Real(x), _) => Value::Double(Some(x)),
        (ValueRef::Text(b), Kind::Bytes) => Value::Bytes(Some(b.to_vec())),
        (ValueRef::Text(b), _) => Value::String(Some(text(b)?)),
        (ValueRef::Blob(b), Kind::Text) => Value::String(Some(text(b)?)),
        (ValueRef::Blob(b), _) => Value::Bytes(Some(b.to_vec())),
    })
}

/// A sea-orm value bound to a SQLite parameter.
struct Bind<'a>(&'a Value);

impl rusqlite::ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::Value as V;
        let owned = |v: Option<V>| Ok(ToSqlOutput::Owned(v.unwrap_or(V::Null)));
        match self.0 {
            Value::Bool(v) => owned(v.map(|b| V::Integer(i64::from(b)))),
            Value::TinyInt(v) => owned(v.map(|x| V::Integer(x.into()))),
            Value::SmallInt(v) => owned(v.map(|x| V::Integer(x.into()))),
            Value::Int(v) => owned(v.map(|x| V::Integer(x.into()))),
            Value::BigInt(v) => owned(v.map(V::Integer)),
            Value::TinyUnsigned(v) => owned(v.map(|x| V::Integer(x.into()))),
            Value::SmallUnsigned(v) => owned(v.map(|x| V::Integer(x.into()))),
            Value::Unsigned(v) => owned(v.map(|x| V::Integer(x.into()))),
            Value::BigUnsigned(Some(x)) => i64::try_from(*x)
                .map(|x| ToSqlOutput::Owned(V::Integer(x)))
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e))),
            Value::BigUnsigned(None) => owned(None),
            Value::Float(v) => owned(v.map(|x| V::Real(x.into()))),
            Value::Double(v) => owned(v.map(V::Real)),
            Value::String(Some(s)) => Ok(ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))),
            Value::String(None) => owned(None),
            Value::Char(v) => owned(v.map(|c| V::Text(c.to_string()))),
            Value::Bytes(Some(b)) => Ok(ToSqlOutput::Borrowed(ValueRef::Blob(b))),
            Value::Bytes(None) => owned(None),
            other => Err(rusqlite::Error::ToSqlConversionFailure(
                format!("Parley binds no {other:?} to SQLite").into(),
            )),
        }
    }
}

/// Connections to one file, opened as needed up to a bound, each used by one caller at a time.
pub struct Pool {
    opener: Opener,
    idle: Mutex<Vec<LiteConn>>,
    permits: Arc<tokio::sync::Semaphore>,
    max: usize,
    open: std::sync::atomic::AtomicUsize,
    callback: Mutex<Option<Callback>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("lite::Pool")
            .field("path", &self.opener.path)
            .field("role", &self.opener.role)
            .field("max", &self.max)
            .finish()
    }
}

/// How long a caller waits for a connection of a pool before it is told the database is
/// unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the writer keeps retrying for a write lock another process holds.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

impl Pool {
    /// A pool of at most `max` connections, `min` of them opened now.
    pub fn open(opener: Opener, min: usize, max: usize) -> Result<Arc<Self>, DbErr> {
        let max = max.max(1);
        let mut idle = Vec::new();
        for _ in 0..min.clamp(1, max) {
            idle.push(opener.open()?);
        }
        Ok(Arc::new(Self {
            open: idle.len().into(),
            opener,
            idle: Mutex::new(idle),
            permits: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            callback: Mutex::new(None),
        }))
    }

    pub fn set_callback(&self, callback: Option<Callback>) {
        *lock(&self.callback) = callback;
    }

    /// (open connections, idle connections, the most the pool opens).
    pub fn usage(&self) -> (usize, usize, usize) {
        let idle = lock(&self.idle).len();
        (
            self.open.load(std::sync::atomic::Ordering::Relaxed),
            idle.min(self.permits.available_permits()),
            self.max,
        )
    }

    /// A connection of the pool for the caller alone, returned when dropped.
    pub async fn acquire(self: &Arc<Self>) -> Result<Pooled, DbErr> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout))?
                .map_err(|_| DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::ConnectionClosed))?,
        };
        let found = lock(&self.idle).pop();
        let conn = match found {
            Some(conn) => conn,
            None => {
                let conn = self.opener.open()?;
                self.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                conn
            }
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
        })
    }

    /// One statement on a connection of the pool.
    pub async fn run(
        self: &Arc<Self>,
        stmt: &Statement,
        rows: bool,
    ) -> Result<(Vec<QueryResult>, u64), DbErr> {
        let mut conn = self.acquire().await?;
        conn.run(stmt, rows)
    }

    /// One statement on a connection of the pool, each row handed to `each` by position.
    pub async fn each(
        self: &Arc<Self>,
        stmt: &Statement,
        each: &mut RowSink<'_>,
    ) -> Result<(), DbErr> {
        let mut conn = self.acquire().await?;
        conn.each(stmt, each)
    }

    pub async fn batch(self: &Arc<Self>, sql: &str) -> Result<u64, DbErr> {
        let mut conn = self.acquire().await?;
        conn.batch(sql)
    }

    /// Runs `sql` on a connection of the pool on a thread of tokio's blocking pool, for a
    /// statement that waits for the disk (a checkpoint).
    pub async fn batch_blocking(self: &Arc<Self>, sql: &'static str) -> Result<(), DbErr> {
        let mut conn = self.acquire().await?;
        tokio::task::spawn_blocking(move || conn.batch(sql).map(|_| ()))
            .await
            .map_err(|e| DbErr::Custom(format!("a blocking SQLite call failed: {e}")))?
    }

    /// A transaction on a connection of the pool: `BEGIN IMMEDIATE` (`write`: the write lock
    /// taken now; while another process holds it, retried after a short sleep rather than
    /// waiting in SQLite's busy handler, which would hold the thread) or `BEGIN` (a read whose
    /// snapshot its first statement fixes).
    pub async fn begin(self: &Arc<Self>, write: bool) -> Result<LiteTx, DbErr> {
        let mut conn = self.acquire().await?;
        let sql = if write { "BEGIN IMMEDIATE" } else { "BEGIN" };
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match conn.batch(sql) {
                Ok(_) => break,
                Err(e) if is_busy(&e) && started.elapsed() < LOCK_TIMEOUT => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(LiteTx {
            conn: Mutex::new(Some(conn)),
            synced: self.opener.synchronous == "FULL",
        })
    }
}

/// A connection taken from a [`Pool`].
pub struct Pooled {
    conn: Option<LiteConn>,
    pool: Arc<Pool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Pooled {
    fn run(&mut self, stmt: &Statement, rows: bool) -> Result<(Vec<QueryResult>, u64), DbErr> {
        self.counted(stmt, |conn| conn.run(stmt, rows))
    }

    /// Runs `stmt`, handing each row to `each` by position.
    fn each(&mut self, stmt: &Statement, each: &mut RowSink<'_>) -> Result<(), DbErr> {
        self.counted(stmt, |conn| {
            conn.exec(stmt, &mut |row, _| each(row)).map(|_| ())
        })
    }

    /// Runs `sql` once per row of `values` ([`LiteConn::rows`]), counted as one statement.
    fn rows(&mut self, sql: &str, width: usize, values: &[Value]) -> Result<u64, DbErr> {
        let stmt = Statement::from_string(sea_orm::DatabaseBackend::Sqlite, sql);
        self.counted(&stmt, |conn| conn.rows(sql, width, values))
    }

    /// `f` on the connection, counted by the pool's callback as one statement.
    fn counted<T>(
        &mut self,
        stmt: &Statement,
        f: impl FnOnce(&mut LiteConn) -> Result<T, DbErr>,
    ) -> Result<T, DbErr> {
        let started = Instant::now();
        let conn = self.conn.as_mut().ok_or_else(gone)?;
        let outcome = f(conn);
        let callback = lock(&self.pool.callback).clone();
        if let Some(callback) = callback {
            callback(&sea_orm::metric::Info {
                elapsed: started.elapsed(),
                statement: stmt,
                failed: outcome.is_err(),
            });
        }
        outcome
    }

    /// Runs `sql` (statements without values) and returns the rows the last changed. Not
    /// counted by the callback: transaction control and `execute_unprepared`, which sea-orm's
    /// SQLite connections did not count either.
    fn batch(&mut self, sql: &str) -> Result<u64, DbErr> {
        let stmt = Statement::from_string(sea_orm::DatabaseBackend::Sqlite, sql);
        let conn = self.conn.as_mut().ok_or_else(gone)?;
        conn.run(&stmt, false).map(|(_, changed)| changed)
    }
}

fn gone() -> DbErr {
    DbErr::Custom("a SQLite connection used after its transaction ended".into())
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if conn.conn.is_autocommit() {
                lock(&self.pool.idle).push(conn);
            } else {
                // Left inside a transaction (a statement failed mid-way): not reused.
                self.pool
                    .open
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// A transaction on a pooled connection; rolled back if dropped before its end.
pub struct LiteTx {
    conn: Mutex<Option<Pooled>>,
    /// Each commit waits for the disk (`synchronous = FULL`): it runs on tokio's blocking
    /// pool rather than holding the caller's thread.
    synced: bool,
}

impl std::fmt::Debug for LiteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiteTx")
    }
}

impl LiteTx {
    pub fn run(&self, stmt: &Statement, rows: bool) -> Result<(Vec<QueryResult>, u64), DbErr> {
        lock(&self.conn).as_mut().ok_or_else(gone)?.run(stmt, rows)
    }

    pub fn each(&self, stmt: &Statement, each: &mut RowSink<'_>) -> Result<(), DbErr> {
        lock(&self.conn).as_mut().ok_or_else(gone)?.each(stmt, each)
    }

    pub fn batch(&self, sql: &str) -> Result<u64, DbErr> {
        lock(&self.conn).as_mut().ok_or_else(gone)?.batch(sql)
    }

    /// Runs `sql` once per row of `values`, each row `width` values (`LiteConn::rows`).
    pub fn rows(&self, sql: &str, width: usize, values: &[Value]) -> Result<u64, DbErr> {
        lock(&self.conn)
            .as_mut()
            .ok_or_else(gone)?
            .rows(sql, width, values)
    }

    /// Ends the transaction with `sql` (`COMMIT` or `ROLLBACK`). After a failed commit the
    /// transaction is rolled back, as sqlx's is when dropped.
    pub async fn end(&self, sql: &'static str) -> Result<(), DbErr> {
        let taken = lock(&self.conn).take().ok_or_else(gone)?;
        if self.synced && sql == "COMMIT" {
            return tokio::task::spawn_blocking(move || Self::finish(taken, sql))
                .await
                .map_err(|e| DbErr::Custom(format!("a blocking SQLite call failed: {e}")))?;
        }
        Self::finish(taken, sql)
    }

    fn finish(mut taken: Pooled, sql: &str) -> Result<(), DbErr> {
        let outcome = taken.batch(sql).map(|_| ());
        if outcome.is_err()
            && let Some(conn) = taken.conn.as_mut()
            && !conn.conn.is_autocommit()
        {
            let _ = conn.conn.execute_batch("ROLLBACK").map_err(lite_err);
        }
        outcome
    }
}

impl Drop for LiteTx {
    fn drop(&mut self) {
        if let Some(mut taken) = lock(&self.conn).take()
            && let Some(conn) = taken.conn.as_mut()
            && !conn.conn.is_autocommit()
            && let Err(e) = conn.conn.execute_batch("ROLLBACK").map_err(lite_err)
        {
            tracing::warn!(error = %e, "a SQLite transaction failed to roll back");
        }
    }
}

/// An [`ExecResult`] counting `rows` changed.
pub fn exec_result(rows: u64) -> ExecResult {
    let result = MockExecResult {
        last_insert_id: 0,
        rows_affected: rows,
    };
    let mut answer = MockDatabase::new(DatabaseBackend::Sqlite).append_exec_results([result]);
    answer
        .execute(
            0,
            Statement::from_string(DatabaseBackend::Sqlite, String::new()),
        )
        .unwrap_or_else(|_| unreachable!("an in-memory database answers what it was given"))
}

/// The file a `sqlite:` URL names (its query, options sqlx reads, left out: the writer
/// creates the file, and every connection is set up by [`Opener`]).
pub fn path_of(url: &str) -> String {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    rest.split_once('?')
        .map_or(rest, |(path, _)| path)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes() {
        let parts: Vec<_> = split("SAVEPOINT a; SELECT ';' AS \"x;y\" ;  ").collect();
        assert_eq!(parts, vec!["SAVEPOINT a", " SELECT ';' AS \"x;y\" "]);
    }

    fn memory() -> LiteConn {
        let conn = rusqlite::Connection::open_in_memory().expect("an in-memory database");
        conn.execute_batch("CREATE TABLE t (a TEXT NOT NULL, b INTEGER NOT NULL, c TEXT)")
            .expect("a table");
        LiteConn {
            conn,
            shapes: HashMap::new(),
        }
    }

    fn all(conn: &LiteConn) -> Vec<(String, i64, Option<String>)> {
        let mut st = conn
            .conn
            .prepare("SELECT a, b, c FROM t ORDER BY rowid")
            .expect("a read");
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("decoded rows")
    }

    #[test]
    fn rows_rebind_each_value_that_changed_and_keep_the_others() {
        let mut conn = memory();
        let text = |s: &str| Value::String(Some(s.to_owned()));
        let none = Value::String(None);
        let int = |n: i64| Value::BigInt(Some(n));
        // Each column changes, changes back, and goes to and from NULL.
        let values = vec![
            text("x"),
            int(1),
            none.clone(),
            text("x"),
            int(2),
            none.clone(),
            text("y"),
            int(2),
            text("z"),
            text("x"),
            int(2),
            none.clone(),
            text("x"),
            int(1),
            text("z"),
        ];
        let sql = "INSERT INTO t (a, b, c) VALUES (?, ?, ?)";
        assert_eq!(conn.rows(sql, 3, &values).expect("inserted"), 5);
        let z = || Some("z".to_owned());
        assert_eq!(
            all(&conn),
            vec![
                ("x".into(), 1, None),
                ("x".into(), 2, None),
                ("y".into(), 2, z()),
                ("x".into(), 2, None),
                ("x".into(), 1, z()),
            ]
        );
        // A run after another starts from its first row's values, whatever stays bound.
        assert_eq!(conn.rows(sql, 3, &values[6..9]).expect("inserted"), 1);
        assert_eq!(all(&conn).last(), Some(&("y".into(), 2, z())));
    }

    #[test]
    fn rows_that_do_not_fit_the_statement_are_refused_before_any_is_written() {
        let mut conn = memory();
        let sql = "INSERT INTO t (a, b, c) VALUES (?, ?, ?)";
        let four = vec![Value::BigInt(Some(1)); 4];
        assert!(
            conn.rows(sql, 3, &four).is_err(),
            "4 values are no rows of 3"
        );
        assert!(conn.rows(sql, 2, &four).is_err(), "the statement takes 3");
        assert!(conn.rows(sql, 0, &[]).is_err());
        assert!(all(&conn).is_empty());
    }

    #[test]
    fn urls_become_paths() {
        assert_eq!(path_of("sqlite:///tmp/p.db?mode=rwc"), "/tmp/p.db");
        assert_eq!(path_of("sqlite:p.db"), "p.db");
    }

    #[test]
    fn every_entity_column_has_a_kind() {
        let map = kinds();
        assert_eq!(map[&("conversations".into(), "kind".into())], Kind::Int);
        assert_eq!(
            map[&("conversations".into(), "last_seq".into())],
            Kind::BigInt
        );
        assert_eq!(
            map[&("conversations".into(), "lock_external".into())],
            Kind::Bool
        );
        assert_eq!(
            map[&("request_records".into(), "response".into())],
            Kind::Bytes
        );
        assert!(!map.values().any(|k| *k == Kind::Natural));
    }
}
