//! Persistence: connections, migrations, transactions, and the queries behind each use case.
//! Every mutation is one transaction, or a savepoint in a group of writes that commit together
//! ([`Writer`]), that takes the conversation's lock before it reads the state it checks
//! (`SELECT … FOR UPDATE` on PostgreSQL; an IMMEDIATE transaction, which serializes writers,
//! on SQLite). Unique keys are the last guard.

pub mod acceptance;
pub mod cells;
pub mod conn;
pub mod conversations;
pub mod directory;
pub mod entities;
pub mod export;
pub mod invitations;
pub mod lite;
pub mod outbox;
pub mod participants;
pub mod pg;
pub mod requests;
pub mod timeline;
pub mod writes;

pub use cells::EachRow;
pub use conn::{Conn, Tx};

use std::time::Duration;

use parley_migration::{Migrator, MigratorTrait};
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection,
    DbErr, EntityTrait, QueryFilter, QueryResult, QuerySelect, QueryTrait, Statement,
};

use crate::domain::model::{
    Candidate, Conversation, ConversationKind, ConversationState, Entry, FrozenView, History,
    Participant, ParticipantKind, ParticipantState, Permission, Policy, Role, TimelineItem, User,
    UserKind, UserStatus,
};
use crate::domain::principal::{Principal, judged};
use crate::error::Error;
use writes::Writes;

/// How SQLite syncs its write-ahead log to disk (`--sqlite-synchronous`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SqliteSync {
    /// Every commit waits for the log to reach the disk: a power cut loses nothing committed.
    Full,
    /// The log is synced at checkpoints (50 ms apart at most while writes go on), not at
    /// each commit: a power cut (not a crash of the process) can lose the commits of the last
    /// 50 ms or so before it, never the database's consistency.
    #[default]
    Normal,
}

impl SqliteSync {
    /// The value of `PRAGMA synchronous`.
    pub fn pragma(self) -> &'static str {
        match self {
            SqliteSync::Full => "FULL",
            SqliteSync::Normal => "NORMAL",
        }
    }
}

/// How PostgreSQL plans the executions of a prepared statement on Parley's connections
/// (`--pg-plan-cache-mode`, the `plan_cache_mode` setting of every connection).
///
/// Statements are prepared once per pooled connection and live as long as it. Left to
/// itself (`auto`), PostgreSQL plans a statement's first five executions with their values,
/// then keeps one generic plan when that costs no more. A generic plan made while a table has
/// no statistics yet can pick the wrong index: on an empty `users` table, `tenant_id = $1 AND
/// id = $2` is planned on an index that only matches `tenant_id`, which stays right only as
/// long as the tenant is small. Autovacuum's first ANALYZE of the table (after 50 rows, within
/// a minute) invalidates such plans, so the harm is bounded to a fresh database's first
/// minute of growth; measured, a directory sync of 100,000 users into an empty database runs
/// its last tenth at 0.87 of its first. `force_custom_plan` rules it out entirely, for about
/// a third of a busy write path's throughput (more planning per call than execution).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PgPlanCache {
    /// PostgreSQL's own choice (`auto`).
    #[default]
    Auto,
    /// Every execution planned with its values (`force_custom_plan`).
    ForceCustomPlan,
}

impl PgPlanCache {
    /// The value of PostgreSQL's `plan_cache_mode`.
    pub fn setting(self) -> &'static str {
        match self {
            PgPlanCache::Auto => "auto",
            PgPlanCache::ForceCustomPlan => "force_custom_plan",
        }
    }
}

/// The database a replica uses: readers, and the one place writes go through.
///
/// On SQLite, writes take turns on one writer connection: a write transaction waits in the
/// writer's queue (first come, first served) rather than retrying in the busy handler's sleeps,
/// while reads run on a pool of their own whose connections may not write (`query_only`), so a
/// write that forgot the writer fails loudly instead of contending. On PostgreSQL the writer
/// and the readers share one pool of connections (the engine handles concurrent writers
/// itself), of which reads hold at most `--pg-max-reads` at once (`pg::Pool::reader`).
#[derive(Clone, Debug)]
pub struct Db {
    /// Reads (on PostgreSQL, the pool's view for reads: a write sent here would work, under
    /// the reads' limit).
    pub read: Conn,
    /// Where every write goes.
    pub writer: Writer,
    /// Whether the readers and the writer are one pool.
    shared: bool,
}

/// The write side of a [`Db`], counting the writes that wait for it.
///
/// On SQLite the writer commits in groups. A write that finishes while others wait for the
/// writer does not commit alone: it hands the still-open transaction to the next write, and the
/// group is committed once, by whichever of its writes gets the writer back first, or at once
/// when nobody waits. Each write runs inside a savepoint of its own, so a write that fails is
/// undone alone and each is still all or nothing. A write returns only after its group
/// committed, so what a caller is told was written is durable and visible to every reader.
/// This pays a commit (the log's frames, a share of a checkpoint) once per group instead of
/// once per write.
///
/// A write reads what the writes before it in its group wrote, as it would had they committed
/// first. Should the group then fail to commit (a failing disk), every write that succeeded in
/// it is told so and none is applied; a write refused inside it was judged on writes that did
/// not happen, which a retry judges anew.
#[derive(Clone, Debug)]
pub struct Writer {
    conn: Conn,
    waiting: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// SQLite's open group, if any; `None` where the engine takes concurrent writers itself.
    group: Option<Slot>,
    /// PostgreSQL's groups, one per conversation being written to.
    keyed: Option<std::sync::Arc<Keyed>>,
    /// Tells SQLite's checkpointer that a group committed (see [`checkpoints`]).
    committed: Option<Committed>,
    /// PostgreSQL: held only to be dropped with the last writer, which ends
    /// [`first_statistics`].
    _statistics: Option<Committed>,
}

/// Signals each commit of a SQLite group to the checkpointer; dropped with the last writer,
/// which ends the checkpointer.
type Committed = std::sync::Arc<tokio::sync::watch::Sender<()>>;

/// Copies SQLite's write-ahead log into the database file (a PASSIVE checkpoint) on a
/// connection of its own, soon after commits, at most once per [`CHECKPOINT_EVERY`].
///
/// Left to the writer, a checkpoint runs inside the commit that crosses 1,000 pages of log:
/// that commit, and every write queued behind it, waits while the pages are copied and the
/// files synced. Measured, a group's commit took 1.5-1.8 ms on average with AddParticipants(1)
/// at 16 in flight, against 0.65-0.9 ms with this task checkpointing every 5 ms. A passive
/// checkpoint never blocks the writer or readers; the writer's own checkpoint still runs at
/// [`lite::WRITER_AUTOCHECKPOINT`] pages, and finding the log already copied, it only syncs,
/// then the log starts over.
///
/// A checkpoint is not free for the writes that run beside it, though: each copies pages and
/// syncs both files, and on this two-core machine the calls served while one ran took half as
/// long again, in every part of their work (measured under AddParticipants(1000): the rows'
/// statements 5.4-6.2 ms instead of 3.2-3.4). Every 20 ms, one call in four ran beside a
/// checkpoint. Far apart, the log grows long between them and each commit got slower instead
/// (every 200 ms: 1.06-1.17 ms a commit of AddParticipants(1000), against 0.56-0.60 every
/// 50 ms, 2 runs each, where the calls ran at 114k against 122-123k rows/s). Every
/// [`CHECKPOINT_EVERY`] the log holds a few hundred pages (AddParticipants(1000) writes about
/// a hundred), and `synchronous = NORMAL` risks the last 50 ms or so of commits to a power cut.
async fn checkpoints(conn: Conn, mut commits: tokio::sync::watch::Receiver<()>) {
    const CHECKPOINT: &str = "PRAGMA wal_checkpoint(PASSIVE)";
    while commits.changed().await.is_ok() {
        // It copies pages and syncs the file: off the threads that serve calls.
        let done = match &conn {
            Conn::Lite(pool) => pool.batch_blocking(CHECKPOINT).await,
            other => other.execute_unprepared(CHECKPOINT).await.map(|_| ()),
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "a checkpoint of SQLite's log failed");
        }
        tokio::time::sleep(CHECKPOINT_EVERY).await;
    }
}

/// How often, at most, the checkpointer copies SQLite's log while writes go on.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// Gives PostgreSQL's planner its first statistics of a table as soon as the table has rows:
/// every [`FIRST_STATISTICS_EVERY`], `ANALYZE` of each of Parley's tables written to but
/// never analyzed (neither by hand nor by autovacuum), until `alive`'s sender is dropped.
///
/// Without any statistics the planner rates each index whose first column is `tenant_id` as
/// good as a table's primary key for `tenant_id = $1 AND id = $2` (it expects one row either
/// way) and may take one of them: then each read of a user by id stepped over every user of
/// the tenant in a fresh database (measured: 930 index entries per lookup at 3,000 users,
/// through `users_email_prefix`). Autovacuum analyzes a table only once a minute at most, so
/// a directory synced into a new database was read that way for up to a minute. Once a table
/// has any statistics, autovacuum keeps them current as it grows; this task does nothing more
/// to it.
async fn first_statistics(db: Conn, mut alive: tokio::sync::watch::Receiver<()>) {
    const NEVER_ANALYZED: &str = "SELECT quote_ident(relname) FROM pg_stat_user_tables \
         WHERE schemaname = current_schema() AND last_analyze IS NULL \
         AND last_autoanalyze IS NULL AND n_mod_since_analyze > 0 AND relname <> 'seaql_migrations'";
    loop {
        tokio::select! {
            closed = alive.changed() => if closed.is_err() { return },
            () = tokio::time::sleep(FIRST_STATISTICS_EVERY) => {}
        }
        let tables = match db
            .query_all_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                NEVER_ANALYZED,
            ))
            .await
        {
            Ok(rows) => rows
                .iter()
                .filter_map(|row| row.try_get_by_index::<String>(0).ok())
                .collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the tables without statistics");
                continue;
            }
        };
        for table in tables {
            match db.execute_unprepared(&format!("ANALYZE {table}")).await {
                Ok(_) => tracing::debug!(table, "first statistics taken"),
                Err(e) => tracing::warn!(table, error = %e, "cannot analyze a table"),
            }
        }
    }
}

/// How often [`first_statistics`] looks for tables without statistics.
const FIRST_STATISTICS_EVERY: Duration = Duration::from_secs(1);

/// The writer's turn, and the group of writes open on it.
type Slot = std::sync::Arc<tokio::sync::Mutex<Option<Group>>>;

/// The writes that wait for a slot's turn.
type Count = std::sync::Arc<std::sync::atomic::AtomicI64>;

/// PostgreSQL's slots, one per conversation key with writes in flight (see [`Writer`]).
#[derive(Debug, Default)]
struct Keyed {
    slots: std::sync::Mutex<KeyedSlots>,
}

#[derive(Debug, Default)]
struct KeyedSlots {
    map: std::collections::HashMap<String, (Slot, Count)>,
    /// The size at which slots no write holds are dropped.
    sweep_at: usize,
}

/// The fewest slots [`Keyed`] keeps before it drops those no write holds.
const KEYED_SWEEP_AT: usize = 1024;

impl Keyed {
    /// The slot of `key` and its count of waiting writes, made if there is none.
    fn slot(&self, key: &str) -> (Slot, Count) {
        let mut slots = crate::lock(&self.slots);
        if let Some(found) = slots.map.get(key) {
            return found.clone();
        }
        if slots.map.len() >= slots.sweep_at {
            // Every write of a group holds its slot until the group has ended, so a slot held
            // by nobody else has no open group. Sweeping at twice the slots kept makes the
            // sweep cost nothing per write on average, and bounds the slots to twice those in
            // use.
            slots
                .map
                .retain(|_, (slot, _)| std::sync::Arc::strong_count(slot) > 1);
            slots.sweep_at = (slots.map.len() * 2).max(KEYED_SWEEP_AT);
        }
        let made: (Slot, Count) = Default::default();
        slots.map.insert(key.to_owned(), made.clone());
        made
    }

    /// How many slots are kept now.
    fn len(&self) -> usize {
        crate::lock(&self.slots).map.len()
    }
}

/// Writes that share one transaction (see [`Writer`]).
struct Group {
    /// Tells a committed group from a newer one in the same slot.
    id: u64,
    tx: Tx,
    /// Writes applied in the group so far.
    members: usize,
    /// The group commits at once when it holds this many writes.
    max: usize,
    /// A write was dropped inside its savepoint: it is rolled back before anything else runs.
    undo: bool,
    /// A write's savepoint is open (released when the next opens, or by the commit).
    savepoint: bool,
    /// The write holding the turn runs without a savepoint: it is the first of a PostgreSQL
    /// group, alone in its transaction, so undoing it is rolling the transaction back.
    bare: bool,
    /// The group's outcome, once it has ended: what each of its writes returns.
    done: tokio::sync::watch::Sender<Option<Result<(), Error>>>,
    /// Told when the group commits.
    committed: Option<Committed>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("id", &self.id)
            .field("members", &self.members)
            .finish()
    }
}

/// A SQLite group commits at once when it holds this many writes, so that no reply waits for
/// more than this many writes besides its own.
const MAX_GROUP: usize = 64;

/// A PostgreSQL group commits at once when it holds this many writes. Each write's savepoint
/// is a subtransaction once it writes; PostgreSQL keeps the first 64 of a transaction in
/// shared memory, and past them every snapshot taken anywhere in the server looks them up on
/// disk instead.
const PG_MAX_GROUP: usize = 32;

/// Each write of a group runs in a savepoint of this name. It is released when the next write
/// opens its own, in the same statement, or by the group's commit: a release of its own would
/// be one more statement per write. (Left unreleased, 64 nested savepoints made every write
/// journal more pages.)
const SAVEPOINT: &str = "SAVEPOINT parley_write";
const NEXT_SAVEPOINT: &str = "RELEASE parley_write; SAVEPOINT parley_write";
const ROLLBACK_TO_SAVEPOINT: &str = "ROLLBACK TO SAVEPOINT parley_write";

/// Counts one waiter from its creation to its drop, so a cancelled wait is uncounted too.
struct Waiting<'a>(&'a std::sync::atomic::AtomicI64);

impl<'a> Waiting<'a> {
    fn new(count: &'a std::sync::atomic::AtomicI64) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One write transaction from [`Writer::begin`]. Statements run on it through `Deref`; it is
/// applied by [`WriteTx::commit`] and undone when dropped uncommitted.
pub struct WriteTx {
    /// A transaction of its own (PostgreSQL outside a conversation's group, or SQLite in
    /// memory).
    alone: Option<Tx>,
    /// Or a savepoint in a group (SQLite's writer's, a PostgreSQL conversation's), holding
    /// the group's turn until the write is done; the first write of a PostgreSQL group runs
    /// without one ([`Group::bare`]).
    member: Option<Member>,
    /// The statement that opens the write's savepoint, sent before the write's first
    /// statement (a write that runs nothing opens none); `None` once sent, or if the write
    /// has none.
    opening: std::sync::Mutex<Option<&'static str>>,
    /// The write changed the notification outbox (see [`WriteTx::outbox_changed`]).
    outbox: std::sync::atomic::AtomicBool,
    /// The timeline items the write added (see [`WriteTx::appended`]).
    appended: std::sync::Mutex<Vec<TimelineItem>>,
}

struct Member {
    slot: Slot,
    turn: tokio::sync::OwnedMutexGuard<Option<Group>>,
    group: u64,
    /// The writes waiting for this slot's turn.
    waiting: Count,
    /// Whether the group had a savepoint open before this write's.
    after_savepoint: bool,
    /// The write runs without a savepoint ([`Group::bare`]).
    bare: bool,
}

#[async_trait::async_trait]
impl ConnectionTrait for WriteTx {
    fn get_database_backend(&self) -> DatabaseBackend {
        self.tx().get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<sea_orm::ExecResult, DbErr> {
        self.open_alone().await?;
        self.tx().execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<sea_orm::ExecResult, DbErr> {
        self.open_alone().await?;
        self.tx().execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.open_alone().await?;
        self.tx().query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.open_alone().await?;
        self.tx().query_all_raw(stmt).await
    }

    fn support_returning(&self) -> bool {
        self.tx().support_returning()
    }
}

#[async_trait::async_trait]
impl cells::EachRow for WriteTx {
    async fn each_row(&self, stmt: Statement, each: &mut cells::RowSink<'_>) -> Result<(), DbErr> {
        self.open_alone().await?;
        self.tx().each_row(stmt, each).await
    }

    async fn each_row_opening(&self, statements: Vec<cells::Opening<'_, '_>>) -> Result<(), DbErr> {
        self.open_alone().await?;
        self.tx().each_row_opening(statements).await
    }
}

impl WriteTx {
    /// Marks the write as one that added notifications to the outbox or acknowledged some,
    /// which the open StreamNotifications of the replica learn once it commits.
    pub fn touch_outbox(&self) {
        self.outbox
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the write added notifications to the outbox or acknowledged some.
    pub fn outbox_changed(&self) -> bool {
        self.outbox.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes the timeline items the write added, which the replica's exporter is handed
    /// once it commits.
    pub fn touch_timeline(&self, items: Vec<TimelineItem>) {
        if !items.is_empty() {
            crate::lock(&self.appended).extend(items);
        }
    }

    /// The timeline items the write added; emptied.
    pub fn appended(&self) -> Vec<TimelineItem> {
        std::mem::take(&mut *crate::lock(&self.appended))
    }

    /// On an in-process SQLite transaction, runs `sql` once per row of `values`, each row
    /// `width` values, and returns the rows changed; `None` on any other engine.
    async fn lite_rows(
        &self,
        sql: &str,
        width: usize,
        values: &[sea_orm::Value],
    ) -> Result<Option<u64>, DbErr> {
        let Tx::Lite(lite) = self.tx() else {
            return Ok(None);
        };
        self.open_alone().await?;
        lite.rows(sql, width, values).map(Some)
    }

    fn tx(&self) -> &Tx {
        // Both are taken only by `commit` and `rollback`, which consume `self`; a member's
        // turn holds its group until then.
        match (&self.alone, &self.member) {
            (Some(tx), _) => tx,
            (None, Some(member)) => &member.turn.as_ref().expect("a member's group").tx,
            (None, None) => unreachable!("a write transaction used after its end"),
        }
    }

    /// The statement that opens the write's savepoint, if not yet sent; taken: it is sent now.
    fn take_opening(&self) -> Option<&'static str> {
        crate::lock(&self.opening).take()
    }

    /// Opens the write's savepoint, if not yet open, before the write's first statement: as a
    /// statement of its own, so that it never changes the count of rows the statement after it
    /// reports.
    async fn open_alone(&self) -> Result<(), DbErr> {
        if let Some(opening) = self.take_opening() {
            self.tx().execute_unprepared(opening).await?;
        }
        Ok(())
    }

    /// Whether the write's savepoint was opened (any statement of it ran). A write that ran
    /// nothing has nothing to undo, and leaves the group's savepoint as it found it.
    fn opened(&mut self) -> bool {
        let pending = match self.opening.get_mut() {
            Ok(opening) => opening.is_some(),
            Err(poisoned) => poisoned.into_inner().is_some(),
        };
        if pending
            && let Some(member) = self.member.as_mut()
            && let Some(group) = member.turn.as_mut()
        {
            group.savepoint = member.after_savepoint;
        }
        !pending
    }

    /// Applies the write. In a SQLite group, returns once the group is committed, with its
    /// outcome.
    pub async fn commit(mut self) -> Result<(), Error> {
        if let Some(tx) = self.alone.take() {
            return Ok(tx.commit().await?);
        }
        let opened = self.opened();
        match self.member.take() {
            Some(member) => member.leave(opened).await,
            None => Ok(()),
        }
    }

    /// Undoes the write. In a SQLite group, also waits for the group to end, so that what its
    /// other writes committed is visible to reads afterwards.
    pub async fn rollback(mut self) -> Result<(), Error> {
        if let Some(tx) = self.alone.take() {
            return Ok(tx.rollback().await?);
        }
        let opened = self.opened();
        let Some(mut member) = self.member.take() else {
            return Ok(());
        };
        if member.bare {
            // Nothing else is in the group: it ends, rolled back.
            return match member.turn.take() {
                Some(group) => {
                    let undone = group.tx.rollback().await.map_err(Error::from);
                    group.done.send_replace(Some(Err(Error::Internal(
                        "the write's group was rolled back".into(),
                    ))));
                    undone
                }
                None => Ok(()),
            };
        }
        if opened
            && let Some(group) = member.turn.as_mut()
            && let Err(e) = group.tx.execute_unprepared(ROLLBACK_TO_SAVEPOINT).await
        {
            abort_group(&mut member.turn, e.into());
        }
        member.leave(false).await
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        // A transaction of its own rolls back when dropped.
        drop(self.alone.take());
        let opened = self.opened();
        if let Some(Member {
            slot,
            mut turn,
            group,
            ..
        }) = self.member.take()
        {
            if opened && let Some(open) = turn.as_mut() {
                open.undo = true;
            }
            drop(turn);
            // The group may hold nothing but this write and nobody else may come: a task of
            // its own ends it, after the writes that already wait for the writer.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(end_group(slot, group));
            }
        }
    }
}

impl Member {
    /// Leaves the group after this write (`applied`: counted in it) and returns the group's
    /// outcome.
    async fn leave(self, applied: bool) -> Result<(), Error> {
        let Member {
            slot,
            mut turn,
            group,
            waiting,
            ..
        } = self;
        let Some(open) = turn.as_mut() else {
            // Aborted while this write held the turn: its outcome was sent.
            return Err(Error::Internal("the write's group was rolled back".into()));
        };
        open.members += usize::from(applied);
        let done = open.done.subscribe();
        let nobody_waits = waiting.load(std::sync::atomic::Ordering::Relaxed) <= 0;
        if nobody_waits || open.members >= open.max {
            return commit_group(&mut turn).await;
        }
        // Others wait: the writer goes to them with the group open. This write queues for the
        // writer again and commits the group when it gets it, unless a later write of the
        // group found nobody waiting and committed it first.
        drop(turn);
        let mut ended = done.clone();
        tokio::select! {
            outcome = async { ended.wait_for(Option::is_some).await.map(|o| reported(&o)) } => {
                outcome.unwrap_or_else(|_| Err(Error::Internal("a write's group ended unseen".into())))
            }
            mut turn = slot.lock_owned() => {
                if turn.as_ref().is_some_and(|g| g.id == group) {
                    commit_group(&mut turn).await
                } else {
                    // Ended by another write, which sent the outcome before giving up the turn.
                    reported(&done.borrow())
                }
            }
        }
    }
}

/// Commits the group in `turn`, first undoing a write dropped inside it, and sends every write
/// of the group the outcome.
async fn commit_group(turn: &mut Option<Group>) -> Result<(), Error> {
    undo_dropped(turn).await;
    let Some(group) = turn.take() else {
        return Err(Error::Internal("the write's group was rolled back".into()));
    };
    let outcome = group.tx.commit().await.map_err(Error::from);
    if outcome.is_ok()
        && let Some(committed) = &group.committed
    {
        committed.send_replace(());
    }
    let reply = reported(&Some(outcome.as_ref().map(|_| ())));
    group.done.send_replace(Some(outcome));
    reply
}

/// Undoes the write dropped inside the group in `turn`, if one was: back to its savepoint, or,
/// for a write without one ([`Group::bare`]), the whole group, which held nothing else.
async fn undo_dropped(turn: &mut Option<Group>) {
    let Some(group) = turn.as_mut() else {
        return;
    };
    if !std::mem::take(&mut group.undo) {
        return;
    }
    if group.bare {
        if let Some(group) = turn.take() {
            // Dropping the transaction queues its rollback on the connection.
            drop(group.tx);
            group.done.send_replace(Some(Err(Error::Internal(
                "the write's group was rolled back".into(),
            ))));
        }
    } else if let Err(e) = group.tx.execute_unprepared(ROLLBACK_TO_SAVEPOINT).await {
        // Committing now would commit part of the dropped write.
        abort_group(turn, e.into());
    }
}

/// Rolls back the whole group in `turn` (its state is unknown after `error`) and sends its
/// writes the error.
fn abort_group(turn: &mut Option<Group>, error: Error) {
    if let Some(group) = turn.take() {
        tracing::warn!(%error, writes = group.members, "a group of writes was rolled back");
        // Dropping the transaction queues its rollback on the connection.
        drop(group.tx);
        group.done.send_replace(Some(Err(error)));
    }
}

/// Commits group `id` if it is still open (a write was dropped before it was done).
async fn end_group(slot: Slot, id: u64) {
    let mut turn = slot.lock_owned().await;
    if turn.as_ref().is_some_and(|g| g.id == id) {
        // A write dropped without a savepoint was alone in the group, which it takes along.
        undo_dropped(&mut turn).await;
        if turn.is_some()
            && let Err(e) = commit_group(&mut turn).await
        {
            tracing::warn!(error = %e, "a group of writes failed to commit");
        }
    }
}

/// What a write of a group returns: the group's outcome, which all its writes share. A commit
/// fails as unavailable, a conflict or internal: the errors a database error becomes.
fn reported<E: std::borrow::Borrow<Error>>(outcome: &Option<Result<(), E>>) -> Result<(), Error> {
    match outcome {
        None | Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(match e.borrow() {
            Error::DatabaseUnavailable(d) => Error::DatabaseUnavailable(d.clone()),
            Error::WriteConflict(d) => Error::WriteConflict(d.clone()),
            Error::Internal(d) => Error::Internal(format!("the write's group failed: {d}")),
            other => Error::Internal(format!("the write's group failed: {other}")),
        }),
    }
}

impl Writer {
    /// Starts a write transaction, waiting for the writer's turn (see [`begin_write`]); on
    /// SQLite, a savepoint in the open group, or in a new one.
    pub async fn begin(&self) -> Result<WriteTx, Error> {
        match &self.group {
            Some(slot) => self.join(slot, &self.waiting, None, MAX_GROUP, false).await,
            None => {
                let _waiting = Waiting::new(&self.waiting);
                Ok(WriteTx {
                    alone: Some(self.conn.begin_write().await?),
                    member: None,
                    opening: std::sync::Mutex::new(None),
                    outbox: Default::default(),
                    appended: Default::default(),
                })
            }
        }
    }

    /// Starts a write transaction that will lock conversation `key` (a tenant's conversation
    /// id, or any string naming it alone). On PostgreSQL, a savepoint in the group of writes
    /// to that conversation open in this replica, or in a new one; elsewhere as
    /// [`Writer::begin`].
    pub async fn begin_on(&self, key: &str) -> Result<WriteTx, Error> {
        let Some(keyed) = &self.keyed else {
            return self.begin().await;
        };
        let (slot, waiting) = keyed.slot(key);
        self.join(&slot, &waiting, Some(&self.waiting), PG_MAX_GROUP, true)
            .await
    }

    /// Joins the group open on `slot`, or opens one, once it is this write's turn; `waiting`
    /// counts the writes waiting for the slot, `also` all the writer's. With `bare_first`, the
    /// write that opens a group runs without a savepoint ([`Group::bare`]): on PostgreSQL a
    /// savepoint is a round trip of its own before the write's first statement, and the first
    /// write of a group (every write, when calls spread over many conversations) has nothing
    /// before it in the transaction to keep.
    async fn join(
        &self,
        slot: &Slot,
        waiting: &Count,
        also: Option<&Count>,
        max: usize,
        bare_first: bool,
    ) -> Result<WriteTx, Error> {
        let counted = (Waiting::new(waiting), also.map(|all| Waiting::new(all)));
        let mut turn = slot.clone().lock_owned().await;
        undo_dropped(&mut turn).await;
        let bare = bare_first && turn.is_none();
        let open = match turn.as_mut() {
            Some(open) => open,
            None => turn.insert(Group {
                id: next_group_id(),
                tx: self.conn.begin_write().await?,
                members: 0,
                max,
                undo: false,
                savepoint: false,
                bare,
                done: tokio::sync::watch::channel(None).0,
                committed: self.committed.clone(),
            }),
        };
        let group = open.id;
        open.bare = bare;
        // The previous write's savepoint is released with this one's opening, and both go
        // with this write's first statement.
        let (opening, after_savepoint) = if bare {
            (None, false)
        } else {
            let after_savepoint = std::mem::replace(&mut open.savepoint, true);
            let opening = if after_savepoint {
                NEXT_SAVEPOINT
            } else {
                SAVEPOINT
            };
            (Some(opening), after_savepoint)
        };
        drop(counted);
        Ok(WriteTx {
            alone: None,
            member: Some(Member {
                slot: slot.clone(),
                turn,
                group,
                waiting: waiting.clone(),
                after_savepoint,
                bare,
            }),
            opening: std::sync::Mutex::new(opening),
            outbox: Default::default(),
            appended: Default::default(),
        })
    }

    /// The connection for a write of one statement outside a transaction (a sweep, a first
    /// call's directory entry).
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// Writes waiting for the writer now.
    pub fn queue_depth(&self) -> i64 {
        self.waiting
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(0)
    }

    /// How many conversations' slots PostgreSQL's writer keeps now (0 elsewhere): bounded by
    /// twice those with writes in flight, or a thousand or so.
    pub fn slots_kept(&self) -> usize {
        self.keyed.as_ref().map_or(0, |keyed| keyed.len())
    }
}

fn next_group_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Db {
    /// Opens the database at `url` (see [`connect`]); on SQLite a writer connection and a pool
    /// of `pool`'s size for reads.
    pub async fn open(
        url: &str,
        pool: &crate::config::DbPool,
        sync: SqliteSync,
    ) -> anyhow::Result<Self> {
        let sqlite = url.starts_with("sqlite:");
        // One in-memory SQLite database per connection: a second pool would be another
        // database, so there one pool reads and writes.
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        // One pool that reads and writes: PostgreSQL's, whose writes to one conversation
        // queue in this replica for its row lock (`keyed`), or an in-memory SQLite
        // database's, which serializes its writers in the engine.
        let shared = |conn: Conn, keyed: bool, statistics: Option<Committed>| Self {
            read: conn.clone(),
            writer: Writer {
                conn,
                waiting: Default::default(),
                group: None,
                keyed: keyed.then(Default::default),
                committed: None,
                _statistics: statistics,
            },
            shared: true,
        };
        if !sqlite {
            let (min, max) = pool.sizes(false)?;
            let plan_cache = pool.pg_plan_cache.setting();
            let open = |min: usize, max: usize| async move {
                pg::Pool::open(url, min, max, plan_cache, PING_IF_IDLE_FOR)
                    .await
                    .map(Conn::Pg)
                    .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))
            };
            let conn = open(min as usize, max as usize).await?;
            // A connection of its own, whose statements nobody counts (see
            // `set_metric_callback`).
            let (alive, until) = tokio::sync::watch::channel(());
            tokio::spawn(first_statistics(open(0, 1).await?, until));
            let reads = pool.pg_reads(max) as usize;
            let mut db = shared(conn, true, Some(std::sync::Arc::new(alive)));
            // Reads take the same connections, a few at once (`pg::Pool::reader`).
            if let Conn::Pg(connections) = &db.writer.conn {
                db.read = Conn::Pg(connections.reader(reads));
            }
            return Ok(db);
        }
        if memory {
            return Ok(shared(open(url, pool, sync).await?.into(), false, None));
        }
        // SQLite's connections run statements on the caller's thread (see `lite`). The writer
        // first: it creates the file and puts it in WAL mode.
        let path = lite::path_of(url);
        let (min, max) = pool.sizes(true)?;
        let opener = |role| lite::Opener {
            path: path.clone(),
            role,
            synchronous: sync.pragma(),
        };
        let write = lite::Pool::open(opener(lite::Role::Writer), 1, 1)?;
        let read = lite::Pool::open(opener(lite::Role::Reader), min as usize, max as usize)?;
        let checkpointer = lite::Pool::open(opener(lite::Role::Any), 1, 1)?;
        let (committed, commits) = tokio::sync::watch::channel(());
        tokio::spawn(checkpoints(Conn::Lite(checkpointer), commits));
        Ok(Self {
            read: Conn::Lite(read),
            writer: Writer {
                conn: Conn::Lite(write),
                waiting: Default::default(),
                group: Some(Default::default()),
                keyed: None,
                committed: Some(std::sync::Arc::new(committed)),
                _statistics: None,
            },
            shared: false,
        })
    }

    /// Applies every pending migration: on the writer's connection where it is sea-orm's, else
    /// on a connection of its own to the same file.
    pub async fn migrate(&self, url: &str) -> anyhow::Result<()> {
        match self.writer.conn.sea() {
            Some(db) => migrate_up(db).await,
            None => {
                let one = crate::config::DbPool {
                    max_connections: Some(1),
                    min_connections: Some(1),
                    ..Default::default()
                };
                let db = connect(url, &one).await?;
                migrate_up(&db).await?;
                db.close().await?;
                Ok(())
            }
        }
    }

    /// The writer, when it is a SQLite connection of its own.
    pub fn sqlite_writer(&self) -> Option<&Writer> {
        (!self.shared).then_some(&self.writer)
    }

    /// Counts every statement on every connection with `callback` (the tests' statement
    /// counts).
    pub fn set_metric_callback<F>(&mut self, callback: F)
    where
        F: Fn(&sea_orm::metric::Info<'_>) + Send + Sync + 'static,
    {
        let callback: lite::Callback = std::sync::Arc::new(callback);
        self.read.set_metric_callback(callback.clone());
        match &self.read {
            // A clone carries the callback it was made with.
            Conn::Sea(_) if self.shared => self.writer.conn = self.read.clone(),
            _ => self.writer.conn.set_metric_callback(callback),
        }
    }
}

/// Opens the database: `sqlite://…` (file created if missing, WAL, busy timeout) or
/// `postgres://…`, with a pool of `pool`'s size, for migrations and the command line. A server
/// opens a [`Db`].
///
/// Every PostgreSQL connection plans as `pool` says ([`PgPlanCache`]).
pub async fn connect(
    url: &str,
    pool: &crate::config::DbPool,
) -> anyhow::Result<DatabaseConnection> {
    open(url, pool, SqliteSync::default()).await
}

async fn open(
    url: &str,
    pool: &crate::config::DbPool,
    sync: SqliteSync,
) -> anyhow::Result<DatabaseConnection> {
    let sqlite = url.starts_with("sqlite:");
    let (min, max) = pool.sizes(sqlite)?;
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        .max_connections(max)
        .min_connections(min)
        // A connection in use is not pinged each time it is taken from the pool (a round trip,
        // to PostgreSQL or to sqlx's SQLite thread, on every statement outside a transaction
        // and every transaction); one idle long enough to have lost its server still is.
        .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR);
    if sqlite {
        use sea_orm::sqlx::sqlite::SqliteSynchronous;
        let synchronous = match sync {
            SqliteSync::Full => SqliteSynchronous::Full,
            SqliteSync::Normal => SqliteSynchronous::Normal,
        };
        options.map_sqlx_sqlite_pool_opts(|o| {
            o.after_connect(|conn, _| Box::pin(sqlite_stable_plans(conn)))
        });
        options.map_sqlx_sqlite_opts(move |o| {
            o.create_if_missing(true)
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(synchronous)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30))
        });
    } else {
        // A startup parameter, so it holds on every connection the pool ever opens (sea-orm's
        // after-connect hook runs once per pool, not per connection).
        let mode = pool.pg_plan_cache.setting();
        options.map_sqlx_postgres_opts(move |o| o.options([("plan_cache_mode", mode)]));
    }
    Database::connect(options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))
}

/// Turns on SQLite's query planner stability guarantee (`SQLITE_DBCONFIG_ENABLE_QPSG`) on a
/// new connection.
///
/// Without it, SQLite plans a statement with the value bound to its `LIMIT ?` (and to any
/// parameter it may compare with statistics) and marks the prepared statement stale as soon
/// as that parameter is bound again: every page read (ListParticipants, ListTimeline,
/// SearchUsers, …) was parsed and planned anew on every call (ListParticipants on SQLite ran
/// 3.3-3.5k calls/s with it, 4.5-5.5k without). With it, a statement is planned once, whatever its values, which is
/// what a prepared-statement cache is for. Parley's statements name their index by their
/// equalities and ranges (SearchUsers' prefix is a range, not a `LIKE`), and Parley never runs
/// ANALYZE, so no plan depended on a bound value.
///
/// sqlx does not wrap `sqlite3_db_config`, hence the one `unsafe` call of the workspace.
#[allow(unsafe_code)]
async fn sqlite_stable_plans(
    conn: &mut sea_orm::sqlx::SqliteConnection,
) -> Result<(), sea_orm::sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    let mut enabled: std::ffi::c_int = 0;
    // SAFETY: `db` is this open connection's handle, held exclusively (the worker thread is
    // locked out) for the call's duration. SQLITE_DBCONFIG_ENABLE_QPSG takes an int (1: on)
    // and a pointer to an int that receives the setting after the call.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_db_config(
            db,
            libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
            1 as std::ffi::c_int,
            &mut enabled as *mut std::ffi::c_int,
        )
    };
    if rc != libsqlite3_sys::SQLITE_OK || enabled != 1 {
        return Err(sea_orm::sqlx::Error::Configuration(
            format!("SQLite refused the query planner stability guarantee (code {rc})").into(),
        ));
    }
    Ok(())
}

/// A pooled connection idle this long is pinged before it is handed out.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Applies every pending migration.
pub async fn migrate_up(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None).await?;
    Ok(())
}

/// Starts a write transaction. On SQLite it is IMMEDIATE: it takes the database's write lock
/// up front, so two writers never interleave and never deadlock upgrading a read lock.
pub async fn begin_write(db: &Conn) -> Result<Tx, Error> {
    Ok(db.begin_write().await?)
}

/// Starts a read transaction: every statement of a read sees one snapshot, so a removal that
/// commits between the authorization and the fetch cannot leak items past it. PostgreSQL:
/// REPEATABLE READ, READ ONLY; SQLite: a deferred transaction, whose first read fixes the
/// snapshot (WAL).
pub async fn begin_read(db: &Conn) -> Result<Tx, Error> {
    Ok(db.begin_read().await?)
}

/// Whether a database error is a unique-key violation.
pub fn is_unique_violation(e: &sea_orm::DbErr) -> bool {
    if let DbErr::Exec(sea_orm::RuntimeErr::SqlxError(inner))
    | DbErr::Query(sea_orm::RuntimeErr::SqlxError(inner)) = e
        && let sea_orm::sqlx::Error::Database(db) = inner.as_ref()
        && db.try_downcast_ref::<lite::LiteError>().is_some()
    {
        return db.is_unique_violation();
    }
    matches!(
        e.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

/// Loads a conversation of the tenant, locking its row for the rest of the transaction.
pub async fn lock_conversation(
    tx: &WriteTx,
    tenant_id: &str,
    id: &str,
) -> Result<Conversation, Error> {
    let row = entities::conversations::Entity::find_by_id(id.to_owned())
        .filter(entities::conversations::Column::TenantId.eq(tenant_id))
        .lock_exclusive()
        .one(tx)
        .await?
        .ok_or_else(|| Error::ConversationNotFound(id.to_owned()))?;
    conversation_from(row)
}

/// Loads a conversation of the tenant without locking.
pub async fn get_conversation<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    id: &str,
) -> Result<Conversation, Error> {
    let row = entities::conversations::Entity::find_by_id(id.to_owned())
        .filter(entities::conversations::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or_else(|| Error::ConversationNotFound(id.to_owned()))?;
    conversation_from(row)
}

/// One participant row, active or removed.
pub async fn get_participant<C: ConnectionTrait>(
    db: &C,
    conversation_id: &str,
    user_id: &str,
) -> Result<Option<Participant>, Error> {
    entities::participants::Entity::find_by_id((conversation_id.to_owned(), user_id.to_owned()))
        .one(db)
        .await?
        .map(participant_from)
        .transpose()
}

/// The caller's own participant row, when the call is judged as a user.
pub async fn caller_participant<C: ConnectionTrait>(
    db: &C,
    conversation_id: &str,
    actor: &crate::domain::principal::Actor,
) -> Result<Option<Participant>, Error> {
    match actor.user_id() {
        Some(u) => get_participant(db, conversation_id, u).await,
        None => Ok(None),
    }
}

/// Rows per multi-row INSERT. Every row binds one value per column, and an engine caps the values
/// of one statement (SQLite 32,766, PostgreSQL 65,535): one insert of a 10,000-member group's
/// participants (12 columns) would pass both. Batches of 1,000 rows keep every insert of ours
/// under 13,000 values, so a call of up to 1,000 people is one statement and a 10,000-member group
/// ten.
pub const ROWS_PER_INSERT: usize = 1_000;

/// Ids per `IN (…)` look-up, for the same reason: groups can reach more people than one
/// statement may bind. Up to 10,000 people is one query.
pub(crate) const IDS_PER_LOOKUP: usize = 10_000;

/// `ids` without repeats, in first-seen order (a person named directly and through a group is
/// looked up once).
pub(crate) fn distinct(ids: &[String]) -> Vec<&String> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.iter().filter(|id| seen.insert(id.as_str())).collect()
}

/// Inserts participants, a statement per [`ROWS_PER_INSERT`] rows; a removed participant's row
/// becomes active again.
pub(crate) fn upsert_participants<P: std::borrow::Borrow<Participant>>(
    w: &mut Writes,
    tenant_id: &str,
    rows: &[P],
) {
    participant_inserts(w, tenant_id, rows, participant_conflict());
}

/// Inserts the rows of people who hold none in their conversation (as read with the
/// conversation locked, or in a conversation made by the same transaction), a statement per
/// [`ROWS_PER_INSERT`] rows. Without [`upsert_participants`]' `ON CONFLICT`, PostgreSQL
/// inserts each row once instead of probing its key before a speculative insert; a row that
/// is there after all is a unique violation, and the call fails whole.
pub(crate) fn insert_participants<P: std::borrow::Borrow<Participant>>(
    w: &mut Writes,
    tenant_id: &str,
    rows: &[P],
) {
    participant_inserts(w, tenant_id, rows, "");
}

/// Inserts participants' rows followed by `tail`, a statement per [`ROWS_PER_INSERT`] rows.
fn participant_inserts<P: std::borrow::Borrow<Participant>>(
    w: &mut Writes,
    tenant_id: &str,
    rows: &[P],
    tail: &'static str,
) {
    for batch in rows.chunks(ROWS_PER_INSERT) {
        let mut values = Vec::with_capacity(batch.len() * PARTICIPANT_COLUMNS);
        for p in batch {
            participant_values(tenant_id, p.borrow(), &mut values);
        }
        w.insert_values::<entities::participants::Entity>(values, tail);
    }
}

/// What an inserted participant row does to the row of the same person in the conversation:
/// takes its place, every column but the key and the tenant.
fn participant_conflict() -> &'static str {
    use entities::participants::Column as P;
    use sea_orm::{IdenStatic, Iterable};
    static TAIL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAIL.get_or_init(|| {
        let set = P::iter()
            .filter(|c| !matches!(c, P::ConversationId | P::UserId | P::TenantId))
            .map(|c| format!("\"{c}\" = \"excluded\".\"{c}\"", c = c.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        format!(" ON CONFLICT (\"conversation_id\", \"user_id\") DO UPDATE SET {set}")
    })
}

/// Saves the conversation row's mutable columns as they are in `c` (the caller moved the
/// versions with [`crate::domain::visibility::touch`]).
pub fn save_conversation(w: &mut Writes, c: &Conversation) {
    w.fixed(
        save_conversation_sql(),
        vec![
            (c.state as i32).into(),
            c.title.clone().into(),
            (c.policy.add_internal as i32).into(),
            (c.policy.add_external as i32).into(),
            (c.policy.remove as i32).into(),
            c.policy.lock_external_roster_on_first_message.into(),
            (c.policy.new_participant_history as i32).into(),
            c.policy.max_participants.into(),
            c.participant_count.into(),
            c.external_view_count.into(),
            c.last_seq.into(),
            c.first_message_time.into(),
            c.version.into(),
            c.update_time.into(),
            c.shared_version.into(),
            c.shared_update_time.into(),
            c.id.clone().into(),
        ],
    );
}

/// The columns [`save_conversation`] writes, in the order of its values (the conversation's
/// id follows them, in the `WHERE`).
const SAVED_CONVERSATION_COLUMNS: [&str; 16] = [
    "state",
    "title",
    "add_internal",
    "add_external",
    "remove_policy",
    "lock_external",
    "history",
    "max_participants",
    "participant_count",
    "external_view_count",
    "last_seq",
    "first_message_time",
    "version",
    "update_time",
    "shared_version",
    "shared_update_time",
];

/// The text of [`save_conversation`] on SQLite and on PostgreSQL, made once: built per call
/// with sea-query (an expression per column, then the text), it was a few per cent of the
/// server's CPU in AddParticipants(1) on PostgreSQL.
fn save_conversation_sql() -> [&'static str; 2] {
    static SQL: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    let [sqlite, postgres] = SQL.get_or_init(|| {
        // SQLite's parameters unnumbered, as sea-query writes them: the writes between
        // multi-row inserts run as one call of several statements, each binding the next.
        let unnumbered = |postgres: bool, n: usize| {
            if postgres {
                format!("${n}")
            } else {
                "?".to_owned()
            }
        };
        let sql = |postgres: bool| {
            let set = SAVED_CONVERSATION_COLUMNS
                .iter()
                .enumerate()
                .map(|(i, c)| format!("\"{c}\" = {}", unnumbered(postgres, i + 1)))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "UPDATE \"conversations\" SET {set} WHERE \"conversations\".\"id\" = {}",
                unnumbered(postgres, SAVED_CONVERSATION_COLUMNS.len() + 1)
            )
        };
        [sql(false), sql(true)]
    });
    [sqlite.as_str(), postgres.as_str()]
}

fn enum_value<E: TryFrom<i32>>(what: &str, raw: i32) -> Result<E, Error> {
    E::try_from(raw).map_err(|_| Error::Internal(format!("stored {what} {raw} is unknown")))
}

pub(crate) fn conversation_from(m: entities::conversations::Model) -> Result<Conversation, Error> {
    Ok(Conversation {
        kind: enum_value::<ConversationKind>("conversation kind", m.kind)?,
        state: enum_value::<ConversationState>("conversation state", m.state)?,
        policy: Policy {
            add_internal: enum_value::<Permission>("permission", m.add_internal)?,
            add_external: enum_value::<Permission>("permission", m.add_external)?,
            remove: enum_value::<Permission>("permission", m.remove_policy)?,
            lock_external_roster_on_first_message: m.lock_external,
            new_participant_history: enum_value::<History>("history", m.history)?,
            max_participants: m.max_participants,
        },
        id: m.id,
        tenant_id: m.tenant_id,
        title: m.title,
        owner_id: m.owner_id,
        participant_count: m.participant_count,
        last_seq: m.last_seq,
        first_message_time: m.first_message_time,
        version: m.version,
        create_time: m.create_time,
        update_time: m.update_time,
        shared_version: m.shared_version,
        shared_update_time: m.shared_update_time,
        external_view_count: m.external_view_count,
    })
}

pub(crate) fn participant_from(m: entities::participants::Model) -> Result<Participant, Error> {
    Ok(Participant {
        kind: enum_value::<ParticipantKind>("participant kind", m.kind)?,
        role: enum_value::<Role>("role", m.role)?,
        state: enum_value::<ParticipantState>("participant state", m.state)?,
        conversation_id: m.conversation_id,
        user_id: m.user_id,
        added_by: m.added_by,
        join_time: m.join_time,
        removed_by: m.removed_by,
        remove_time: m.remove_time,
        history_from: m.history_from,
        removed_seq: m.removed_seq,
        removed_view: m.removed_view.as_deref().map(frozen_from).transpose()?,
    })
}

/// A [`FrozenView`] as the `participants.removed_view` column keeps it (JSON).
#[derive(serde::Serialize, serde::Deserialize)]
struct FrozenRow {
    title: String,
    state: i32,
    add_internal: i32,
    add_external: i32,
    remove: i32,
    lock_external: bool,
    history: i32,
    max_participants: i32,
    participant_count: i32,
    first_message_time: Option<i64>,
    update_time: i64,
    etag: String,
    external_participant_count: i32,
    shared_update_time: i64,
    shared_etag: String,
}

fn frozen_from(json: &str) -> Result<FrozenView, Error> {
    let r: FrozenRow = serde_json::from_str(json)
        .map_err(|e| Error::Internal(format!("stored removed view: {e}")))?;
    Ok(FrozenView {
        title: r.title,
        state: enum_value::<ConversationState>("conversation state", r.state)?,
        policy: Policy {
            add_internal: enum_value::<Permission>("permission", r.add_internal)?,
            add_external: enum_value::<Permission>("permission", r.add_external)?,
            remove: enum_value::<Permission>("permission", r.remove)?,
            lock_external_roster_on_first_message: r.lock_external,
            new_participant_history: enum_value::<History>("history", r.history)?,
            max_participants: r.max_participants,
        },
        participant_count: r.participant_count,
        first_message_time: r.first_message_time,
        update_time: r.update_time,
        etag: r.etag,
        external_participant_count: r.external_participant_count,
        shared_update_time: r.shared_update_time,
        shared_etag: r.shared_etag,
    })
}

fn frozen_row(v: &FrozenView) -> String {
    serde_json::to_string(&FrozenRow {
        title: v.title.clone(),
        state: v.state as i32,
        add_internal: v.policy.add_internal as i32,
        add_external: v.policy.add_external as i32,
        remove: v.policy.remove as i32,
        lock_external: v.policy.lock_external_roster_on_first_message,
        history: v.policy.new_participant_history as i32,
        max_participants: v.policy.max_participants,
        participant_count: v.participant_count,
        first_message_time: v.first_message_time,
        update_time: v.update_time,
        etag: v.etag.clone(),
        external_participant_count: v.external_participant_count,
        shared_update_time: v.shared_update_time,
        shared_etag: v.shared_etag.clone(),
    })
    .unwrap_or_default()
}

/// Updates one participant's row to `p` (its key columns stay as they are).
pub(crate) fn update_participant(w: &mut Writes, tenant_id: &str, p: &Participant) {
    use entities::participants::Column as P;
    use sea_orm::ActiveValue::NotSet;
    let mut row = participant_row(tenant_id, p);
    row.conversation_id = NotSet;
    row.user_id = NotSet;
    row.tenant_id = NotSet;
    let update = entities::participants::Entity::update_many()
        .set(row)
        .filter(P::ConversationId.eq(p.conversation_id.clone()))
        .filter(P::UserId.eq(p.user_id.clone()));
    w.update(update.into_query());
}

pub(crate) fn participant_row(
    tenant_id: &str,
    p: &Participant,
) -> entities::participants::ActiveModel {
    use sea_orm::ActiveValue::Set;
    entities::participants::ActiveModel {
        conversation_id: Set(p.conversation_id.clone()),
        user_id: Set(p.user_id.clone()),
        tenant_id: Set(tenant_id.to_owned()),
        kind: Set(p.kind as i32),
        role: Set(p.role as i32),
        state: Set(p.state as i32),
        added_by: Set(p.added_by.clone()),
        join_time: Set(p.join_time),
        removed_by: Set(p.removed_by.clone()),
        remove_time: Set(p.remove_time),
        history_from: Set(p.history_from),
        removed_seq: Set(p.removed_seq),
        removed_view: Set(p.removed_view.as_ref().map(frozen_row)),
    }
}

/// A new row's id: a UUIDv7 (time-ordered), hyphenated, in lower case. Written out into a
/// buffer rather than through `Display`, which goes through the formatter for each of its
/// five groups (1,001 ids for AddParticipants(1000)).
pub(crate) fn new_id() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

/// How many columns a participant's row has.
const PARTICIPANT_COLUMNS: usize = 13;

/// A participant's row as [`participant_row`] has it, as the values of the columns of
/// `participants` in their order, appended to `out`.
fn participant_values(tenant_id: &str, p: &Participant, out: &mut Vec<sea_orm::Value>) {
    out.extend([
        p.conversation_id.clone().into(),
        p.user_id.clone().into(),
        tenant_id.to_owned().into(),
        (p.kind as i32).into(),
        (p.role as i32).into(),
        (p.state as i32).into(),
        p.added_by.clone().into(),
        p.join_time.into(),
        p.removed_by.clone().into(),
        p.remove_time.into(),
        p.history_from.into(),
        p.removed_seq.into(),
        p.removed_view.as_ref().map(frozen_row).into(),
    ]);
}

pub(crate) fn user_from(m: entities::users::Model) -> Result<User, Error> {
    Ok(User {
        kind: enum_value::<UserKind>("user kind", m.kind)?,
        status: enum_value::<UserStatus>("user status", m.status)?,
        tenant_id: m.tenant_id,
        id: m.id,
        display_name: m.display_name,
        email: m.email,
        create_time: m.create_time,
        update_time: m.update_time,
    })
}

const ITEM_MESSAGE: i32 = 1;
const ITEM_EVENT: i32 = 2;

pub(crate) fn item_row(item: &TimelineItem) -> entities::timeline::ActiveModel {
    use sea_orm::ActiveValue::Set;
    let mut row = entities::timeline::ActiveModel {
        conversation_id: Set(item.conversation_id.clone()),
        seq: Set(item.seq),
        create_time: Set(item.create_time),
        item_type: Set(ITEM_EVENT),
        message_id: Set(None),
        sender_id: Set(None),
        body: Set(None),
        event_type: Set(None),
        actor_id: Set(None),
        subject_ids: Set(None),
        internal_only: Set(false),
    };
    match &item.entry {
        Entry::Message {
            id,
            sender_id,
            body,
        } => {
            row.item_type = Set(ITEM_MESSAGE);
            row.message_id = Set(Some(id.clone()));
            row.sender_id = Set(Some(sender_id.clone()));
            row.body = Set(Some(body.clone()));
        }
        Entry::Event {
            event_type,
            actor_id,
            subject_ids,
            internal_only,
        } => {
            row.event_type = Set(Some(*event_type as i32));
            row.actor_id = Set(Some(actor_id.clone()));
            row.subject_ids = Set(Some(serde_json::to_string(subject_ids).unwrap_or_default()));
            row.internal_only = Set(*internal_only);
        }
    }
    row
}

/// Appends items to a conversation's timeline, a statement per [`ROWS_PER_INSERT`] items; when
/// this process exports, the items are kept for the exporter too ([`crate::export::collecting`]).
pub(crate) fn append_items(w: &mut Writes, items: &[TimelineItem]) {
    if crate::export::collecting() {
        w.appends(items);
    }
    for batch in items.chunks(ROWS_PER_INSERT) {
        w.insert_models(batch.iter().map(item_row), "");
    }
}

/// A conversation read together with the caller: the caller's directory entry (what the rules
/// judge a caller by: its kind and status), the conversation, and the caller's participant row
/// in it, each `None` where there is none.
#[derive(Clone, Debug)]
pub struct WithCaller {
    pub user: Option<Candidate>,
    pub conversation: Option<Conversation>,
    pub participant: Option<Participant>,
}

/// The statement of [`conversation_with_caller`] on one engine: one row always (driven from a
/// one-row table), the caller's directory entry, the conversation and the caller's seat in it
/// left-joined to it, each column aliased with its table's prefix.
fn with_caller_sql(backend: DatabaseBackend) -> &'static str {
    static SQL: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    let [sqlite, postgres] = SQL.get_or_init(|| {
        let sql = |tenant: &str, id: &str, user: &str| {
            format!(
                "SELECT {} {}",
                caller_columns(),
                caller_joins(tenant, id, user)
            )
        };
        [sql("?1", "?2", "?3"), sql("$1", "$2", "$3")]
    });
    match backend {
        DatabaseBackend::Postgres => postgres,
        _ => sqlite,
    }
}

/// The columns of a statement that reads the caller: of the caller's directory entry (`u`)
/// what the rules judge a caller by ([`CANDIDATE_COLUMNS`]), the conversation (`c`) and the
/// caller's seat in it (`p`, [`SEAT_COLUMNS`]), each aliased with its table's prefix.
///
/// Every column costs on both sides, in the engine's executor and output and in the server's
/// reading: PostgreSQL ran the page of 20 participants read with this caller 13-23 % faster
/// without the directory entry's names, emails and times and without the seat's conversation
/// and tenant, which the conversation's row holds already (pgbench, prepared, 16 clients).
pub(crate) fn caller_columns() -> &'static str {
    use sea_orm::Iterable;
    static COLUMNS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COLUMNS.get_or_init(|| {
        let mut cols = Vec::new();
        prefixed_columns(&mut cols, "u", CANDIDATE_COLUMNS.into_iter());
        prefixed_columns(&mut cols, "c", entities::conversations::Column::iter());
        prefixed_columns(&mut cols, "p", SEAT_COLUMNS.into_iter());
        cols.join(", ")
    })
}

/// A conversation's caller read without the conversation's row: the caller's directory entry,
/// whether the conversation is the tenant's, and the caller's participant row in it, for a
/// read that needs nothing else of the conversation to judge the caller (a page of
/// participants: `participants::page_with_caller`).
#[derive(Clone, Debug)]
pub struct CallerSeat {
    pub user: Option<Candidate>,
    pub conversation: bool,
    pub participant: Option<Participant>,
}

impl CallerSeat {
    /// The columns of a statement that reads it, from the joins of [`caller_joins`]: those of
    /// [`caller_columns`] but of the conversation only its id.
    pub(crate) fn columns() -> &'static str {
        static COLUMNS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        COLUMNS.get_or_init(|| {
            let mut cols = Vec::new();
            prefixed_columns(&mut cols, "u", CANDIDATE_COLUMNS.into_iter());
            prefixed_columns(
                &mut cols,
                "c",
                [entities::conversations::Column::Id].into_iter(),
            );
            prefixed_columns(&mut cols, "p", SEAT_COLUMNS.into_iter());
            cols.join(", ")
        })
    }

    /// How many columns [`Self::columns`] lists.
    pub(crate) fn width() -> usize {
        CANDIDATE_COLUMNS.len() + 1 + SEAT_COLUMNS.len()
    }

    /// The caller's parts of a row whose columns from position `at` are [`Self::columns`],
    /// for conversation `conversation_id` of tenant `tenant_id`.
    pub(crate) fn from_cells(
        row: &dyn cells::Cells,
        at: usize,
        conversation_id: &str,
        tenant_id: &str,
    ) -> Result<Result<Self, Error>, DbErr> {
        let user = candidate_at(row, at)?;
        let at = at + CANDIDATE_COLUMNS.len();
        let conversation = cells::text(row, at)?.is_some();
        // The seat is joined to the conversation: none without it.
        let seat = if conversation {
            seat_at(row, at + 1, conversation_id, tenant_id)?
        } else {
            None
        };
        Ok(seat
            .map(participant_from)
            .transpose()
            .map(|participant| Self {
                user,
                conversation,
                participant,
            }))
    }
}

/// The columns of `users` that the rules judge a person by ([`Candidate`]), in the order
/// [`candidate_at`] reads them.
pub(crate) const CANDIDATE_COLUMNS: [entities::users::Column; 3] = {
    use entities::users::Column as U;
    [U::Id, U::Kind, U::Status]
};

/// The columns of a participant's row that a read of the participants of one conversation
/// takes, in the order [`seat_at`] reads them: all but the conversation and the tenant, which
/// the read knows.
pub(crate) const SEAT_COLUMNS: [entities::participants::Column; 11] = {
    use entities::participants::Column as P;
    [
        P::UserId,
        P::Kind,
        P::Role,
        P::State,
        P::AddedBy,
        P::JoinTime,
        P::RemovedBy,
        P::RemoveTime,
        P::HistoryFrom,
        P::RemovedSeq,
        P::RemovedView,
    ]
};

/// Adds to `out` each of `cols` of the table aliased `table`, as `table.col AS "table_col"`,
/// in the columns' order (the order [`cells::model_at`] reads them in).
pub(crate) fn prefixed_columns<I: sea_orm::IdenStatic>(
    out: &mut Vec<String>,
    table: &str,
    cols: impl Iterator<Item = I>,
) {
    out.extend(cols.map(|c| format!("{table}.{col} AS \"{table}_{col}\"", col = c.as_str())));
}

/// The `FROM` of a statement that reads the caller ([`caller_columns`]), given the placeholders
/// of the tenant, the conversation and the caller's user id: one row always (driven from a
/// one-row table), each part left-joined to it.
pub(crate) fn caller_joins(tenant: &str, id: &str, user: &str) -> String {
    format!(
        "FROM (SELECT 1 AS one) AS o \
         LEFT JOIN users u ON u.tenant_id = {tenant} AND u.id = {user} \
         LEFT JOIN conversations c ON c.tenant_id = {tenant} AND c.id = {id} \
         LEFT JOIN participants p ON p.conversation_id = c.id AND p.user_id = {user}"
    )
}

/// Reads what a conversation read needs about its caller in one statement: the caller's
/// directory entry (whose kind and status apply at once, so no replica may cache them), the
/// conversation of the tenant, and the caller's participant row. `user_id` is `None` for a
/// service acting as administrator. One statement is one snapshot on both engines.
pub async fn conversation_with_caller<C: EachRow>(
    db: &C,
    tenant_id: &str,
    conversation_id: &str,
    user_id: Option<&str>,
) -> Result<WithCaller, Error> {
    let backend = db.get_database_backend();
    let mut read = None;
    db.each_row(
        with_caller_statement(backend, tenant_id, conversation_id, user_id),
        &mut |row| {
            read = Some(WithCaller::from_cells(row, 0)?);
            Ok(())
        },
    )
    .await?;
    read.ok_or_else(|| Error::Internal("a one-row select returned no row".into()))?
}

/// Callers whose [`callers_of`] one statement reads.
pub const CALLERS_PER_STATEMENT: usize = 100;

/// [`conversation_with_caller`] for several callers of one conversation at once (the watches
/// of a conversation, read together): for each of `user_ids`, in their order, what that
/// statement reads for it. One statement per [`CALLERS_PER_STATEMENT`] callers, each the
/// one-caller statement's select, joined by `UNION ALL` and told apart by their position.
pub async fn callers_of<C: EachRow>(
    db: &C,
    tenant_id: &str,
    conversation_id: &str,
    user_ids: &[Option<&str>],
) -> Result<Vec<WithCaller>, Error> {
    let backend = db.get_database_backend();
    let postgres = backend == DatabaseBackend::Postgres;
    let mut out: Vec<Option<WithCaller>> = Vec::with_capacity(user_ids.len());
    out.resize_with(user_ids.len(), || None);
    for (chunk_at, chunk) in user_ids.chunks(CALLERS_PER_STATEMENT).enumerate() {
        let base = chunk_at * CALLERS_PER_STATEMENT;
        let (tenant, id) = (mark(postgres, 1), mark(postgres, 2));
        let selects: Vec<String> = (0..chunk.len())
            .map(|i| {
                format!(
                    "SELECT CAST({i} AS BIGINT) AS k, {} {}",
                    caller_columns(),
                    caller_joins(&tenant, &id, &mark(postgres, 3 + i))
                )
            })
            .collect();
        let mut values: Vec<sea_orm::Value> = vec![tenant_id.into(), conversation_id.into()];
        values.extend(chunk.iter().map(|u| u.map(str::to_owned).into()));
        let mut failed = None;
        db.each_row(
            Statement::from_sql_and_values(backend, selects.join(" UNION ALL "), values),
            &mut |row| {
                let k = cells::big_int(row, 0)?
                    .and_then(|k| usize::try_from(k).ok())
                    .filter(|k| *k < chunk.len())
                    .ok_or_else(|| DbErr::Custom("a caller row without its position".into()))?;
                match WithCaller::from_cells(row, 1)? {
                    Ok(read) => out[base + k] = Some(read),
                    Err(e) => failed = Some(e),
                }
                Ok(())
            },
        )
        .await?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    out.into_iter()
        .map(|read| read.ok_or_else(|| Error::Internal("a caller's row is missing".into())))
        .collect()
}

/// The statement of [`conversation_with_caller`], values bound.
pub fn with_caller_statement(
    backend: DatabaseBackend,
    tenant_id: &str,
    conversation_id: &str,
    user_id: Option<&str>,
) -> Statement {
    Statement::from_sql_and_values(
        backend,
        with_caller_sql(backend),
        [
            tenant_id.into(),
            conversation_id.into(),
            user_id.map(str::to_owned).into(),
        ],
    )
}

/// The value of a column its table requires, read by one of the row readers below: `NULL`
/// there means the row is not there (a left join that found none), and the reader returns
/// `Ok(None)`.
macro_rules! required {
    ($cell:expr) => {
        match $cell? {
            Some(value) => value,
            None => return Ok(None),
        }
    };
}

/// Placeholder `n` (from 1) of a statement's text: `$n` on PostgreSQL, `?n` on SQLite.
pub(crate) fn mark(postgres: bool, n: usize) -> String {
    if postgres {
        format!("${n}")
    } else {
        format!("?{n}")
    }
}

/// The participant row of conversation `conversation_id` of tenant `tenant_id` held by the
/// columns of `row` from position `at`, in the order of [`SEAT_COLUMNS`], read cell by cell
/// into the model rather than through a model filled column by column ([`cells::model_at`]).
/// `None` where a column the table requires is `NULL` (a left join that found no row).
pub(crate) fn seat_at(
    row: &dyn cells::Cells,
    at: usize,
    conversation_id: &str,
    tenant_id: &str,
) -> Result<Option<entities::participants::Model>, DbErr> {
    use cells::{big_int, int, text};
    Ok(Some(entities::participants::Model {
        user_id: required!(text(row, at)),
        kind: required!(int(row, at + 1)),
        role: required!(int(row, at + 2)),
        state: required!(int(row, at + 3)),
        added_by: required!(text(row, at + 4)),
        join_time: required!(big_int(row, at + 5)),
        removed_by: text(row, at + 6)?,
        remove_time: big_int(row, at + 7)?,
        history_from: required!(big_int(row, at + 8)),
        removed_seq: big_int(row, at + 9)?,
        removed_view: text(row, at + 10)?,
        conversation_id: conversation_id.to_owned(),
        tenant_id: tenant_id.to_owned(),
    }))
}

/// What the rules judge a person by ([`Candidate`]), held by the columns of `row` from
/// position `at` in the order of [`CANDIDATE_COLUMNS`]: `None` if the row has no directory
/// entry there (its id `NULL`).
pub(crate) fn candidate_at(row: &dyn cells::Cells, at: usize) -> Result<Option<Candidate>, DbErr> {
    use cells::{int, text};
    let Some(id) = text(row, at)? else {
        return Ok(None);
    };
    let missing =
        |i: usize| move || DbErr::Custom(format!("a directory entry's column {i} is NULL"));
    let kind = int(row, at + 1)?.ok_or_else(missing(1))?;
    let status = int(row, at + 2)?.ok_or_else(missing(2))?;
    let unknown = |what: &str, raw: i32| DbErr::Custom(format!("stored {what} {raw} is unknown"));
    Ok(Some(Candidate {
        id,
        kind: UserKind::try_from(kind).map_err(|_| unknown("user kind", kind))?,
        status: UserStatus::try_from(status).map_err(|_| unknown("user status", status))?,
    }))
}

/// The conversation row held by the columns of `row` from position `at`, in the order of the
/// columns of `conversations`, read as [`seat_at`] reads a participant. `None` where a
/// column the table requires is `NULL` (a left join that found no row).
pub(crate) fn conversation_at(
    row: &dyn cells::Cells,
    at: usize,
) -> Result<Option<entities::conversations::Model>, DbErr> {
    use cells::{big_int, boolean, int, text};
    Ok(Some(entities::conversations::Model {
        id: required!(text(row, at)),
        tenant_id: required!(text(row, at + 1)),
        kind: required!(int(row, at + 2)),
        title: required!(text(row, at + 3)),
        owner_id: required!(text(row, at + 4)),
        state: required!(int(row, at + 5)),
        add_internal: required!(int(row, at + 6)),
        add_external: required!(int(row, at + 7)),
        remove_policy: required!(int(row, at + 8)),
        lock_external: required!(boolean(row, at + 9)),
        history: required!(int(row, at + 10)),
        max_participants: required!(int(row, at + 11)),
        participant_count: required!(int(row, at + 12)),
        last_seq: required!(big_int(row, at + 13)),
        first_message_time: big_int(row, at + 14)?,
        direct_key: text(row, at + 15)?,
        version: required!(big_int(row, at + 16)),
        create_time: required!(big_int(row, at + 17)),
        update_time: required!(big_int(row, at + 18)),
        shared_version: required!(big_int(row, at + 19)),
        shared_update_time: required!(big_int(row, at + 20)),
        external_view_count: required!(int(row, at + 21)),
    }))
}

impl WithCaller {
    /// The caller's parts of a row whose columns from position `at` are [`caller_columns`].
    /// The outer result is the row's reading, the inner one the models' conversion.
    pub(crate) fn from_cells(
        row: &dyn cells::Cells,
        at: usize,
    ) -> Result<Result<Self, Error>, DbErr> {
        use entities::conversations;
        let user = candidate_at(row, at)?;
        let at = at + CANDIDATE_COLUMNS.len();
        let conversation = conversation_at(row, at)?;
        let at = at + cells::width::<conversations::Entity>();
        // The seat is joined to the conversation: none without it.
        let participant = match &conversation {
            Some(c) => seat_at(row, at, &c.id, &c.tenant_id)?,
            None => None,
        };
        Ok((|| {
            Ok(WithCaller {
                user,
                conversation: conversation.map(conversation_from).transpose()?,
                participant: participant.map(participant_from).transpose()?,
            })
        })())
    }
}

/// A conversation locked for a mutation, with who the caller is.
#[derive(Clone, Debug)]
pub struct Locked {
    pub conversation: Conversation,
    /// The caller's own participant row, active or removed.
    pub caller: Option<Participant>,
    /// The principal, judged by its directory entry ([`Principal::directory_read`]).
    pub principal: Principal,
}

/// The statement of [`lock_with_caller`] on one engine, its values in the order of
/// [`with_caller_sql`]'s: tenant, conversation, caller's user id. Text made once: built per
/// call, a statement's building and dropping is CPU spent inside SQLite's writer's turn.
fn lock_with_caller_sql(backend: DatabaseBackend) -> &'static str {
    static SQL: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    let [sqlite, postgres] = SQL.get_or_init(|| {
        let sql = |tenant: &str, id: &str, user: &str, lock: &str| {
            format!(
                "SELECT {} FROM conversations c \
                 INNER JOIN participants p ON p.conversation_id = c.id AND p.user_id = {user} \
                 LEFT JOIN users u ON u.tenant_id = c.tenant_id AND u.id = {user} \
                 WHERE c.tenant_id = {tenant} AND c.id = {id}{lock}",
                caller_columns()
            )
        };
        // SQLite has no row locks: the writer's turn is the lock.
        [
            sql("?1", "?2", "?3", ""),
            sql("$1", "$2", "$3", " FOR UPDATE OF c, p"),
        ]
    });
    match backend {
        DatabaseBackend::Postgres => postgres,
        _ => sqlite,
    }
}

/// Loads a conversation of the caller's tenant, locked for the rest of the transaction,
/// together with the caller's own participant row (active or removed) and the caller's
/// directory entry, in one statement: on PostgreSQL `SELECT … FROM conversations c JOIN
/// participants p ON p.conversation_id = c.id AND p.user_id = $3 LEFT JOIN users u ON
/// u.tenant_id = c.tenant_id AND u.id = $3 WHERE c.tenant_id = $1 AND c.id = $2 FOR UPDATE OF
/// c, p`; on SQLite the same without the lock clause (the write transaction is IMMEDIATE: it
/// holds the database's write lock already).
///
/// The seat is locked with the conversation, not only joined to it: PostgreSQL runs a locking
/// read in READ COMMITTED on the statement's snapshot, and when it had to wait for a lock, it
/// reads the newest version of the rows it locks but the snapshot's version of the rest. A
/// seat only joined would be the one from before the writer it waited for (a caller removed or
/// demoted by that writer would be judged on the seat it had). Locking it costs nothing more:
/// every writer of a seat holds the conversation's lock first. A caller without a seat, or a
/// conversation that is not there, returns no row; then the conversation is locked alone and
/// the rest read after it.
///
/// The directory judges the caller first ([`crate::domain::principal::judge_directory`]), so a deactivated caller learns
/// nothing of which conversations exist (when there is no conversation, its entry is read
/// alone); a user principal's first call is [`Error::NewcomerEntry`]. A service acting
/// as administrator has no row and no entry: only the conversation is read.
pub async fn lock_with_caller(
    tx: &WriteTx,
    principal: &Principal,
    conversation_id: &str,
) -> Result<Locked, Error> {
    Ok(lock_with_caller_then(tx, principal, conversation_id, None)
        .await?
        .0)
}

/// [`lock_with_caller`], with `then` run right after its statement (in the same message, on
/// PostgreSQL, as the transaction's opening). Also returns whether `then` ran after the
/// conversation was locked: when it did not (it did not run, or the caller's row was not found
/// and the conversation was locked after it), whatever it read is to be read again.
pub async fn lock_with_caller_then(
    tx: &WriteTx,
    principal: &Principal,
    conversation_id: &str,
    then: Option<cells::Opening<'_, '_>>,
) -> Result<(Locked, bool), Error> {
    let tenant_id = principal.tenant_id.as_str();
    let actor = principal.actor();
    let Some(user_id) = actor.user_id() else {
        let conversation = lock_conversation(tx, tenant_id, conversation_id).await?;
        let principal = judged(principal, None)?.into_owned();
        let locked = Locked {
            conversation,
            caller: None,
            principal,
        };
        return Ok((locked, false));
    };
    let backend = tx.get_database_backend();
    let statement = Statement::from_sql_and_values(
        backend,
        lock_with_caller_sql(backend),
        [tenant_id.into(), conversation_id.into(), user_id.into()],
    );
    let mut read = None;
    let mut lock = |row: &dyn cells::Cells| {
        read = Some(WithCaller::from_cells(row, 0)?);
        Ok(())
    };
    // A write's first statements: on PostgreSQL they go with the transaction's `BEGIN`.
    let mut statements = vec![cells::Opening {
        name: "parley_lock_with_caller",
        stmt: statement,
        each: &mut lock,
    }];
    let then_ran = then.is_some();
    if let Some(then) = then {
        statements.push(cells::Opening {
            name: then.name,
            stmt: then.stmt,
            // Its rows' sink, for as long as the lock's.
            each: then.each,
        });
    }
    tx.each_row_opening(statements).await?;
    let Some(read) = read.transpose()? else {
        // No seat, or no such conversation: the directory still answers first.
        let entry = directory::get_user(tx, tenant_id, user_id).await?;
        let principal =
            judged(principal, entry.as_ref().map(Candidate::from).as_ref())?.into_owned();
        let conversation = lock_conversation(tx, tenant_id, conversation_id).await?;
        // Read after the lock: a seat added by a writer this call waited for is seen.
        let caller = get_participant(tx, conversation_id, user_id).await?;
        let locked = Locked {
            conversation,
            caller,
            principal,
        };
        return Ok((locked, false));
    };
    let principal = judged(principal, read.user.as_ref())?.into_owned();
    let conversation = read
        .conversation
        .ok_or_else(|| Error::Internal("a locked seat without its conversation".into()))?;
    let caller = read.participant;
    let locked = Locked {
        conversation,
        caller,
        principal,
    };
    Ok((locked, then_ran))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ActiveModelTrait, Iterable};

    /// A saved conversation writes every column of its row but those that never change, and
    /// the statement's parameters are as many as its values.
    #[test]
    fn a_saved_conversation_writes_every_column_but_its_identity() {
        use sea_orm::{IdenStatic, Iterable};
        let mut expected: Vec<&str> = entities::conversations::Column::iter()
            .map(|c| c.as_str())
            .filter(|c| {
                ![
                    "id",
                    "tenant_id",
                    "kind",
                    "owner_id",
                    "direct_key",
                    "create_time",
                ]
                .contains(c)
            })
            .collect();
        let mut saved = SAVED_CONVERSATION_COLUMNS.to_vec();
        expected.sort_unstable();
        saved.sort_unstable();
        assert_eq!(saved, expected);
        let [sqlite, postgres] = save_conversation_sql();
        assert_eq!(sqlite.matches('?').count(), 17);
        assert!(postgres.contains("\"shared_update_time\" = $16") && postgres.ends_with("= $17"));
    }

    /// New ids are the hyphenated lower-case UUIDs they always were, and keep their order.
    #[test]
    fn new_ids_are_ordered_lower_case_uuids() {
        let (a, b) = (new_id(), new_id());
        for id in [&a, &b] {
            let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 7);
            assert_eq!(*id, parsed.to_string());
        }
        assert!(a < b, "{a} then {b}");
    }

    /// A seat read cell by cell is the participant's model read column by column, for a row
    /// with every column set, one with the nullable ones `NULL`, one without a row (every
    /// column `NULL`) and one missing a column the table requires; the conversation and the
    /// tenant it does not read are the ones it is given.
    #[test]
    fn a_seat_is_read_as_its_participant_model() {
        let conn = rusqlite::Connection::open_in_memory().expect("memory");
        for full in [
            "'c1', 'bob', 'acme', 1, 2, 3, 'ann', 10, 'dan', 9, 4, 3, '{}'",
            "'c1', 'bob', 'acme', 1, 2, 3, 'ann', 10, NULL, NULL, 4, NULL, NULL",
            "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL",
            "'c1', 'bob', 'acme', 1, 2, 3, 'ann', 10, NULL, NULL, NULL, NULL, NULL",
        ] {
            // The seat's columns: all but the conversation (first) and the tenant (third).
            let cells: Vec<&str> = full.split(", ").collect();
            let seat = [&cells[1..2], &cells[3..]].concat().join(", ");
            let by_model = conn
                .query_row(&format!("SELECT 'x', {full}"), [], |row| {
                    Ok(cells::model_at::<entities::participants::Entity>(row, 1).expect("model"))
                })
                .expect("one row");
            let direct = conn
                .query_row(&format!("SELECT 'x', {seat}"), [], |row| {
                    Ok(seat_at(row, 1, "c1", "acme").expect("direct"))
                })
                .expect("one row");
            assert_eq!(direct, by_model, "{seat}");
        }
    }

    /// The caller read without the conversation's row: the directory entry, whether the
    /// conversation is there, and the seat, given the conversation and tenant it lacks; no
    /// entry, no conversation and no seat each read as none.
    #[test]
    fn a_caller_seat_is_read_by_its_columns() {
        let conn = rusqlite::Connection::open_in_memory().expect("memory");
        let read = |cells: &str| {
            conn.query_row(&format!("SELECT 'x', {cells}"), [], |row| {
                Ok(CallerSeat::from_cells(row, 1, "c1", "acme")
                    .expect("decodes")
                    .expect("converts"))
            })
            .expect("one row")
        };
        let seat = "'bob', 1, 2, 1, 'ann', 10, NULL, NULL, 4, NULL, NULL";
        assert_eq!(CallerSeat::width(), 3 + 1 + 11);
        let whole = read(&format!("'bob', 1, 1, 'c1', {seat}"));
        assert_eq!(
            whole.user,
            Some(Candidate {
                id: "bob".into(),
                kind: UserKind::Internal,
                status: UserStatus::Active,
            })
        );
        assert!(whole.conversation);
        let row = whole.participant.expect("a seat");
        assert_eq!(
            (row.conversation_id.as_str(), row.user_id.as_str()),
            ("c1", "bob")
        );
        assert_eq!((row.history_from, row.join_time), (4, 10));
        let nulls = |n: usize| vec!["NULL"; n].join(", ");
        let unknown = read(&format!("{}, 'c1', {}", nulls(3), nulls(11)));
        assert_eq!((unknown.user, unknown.conversation), (None, true));
        assert!(unknown.participant.is_none());
        let nowhere = read(&format!("'bob', 1, 1, {}", nulls(12)));
        assert!(!nowhere.conversation);
        assert!(nowhere.participant.is_none());
    }

    /// A conversation read cell by cell is its model read column by column: full rows, rows
    /// with the nullable columns `NULL`, rows of `NULL`s (no row) and rows missing a required
    /// column.
    #[test]
    fn conversations_are_read_as_their_models() {
        use entities::conversations;
        let conn = rusqlite::Connection::open_in_memory().expect("memory");
        let conversation = "'c1', 'acme', 1, 'T', 'ann', 2, 3, 4, 5, 1, 6, 100, 7, 8, \
                            90, 'k', 9, 10, 11, 12, 13, 14";
        let bare_conversation = "'c1', 'acme', 1, 'T', 'ann', 2, 3, 4, 5, 0, 6, 100, 7, 8, \
                                 NULL, NULL, 9, 10, 11, 12, 13, 14";
        let nulls = |n: usize| vec!["NULL"; n].join(", ");
        let conversations = [
            conversation.to_owned(),
            bare_conversation.to_owned(),
            nulls(22),
            conversation.replace("'ann'", "NULL"),
        ];
        for cells in conversations {
            let sql = format!("SELECT 'x', {cells}");
            let (direct, by_model) = conn
                .query_row(&sql, [], |row| {
                    Ok((
                        conversation_at(row, 1).expect("direct"),
                        cells::model_at::<conversations::Entity>(row, 1).expect("model"),
                    ))
                })
                .expect("one row");
            assert_eq!(direct, by_model, "{sql}");
        }
    }

    #[test]
    fn participant_values_follow_the_columns() {
        let active = Participant {
            conversation_id: "c1".into(),
            user_id: "bob".into(),
            kind: ParticipantKind::External,
            role: Role::Member,
            state: ParticipantState::Active,
            added_by: "ann".into(),
            join_time: 10,
            removed_by: None,
            remove_time: None,
            history_from: 4,
            removed_seq: None,
            removed_view: None,
        };
        let removed = Participant {
            kind: ParticipantKind::Internal,
            state: ParticipantState::Removed,
            removed_by: Some("dan".into()),
            remove_time: Some(9),
            removed_seq: Some(3),
            ..active.clone()
        };
        assert_eq!(
            entities::participants::Column::iter().count(),
            PARTICIPANT_COLUMNS
        );
        for p in [active, removed] {
            let mut values = Vec::new();
            participant_values("acme", &p, &mut values);
            let mut row = participant_row("acme", &p);
            let expected: Vec<sea_orm::Value> = entities::participants::Column::iter()
                .map(|c| row.take(c).into_value().expect("every column set"))
                .collect();
            assert_eq!(values, expected);
        }
    }
}
