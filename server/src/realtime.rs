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
//! WatchInbox streams listen to the feeds of the conversations they show ([`Feed::listen`]);
//! for conversations they do not show yet, the same poll counts each inbox user's participant
//! rows, all and active (`store::participants::memberships`, one statement per 500 users of a
//! tenant, reading the users' entries of `participants_by_user`), and wakes the user's inboxes
//! when that moves ([`InboxWake`]). StreamNotifications streams wake on
//! [`Hub::outbox_changed`] (a write here that added notifications or acknowledged some) and
//! poll the outbox themselves for writes elsewhere (`api::notification_stream`).
//!
//! The hub also counts open streams ([`Hub::admit`]: per caller and per replica, watches,
//! inboxes and notification streams alike) and ends them when the server shuts down
//! ([`Hub::closing`]).

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
    /// The open inboxes, by (tenant, user), with the user's memberships as last polled.
    inboxes: Mutex<HashMap<(String, String), Inboxes>>,
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
    /// The open inboxes that show this conversation.
    inboxes: Mutex<Vec<Weak<InboxWake>>>,
    /// The watches of this conversation on the replica: who reads, and how far each got.
    readers: Mutex<HashMap<u64, Reader>>,
    /// The latest read made for all the watches at once (`api::watch`), which a watch woken
    /// by the same commit uses instead of reading again; one such read at a time.
    pub shared: Arc<tokio::sync::Mutex<Option<Arc<SharedRead>>>>,
}

/// One watch of a conversation, as the conversation's feed knows it.
#[derive(Clone, Debug)]
struct Reader {
    tenant_id: String,
    /// The user the watch is judged as; `None` for a service acting as administrator.
    user_id: Option<String>,
    /// Every seq up to this one has been passed.
    passed: i64,
}

/// A read of one conversation made once for all its watches on the replica: its newest items
/// after `base`, as the conversation's administrator reads them (no viewer's window), and for
/// each watching user what a read judges a caller by. Each watch then judges itself by the
/// rules and keeps what it may read (`api::watch`).
#[derive(Debug)]
pub struct SharedRead {
    pub tenant_id: String,
    /// The feed's generation when the read began: every commit whose wake-up came before it is
    /// in the read.
    pub generation: u64,
    /// The items read are those after this seq.
    pub base: i64,
    /// What the read found of each watching user (a service acting as administrator: `None`).
    pub callers: HashMap<Option<String>, crate::store::WithCaller>,
    pub items: Vec<crate::domain::model::TimelineItem>,
    /// The read took a whole page: there may be items after its last.
    pub full: bool,
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
        lock(&self.inboxes).retain(|inbox| match inbox.upgrade() {
            Some(inbox) => {
                inbox.touched(&self.conversation_id);
                true
            }
            None => false,
        });
    }

    /// Counts a watch of the conversation by `user_id` of `tenant_id`, which has passed every
    /// seq up to `passed`; returns its key for [`Feed::moved`] and [`Feed::left`].
    pub fn entered(&self, tenant_id: &str, user_id: Option<&str>, passed: i64) -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let key = NEXT.fetch_add(1, Ordering::Relaxed);
        lock(&self.readers).insert(
            key,
            Reader {
                tenant_id: tenant_id.to_owned(),
                user_id: user_id.map(str::to_owned),
                passed,
            },
        );
        key
    }

    /// The watch `key` has passed every seq up to `passed`.
    pub fn moved(&self, key: u64, passed: i64) {
        if let Some(reader) = lock(&self.readers).get_mut(&key) {
            reader.passed = passed;
        }
    }

    /// The watch `key` ended.
    pub fn left(&self, key: u64) {
        lock(&self.readers).remove(&key);
    }

    /// The users watching for `tenant_id`, each once, and the lowest seq any of them passed.
    pub fn readers(&self, tenant_id: &str) -> (Vec<Option<String>>, Option<i64>) {
        let readers = lock(&self.readers);
        let mut users: std::collections::HashSet<Option<String>> = Default::default();
        let mut lowest: Option<i64> = None;
        for reader in readers.values().filter(|r| r.tenant_id == tenant_id) {
            users.insert(reader.user_id.clone());
            lowest = Some(lowest.map_or(reader.passed, |l| l.min(reader.passed)));
        }
        (users.into_iter().collect(), lowest)
    }

    /// How many wake-ups the conversation has had here.
    pub fn generation(&self) -> u64 {
        *self.wake.borrow()
    }

    /// Tells `inbox` of every later wake-up of this conversation, while it lives.
    pub fn listen(&self, inbox: &Arc<InboxWake>) {
        lock(&self.inboxes).push(Arc::downgrade(inbox));
    }

    /// The poll saw `seq` as the latest: wakes the watches if it moved.
    fn polled(&self, seq: i64) {
        if self.polled.fetch_max(seq, Ordering::AcqRel) < seq {
            self.wake();
        }
    }
}

/// One open WatchInbox's wake-ups: which of its conversations moved, and whether the user's
/// memberships may have changed, since it last looked.
pub struct InboxWake {
    dirty: Mutex<std::collections::HashSet<String>>,
    membership: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl InboxWake {
    fn touched(&self, conversation_id: &str) {
        lock(&self.dirty).insert(conversation_id.to_owned());
        self.notify.notify_one();
    }

    /// Marks `conversation_id` to be read again, as a wake-up of its feed would.
    pub fn recheck(&self, conversation_id: &str) {
        self.touched(conversation_id);
    }

    fn memberships_changed(&self) {
        self.membership.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Waits for a wake-up; one that came while nobody waited is not lost.
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// The conversations that moved and whether the memberships may have changed, since the
    /// last call; both cleared.
    pub fn take(&self) -> (Vec<String>, bool) {
        let dirty = std::mem::take(&mut *lock(&self.dirty))
            .into_iter()
            .collect();
        (dirty, self.membership.swap(false, Ordering::AcqRel))
    }
}

/// The open inboxes of one user on a replica.
#[derive(Default)]
struct Inboxes {
    open: Vec<Weak<InboxWake>>,
    /// (participant rows, active ones) as last polled; `None` before the first poll.
    polled: Option<(i64, i64)>,
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
            inboxes: Mutex::new(HashMap::new()),
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
            inboxes: Mutex::new(Vec::new()),
            readers: Mutex::new(HashMap::new()),
            shared: Arc::new(tokio::sync::Mutex::new(None)),
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

    /// The wake-ups of a new inbox of `user_id`. The replica's poll looks at the user's
    /// memberships from now on; its first look after this wakes the inbox, since a change
    /// may have come between the inbox's first read and that look.
    pub fn inbox(&self, tenant_id: &str, user_id: &str) -> Arc<InboxWake> {
        let wake = Arc::new(InboxWake {
            dirty: Mutex::default(),
            membership: Default::default(),
            notify: tokio::sync::Notify::new(),
        });
        let mut inboxes = lock(&self.inboxes);
        let entry = inboxes
            .entry((tenant_id.to_owned(), user_id.to_owned()))
            .or_default();
        entry.open.push(Arc::downgrade(&wake));
        entry.polled = None;
        wake
    }

    /// The users with an open inbox here, by tenant, forgetting those with none.
    fn inbox_users(&self) -> HashMap<String, Vec<String>> {
        let mut inboxes = lock(&self.inboxes);
        inboxes.retain(|_, users| {
            users.open.retain(|w| w.strong_count() > 0);
            !users.open.is_empty()
        });
        let mut by_tenant: HashMap<String, Vec<String>> = HashMap::new();
        for (tenant, user) in inboxes.keys() {
            by_tenant
                .entry(tenant.clone())
                .or_default()
                .push(user.clone());
        }
        by_tenant
    }

    /// The poll read `counts` (participant rows, active ones) for the user: wakes their
    /// inboxes if that moved, or if it is the first look since an inbox opened.
    fn memberships_polled(&self, tenant_id: &str, user_id: &str, counts: (i64, i64)) {
        let mut inboxes = lock(&self.inboxes);
        let Some(users) = inboxes.get_mut(&(tenant_id.to_owned(), user_id.to_owned())) else {
            return;
        };
        if users.polled.replace(counts) != Some(counts) {
            for inbox in users.open.iter().filter_map(Weak::upgrade) {
                inbox.memberships_changed();
            }
        }
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
        for (tenant_id, users) in self.inbox_users() {
            let ids: Vec<&str> = users.iter().map(String::as_str).collect();
            let counts = crate::store::participants::memberships(db, &tenant_id, &ids).await?;
            let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
            for (user, all, active) in &counts {
                self.memberships_polled(&tenant_id, user, (*all, *active));
                seen.insert(user.as_str());
            }
            // A user in no conversation at all has no row to count.
            for user in ids.iter().filter(|u| !seen.contains(*u)) {
                self.memberships_polled(&tenant_id, user, (0, 0));
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

    /// A commit in a conversation an inbox shows marks it for the inbox; the poll's counts
    /// of the user's memberships wake it at the first look and whenever they move, not when
    /// they stay.
    #[tokio::test]
    async fn inboxes_learn_of_their_conversations_and_memberships() {
        let hub = Hub::new(WatchConfig::default());
        let inbox = hub.inbox("t", "u");
        let feed = hub.feed("c1");
        feed.listen(&inbox);
        hub.committed("c1");
        hub.committed("c2");
        inbox.notified().await;
        assert_eq!(inbox.take(), (vec!["c1".to_owned()], false));
        hub.memberships_polled("t", "u", (1, 1));
        assert_eq!(inbox.take(), (vec![], true), "the first look");
        hub.memberships_polled("t", "u", (1, 1));
        assert_eq!(inbox.take(), (vec![], false), "no news");
        hub.memberships_polled("t", "u", (2, 1));
        assert_eq!(inbox.take(), (vec![], true), "added somewhere");
        hub.memberships_polled("t", "other", (5, 5));
        assert_eq!(inbox.take(), (vec![], false), "another user's");
        assert_eq!(hub.inbox_users().len(), 1);
        drop(inbox);
        hub.committed("c1");
        assert!(hub.inbox_users().is_empty(), "a closed inbox is forgotten");
    }
}
