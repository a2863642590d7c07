//! The export of every timeline item to NATS JetStream (SPEC §7, Export), when `--nats-url`
//! is set.
//!
//! **What is owed.** The timeline is the outbox: an item is written in the transaction that
//! makes it, so a conversation owes JetStream every item after its `done_seq` in
//! `export_cursors` (`store::export`, migration 18), which moves only after JetStream
//! acknowledged the publish. The write path writes nothing more for export.
//!
//! **Who publishes.** Each replica's exporter keeps the conversations it knows to owe items:
//! those its own writes added items to (told at commit, [`Marks::mark`]), and those a sweep of
//! `conversations` finds behind (`last_seq > done_seq`): writes of replicas that died, and the
//! history when export is first turned on. The sweep reads [`SWEEP_PAGE`] conversations per
//! statement, a page every [`SWEEP_PAUSE`], a pass every `--export-sweep-interval`: its cost
//! per second does not grow with the table, the time a pass takes does.
//!
//! **A round** takes up to [`ROUND`] owed conversations and, in one statement each: leases
//! them in `export_cursors` (a conversation another replica holds is tried again after
//! [`BUSY_RETRY`]), reads up to [`BATCH`] items of each, then publishes each conversation's
//! items in seq order, one in flight per conversation and the conversations in parallel, and
//! records what JetStream acknowledged while giving the conversations back.
//!
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

use crate::domain::model::{Entry, TimelineItem, now_micros};
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
pub const BATCH: i64 = 100;
/// How long a round waits after the first commit it is told of, for others to join it.
pub const GATHER: Duration = Duration::from_millis(5);
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
#[derive(Clone, Debug, Default)]
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
}

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
}

impl Owed {
    fn merge(&mut self, other: Owed) {
        self.since = self.since.min(other.since);
        self.at = self.at.min(other.at);
        self.failures = self.failures.max(other.failures);
        self.unsure |= other.unsure;
    }
}

/// The conversations a replica's exporter knows to owe items.
#[derive(Default)]
pub struct Marks {
    owed: Mutex<HashMap<String, Owed>>,
    wake: tokio::sync::Notify,
}

impl Marks {
    /// Writes committed on this replica added items to `conversation_ids`.
    pub fn mark(&self, conversation_ids: Vec<String>) {
        if conversation_ids.is_empty() {
            return;
        }
        let now = now_micros();
        {
            let mut owed = lock(&self.owed);
            for id in conversation_ids {
                owed.entry(id).or_insert(Owed {
                    since: now,
                    at: Instant::now(),
                    failures: 0,
                    unsure: false,
                });
            }
        }
        self.wake.notify_one();
    }

    fn put(&self, id: String, owed: Owed) {
        match lock(&self.owed).entry(id) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().merge(owed),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(owed);
            }
        }
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
        Ok(due
            .into_iter()
            .filter_map(|id| owed.remove(&id).map(|o| (id, o)))
            .collect())
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
    /// stopped it, if any.
    async fn publish(
        &self,
        tenant_id: &str,
        items: &[TimelineItem],
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
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = result {
                return (acked, Some(e));
            }
            acked = Some(item.seq);
        }
        (acked, None)
    }
}

/// What one replica's exporter needs.
pub struct Exporter {
    pub link: Arc<Link>,
    pub marks: Arc<Marks>,
    pub writer: store::Writer,
    pub db: store::Conn,
    pub metrics: ExportMetrics,
    /// This replica's name in `export_cursors.holder`.
    pub holder: String,
}

impl Exporter {
    /// Runs the rounds and the sweep until `closing` turns true.
    pub async fn run(self: Arc<Self>, mut closing: tokio::sync::watch::Receiver<bool>) {
        let sweep = tokio::spawn(self.clone().sweep(closing.clone()));
        let mut last_log: Option<Instant> = None;
        loop {
            let due = match self.marks.take(ROUND) {
                Ok(due) => due,
                Err(next) => {
                    let sleep = next.map_or(Duration::from_secs(3600), |at| {
                        at.saturating_duration_since(Instant::now())
                    });
                    let woken = tokio::select! {
                        _ = self.marks.wake.notified() => true,
                        _ = tokio::time::sleep(sleep) => false,
                        _ = closing.wait_for(|c| *c) => break,
                    };
                    if woken {
                        tokio::time::sleep(GATHER).await;
                    }
                    continue;
                }
            };
            if let Err(e) = self.link.ensure_stream().await {
                self.failed(due, &e.to_string(), &mut last_log);
                continue;
            }
            if let Err(e) = self.round(due.clone(), &mut last_log).await {
                self.failed(due, &e.to_string(), &mut last_log);
            }
        }
        sweep.abort();
    }

    /// Puts `due` back to be tried after a backoff, and logs (at most every [`LOG_EVERY`]).
    fn failed(&self, due: Vec<(String, Owed)>, error: &str, last_log: &mut Option<Instant>) {
        let mut failures = 0;
        for (id, mut owed) in due {
            owed.failures = owed.failures.saturating_add(1);
            owed.at = Instant::now() + backoff(owed.failures);
            owed.unsure = true;
            failures = failures.max(owed.failures);
            self.marks.put(id, owed);
        }
        self.metrics.failures.inc();
        if last_log.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            *last_log = Some(Instant::now());
            let age = self
                .marks
                .oldest()
                .map_or(0.0, |since| (now_micros() - since) as f64 / 1e6);
            tracing::warn!(
                error,
                backlog_items = self.metrics.backlog_items.get(),
                backlog_conversations = self.metrics.backlog_conversations.get(),
                backlog_age_seconds = age,
                "the export to NATS is failing; writes go on and the backlog waits in the database"
            );
        }
    }

    /// One round over `due` (see the module documentation).
    async fn round(
        &self,
        due: Vec<(String, Owed)>,
        last_log: &mut Option<Instant>,
    ) -> Result<(), crate::error::Error> {
        let ids: Vec<String> = due.iter().map(|(id, _)| id.clone()).collect();
        let now = now_micros();
        let lease = i64::try_from(self.link.config.lease.as_micros()).unwrap_or(i64::MAX);
        let tx = self.writer.begin().await?;
        let claimed =
            cursors::claim(&tx, &self.holder, &ids, now, now.saturating_add(lease)).await?;
        tx.commit().await?;
        let mut due: HashMap<String, Owed> = due.into_iter().collect();
        let claimed: HashMap<String, cursors::Claimed> = claimed
            .into_iter()
            .map(|c| (c.conversation_id.clone(), c))
            .collect();
        // Held elsewhere: tried again soon, in case the holder gives it back before seeing
        // this replica's items.
        for (id, owed) in due.iter_mut().filter(|(id, _)| !claimed.contains_key(*id)) {
            let mut owed = owed.clone();
            owed.at = Instant::now() + BUSY_RETRY;
            self.marks.put(id.clone(), owed);
        }
        if claimed.is_empty() {
            return Ok(());
        }
        let wanted: Vec<(String, i64, i64)> = claimed
            .values()
            .map(|c| (c.conversation_id.clone(), c.done_seq, c.done_seq + BATCH))
            .collect();
        let mut found = cursors::items(&self.db, &wanted).await?;
        let runs = claimed.values().map(|c| {
            let owed = due.get(&c.conversation_id).cloned();
            let (tenant, items) = found.remove(&c.conversation_id).unwrap_or_default();
            let taken_over = c.prior.as_deref().is_some_and(|p| p != self.holder);
            let unsure = taken_over || owed.as_ref().is_some_and(|o| o.unsure);
            async move {
                let mut done = c.done_seq;
                if unsure && !items.is_empty() {
                    match self.link.stored_top(&tenant, &c.conversation_id).await {
                        Ok(top) => done = done.max(top),
                        Err(e) => {
                            return Run {
                                id: c.conversation_id.clone(),
                                read: items.len(),
                                done,
                                error: Some(e),
                                next_since: items.first().map(|i| i.create_time),
                            };
                        }
                    }
                }
                let pending: Vec<TimelineItem> =
                    items.iter().filter(|i| i.seq > done).cloned().collect();
                let (acked, error) = self.link.publish(&tenant, &pending).await;
                if let Some(seq) = acked {
                    done = seq;
                }
                let next_since = items.iter().find(|i| i.seq > done).map(|i| i.create_time);
                Run {
                    id: c.conversation_id.clone(),
                    read: items.len(),
                    done,
                    error,
                    next_since,
                }
            }
        });
        let runs = futures::future::join_all(runs).await;
        let published: u64 = runs
            .iter()
            .map(|r| {
                let start = claimed.get(&r.id).map_or(0, |c| c.done_seq);
                u64::try_from(r.done - start).unwrap_or(0)
            })
            .sum();
        self.metrics.published.inc_by(published);
        // Every conversation claimed is given back, moved or not.
        let record: Vec<(String, i64)> = runs.iter().map(|r| (r.id.clone(), r.done)).collect();
        let tx = self.writer.begin().await?;
        cursors::record(&tx, &self.holder, &record).await?;
        tx.commit().await?;
        let mut first_error = None;
        for run in runs {
            let base = due.remove(&run.id);
            if let Some(error) = run.error {
                let mut owed = base.unwrap_or(Owed {
                    since: now,
                    at: Instant::now(),
                    failures: 0,
                    unsure: false,
                });
                owed.failures = owed.failures.saturating_add(1);
                owed.at = Instant::now() + backoff(owed.failures);
                owed.unsure = true;
                owed.since = run.next_since.unwrap_or(owed.since);
                self.metrics.failures.inc();
                first_error.get_or_insert(error);
                self.marks.put(run.id, owed);
            } else if run.read as i64 >= BATCH {
                // More may follow the batch.
                self.marks.put(
                    run.id,
                    Owed {
                        since: run.next_since.unwrap_or(now),
                        at: Instant::now(),
                        failures: 0,
                        unsure: false,
                    },
                );
            }
        }
        if let Some(error) = first_error
            && last_log.is_none_or(|at| at.elapsed() >= LOG_EVERY)
        {
            *last_log = Some(Instant::now());
            tracing::warn!(
                error,
                backlog_items = self.metrics.backlog_items.get(),
                backlog_conversations = self.metrics.backlog_conversations.get(),
                "a publish to NATS failed; the conversation is tried again, writes go on"
            );
        }
        Ok(())
    }

    /// Walks `conversations` forever at a bounded rate, handing those behind to the rounds
    /// and counting the backlog.
    async fn sweep(self: Arc<Self>, mut closing: tokio::sync::watch::Receiver<bool>) {
        loop {
            let mut after = String::new();
            let (mut items, mut conversations, mut oldest) = (0_i64, 0_i64, None::<i64>);
            let mut whole = true;
            loop {
                let page = match cursors::scan(&self.db, &after, SWEEP_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error = %e, "the export's sweep failed; tried again");
                        whole = false;
                        break;
                    }
                };
                for row in &page {
                    if row.last_seq <= row.done_seq {
                        continue;
                    }
                    items += row.last_seq - row.done_seq;
                    conversations += 1;
                    let since = row.oldest.unwrap_or_else(now_micros);
                    oldest = Some(oldest.map_or(since, |o| o.min(since)));
                    self.marks.put(
                        row.conversation_id.clone(),
                        Owed {
                            since,
                            at: Instant::now(),
                            failures: 0,
                            unsure: false,
                        },
                    );
                }
                if !page.is_empty() {
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

/// What one round did for one conversation.
struct Run {
    id: String,
    /// Items read.
    read: usize,
    /// Every item up to this one is in the stream.
    done: i64,
    error: Option<String>,
    /// When the first item not yet in the stream was made, if one was read.
    next_since: Option<i64>,
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

    /// A mark is taken once; a conversation put back for later is not due before its time,
    /// and merging keeps the earliest time and the oldest item.
    #[test]
    fn marks_are_taken_once_and_put_back_for_later() {
        let marks = Marks::default();
        marks.mark(vec!["c1".into(), "c2".into(), "c1".into()]);
        let mut taken = marks.take(10).expect("due");
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            taken.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
            ["c1", "c2"]
        );
        assert!(marks.take(10).is_err(), "taken out");
        let later = Instant::now() + Duration::from_secs(60);
        let (id, mut owed) = taken.remove(0);
        owed.at = later;
        owed.since = 5;
        marks.put(id.clone(), owed.clone());
        assert_eq!(marks.take(10).err(), Some(Some(later)));
        assert_eq!(marks.oldest(), Some(5));
        owed.at = Instant::now();
        owed.since = 9;
        marks.put(id, owed);
        assert_eq!(marks.take(10).expect("due now").len(), 1);
    }
}
