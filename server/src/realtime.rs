//! Wake-ups for the streams of SPEC §7, and their bounds, on one replica.
//!
//! The [`Hub`] tells each open watch that its conversation may have new items; the watch then
//! reads them from the database itself, as ListTimeline does, through the one place that
//! decides what a viewer may see. Nothing but a conversation's latest seq travels here: a lost
//! or late wake-up can delay an item, never lose one, since the reader asks the database for
//! everything after the last seq it sent.
//!
//! Two sources wake a conversation's watches:
//!
//! - a commit on this replica ([`Hub::committed`]), at once;
//! - one poll per replica, every [`WatchConfig::poll_interval`], of the latest seq of every
//!   conversation watched here (`SELECT id, last_seq FROM conversations WHERE id IN (…)`, in
//!   chunks): commits on other replicas, or of another process on the same SQLite file. One
//!   statement per chunk of watched conversations per interval, whatever the number of
//!   watches or of writes; the write path pays nothing. PostgreSQL's `NOTIFY` would wake other
//!   replicas sooner, but it takes a lock that serializes commits: measured with pgbench on
//!   the AddParticipant transaction of the bench (`../shared/bench/pg/add_participant.sql`,
//!   16 clients, 3 alternations), a `SELECT pg_notify('parley', <conversation>)` before the
//!   COMMIT ran it at 1.86-1.93k per second against 2.52-2.57k with a plain `SELECT` in its
//!   place (-26 %), on a path whose bar is 0.85 of that limit.
//!
//! The hub also counts open watches ([`Hub::admit`]: per caller and per replica) and ends
//! them when the server shuts down ([`Hub::closing`]).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;

use crate::error::Error;
use crate::lock;

/// How watches behave on a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    /// Open watches per caller (principal, act-as user) on one replica.
    pub max_per_caller: usize,
    /// Open watches on one replica in all.
    pub max_total: usize,
    /// The longest a stream goes without a message: a heartbeat is sent when nothing else was.
    pub heartbeat: Duration,
    /// How often the replica reads the latest seq of every conversation watched on it.
    pub poll_interval: Duration,
    /// Messages a stream holds for its reader beyond what the transport holds.
    pub buffer: usize,
    /// How long a stream may wait for its reader to take the next message before it is
    /// ended with `WATCH_TOO_SLOW`.
    pub send_timeout: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            max_per_caller: 100,
            max_total: 10_000,
            heartbeat: Duration::from_secs(15),
            poll_interval: Duration::from_millis(250),
            buffer: 64,
            send_timeout: Duration::from_secs(30),
        }
    }
}

impl WatchConfig {
    /// Refuses settings a replica cannot run with.
    pub fn check(&self) -> anyhow::Result<()> {
        for (name, value) in [
            ("--watch-poll-interval", self.poll_interval),
            ("the watch heartbeat", self.heartbeat),
            ("--watch-send-timeout", self.send_timeout),
        ] {
            if value.is_zero() {
                anyhow::bail!("{name} must be longer than 0");
            }
        }
        if self.buffer == 0 {
            anyhow::bail!("a watch must hold at least one message");
        }
        Ok(())
    }
}

/// Who a watch is counted against: tenant, principal, act-as user.
pub type CallerKey = (String, String, Option<String>);

/// The watches of one replica.
pub struct Hub {
    config: WatchConfig,
    feeds: Mutex<HashMap<String, Weak<Feed>>>,
    open: Mutex<Open>,
    closing: watch::Sender<bool>,
    /// Moves on when a write on this replica adds notifications or acknowledges some.
    outbox: watch::Sender<u64>,
    /// The metric of open watches, when metrics are on.
    gauge: std::sync::OnceLock<prometheus_client::metrics::gauge::Gauge>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_caller: HashMap<CallerKey, usize>,
}

/// One conversation's wake-ups, held by each of its watches; the hub forgets it when the last
/// one ends. Receivers see a generation that moves on at each wake-up: what changed is for
/// the reader to ask the database.
pub struct Feed {
    pub conversation_id: String,
    /// The latest seq the poll has seen.
    polled: AtomicI64,
    wake: watch::Sender<u64>,
}

impl Feed {
    /// A receiver that sees every later wake-up of this conversation. Take it before
    /// reading, so that nothing committed after the read is missed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    fn wake(&self) {
        self.wake
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// The poll saw `seq` as the latest: wakes the watches if it moved.
    fn polled(&self, seq: i64) {
        if self.polled.fetch_max(seq, Ordering::AcqRel) < seq {
            self.wake();
        }
    }
}

/// An open watch, counted until dropped.
pub struct Permit {
    hub: Arc<Hub>,
    caller: CallerKey,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(gauge) = self.hub.gauge.get() {
            gauge.dec();
        }
        let mut open = lock(&self.hub.open);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_caller.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_caller.remove(&self.caller);
            }
        }
    }
}

impl Hub {
    pub fn new(config: WatchConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            feeds: Mutex::new(HashMap::new()),
            open: Mutex::new(Open::default()),
            closing: watch::channel(false).0,
            outbox: watch::channel(0).0,
            gauge: std::sync::OnceLock::new(),
        })
    }

    /// Counts the open watches in `gauge` too (`parley_open_watch_streams`).
    pub fn count_in(&self, gauge: prometheus_client::metrics::gauge::Gauge) {
        let _ = self.gauge.set(gauge);
    }

    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// Counts a new watch of `caller`, or refuses it (`TOO_MANY_WATCHES`) past either bound.
    pub fn admit(self: &Arc<Self>, caller: CallerKey) -> Result<Permit, Error> {
        let mut open = lock(&self.open);
        let mine = open.per_caller.get(&caller).copied().unwrap_or(0);
        if mine >= self.config.max_per_caller {
            return Err(Error::TooManyWatches {
                limit: self.config.max_per_caller,
                scope: "caller",
            });
        }
        if open.total >= self.config.max_total {
            return Err(Error::TooManyWatches {
                limit: self.config.max_total,
                scope: "replica",
            });
        }
        open.total += 1;
        *open.per_caller.entry(caller.clone()).or_insert(0) += 1;
        drop(open);
        if let Some(gauge) = self.gauge.get() {
            gauge.inc();
        }
        Ok(Permit {
            hub: self.clone(),
            caller,
        })
    }

    /// Open watches on this replica.
    pub fn open_watches(&self) -> usize {
        lock(&self.open).total
    }

    /// The wake-ups of `conversation_id`, shared by all its watches on this replica.
    pub fn feed(&self, conversation_id: &str) -> Arc<Feed> {
        let mut feeds = lock(&self.feeds);
        if let Some(feed) = feeds.get(conversation_id).and_then(Weak::upgrade) {
            return feed;
        }
        let feed = Arc::new(Feed {
            conversation_id: conversation_id.to_owned(),
            polled: AtomicI64::new(0),
            wake: watch::channel(0).0,
        });
        feeds.insert(conversation_id.to_owned(), Arc::downgrade(&feed));
        feed
    }

    /// A write to `conversation_id` committed on this replica: wakes its watches here, if any.
    pub fn committed(&self, conversation_id: &str) {
        let feed = lock(&self.feeds)
            .get(conversation_id)
            .and_then(Weak::upgrade);
        if let Some(feed) = feed {
            feed.wake();
        }
    }

    /// A write on this replica added notifications or acknowledged some: wakes the
    /// replica's StreamNotifications.
    pub fn outbox_changed(&self) {
        self.outbox
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// A receiver that sees every later [`Hub::outbox_changed`].
    pub fn outbox(&self) -> watch::Receiver<u64> {
        self.outbox.subscribe()
    }

    /// The conversations watched here now, forgetting those no watch holds any more.
    fn watched(&self) -> Vec<Arc<Feed>> {
        let mut feeds = lock(&self.feeds);
        feeds.retain(|_, feed| feed.strong_count() > 0);
        feeds.values().filter_map(Weak::upgrade).collect()
    }

    /// Reads the latest seq of every watched conversation from `db` and wakes those that
    /// moved; one statement per [`POLL_CHUNK`] conversations.
    pub async fn poll(&self, db: &crate::store::Conn) -> Result<(), Error> {
        let feeds = self.watched();
        for chunk in feeds.chunks(POLL_CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(|f| f.conversation_id.as_str()).collect();
            let latest = crate::store::conversations::latest_seqs(db, &ids).await?;
            let by_id: HashMap<&str, &Arc<Feed>> = chunk
                .iter()
                .map(|f| (f.conversation_id.as_str(), f))
                .collect();
            for (id, seq) in latest {
                if let Some(feed) = by_id.get(id.as_str()) {
                    feed.polled(seq);
                }
            }
        }
        Ok(())
    }

    /// Polls `db` every [`WatchConfig::poll_interval`] until the hub closes. A failed poll
    /// is logged and tried again at the next tick.
    pub fn spawn_poller(self: &Arc<Self>, db: crate::store::Conn) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(hub.config.poll_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut closing = hub.closing();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = closing.wait_for(|c| *c) => return,
                }
                if let Err(e) = hub.poll(&db).await {
                    tracing::warn!(error = %e, "the watches' poll failed");
                }
            }
        })
    }

    /// Ends every watch (they end with UNAVAILABLE) and the poller.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Whether the hub is closing, and a receiver that sees it close.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

/// Conversations read by one statement of [`Hub::poll`].
pub const POLL_CHUNK: usize = 500;

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(id: &str) -> CallerKey {
        ("t".into(), id.into(), None)
    }

    /// Watches are counted per caller and per replica, and a dropped one frees its place.
    #[test]
    fn watches_are_bounded_per_caller_and_in_all() {
        let hub = Hub::new(WatchConfig {
            max_per_caller: 2,
            max_total: 3,
            ..WatchConfig::default()
        });
        let a1 = hub.admit(caller("a")).expect("first");
        let _a2 = hub.admit(caller("a")).expect("second");
        let third = hub.admit(caller("a"));
        assert!(matches!(third, Err(Error::TooManyWatches { limit: 2, .. })));
        let _b1 = hub.admit(caller("b")).expect("another caller");
        let full = hub.admit(caller("c"));
        assert!(matches!(full, Err(Error::TooManyWatches { limit: 3, .. })));
        assert_eq!(hub.open_watches(), 3);
        drop(a1);
        assert_eq!(hub.open_watches(), 2);
        let _c1 = hub.admit(caller("c")).expect("a place freed");
        assert!(hub.admit(caller("a")).is_err(), "the replica is full again");
    }

    /// A commit wakes the conversation's receivers and no other; a conversation nobody
    /// watches is forgotten.
    #[tokio::test]
    async fn commits_wake_watches_of_their_conversation() {
        let hub = Hub::new(WatchConfig::default());
        let feed = hub.feed("c1");
        let mut rx = feed.subscribe();
        let other = hub.feed("c2");
        let other_rx = other.subscribe();
        hub.committed("c1");
        rx.changed().await.expect("woken");
        rx.borrow_and_update();
        assert!(!other_rx.has_changed().expect("open"));
        assert!(
            Arc::ptr_eq(&feed, &hub.feed("c1")),
            "one feed per conversation"
        );
        // The poll wakes only when the seq moves on.
        feed.polled(4);
        assert!(rx.has_changed().expect("open"));
        rx.borrow_and_update();
        feed.polled(4);
        feed.polled(3);
        assert!(!rx.has_changed().expect("open"), "no news, no wake-up");
        assert_eq!(hub.watched().len(), 2);
        drop((feed, other));
        hub.committed("c1");
        assert_eq!(hub.watched().len(), 0, "nobody watches c1 or c2");
    }
}
