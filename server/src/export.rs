//! The export of every timeline item to NATS JetStream (SPEC §7, Export), when `--nats-url`
//! is set.
//!
//! **What is owed.** The timeline is the outbox: an item is written in the transaction that
//! makes it, so a conversation owes JetStream every item after its `done_seq` in
//! `export_cursors` (`store::export`, migration 18), which moves only after JetStream
//! acknowledged the publish. The write path writes nothing more for export: measured on
//! PostgreSQL, an outbox row written with each item (an upsert per conversation per write)
//! cost AddParticipants(1) 4-5 % of its throughput by itself.
//!
//! **Who publishes.** Each replica's exporter keeps the conversations it knows to owe items
//! ([`Marks`]): those its own commits added items to, handed the items themselves at commit
//! ([`Marks::mark`], at most [`MAX_ITEMS_IN_HAND`] in all), and those a sweep of
//! `conversations` finds behind (`last_seq > done_seq`): writes of replicas that died, and the
//! history when export is first turned on. The sweep reads [`SWEEP_PAGE`] conversations per
//! statement, a page every [`SWEEP_PAUSE`], a pass every `--export-sweep-interval`: its cost
//! per second does not grow with the table, the time a pass takes does.
//!
//! **A round**, at most one per [`PACE`], takes up to [`ROUND`] owed conversations. Those this
//! replica does not hold yet are leased in `export_cursors` in one statement (one another
//! replica holds is tried again after [`BUSY_RETRY`]). Items in hand that follow what is
//! done are published as they are; for the others up to [`READ_PER_ROUND`] items in all
//! (shared among them, at least [`BATCH`] each) are read in one
//! statement. Each conversation's items go in seq order, one in flight, the conversations in
//! parallel. So a replica busy with its own writes reads and writes nothing per round.
//!
//! **Progress** is kept in memory and written every [`FLUSH`], in one statement for all the
//! conversations that moved, which also renews their leases and gives back those idle for
//! [`IDLE`] (all of them at shutdown). A conversation written from several replicas is held by
//! one at a time; the others' items reach it at its next read, or when it is given back.

//! **Nothing twice.** Each message carries `Nats-Msg-Id: <tenant>/<conversation>/<seq>`, and
//! the stream's duplicate window (`--export-duplicate-window`, 2 minutes by default) drops a
//! second copy. A conversation whose previous holder did not give it back (killed, lease run
//! out), or whose publish failed (NATS down: was it stored?), is first looked up in the stream
//! (the last message on its subject) and resumes after what JetStream has, so a re-publish
//! happens only for what the stream does not hold.
//!
//! **Subjects.** `parley.<tenant>.<conversation>`, each part a subject token: bytes other than
//! ASCII letters, digits, `-` and `_` are written `%XX` (upper-case hex), `%` included; an
//! empty part is `%`. The same encoding names the tenant in `Nats-Msg-Id`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::jetstream;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use prost::Message as _;

use crate::domain::model::{Entry, TimelineItem, micros, now_micros};
use crate::domain::visibility::audience;
use crate::lock;
use crate::store::{self, export as cursors};

/// The stream Parley publishes to.
pub const STREAM: &str = "PARLEY";
/// The subjects of [`STREAM`].
pub const SUBJECTS: &str = "parley.>";

/// Conversations one round takes.
pub const ROUND: usize = 256;
/// Items of one conversation one round publishes at most.
pub const BATCH: i64 = 50;
/// Items one round reads from the database at most, shared among its conversations: a
/// conversation far behind alone reads this many per round.
pub const READ_PER_ROUND: i64 = 10_000;
/// The least time between the starts of two rounds: commits told in between join the next
/// one, so a busy replica runs at most 50 rounds a second, each with more in it.
pub const PACE: Duration = Duration::from_millis(20);
/// When a conversation another replica holds is tried again.
pub const BUSY_RETRY: Duration = Duration::from_millis(250);
/// The longest wait before trying a failing conversation again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Conversations one statement of the sweep reads.
pub const SWEEP_PAGE: u64 = 1_000;
/// The pause between two pages of the sweep.
pub const SWEEP_PAUSE: Duration = Duration::from_millis(100);
/// How long JetStream has to acknowledge a publish or answer a request.
pub const NATS_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a failing export is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// How a replica exports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportConfig {
    /// The NATS server(s), as async-nats takes them (`nats://host:4222`, comma-separated).
    pub nats_url: String,
    /// The duplicate window Parley sets on the stream.
    pub duplicate_window: Duration,
    /// How long a replica holds a conversation it exports.
    pub lease: Duration,
    /// The pause between two passes of the sweep.
    pub sweep_interval: Duration,
}

impl ExportConfig {
    /// Export to `nats_url` with the default settings.
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            duplicate_window: Duration::from_secs(120),
            lease: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(10),
        }
    }

    /// Refuses settings an exporter cannot run with.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.duplicate_window.is_zero() || self.lease.is_zero() {
            anyhow::bail!("--export-duplicate-window and --export-lease must be longer than 0");
        }
        if self.lease <= NATS_TIMEOUT {
            anyhow::bail!(
                "--export-lease must be longer than {NATS_TIMEOUT:?}, the time JetStream has \
                 to acknowledge a publish"
            );
        }
        if self.duplicate_window <= self.lease {
            anyhow::bail!(
                "--export-duplicate-window must be longer than --export-lease, so that a \
                 conversation taken over is re-published within it"
            );
        }
        Ok(())
    }
}

/// Whether a server of this process exports: only then do writes keep their items for it.
static COLLECTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether writes keep their items for an exporter of this process.
pub fn collecting() -> bool {
    COLLECTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// `part` as one subject token (see the module documentation).
pub fn subject_token(part: &str) -> String {
    if part.is_empty() {
        return "%".to_owned();
    }
    let mut out = String::with_capacity(part.len());
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The subject of a conversation's items.
pub fn subject(tenant_id: &str, conversation_id: &str) -> String {
    format!(
        "parley.{}.{}",
        subject_token(tenant_id),
        subject_token(conversation_id)
    )
}

/// The `Nats-Msg-Id` of an item.
pub fn message_id(tenant_id: &str, conversation_id: &str, seq: i64) -> String {
    format!(
        "{}/{}/{seq}",
        subject_token(tenant_id),
        subject_token(conversation_id)
    )
}

/// The seq a `Nats-Msg-Id` names, if it is one of Parley's.
pub fn seq_of_message_id(id: &str) -> Option<i64> {
    id.rsplit('/').next()?.parse().ok()
}

/// The export's metrics (`parley_export_*`), registered whether export is on or not.
#[derive(Clone, Debug)]
pub struct ExportMetrics {
    /// Items owed to JetStream, as of the sweep's last pass.
    pub backlog_items: Gauge,
    /// Conversations owing items, as of the sweep's last pass.
    pub backlog_conversations: Gauge,
    /// Age of the oldest item owed that this replica knows of.
    pub backlog_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Items JetStream acknowledged.
    pub published: Counter,
    /// Publishes that failed.
    pub failures: Counter,
    /// Publishes JetStream acknowledged as duplicates (dropped by its duplicate window).
    pub duplicates: Counter,
    /// Time from an item's write to JetStream's acknowledgement of it.
    pub lag: prometheus_client::metrics::histogram::Histogram,
}

impl Default for ExportMetrics {
    fn default() -> Self {
        Self {
            backlog_items: Gauge::default(),
            backlog_conversations: Gauge::default(),
            backlog_age: Gauge::default(),
            published: Counter::default(),
            failures: Counter::default(),
            duplicates: Counter::default(),
            lag: prometheus_client::metrics::histogram::Histogram::new(LAG_BUCKETS),
        }
    }
}

/// Upper bounds of the lag buckets, in seconds: 1 ms to 60 s, finest around a round's pace.
const LAG_BUCKETS: [f64; 20] = [
    0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A conversation known to owe items.
#[derive(Clone, Debug)]
struct Owed {
    /// When its oldest owed item was made, as far as known (microseconds).
    since: i64,
    /// Not before then.
    at: Instant,
    /// Failed rounds in a row.
    failures: u32,
    /// Look up what the stream holds before publishing.
    unsure: bool,
    /// The conversation's tenant, when a commit here told it.
    tenant: Option<String>,
    /// Items committed here, as the commits handed them (any order, possibly repeated).
    items: Vec<TimelineItem>,
    /// Read what is owed from the database: the items in hand may not be all of it (found
    /// by the sweep, a batch cut short, a failure, items dropped past [`MAX_ITEMS_IN_HAND`]).
    read: bool,
}

impl Owed {
    /// Owed items to be read from the database.
    fn read(since: i64) -> Self {
        Self {
            since,
            at: Instant::now(),
            failures: 0,
            unsure: false,
            tenant: None,
            items: Vec::new(),
            read: true,
        }
    }

    /// A round failed for it: tried again after [`backoff`], reading what is owed and first
    /// what the stream holds (was the last publish stored?).
    fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
        self.at = Instant::now() + backoff(self.failures);
        self.unsure = true;
        self.read = true;
        self.items = Vec::new();
    }

    fn merge(&mut self, other: Owed) {
        self.since = self.since.min(other.since);
        self.at = self.at.min(other.at);
        self.failures = self.failures.max(other.failures);
        self.unsure |= other.unsure;
        self.read |= other.read;
        if self.tenant.is_none() {
            self.tenant = other.tenant;
        }
        self.items.extend(other.items);
    }
}

/// Items a replica keeps in hand from its commits, in all: past it, a commit's items are read
/// back from the database instead, so memory stays bounded while NATS is down.
pub const MAX_ITEMS_IN_HAND: usize = 10_000;
/// Conversations a replica keeps owed in memory: past half of it, the sweep waits.
pub const MAX_OWED: usize = 20_000;

/// The conversations a replica's exporter knows to owe items.
#[derive(Default)]
pub struct Marks {
    owed: Mutex<HashMap<String, Owed>>,
    wake: tokio::sync::Notify,
    /// Items in hand, in all the entries of `owed`.
    in_hand: std::sync::atomic::AtomicUsize,
}

impl Marks {
    /// A write committed on this replica added `items` to conversations of `tenant_id`.
    pub fn mark(&self, tenant_id: &str, items: Vec<TimelineItem>) {
        use std::sync::atomic::Ordering;
        if items.is_empty() {
            return;
        }
        let now = now_micros();
        let keep = self.in_hand.load(Ordering::Relaxed) + items.len() <= MAX_ITEMS_IN_HAND;
        {
            let mut owed = lock(&self.owed);
            for item in items {
                let entry = owed
                    .entry(item.conversation_id.clone())
                    .or_insert_with(|| Owed {
                        tenant: Some(tenant_id.to_owned()),
                        read: false,
                        ..Owed::read(now)
                    });
                if keep {
                    entry.items.push(item);
                    self.in_hand.fetch_add(1, Ordering::Relaxed);
                } else {
                    entry.read = true;
                }
            }
        }
        self.wake.notify_one();
    }

    fn put(&self, id: String, owed: Owed) {
        self.in_hand
            .fetch_add(owed.items.len(), std::sync::atomic::Ordering::Relaxed);
        match lock(&self.owed).entry(id) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().merge(owed),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(owed);
            }
        }
    }

    /// Conversations owed now.
    fn len(&self) -> usize {
        lock(&self.owed).len()
    }

    /// Up to `limit` conversations due now, taken out; or when the next one is due.
    fn take(&self, limit: usize) -> Result<Vec<(String, Owed)>, Option<Instant>> {
        let now = Instant::now();
        let mut owed = lock(&self.owed);
        let due: Vec<String> = owed
            .iter()
            .filter(|(_, o)| o.at <= now)
            .take(limit)
            .map(|(id, _)| id.clone())
            .collect();
        if due.is_empty() {
            return Err(owed.values().map(|o| o.at).min());
        }
        let taken: Vec<(String, Owed)> = due
            .into_iter()
            .filter_map(|id| owed.remove(&id).map(|o| (id, o)))
            .collect();
        let items: usize = taken.iter().map(|(_, o)| o.items.len()).sum();
        self.in_hand
            .fetch_sub(items, std::sync::atomic::Ordering::Relaxed);
        Ok(taken)
    }

    /// The oldest owed item this replica knows of (microseconds), if any.
    fn oldest(&self) -> Option<i64> {
        lock(&self.owed).values().map(|o| o.since).min()
    }
}

/// A replica's connection to JetStream.
pub struct Link {
    js: jetstream::Context,
    config: ExportConfig,
    /// The stream was found fitting (or made) since the last failure.
    ready: std::sync::atomic::AtomicBool,
}

/// Why the stream cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(
        "the NATS stream {STREAM} exists with subjects {0:?}, which do not include {SUBJECTS}: \
         Parley publishes to {SUBJECTS}; change or delete the stream"
    )]
    Mismatch(Vec<String>),
    #[error("JetStream did not answer: {0}")]
    Unreachable(String),
}

impl Link {
    /// Connects to NATS (in the background if it is down) and makes or checks the stream:
    /// a stream whose subjects do not fit refuses the start. A NATS that does not answer
    /// within [`NATS_TIMEOUT`] is logged and tried again by the exporter.
    pub async fn connect(config: ExportConfig) -> anyhow::Result<Self> {
        config.check()?;
        let client = async_nats::ConnectOptions::new()
            .name("parley")
            .retry_on_initial_connect()
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| anyhow::anyhow!("--nats-url {}: {e}", config.nats_url))?;
        let mut js = jetstream::new(client);
        js.set_timeout(NATS_TIMEOUT);
        let link = Self {
            js,
            config,
            ready: Default::default(),
        };
        match link.ensure_stream().await {
            Ok(()) => {}
            Err(e @ StreamError::Mismatch(_)) => return Err(e.into()),
            Err(StreamError::Unreachable(e)) => {
                tracing::warn!(error = %e, nats_url = %link.config.nats_url,
                    "NATS is not reachable yet: the export starts when it is; writes go on")
            }
        }
        Ok(link)
    }

    /// Makes the stream if missing, or checks its subjects and sets its duplicate window.
    async fn ensure_stream(&self) -> Result<(), StreamError> {
        use std::sync::atomic::Ordering;
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let unreachable = |e: &dyn std::fmt::Display| StreamError::Unreachable(e.to_string());
        let window = self.config.duplicate_window;
        let found = tokio::time::timeout(NATS_TIMEOUT, self.js.get_stream(STREAM))
            .await
            .map_err(|e| unreachable(&e))?;
        match found {
            Ok(mut stream) => {
                let info = stream.info().await.map_err(|e| unreachable(&e))?;
                let mut config = info.config.clone();
                if !config.subjects.iter().any(|s| s == SUBJECTS) {
                    return Err(StreamError::Mismatch(config.subjects));
                }
                if config.duplicate_window != window {
                    config.duplicate_window = window;
                    self.js
                        .update_stream(config)
                        .await
                        .map_err(|e| unreachable(&e))?;
                }
            }
            Err(e)
                if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                self.js
                    .create_stream(jetstream::stream::Config {
                        name: STREAM.to_owned(),
                        subjects: vec![SUBJECTS.to_owned()],
                        duplicate_window: window,
                        storage: jetstream::stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| unreachable(&e))?;
            }
            Err(e) => return Err(unreachable(&e)),
        }
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// The seq of the last item the stream holds for the conversation, if any.
    async fn stored_top(&self, tenant_id: &str, conversation_id: &str) -> Result<i64, String> {
        let stream = self
            .js
            .get_stream_no_info(STREAM)
            .await
            .map_err(|e| e.to_string())?;
        match stream
            .get_last_raw_message_by_subject(&subject(tenant_id, conversation_id))
            .await
        {
            Ok(message) => Ok(message
                .headers
                .get("Nats-Msg-Id")
                .and_then(|id| seq_of_message_id(id.as_str()))
                .unwrap_or(0)),
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Publishes `items` (one conversation's, in seq order) one at a time, each after the
    /// previous one's acknowledgement; returns the last seq acknowledged and the error that
    /// stopped it, if any. Each acknowledgement's lag from the item's write, and whether it
    /// was a duplicate, go to `metrics`.
    async fn publish(
        &self,
        tenant_id: &str,
        items: &[TimelineItem],
        metrics: &ExportMetrics,
    ) -> (Option<i64>, Option<String>) {
        let mut acked = None;
        for item in items {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                message_id(tenant_id, &item.conversation_id, item.seq).as_str(),
            );
            let kind = match item.entry {
                Entry::Message { .. } => "message",
                Entry::Event { .. } => "event",
            };
            headers.insert("Parley-Item", kind);
            headers.insert("Parley-Visibility", audience(item).as_str());
            let body = crate::api::convert::timeline_item(item).encode_to_vec();
            let sent = self
                .js
                .publish_with_headers(
                    subject(tenant_id, &item.conversation_id),
                    headers,
                    body.into(),
                )
                .await;
            let result = match sent {
                Ok(ack) => ack.await.map_err(|e| e.to_string()).map(|ack| {
                    if ack.duplicate {
                        metrics.duplicates.inc();
                    }
                }),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = result {
                return (acked, Some(e));
            }
            metrics
                .lag
                .observe((now_micros() - item.create_time).max(0) as f64 / 1e6);
            acked = Some(item.seq);
        }
        (acked, None)
    }
}

/// A conversation this replica holds the lease of.
#[derive(Clone, Debug)]
struct Held {
    /// Its tenant, once read.
    tenant: Option<String>,
    /// JetStream acknowledged every item up to this one.
    done: i64,
    /// What `export_cursors` says (it trails `done` by up to [`FLUSH`]).
    recorded: i64,
    /// The lease as last written.
    lease_until: Instant,
    /// The last round that took it.
    active: Instant,
    /// Look up what the stream holds before the next publish.
    unsure: bool,
}

/// How often a replica writes how far its conversations got, renews their leases and gives
/// back those idle for [`IDLE`].
pub const FLUSH: Duration = Duration::from_secs(1);
/// How long a conversation with nothing to export stays held.
pub const IDLE: Duration = Duration::from_secs(2);

/// What one replica's exporter needs.
pub struct Exporter {
    pub link: Arc<Link>,
    pub marks: Arc<Marks>,
    pub writer: store::Writer,
    pub db: store::Conn,
    pub metrics: ExportMetrics,
    /// This replica's name in `export_cursors.holder`.
    pub holder: String,
    /// The conversations it holds.
    held: Mutex<HashMap<String, Held>>,
}

impl Exporter {
    pub fn new(
        link: Arc<Link>,
        marks: Arc<Marks>,
        writer: store::Writer,
        db: store::Conn,
        metrics: ExportMetrics,
    ) -> Self {
        COLLECTING.store(true, std::sync::atomic::Ordering::Relaxed);
        Self {
            link,
            marks,
            writer,
            db,
            metrics,
            holder: uuid::Uuid::new_v4().simple().to_string(),
            held: Mutex::default(),
        }
    }

    /// Runs the rounds, the flushes and the sweep until `closing` turns true, then records
    /// what was published and gives every conversation back.
    pub async fn run(self: Arc<Self>, mut closing: tokio::sync::watch::Receiver<bool>) {
        let sweep = tokio::spawn(self.clone().sweep(closing.clone()));
        let mut log = LogGate::default();
        let mut flush = tokio::time::interval(FLUSH);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pace = tokio::time::interval(PACE);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            pace.tick().await;
            if *closing.borrow() {
                break;
            }
            let due = match self.marks.take(ROUND) {
                Ok(due) => due,
                Err(next) => {
                    let sleep = next.map_or(Duration::from_secs(3600), |at| {
                        at.saturating_duration_since(Instant::now())
                    });
                    enum Woken {
                        Marked,
                        Due,
                        Flush,
                        Closing,
                    }
                    let woken = tokio::select! {
                        _ = self.marks.wake.notified() => Woken::Marked,
                        _ = tokio::time::sleep(sleep) => Woken::Due,
                        _ = flush.tick() => Woken::Flush,
                        _ = closing.wait_for(|c| *c) => Woken::Closing,
                    };
                    match woken {
                        Woken::Marked => {}
                        Woken::Due => {}
                        Woken::Flush => self.flush(false, &mut log).await,
                        Woken::Closing => break,
                    }
                    continue;
                }
            };
            if let Err(e) = self.link.ensure_stream().await {
                self.failed(due, &e.to_string(), &mut log);
                continue;
            }
            self.round(due, &mut log).await;
            // A busy exporter still flushes on time.
            if tokio::time::timeout(Duration::ZERO, flush.tick())
                .await
                .is_ok()
            {
                self.flush(false, &mut log).await;
            }
        }
        sweep.abort();
        self.flush(true, &mut log).await;
    }

    /// Puts `due` back to be tried after a backoff, and logs (at most every [`LOG_EVERY`]).
    fn failed(&self, due: Vec<(String, Owed)>, error: &str, log: &mut LogGate) {
        for (id, mut owed) in due {
            owed.failed();
            self.marks.put(id, owed);
        }
        self.metrics.failures.inc();
        self.warn(log, error);
    }

    /// Logs that the export fails, with the backlog, at most every [`LOG_EVERY`].
    fn warn(&self, log: &mut LogGate, error: &str) {
        if !log.open() {
            return;
        }
        let age = self
            .marks
            .oldest()
            .map_or(0.0, |since| (now_micros() - since).max(0) as f64 / 1e6);
        tracing::warn!(
            error,
            backlog_items = self.metrics.backlog_items.get(),
            backlog_conversations = self.metrics.backlog_conversations.get(),
            backlog_age_seconds = age,
            "the export to NATS is failing; writes go on and the backlog waits in the database"
        );
    }

    /// One round over `due` (see the module documentation); what fails is put back to be
    /// tried again after a backoff.
    async fn round(&self, due: Vec<(String, Owed)>, log: &mut LogGate) {
        let now = now_micros();
        let lease = self.link.config.lease;
        // Conversations held with a lease that outlasts the round need no claim (the flush
        // renews a lease with less than half of it left).
        let margin = Instant::now() + lease / 4;
        let unheld: Vec<String> = {
            let held = lock(&self.held);
            due.iter()
                .filter(|(id, _)| held.get(id).is_none_or(|h| h.lease_until <= margin))
                .map(|(id, _)| id.clone())
                .collect()
        };
        if !unheld.is_empty() {
            let until = now.saturating_add(micros(lease));
            let claimed = async {
                let tx = self.writer.begin().await?;
                let claimed = cursors::claim(&tx, &self.holder, &unheld, now, until).await?;
                tx.commit().await?;
                Ok::<_, crate::error::Error>(claimed)
            }
            .await;
            let claimed = match claimed {
                Ok(claimed) => claimed,
                Err(e) => {
                    self.failed(due, &format!("leasing conversations: {e}"), log);
                    return;
                }
            };
            let mut held = lock(&self.held);
            for c in claimed {
                // A holder still on the row is one whose record of what it published may
                // not have landed: another replica, or this one having forgotten it.
                let known = held.remove(&c.conversation_id);
                let unsure = c.prior.as_deref().is_some_and(|p| p != self.holder)
                    || (c.prior.is_some() && known.is_none());
                held.insert(
                    c.conversation_id,
                    Held {
                        tenant: known.as_ref().and_then(|k| k.tenant.clone()),
                        done: c.done_seq.max(known.as_ref().map_or(0, |k| k.done)),
                        recorded: c.done_seq,
                        lease_until: Instant::now() + lease,
                        active: Instant::now(),
                        unsure: unsure || known.is_some_and(|k| k.unsure),
                    },
                );
            }
        }
        // What to publish: the conversations held now, each after what it has done.
        let mut work: Vec<(String, Held, Owed)> = Vec::new();
        {
            let held = lock(&self.held);
            for (id, owed) in due {
                match held.get(&id) {
                    Some(h) if h.lease_until > margin => {
                        let mut h = h.clone();
                        h.unsure |= owed.unsure;
                        work.push((id, h, owed));
                    }
                    // Held elsewhere: tried again soon, in case the holder gives it back
                    // before seeing this replica's items.
                    _ => {
                        let mut owed = owed;
                        owed.at = Instant::now() + BUSY_RETRY;
                        self.marks.put(id, owed);
                    }
                }
            }
        }
        if work.is_empty() {
            return;
        }
        // Items in hand that follow what is done without a gap are published as they are;
        // the others are read from the database, one statement for all.
        let mut sources: Vec<(String, Held, Owed, Option<InHand>)> = Vec::with_capacity(work.len());
        for (id, h, mut owed) in work {
            let mut items = std::mem::take(&mut owed.items);
            items.sort_by_key(|i| i.seq);
            items.dedup_by_key(|i| i.seq);
            items.retain(|i| i.seq > h.done);
            let follows = items
                .iter()
                .enumerate()
                .all(|(n, i)| i.seq == h.done + 1 + n as i64);
            let tenant = owed.tenant.clone().or_else(|| h.tenant.clone());
            let in_hand = match tenant {
                Some(tenant) if !owed.read && follows => Some((tenant, items)),
                _ => None,
            };
            sources.push((id, h, owed, in_hand));
        }
        let to_read = sources.iter().filter(|s| s.3.is_none()).count();
        let each = (READ_PER_ROUND / i64::try_from(to_read.max(1)).unwrap_or(1)).max(BATCH);
        let wanted: Vec<(String, i64, i64)> = sources
            .iter()
            .filter(|(_, _, _, in_hand)| in_hand.is_none())
            .map(|(id, h, _, _)| (id.clone(), h.done, h.done + each))
            .collect();
        let mut found = match cursors::items(&self.db, &wanted).await {
            Ok(found) => found,
            Err(e) => {
                let due = sources
                    .into_iter()
                    .map(|(id, _, owed, _)| (id, owed))
                    .collect();
                self.failed(due, &format!("reading the items to export: {e}"), log);
                return;
            }
        };
        let runs = sources.into_iter().map(|(id, h, owed, in_hand)| {
            let from_db = in_hand.is_none();
            let (tenant, items) = in_hand.or_else(|| found.remove(&id)).unwrap_or_default();
            async move {
                let mut done = h.done;
                let mut error = None;
                if h.unsure && !items.is_empty() {
                    match self.link.stored_top(&tenant, &id).await {
                        Ok(top) => done = done.max(top),
                        Err(e) => error = Some(e),
                    }
                }
                if error.is_none() {
                    let pending: Vec<TimelineItem> =
                        items.iter().filter(|i| i.seq > done).cloned().collect();
                    let (acked, failed) = self.link.publish(&tenant, &pending, &self.metrics).await;
                    if let Some(seq) = acked {
                        self.metrics
                            .published
                            .inc_by(u64::try_from(seq - done).unwrap_or(0));
                        done = seq;
                    }
                    error = failed;
                }
                let next_since = items.iter().find(|i| i.seq > done).map(|i| i.create_time);
                let tenant = (!tenant.is_empty()).then_some(tenant);
                let full = from_db && items.len() as i64 >= each;
                (id, h, owed, full, done, error, next_since, tenant)
            }
        });
        let mut first_error = None;
        for (id, h, owed, full, done, error, next_since, tenant) in
            futures::future::join_all(runs).await
        {
            if let Some(h) = lock(&self.held).get_mut(&id) {
                h.done = h.done.max(done);
                h.active = Instant::now();
                h.unsure = error.is_some();
                if h.tenant.is_none() {
                    h.tenant = tenant;
                }
            }
            let _ = h;
            if let Some(error) = error {
                let mut owed = owed;
                owed.failed();
                owed.since = next_since.unwrap_or(owed.since);
                self.metrics.failures.inc();
                first_error.get_or_insert(error);
                self.marks.put(id, owed);
            } else if full {
                // More may follow the batch.
                self.marks.put(id, Owed::read(next_since.unwrap_or(now)));
            }
        }
        if let Some(error) = first_error {
            // The stream may be gone (deleted, or NATS restarted without its store): the next
            // round looks for it again, and makes it if missing.
            self.link
                .ready
                .store(false, std::sync::atomic::Ordering::Release);
            self.warn(log, &error);
        }
    }

    /// Writes how far each held conversation got, renews the leases of those in use and
    /// gives back those idle for [`IDLE`] (all of them when `all`); one statement. A
    /// conversation no longer held (its lease ran out and another replica took it) is
    /// forgotten here.
    async fn flush(&self, all: bool, log: &mut LogGate) {
        let now = Instant::now();
        let lines: Vec<cursors::Settled> = {
            let held = lock(&self.held);
            let owed = lock(&self.marks.owed);
            held.iter()
                .filter_map(|(id, h)| {
                    let keep =
                        !all && (now.duration_since(h.active) < IDLE || owed.contains_key(id));
                    let renew = h.lease_until < now + self.link.config.lease / 2;
                    (h.done > h.recorded || !keep || renew).then(|| cursors::Settled {
                        conversation_id: id.clone(),
                        done_seq: h.done,
                        keep,
                    })
                })
                .collect()
        };
        if lines.is_empty() {
            return;
        }
        let until = now_micros().saturating_add(micros(self.link.config.lease));
        let mut settled = Vec::new();
        for chunk in lines.chunks(cursors::PER_STATEMENT) {
            let result = async {
                let tx = self.writer.begin().await?;
                let still = cursors::settle(&tx, &self.holder, chunk, until).await?;
                tx.commit().await?;
                Ok::<_, crate::error::Error>(still)
            }
            .await;
            match result {
                Ok(still) => settled.push((chunk, still)),
                Err(e) => {
                    self.metrics.failures.inc();
                    self.warn(log, &format!("recording the export's progress: {e}"));
                }
            }
        }
        let mut held = lock(&self.held);
        for (chunk, still) in settled {
            let still: std::collections::HashSet<String> = still.into_iter().collect();
            for line in chunk {
                if !still.contains(&line.conversation_id) || !line.keep {
                    held.remove(&line.conversation_id);
                } else if let Some(h) = held.get_mut(&line.conversation_id) {
                    h.recorded = line.done_seq;
                    h.lease_until = now + self.link.config.lease;
                }
            }
        }
    }

    /// Walks `conversations` forever at a bounded rate, handing those behind to the rounds
    /// and counting the backlog.
    async fn sweep(self: Arc<Self>, mut closing: tokio::sync::watch::Receiver<bool>) {
        loop {
            let mut after = String::new();
            let (mut items, mut conversations, mut oldest) = (0_i64, 0_i64, None::<i64>);
            let mut whole = true;
            loop {
                // A backlog larger than memory is taken a part at a time.
                while self.marks.len() >= MAX_OWED / 2 {
                    tokio::select! {
                        _ = tokio::time::sleep(SWEEP_PAUSE) => {}
                        _ = closing.wait_for(|c| *c) => return,
                    }
                }
                let page = match cursors::scan(&self.db, &after, SWEEP_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error = %e, "the export's sweep failed; tried again");
                        whole = false;
                        break;
                    }
                };
                let mut found = 0;
                {
                    let held = lock(&self.held);
                    for row in &page {
                        // What this replica holds it knows better than the table.
                        let done = held
                            .get(&row.conversation_id)
                            .map_or(row.done_seq, |h| h.done.max(row.done_seq));
                        if row.last_seq <= done {
                            continue;
                        }
                        items += row.last_seq - done;
                        conversations += 1;
                        found += 1;
                        let since = match row.oldest {
                            Some(t) if done == row.done_seq => t,
                            _ => now_micros(),
                        };
                        oldest = Some(oldest.map_or(since, |o| o.min(since)));
                        self.marks
                            .put(row.conversation_id.clone(), Owed::read(since));
                    }
                }
                if found > 0 {
                    self.marks.wake.notify_one();
                }
                match page.last() {
                    Some(last) if page.len() as u64 == SWEEP_PAGE => {
                        after = last.conversation_id.clone()
                    }
                    _ => break,
                }
                tokio::select! {
                    _ = tokio::time::sleep(SWEEP_PAUSE) => {}
                    _ = closing.wait_for(|c| *c) => return,
                }
            }
            if whole {
                self.metrics.backlog_items.set(items);
                self.metrics.backlog_conversations.set(conversations);
                let age = |since: i64| (now_micros() - since).max(0) as f64 / 1e6;
                let age = oldest
                    .map_or(0.0, age)
                    .max(self.marks.oldest().map_or(0.0, age));
                self.metrics.backlog_age.set(age);
                if items > 0 && age >= LOG_EVERY.as_secs_f64() {
                    tracing::warn!(
                        backlog_items = items,
                        backlog_conversations = conversations,
                        backlog_age_seconds = age,
                        "the export to NATS is behind"
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.link.config.sweep_interval) => {}
                _ = closing.wait_for(|c| *c) => return,
            }
        }
    }
}

/// A conversation's tenant and the items in hand to publish for it.
type InHand = (String, Vec<TimelineItem>);

/// Lets a warning through at most every [`LOG_EVERY`].
#[derive(Default)]
struct LogGate(Option<Instant>);

impl LogGate {
    fn open(&mut self) -> bool {
        if self.0.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return false;
        }
        self.0 = Some(Instant::now());
        true
    }
}

/// The wait before trying again after `failures` failed rounds in a row: 100 ms doubling, up
/// to [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    (Duration::from_millis(100) * (1_u32 << shift)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subject tokens keep letters, digits, `-` and `_`, and write every other byte as `%XX`,
    /// so no tenant can reach another's subject or add a token.
    #[test]
    fn tenants_are_encoded_as_one_subject_token() {
        assert_eq!(subject_token("acme"), "acme");
        assert_eq!(subject_token("a.b"), "a%2Eb");
        assert_eq!(subject_token("a*>"), "a%2A%3E");
        assert_eq!(subject_token("50%"), "50%25");
        assert_eq!(subject_token("é"), "%C3%A9");
        assert_eq!(subject_token(""), "%");
        assert_eq!(subject_token("A-z_9"), "A-z_9");
        assert_eq!(
            subject("o'brien", "0193-ab"),
            "parley.o%27brien.0193-ab",
            "one token per part"
        );
        assert_eq!(message_id("a/b", "c", 7), "a%2Fb/c/7");
        assert_eq!(seq_of_message_id("a%2Fb/c/7"), Some(7));
        assert_eq!(seq_of_message_id("garbage"), None);
        // Two different tenants never share a token.
        assert_ne!(subject_token("a.b"), subject_token("a%2Eb"));
    }

    /// The wait doubles from 100 ms and stops at the ceiling.
    #[test]
    fn failing_conversations_back_off() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    fn message(conversation_id: &str, seq: i64) -> TimelineItem {
        TimelineItem {
            conversation_id: conversation_id.into(),
            seq,
            create_time: 0,
            entry: Entry::Message {
                id: format!("m{seq}"),
                sender_id: "u".into(),
                body: "b".into(),
            },
        }
    }

    /// A mark is taken once with its items; a conversation put back for later is not due
    /// before its time, and merging keeps the earliest time, the oldest item and every item.
    #[test]
    fn marks_are_taken_once_and_put_back_for_later() {
        let marks = Marks::default();
        marks.mark(
            "t",
            vec![message("c1", 1), message("c2", 1), message("c1", 2)],
        );
        let mut taken = marks.take(10).expect("due");
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            taken.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
            ["c1", "c2"]
        );
        assert_eq!(taken[0].1.items.len(), 2, "both of c1's items in hand");
        assert_eq!(taken[0].1.tenant.as_deref(), Some("t"));
        assert!(!taken[0].1.read, "nothing to read back");
        assert!(marks.take(10).is_err(), "taken out");
        let later = Instant::now() + Duration::from_secs(60);
        let (id, mut owed) = taken.remove(0);
        owed.at = later;
        owed.since = 5;
        marks.put(id.clone(), owed.clone());
        assert_eq!(marks.take(10).err(), Some(Some(later)));
        assert_eq!(marks.oldest(), Some(5));
        let mut again = Owed::read(9);
        again.items.push(message("c1", 3));
        marks.put(id, again);
        let back = marks.take(10).expect("due now");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].1.items.len(), 3);
        assert!(back[0].1.read, "a read asked for stays asked for");
        assert_eq!(back[0].1.since, 5);
    }

    /// Past the bound on items in hand, a commit's items are left to be read back.
    #[test]
    fn items_in_hand_are_bounded() {
        let marks = Marks::default();
        let many: Vec<TimelineItem> = (1..=MAX_ITEMS_IN_HAND as i64)
            .map(|seq| message("c1", seq))
            .collect();
        marks.mark("t", many);
        marks.mark("t", vec![message("c2", 1)]);
        let mut taken = marks.take(10).expect("due");
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(taken[0].1.items.len(), MAX_ITEMS_IN_HAND);
        assert!(
            taken[1].1.items.is_empty() && taken[1].1.read,
            "c2 is read back"
        );
        marks.mark("t", vec![message("c3", 1)]);
        let taken = marks.take(10).expect("due");
        assert_eq!(taken[0].1.items.len(), 1, "room again once taken");
    }
}
