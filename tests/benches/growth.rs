//! Growth benchmarks: does a call cost the same when the data behind it is large? Each figure is
//! a throughput at size over the same throughput near empty (or, for memory, a peak over its
//! budget), on SQLite and on PostgreSQL:
//!
//! - `sync`: a directory sync of 100,000 users from empty through UpsertUser (a service token,
//!   16 in flight): the last 10 % of the calls over the first 10 % (the median of three syncs);
//! - `add`: AddParticipants of one user into a conversation of 10,000 participants in a tenant
//!   of 1,000,000 users, over the same into an empty tenant and conversation;
//! - `timeline`: ListTimeline, the newest page and a page halfway down (by page token), of a
//!   conversation 1,000,000 items deep, over the same of one two pages deep, the two read in
//!   turn over five rounds (the median of the rounds' ratios);
//! - `watch`: what 1,000 idle WatchTimeline streams add to a separate `parley-server`
//!   process's resident memory (VmRSS), beside the 32 MiB budget; and the time from a message's
//!   commit to its arrival on a watch, on the replica that wrote it and on another (median and
//!   p99 of 200 messages, beside the one second SPEC §7 allows);
//! - `rss`: the peak resident memory (VmHWM) of a separate `parley-server` process under 64
//!   concurrent closed-loop callers (each its own connection) mixing GetConversation,
//!   ListParticipants, AddParticipants and SendMessage, beside the 64 MiB budget.
//!
//! Large states are seeded with SQL (multi-row `INSERT … SELECT` over `generate_series` on
//! PostgreSQL, a recursive CTE on SQLite, counters kept consistent), then measured through gRPC.
//! PostgreSQL tables are `VACUUM ANALYZE`d after seeding, as autovacuum would soon do, and a
//! `CHECKPOINT` writes the seed out before anything is measured; SQLite gets no statistics, as
//! the server never gathers any.
//!
//! ```sh
//! cargo build --release -p parley-server          # the process `rss` measures
//! cargo bench -p parley-tests --bench growth      # every figure, both databases
//! cargo bench -p parley-tests --bench growth -- add timeline postgres
//! PARLEY_BENCH_SCALE=0.01 cargo bench -p parley-tests --bench growth   # a quick smoke run
//! ```
//!
//! Arguments pick figures (`sync`, `add`, `timeline`, `rss`) and databases (`sqlite`,
//! `postgres`); none means all. `PARLEY_BENCH_SCALE` multiplies every size, call count and the
//! load duration. `PARLEY_SERVER_BIN` names the server binary for `rss` (default: the release
//! build under the target directory, else the debug one). Prints a table; asserts nothing about
//! time.

use std::{
    future::Future,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use parley::pb;
use parley_server::{auth::Claims, domain::paging::Pager};
use parley_tests::*;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tonic::{Status, transport::Channel};

/// Calls in flight for the throughput figures (as in issue 8's table).
const IN_FLIGHT: usize = 16;
/// Closed-loop callers of the memory figure.
const RSS_CALLERS: usize = 64;
const RSS_BUDGET_MIB: f64 = 64.0;
const GROWTH_BAR: f64 = 0.8;
const PAGE: i32 = 100;
const OWNER: &str = "owner";

// ----- sizes -------------------------------------------------------------------------------

struct Sizes {
    scale: f64,
}

impl Sizes {
    fn from_env() -> Self {
        let scale = std::env::var("PARLEY_BENCH_SCALE")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .unwrap_or(1.0);
        Self { scale }
    }

    /// `full` scaled, at least `min`.
    fn n(&self, full: usize, min: usize) -> usize {
        ((full as f64 * self.scale).round() as usize).max(min)
    }

    fn sync_users(&self) -> usize {
        self.n(100_000, 200)
    }
    fn tenant_users(&self) -> usize {
        self.n(1_000_000, 1_000)
    }
    fn conversation_participants(&self) -> usize {
        self.n(10_000, 50)
    }
    fn timeline_depth(&self) -> usize {
        self.n(1_000_000, 1_000)
    }
    fn calls(&self) -> usize {
        self.n(2_000, 200)
    }
    fn warmup(&self) -> usize {
        self.n(200, 32)
    }
    fn rss_pool(&self) -> usize {
        self.n(2_000, 200)
    }
    fn rss_load(&self) -> Duration {
        Duration::from_secs_f64((20.0 * self.scale).max(2.0))
    }
}

// ----- the table ---------------------------------------------------------------------------

enum Bar {
    AtLeast(f64),
    AtMost(f64),
}

struct Figure {
    name: String,
    db: Db,
    value: String,
    baseline: String,
    ratio: f64,
    bar: Bar,
    errors: usize,
}

impl Figure {
    fn verdict(&self) -> &'static str {
        if self.errors > 0 {
            return "ERRORS";
        }
        match self.bar {
            Bar::AtLeast(b) if self.ratio >= b => "ok",
            Bar::AtLeast(_) => "BELOW",
            Bar::AtMost(b) if self.ratio <= b => "ok",
            Bar::AtMost(_) => "OVER",
        }
    }

    fn line(&self) -> String {
        let bar = match self.bar {
            Bar::AtLeast(b) => format!(">= {b:.2}"),
            Bar::AtMost(b) => format!("<= {b:.2}"),
        };
        let errors = if self.errors > 0 {
            format!(" ({} failed calls)", self.errors)
        } else {
            String::new()
        };
        format!(
            "{:<50} {:<9} {:>14} {:>16} {:>6.2} {:>8} {}{errors}",
            self.name,
            db_name(self.db),
            self.value,
            self.baseline,
            self.ratio,
            bar,
            self.verdict()
        )
    }
}

fn header() -> String {
    format!(
        "{:<50} {:<9} {:>14} {:>16} {:>6} {:>8} verdict",
        "figure", "db", "value", "baseline", "ratio", "bar"
    )
}

fn db_name(db: Db) -> &'static str {
    match db {
        Db::Sqlite => "sqlite",
        Db::Postgres => "postgres",
    }
}

fn rate(r: f64) -> String {
    format!("{r:.0}/s")
}

// ----- closed-loop load --------------------------------------------------------------------

/// What a closed loop of calls did: each call's completion, from the start, in order.
struct Run {
    done: Vec<Duration>,
    errors: usize,
}

impl Run {
    fn rate(&self) -> f64 {
        match self.done.last() {
            Some(end) => self.done.len() as f64 / end.as_secs_f64().max(1e-9),
            None => 0.0,
        }
    }

    /// Throughput over the first and the last `share` of the calls.
    fn ends(&self, share: f64) -> (f64, f64) {
        let n = self.done.len();
        let k = ((n as f64 * share) as usize).max(1);
        if n <= k {
            return (self.rate(), self.rate());
        }
        let first = k as f64 / self.done[k - 1].as_secs_f64().max(1e-9);
        let last = k as f64
            / (self.done[n - 1] - self.done[n - 1 - k])
                .as_secs_f64()
                .max(1e-9);
        (first, last)
    }
}

/// Runs calls `0..n`, `in_flight` at a time, each worker calling `call(worker, i)` for the
/// next `i` as soon as its previous call returns. Failed calls are counted (the first is
/// printed), never retried.
async fn closed_loop<F, Fut>(n: usize, in_flight: usize, call: F) -> Run
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|w| {
            let (call, next, failed) = (call.clone(), next.clone(), failed.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return done;
                    }
                    if let Err(e) = call(w, i).await
                        && failed.fetch_add(1, Ordering::Relaxed) == 0
                    {
                        eprintln!("  a call failed: {:?} {}", e.code(), e.message());
                    }
                    done.push(started.elapsed());
                }
            })
        })
        .collect();
    let mut done = Vec::with_capacity(n);
    for worker in workers {
        done.extend(worker.await.expect("a load worker panicked"));
    }
    done.sort();
    Run {
        done,
        errors: failed.load(Ordering::Relaxed),
    }
}

fn channel_to(addr: std::net::SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid endpoint")
        .connect_lazy()
}

/// `caller` once per worker, each on a connection of its own.
fn per_worker(app: &TestApp, caller: &Caller, n: usize) -> Arc<Vec<Caller>> {
    Arc::new((0..n).map(|_| caller.via(channel_to(app.addr))).collect())
}

// ----- seeding with SQL --------------------------------------------------------------------

/// Builds the seeding statements for one engine.
#[derive(Clone, Copy)]
struct Sql(Db);

impl Sql {
    /// `insert` fed by `select` once for each `i` in `from..=to`.
    fn series(self, from: usize, to: usize, insert: &str, select: &str) -> String {
        match self.0 {
            Db::Postgres => {
                format!("{insert} SELECT {select} FROM generate_series({from}, {to}) AS s(i)")
            }
            Db::Sqlite => format!(
                "WITH RECURSIVE s(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM s WHERE i < {to}) \
                 {insert} SELECT {select} FROM s"
            ),
        }
    }

    /// `prefix` followed by `expr` zero-padded to 7 digits: the id of seeded user `expr`.
    fn user_id(self, prefix: &str, expr: &str) -> String {
        match self.0 {
            Db::Postgres => format!("('{prefix}' || lpad(({expr})::text, 7, '0'))"),
            Db::Sqlite => format!("printf('{prefix}%07d', {expr})"),
        }
    }

    /// A message id (UUID-shaped) for item `expr`.
    fn message_id(self, expr: &str) -> String {
        match self.0 {
            Db::Postgres => {
                format!("('00000000-0000-4000-8000-' || lpad(({expr})::text, 12, '0'))")
            }
            Db::Sqlite => format!("printf('00000000-0000-4000-8000-%012d', {expr})"),
        }
    }
}

/// The id of seeded user `i` (what [`Sql::user_id`] writes).
fn seeded_user(i: usize) -> String {
    format!("u{i:07}")
}

async fn seed_connection(app: &TestApp) -> DatabaseConnection {
    sea_orm::Database::connect(app.database_url())
        .await
        .expect("connect to the bench database")
}

async fn exec(db: &DatabaseConnection, sql: &str) {
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("seeding failed: {e}\n{sql}"));
}

/// Statistics as autovacuum would leave them (PostgreSQL only: SQLite's server gathers none),
/// and the seed's pages written out: left to the checkpointer, writing the hundreds of
/// megabytes a seed of 1,000,000 rows dirties took the CPU and the disk from the first figure
/// measured after it (ListTimeline's newest page at depth ran at 0.63-0.79 of the shallow one
/// in three runs, then the page at depth/2, measured next, at 0.88-0.90).
async fn settle(db: &DatabaseConnection, app: &TestApp, tables: &[&str]) {
    if app.db == Db::Postgres {
        for table in tables {
            exec(db, &format!("VACUUM ANALYZE {table}")).await;
        }
        exec(db, "CHECKPOINT").await;
    }
}

/// Directory users `u0000000 ..` (`count` of them) of [`TENANT`], internal and active, as
/// UpsertUser would write them.
async fn seed_users(db: &DatabaseConnection, sql: Sql, count: usize) {
    let now = pb_now();
    let id = sql.user_id("u", "i");
    let display = sql.user_id("U", "i");
    exec(
        db,
        &sql.series(
            0,
            count - 1,
            "INSERT INTO users (tenant_id, id, display_name, name_lower, email, email_lower, \
             kind, status, create_time, update_time)",
            &format!(
                "'{TENANT}', {id}, {display}, {id}, {id} || '@{TENANT}.example', \
                 {id} || '@{TENANT}.example', 1, 1, {now}, {now}"
            ),
        ),
    )
    .await;
}

/// Users `u0000000 .. u{count-1}` become active members of `conversation`, each added by the
/// owner with a PARTICIPANT_ADDED event of their own; the roster and timeline counters follow.
async fn seed_participants(db: &DatabaseConnection, sql: Sql, conversation: &str, count: usize) {
    if count == 0 {
        return;
    }
    let now = pb_now();
    let id = sql.user_id("u", "i");
    exec(
        db,
        &sql.series(
            0,
            count - 1,
            "INSERT INTO participants (conversation_id, user_id, tenant_id, kind, role, state, \
             added_by, join_time, removed_by, remove_time, history_from, removed_seq, removed_view)",
            &format!(
                "'{conversation}', {id}, '{TENANT}', 1, 3, 1, '{OWNER}', {now}, NULL, \
                 CAST(NULL AS BIGINT), 1, CAST(NULL AS BIGINT), NULL"
            ),
        ),
    )
    .await;
    exec(
        db,
        &sql.series(
            0,
            count - 1,
            "INSERT INTO timeline (conversation_id, seq, item_type, message_id, sender_id, body, \
             event_type, actor_id, subject_ids, internal_only, create_time)",
            &format!(
                "'{conversation}', (SELECT last_seq FROM conversations WHERE id = '{conversation}') + i + 1, \
                 2, NULL, NULL, NULL, 1, '{OWNER}', '[\"' || {id} || '\"]', true, {now}"
            ),
        ),
    )
    .await;
    // Internal-only changes: the shared version stays (rule 18).
    exec(
        db,
        &format!(
            "UPDATE conversations SET participant_count = participant_count + {count}, \
             last_seq = last_seq + {count}, version = version + 1, update_time = {now} \
             WHERE id = '{conversation}'"
        ),
    )
    .await;
}

/// `count` messages from the owner at the end of `conversation`'s timeline.
async fn seed_messages(db: &DatabaseConnection, sql: Sql, conversation: &str, count: usize) {
    let now = pb_now();
    let first = now - count as i64;
    let message_id = sql.message_id("i");
    exec(
        db,
        &sql.series(
            1,
            count,
            "INSERT INTO timeline (conversation_id, seq, item_type, message_id, sender_id, body, \
             event_type, actor_id, subject_ids, internal_only, create_time)",
            &format!(
                "'{conversation}', (SELECT last_seq FROM conversations WHERE id = '{conversation}') + i, \
                 1, {message_id}, '{OWNER}', 'message ' || i, CAST(NULL AS INTEGER), NULL, NULL, \
                 false, {first} + i"
            ),
        ),
    )
    .await;
    exec(
        db,
        &format!(
            "UPDATE conversations SET last_seq = last_seq + {count}, \
             first_message_time = COALESCE(first_message_time, {first} + 1), \
             version = version + 1, shared_version = shared_version + 1, \
             update_time = {now}, shared_update_time = {now} WHERE id = '{conversation}'"
        ),
    )
    .await;
}

fn pb_now() -> i64 {
    parley_server::domain::model::now_micros()
}

/// A server for the throughput figures: no rate limits, room for big conversations.
async fn bench_app(db: Db) -> TestApp {
    spawn_app_with(db, |c| {
        c.limits.rate_limit_per_second = 0;
        c.limits.service_rate_limit_per_second = 0;
        c.limits.max_participants = 1_000_000;
    })
    .await
}

/// A server with its owner in the directory and a group conversation the owner made.
async fn app_with_conversation(db: Db) -> (TestApp, Caller, String) {
    let app = bench_app(db).await;
    app.service(TENANT)
        .upsert_user(OWNER, Kind::Internal)
        .await
        .expect("upsert the owner");
    let owner = app.user(TENANT, OWNER);
    let conversation = owner.create_group("bench", &[]).await.expect("create").id;
    (app, owner, conversation)
}

fn timed(what: &str, started: Instant) {
    eprintln!("  {what} in {:.1?}", started.elapsed());
}

// ----- a. directory sync -------------------------------------------------------------------

/// Syncs of the directory, each into an empty database of its own. One sync's first and
/// last tenths each last about a second here, and on a 2-core machine with CPU steal one
/// second is not the next: the same build's ratio ran 0.75-1.03 over four syncs on SQLite.
/// The figure is the median of the syncs' ratios.
const SYNC_ROUNDS: usize = 3;

async fn sync(db: Db, sizes: &Sizes) -> Vec<Figure> {
    let n = sizes.sync_users();
    eprintln!(
        "sync ({}): {n} users through UpsertUser, {SYNC_ROUNDS} times",
        db_name(db)
    );
    let (mut firsts, mut lasts, mut ratios, mut errors) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..SYNC_ROUNDS {
        let app = bench_app(db).await;
        let services = per_worker(&app, &app.service(TENANT), IN_FLIGHT);
        let run = closed_loop(n, IN_FLIGHT, move |w, i| {
            let service = services[w].clone();
            async move {
                service
                    .upsert_user(&format!("s{i:07}"), Kind::Internal)
                    .await
                    .map(drop)
            }
        })
        .await;
        let (first, last) = run.ends(0.1);
        eprintln!(
            "  {n} upserts at {:.0}/s overall, last/first 10% {:.2}",
            run.rate(),
            last / first
        );
        firsts.push(first);
        lasts.push(last);
        ratios.push(last / first);
        errors += run.errors;
    }
    vec![Figure {
        name: format!("a. UpsertUser sync of {n}: last/first 10%"),
        db,
        value: rate(median(lasts)),
        baseline: rate(median(firsts)),
        ratio: median(ratios),
        bar: Bar::AtLeast(GROWTH_BAR),
        errors,
    }]
}

// ----- b. AddParticipants into a big tenant and conversation ------------------------------

/// AddParticipants(1) throughput into `conversation`, adding seeded users from `first_user`
/// on: a warm-up, then the measured calls.
async fn add_rate(
    app: &TestApp,
    owner: &Caller,
    conversation: &str,
    first_user: usize,
    sizes: &Sizes,
) -> Run {
    let owners = per_worker(app, owner, IN_FLIGHT);
    let mut from = first_user;
    let mut run = None;
    for n in [sizes.warmup(), sizes.calls()] {
        let (owners, conversation) = (owners.clone(), conversation.to_owned());
        run = Some(
            closed_loop(n, IN_FLIGHT, move |w, i| {
                let (owner, conversation) = (owners[w].clone(), conversation.clone());
                async move {
                    owner
                        .add_users(&conversation, &[&seeded_user(from + i)])
                        .await
                        .map(drop)
                }
            })
            .await,
        );
        from += n;
    }
    run.expect("a measured run")
}

async fn add(db: Db, sizes: &Sizes) -> Vec<Figure> {
    let pool = sizes.warmup() + sizes.calls();
    let people = sizes.conversation_participants();
    let tenant = sizes.tenant_users().max(people + pool);
    eprintln!(
        "add ({}): a tenant of {tenant} users and a conversation of {people} participants",
        db_name(db)
    );
    let sql = Sql(db);

    let (app, owner, conversation) = app_with_conversation(db).await;
    let seeding = seed_connection(&app).await;
    seed_users(&seeding, sql, pool).await;
    settle(&seeding, &app, &["users", "participants", "timeline"]).await;
    let empty = add_rate(&app, &owner, &conversation, 0, sizes).await;
    drop(app);

    let (app, owner, conversation) = app_with_conversation(db).await;
    let seeding = seed_connection(&app).await;
    let started = Instant::now();
    seed_users(&seeding, sql, tenant).await;
    // The owner is the conversation's first participant.
    seed_participants(&seeding, sql, &conversation, people - 1).await;
    settle(&seeding, &app, &["users", "participants", "timeline"]).await;
    timed("seeded", started);
    let full = add_rate(&app, &owner, &conversation, people - 1, sizes).await;
    let roster = owner.get(&conversation).await.expect("GetConversation");
    eprintln!(
        "  the conversation ends with {} participants",
        roster.participant_count
    );
    vec![Figure {
        name: format!("b. AddParticipants(1), {tenant} users/{people}"),
        db,
        value: rate(full.rate()),
        baseline: rate(empty.rate()),
        ratio: full.rate() / empty.rate(),
        bar: Bar::AtLeast(GROWTH_BAR),
        errors: full.errors + empty.errors,
    }]
}

// ----- c. ListTimeline deep in a long conversation ----------------------------------------

/// Rounds in which ListTimeline's pages are read from the shallow and the deep conversation in
/// turn. Measured one after the other, minutes apart (the deep seed between them), the two
/// rates met different machines: on a 2-core machine with CPU steal the ratio of the page at
/// depth/2 ran 0.74-1.23 over five runs of the same build. Alternated, each round's two runs
/// share the machine's state of the moment, and the figure is the median of the rounds' ratios.
const TIMELINE_ROUNDS: usize = 5;

/// Which page of a timeline the load reads.
#[derive(Clone, Copy)]
enum Page {
    /// The first page, newest first.
    Newest,
    /// The page that starts halfway down, newest first.
    Middle,
}

/// A conversation `depth` messages deep on a server of its own, ready to be read.
struct Timeline {
    _app: TestApp,
    owners: Arc<Vec<Caller>>,
    conversation: String,
    /// The token ListTimeline would hand out after reading down to the middle (newest first:
    /// its key is the last seq read, the next page starts below it).
    middle: String,
}

impl Timeline {
    async fn seed(db: Db, depth: usize) -> Self {
        let (app, owner, conversation) = app_with_conversation(db).await;
        let seeding = seed_connection(&app).await;
        let started = Instant::now();
        seed_messages(&seeding, Sql(db), &conversation, depth).await;
        settle(&seeding, &app, &["timeline", "conversations"]).await;
        timed(&format!("seeded {depth} messages"), started);
        let middle = Pager::new(app.key.secret()).seal(
            "ListTimeline",
            &format!("{TENANT}/{conversation}/desc"),
            &(depth as i64 / 2 + 1).to_string(),
        );
        for token in [String::new(), middle.clone()] {
            let first = owner
                .conv()
                .list_timeline(owner.req(page_request(&conversation, &token)))
                .await
                .expect("ListTimeline");
            assert_eq!(first.get_ref().items.len(), PAGE as usize, "a full page");
        }
        let owners = per_worker(&app, &owner, IN_FLIGHT);
        Self {
            _app: app,
            owners,
            conversation,
            middle,
        }
    }

    /// `n` reads of `page`, [`IN_FLIGHT`] at a time, each checked to be a full page.
    async fn read(&self, page: Page, n: usize) -> Run {
        let token = match page {
            Page::Newest => String::new(),
            Page::Middle => self.middle.clone(),
        };
        let (owners, conversation) = (self.owners.clone(), self.conversation.clone());
        closed_loop(n, IN_FLIGHT, move |w, _| {
            let owner = owners[w].clone();
            let request = owner.req(page_request(&conversation, &token));
            async move {
                let page = owner.conv().list_timeline(request).await?.into_inner();
                if page.items.len() != PAGE as usize {
                    return Err(Status::internal("a short page"));
                }
                Ok(())
            }
        })
        .await
    }
}

fn page_request(conversation: &str, token: &str) -> pb::ListTimelineRequest {
    pb::ListTimelineRequest {
        conversation_id: conversation.to_owned(),
        order: pb::Order::NewestFirst as i32,
        page_size: PAGE,
        page_token: token.to_owned(),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

async fn timeline(db: Db, sizes: &Sizes) -> Vec<Figure> {
    let depth = sizes.timeline_depth();
    let shallow_depth = 2 * PAGE as usize;
    eprintln!(
        "timeline ({}): {depth} messages deep against {shallow_depth}, {TIMELINE_ROUNDS} rounds",
        db_name(db)
    );
    let shallow = Timeline::seed(db, shallow_depth).await;
    let deep = Timeline::seed(db, depth).await;
    let mut figures = Vec::new();
    for (what, page) in [
        ("newest page", Page::Newest),
        ("page at depth/2", Page::Middle),
    ] {
        shallow.read(page, sizes.warmup()).await;
        deep.read(page, sizes.warmup()).await;
        let (mut deep_rates, mut shallow_rates, mut ratios, mut errors) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        for round in 0..TIMELINE_ROUNDS {
            // Which goes first alternates too, so that a drift favours neither.
            let (d, s) = if round % 2 == 0 {
                let d = deep.read(page, sizes.calls()).await;
                (d, shallow.read(page, sizes.calls()).await)
            } else {
                let s = shallow.read(page, sizes.calls()).await;
                (deep.read(page, sizes.calls()).await, s)
            };
            errors += d.errors + s.errors;
            ratios.push(d.rate() / s.rate());
            deep_rates.push(d.rate());
            shallow_rates.push(s.rate());
        }
        eprintln!(
            "  {what}: ratios {}",
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        figures.push(Figure {
            name: format!("c. ListTimeline({PAGE}) {what}, depth {depth}"),
            db,
            value: rate(median(deep_rates)),
            baseline: rate(median(shallow_rates)),
            ratio: median(ratios),
            bar: Bar::AtLeast(GROWTH_BAR),
            errors,
        });
    }
    figures
}

// ----- d. server memory under load ---------------------------------------------------------

/// The server binary: `PARLEY_SERVER_BIN`, else the release build, else the debug one.
fn server_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("PARLEY_SERVER_BIN") {
        return Some(PathBuf::from(bin));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    ["release", "debug"]
        .into_iter()
        .map(|profile| target.join(profile).join("parley-server"))
        .find(|p| p.is_file())
        .map(|p| p.canonicalize().unwrap_or(p))
}

/// A `parley-server` process and the database it owns; killed (and the database dropped) on
/// drop.
struct ServerProcess {
    child: Child,
    addr: std::net::SocketAddr,
    key: parley_server::auth::KeyFile,
    _dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

impl ServerProcess {
    async fn start(bin: &std::path::Path, db: Db) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let key_path = dir.path().join("parley.key");
        let key = parley_server::auth::KeyFile::load_or_create(&key_path).expect("a key file");
        let (url, pg) = match db {
            Db::Sqlite => (
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("parley.db").display()
                ),
                None,
            ),
            Db::Postgres => {
                let admin_url = std::env::var("PARLEY_TEST_DATABASE_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let name = format!("parley_bench_{}", uuid::Uuid::new_v4().simple());
                let admin = sea_orm::Database::connect(&admin_url)
                    .await
                    .expect("connect to PostgreSQL");
                exec(&admin, &format!("CREATE DATABASE \"{name}\"")).await;
                let _ = admin.close().await;
                (with_database(&admin_url, &name), Some((admin_url, name)))
            }
        };
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("a log file");
        let child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--database-url",
                &url,
            ])
            .arg("--key-file")
            .arg(&key_path)
            .args(["--rate-limit", "0", "--service-rate-limit", "0"])
            .args(["--max-participants", "1000000", "--log-format", "json"])
            .current_dir(dir.path())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let server = Self {
            child,
            addr,
            key,
            _dir: dir,
            pg,
        };
        server.wait_until_serving().await;
        server
    }

    /// Polls the health service until the server answers (it migrates its database first).
    async fn wait_until_serving(&self) {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel_to(self.addr));
        for _ in 0..600 {
            let request = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            if health.check(request).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("parley-server did not start serving within 30 s");
    }

    fn token(&self, sub: &str, kind: Kind) -> String {
        let mut claims = Claims::new(TENANT, sub, kind.claim(), Duration::from_secs(7200));
        if kind != Kind::Service {
            claims.email = Some(email_of(TENANT, sub));
        }
        self.key.mint(&claims).expect("mint a token")
    }

    /// (VmRSS, VmHWM) in MiB.
    fn memory(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map(|kb| kb / 1024.0)
                .unwrap_or(f64::NAN)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((admin_url, name)) = self.pg.take() {
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    if let Ok(admin) = sea_orm::Database::connect(&admin_url).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            ))
                            .await;
                        let _ = admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// One caller of the memory figure: a connection of its own and the owner's token.
#[derive(Clone)]
struct Client {
    channel: Channel,
    token: String,
}

impl Client {
    fn conv(&self) -> pb::conversation_service_client::ConversationServiceClient<Channel> {
        pb::conversation_service_client::ConversationServiceClient::new(self.channel.clone())
    }
    fn part(&self) -> pb::participant_service_client::ParticipantServiceClient<Channel> {
        pb::participant_service_client::ParticipantServiceClient::new(self.channel.clone())
    }
    fn dir(&self) -> pb::directory_service_client::DirectoryServiceClient<Channel> {
        pb::directory_service_client::DirectoryServiceClient::new(self.channel.clone())
    }

    async fn add(&self, conversation: &str, users: &[String]) -> Result<(), Status> {
        let msg = pb::AddParticipantsRequest {
            conversation_id: conversation.to_owned(),
            invitees: users.iter().map(|u| user_invitee(u)).collect(),
            // A user added before (the pool wraps around) is an outcome, not a failure.
            partial_success: true,
            request_id: request_id(),
        };
        self.part().add_participants(req(msg, &self.token)).await?;
        Ok(())
    }

    /// Call `j` of a caller's mix: GetConversation, ListParticipants(50), AddParticipants(1),
    /// SendMessage in turn.
    async fn mixed(&self, conversation: &str, j: usize, pool: &[String]) -> Result<(), Status> {
        match j % 4 {
            0 => {
                let msg = pb::GetConversationRequest {
                    id: conversation.to_owned(),
                };
                self.conv().get_conversation(req(msg, &self.token)).await?;
            }
            1 => {
                let msg = pb::ListParticipantsRequest {
                    conversation_id: conversation.to_owned(),
                    page_size: 50,
                    ..Default::default()
                };
                self.part().list_participants(req(msg, &self.token)).await?;
            }
            2 => {
                let user = &pool[(49 + j / 4) % pool.len()];
                self.add(conversation, std::slice::from_ref(user)).await?;
            }
            _ => {
                let msg = pb::SendMessageRequest {
                    conversation_id: conversation.to_owned(),
                    body: format!("message {j}"),
                    request_id: request_id(),
                };
                self.conv().send_message(req(msg, &self.token)).await?;
            }
        }
        Ok(())
    }
}

async fn rss(db: Db, sizes: &Sizes) -> Vec<Figure> {
    let name = format!("d. peak RSS, {RSS_CALLERS} callers, MiB/budget");
    let Some(bin) = server_binary() else {
        eprintln!(
            "rss ({}): no parley-server binary; run `cargo build --release -p parley-server`",
            db_name(db)
        );
        return vec![Figure {
            name,
            db,
            value: "no binary".into(),
            baseline: "-".into(),
            ratio: f64::NAN,
            bar: Bar::AtMost(1.0),
            errors: 1,
        }];
    };
    let load = sizes.rss_load();
    eprintln!(
        "rss ({}): {} under {RSS_CALLERS} callers for {load:.0?}",
        db_name(db),
        bin.display()
    );
    let server = ServerProcess::start(&bin, db).await;
    let (idle, _) = server.memory();

    // The directory: the owner and a pool of users to add.
    let pool: Arc<Vec<String>> = Arc::new((0..sizes.rss_pool()).map(seeded_user).collect());
    let service = Client {
        channel: channel_to(server.addr),
        token: server.token("svc-bench", Kind::Service),
    };
    let everyone: Arc<Vec<String>> = Arc::new(
        std::iter::once(OWNER.to_owned())
            .chain(pool.iter().cloned())
            .collect(),
    );
    let seeded = {
        let (service, everyone) = (service.clone(), everyone.clone());
        closed_loop(everyone.len(), IN_FLIGHT, move |_, i| {
            let (service, id) = (service.clone(), everyone[i].clone());
            async move {
                let user = pb::User {
                    display_name: display_name(&id),
                    email: email_of(TENANT, &id),
                    kind: pb::user::Kind::Internal as i32,
                    status: pb::user::Status::Active as i32,
                    id,
                    ..Default::default()
                };
                let msg = pb::UpsertUserRequest {
                    user: Some(user),
                    request_id: request_id(),
                };
                service.dir().upsert_user(req(msg, &service.token)).await?;
                Ok(())
            }
        })
        .await
    };

    // A conversation per caller, 50 participants each to start.
    let token = server.token(OWNER, Kind::Internal);
    let clients: Vec<Client> = (0..RSS_CALLERS)
        .map(|_| Client {
            channel: channel_to(server.addr),
            token: token.clone(),
        })
        .collect();
    let mut conversations = Vec::with_capacity(RSS_CALLERS);
    for client in &clients {
        let msg = pb::CreateConversationRequest {
            request_id: request_id(),
            kind: pb::conversation::Kind::Group as i32,
            title: "bench".into(),
            ..Default::default()
        };
        let id = client
            .conv()
            .create_conversation(req(msg, &client.token))
            .await
            .expect("CreateConversation")
            .into_inner()
            .id;
        client
            .add(&id, &pool[..49.min(pool.len())])
            .await
            .expect("AddParticipants of the first 49");
        conversations.push(id);
    }

    let deadline = Instant::now() + load;
    let calls = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = clients
        .into_iter()
        .zip(conversations)
        .map(|(client, conversation)| {
            let (pool, calls, failed) = (pool.clone(), calls.clone(), failed.clone());
            tokio::spawn(async move {
                let mut j = 0;
                while Instant::now() < deadline {
                    if let Err(e) = client.mixed(&conversation, j, &pool).await
                        && failed.fetch_add(1, Ordering::Relaxed) == 0
                    {
                        eprintln!("  a call failed: {:?} {}", e.code(), e.message());
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                    j += 1;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("a caller panicked");
    }
    let (now, peak) = server.memory();
    let calls = calls.load(Ordering::Relaxed);
    eprintln!(
        "  {calls} calls ({:.0}/s); VmRSS idle {idle:.1} MiB, after {now:.1} MiB, VmHWM {peak:.1} MiB",
        calls as f64 / load.as_secs_f64()
    );
    vec![Figure {
        name,
        db,
        value: format!("{peak:.1} MiB"),
        baseline: format!("idle {idle:.1} MiB"),
        ratio: peak / RSS_BUDGET_MIB,
        bar: Bar::AtMost(1.0),
        errors: failed.load(Ordering::Relaxed) + seeded.errors,
    }]
}

// ----- main --------------------------------------------------------------------------------

// ----- e. watches ----------------------------------------------------------------------------

/// Idle watches measured, and what they may add to the server's memory.
const IDLE_WATCHES: usize = 1_000;
const WATCHES_BUDGET_MIB: f64 = 32.0;
/// Users who hold the idle watches (each may hold at most 100 on a replica), one conversation
/// each.
const WATCHERS: usize = 20;

async fn idle_watches(db: Db) -> Vec<Figure> {
    let name = format!("e. {IDLE_WATCHES} idle watches, RSS added/budget");
    let Some(bin) = server_binary() else {
        eprintln!("watch ({}): no parley-server binary", db_name(db));
        return Vec::new();
    };
    eprintln!("watch ({}): {IDLE_WATCHES} idle watches", db_name(db));
    let server = ServerProcess::start(&bin, db).await;
    // Ten connections, a hundred streams each.
    let channels: Vec<Channel> = (0..10).map(|_| channel_to(server.addr)).collect();
    let mut watchers = Vec::new();
    for w in 0..WATCHERS {
        let user = Client {
            channel: channels[w % channels.len()].clone(),
            token: server.token(&format!("watcher{w}"), Kind::Internal),
        };
        let request = pb::CreateConversationRequest {
            request_id: request_id(),
            kind: pb::conversation::Kind::Group as i32,
            title: format!("watched {w}"),
            participant_ids: Vec::new(),
            policy: None,
        };
        let conversation = user
            .conv()
            .create_conversation(req(request, &user.token))
            .await
            .expect("create")
            .into_inner()
            .id;
        watchers.push((user, conversation));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (before, _) = server.memory();
    let mut streams = Vec::new();
    for i in 0..IDLE_WATCHES {
        let (user, conversation) = &watchers[i % WATCHERS];
        let mut conv = pb::conversation_service_client::ConversationServiceClient::new(
            channels[i % channels.len()].clone(),
        );
        let request = pb::WatchTimelineRequest {
            conversation_id: conversation.clone(),
            after_seq: 0,
        };
        let mut stream = conv
            .watch_timeline(req(request, &user.token))
            .await
            .expect("watch")
            .into_inner();
        // The backlog (the conversation's creation), so that the watch is idle after it.
        stream
            .message()
            .await
            .expect("a message")
            .expect("the backlog");
        streams.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, _) = server.memory();
    let added = after - before;
    eprintln!(
        "  VmRSS {before:.1} MiB before, {after:.1} MiB with {} watches open",
        streams.len()
    );
    vec![Figure {
        name,
        db,
        value: format!("{added:.1} MiB"),
        baseline: format!("before {before:.1} MiB"),
        ratio: added / WATCHES_BUDGET_MIB,
        bar: Bar::AtMost(1.0),
        errors: 0,
    }]
}

/// Messages whose delivery is timed.
const TIMED_MESSAGES: usize = 200;

/// From commit to arrival on `reader`'s watch of each of `writer`'s messages, sorted.
async fn watch_lags(writer: &Caller, reader: &Caller, conversation: &str) -> Vec<Duration> {
    let top = reader
        .timeline(conversation)
        .await
        .expect("timeline")
        .last()
        .map_or(0, |i| i.seq);
    let mut stream = reader
        .conv()
        .watch_timeline(reader.req(pb::WatchTimelineRequest {
            conversation_id: conversation.to_owned(),
            after_seq: top,
        }))
        .await
        .expect("watch")
        .into_inner();
    let mut lags = Vec::with_capacity(TIMED_MESSAGES);
    for m in 0..TIMED_MESSAGES {
        let sent = writer
            .send(conversation, &format!("m{m}"))
            .await
            .expect("send");
        let committed = sent
            .create_time
            .as_ref()
            .map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000)
            .expect("a create time");
        loop {
            let message = stream
                .message()
                .await
                .expect("a message")
                .expect("not the end");
            if let Some(pb::watch_timeline_response::Kind::Item(item)) = message.kind
                && item.seq == sent.seq
            {
                break;
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        lags.push(Duration::from_micros((now - committed).max(0) as u64));
        // The next write at another moment of the poll's period (250 ms): received items are
        // in step with the poll, so a fixed pause would measure one moment of it.
        tokio::time::sleep(Duration::from_millis((m as u64 * 97) % 250)).await;
    }
    lags.sort();
    lags
}

async fn watch_latency(db: Db) -> Vec<Figure> {
    eprintln!(
        "watch ({}): commit to arrival, {TIMED_MESSAGES} messages",
        db_name(db)
    );
    let (app, owner, conversation) = app_with_conversation(db).await;
    let replica = app.replica().await;
    let other = replica.serve(&owner);
    let mut figures = Vec::new();
    for (what, writer) in [("same replica", &owner), ("across replicas", &other)] {
        let lags = watch_lags(writer, &owner, &conversation).await;
        let median = lags[lags.len() / 2];
        let p99 = lags[(lags.len() * 99 / 100).min(lags.len() - 1)];
        figures.push(Figure {
            name: format!("f. watch delivery, {what}: p99/1s"),
            db,
            value: format!("p99 {:.1} ms", p99.as_secs_f64() * 1000.0),
            baseline: format!("p50 {:.1} ms", median.as_secs_f64() * 1000.0),
            ratio: p99.as_secs_f64(),
            bar: Bar::AtMost(1.0),
            errors: 0,
        });
    }
    figures
}

fn main() {
    // `cargo bench` passes `--bench`; anything else names figures or databases.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut figures: Vec<&str> = ["sync", "add", "timeline", "rss", "watch"]
        .into_iter()
        .filter(|f| args.iter().any(|a| a == f))
        .collect();
    if figures.is_empty() {
        figures = vec!["sync", "add", "timeline", "rss", "watch"];
    }
    let mut dbs: Vec<Db> = [(Db::Sqlite, "sqlite"), (Db::Postgres, "postgres")]
        .into_iter()
        .filter(|(_, name)| {
            args.iter()
                .any(|a| a == name || (a == "pg" && *name == "postgres"))
        })
        .map(|(db, _)| db)
        .collect();
    if dbs.is_empty() {
        dbs = vec![Db::Sqlite, Db::Postgres];
    }
    for a in &args {
        let known = [
            "sync", "add", "timeline", "rss", "watch", "sqlite", "postgres", "pg",
        ];
        assert!(
            known.contains(&a.as_str()),
            "unknown argument {a:?}: expected {known:?}"
        );
    }
    let sizes = Sizes::from_env();
    eprintln!(
        "growth bench: scale {}, figures {figures:?}, databases {:?}",
        sizes.scale,
        dbs.iter().map(|d| db_name(*d)).collect::<Vec<_>>()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    let mut table = Vec::new();
    for db in dbs {
        for figure in &figures {
            let rows = runtime.block_on(async {
                match *figure {
                    "sync" => sync(db, &sizes).await,
                    "add" => add(db, &sizes).await,
                    "timeline" => timeline(db, &sizes).await,
                    "watch" => {
                        let mut rows = idle_watches(db).await;
                        rows.extend(watch_latency(db).await);
                        rows
                    }
                    _ => rss(db, &sizes).await,
                }
            });
            for row in &rows {
                eprintln!("  {}", row.line());
            }
            table.extend(rows);
        }
    }
    println!("{}", header());
    for row in &table {
        println!("{}", row.line());
    }
    println!("(scale {}, {:.0?} in all)", sizes.scale, started.elapsed());
}
