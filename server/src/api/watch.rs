//! WatchTimeline (SPEC §7): one conversation's timeline as a stream, resumable by seq.
//!
//! A watch is a loop of reads, each of which judges the caller afresh (so a removal, a change
//! of kind in the directory or a deactivation applies at the next read) and keeps, within the
//! viewer's window, the items after the last seq passed. The stream sends them, then waits for
//! a wake-up from the [`crate::realtime::Hub`] (a commit here, or the replica's poll of the
//! latest seqs) or for its heartbeat. It subscribes to wake-ups before its first read, so a
//! commit is never between a read and the wait unnoticed.
//!
//! Its first read, a read after a full page and the heartbeat's are its own, ListTimeline's
//! ([`State::read_access`] and the page in one read transaction). A wake-up is read once for
//! all the watches of the conversation on the replica ([`read_shared`]): one read transaction
//! takes every watching user's directory entry and seat (`store::callers_of`) and the items
//! after the lowest seq any of them passed, unfiltered; each watch then judges itself with
//! the same functions ([`super::judge_read`], the viewer's window) and keeps what it may read.
//! A commit costs the database the same few statements with one watch open or a thousand.
//!
//! What the stream holds is bounded: at most a page of items read and
//! [`crate::realtime::WatchConfig::buffer`] messages queued for the reader. A reader that
//! takes nothing for [`crate::realtime::WatchConfig::send_timeout`] gets the messages queued
//! and then `WATCH_TOO_SLOW`; it resumes from the last seq it got.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
};

use futures::Stream;
use parley::pb;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::Status;

use super::{State, convert};
use crate::domain::model::{Conversation, TimelineItem};
use crate::domain::principal::Principal;
use crate::domain::validate;
use crate::domain::visibility::ReadWindow;
use crate::error::Error;
use crate::realtime::{Feed, Permit, SharedRead};
use crate::store::{self, timeline::Only};

/// Items one read of a watch takes at most.
const READ_PAGE: u64 = 256;

/// The messages of a WatchTimeline stream.
pub type TimelineStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchTimelineResponse, Status>> + Send>>;

/// What one read of a watch found.
struct Read {
    items: Vec<TimelineItem>,
    /// Every seq up to this one has been read or passed over (the caller may not read it).
    passed: i64,
    /// The read ended at the caller's removal: nothing after `passed` is theirs to read.
    removed: bool,
    /// The read stopped at the end of its page: read on at once.
    more: bool,
}

/// The items after `after` that `p` may read in `conversation_id`, at most [`READ_PAGE`].
async fn read_after(
    state: &State,
    p: &Principal,
    conversation_id: &str,
    after: i64,
) -> Result<Read, Error> {
    let tx = store::begin_read(&state.db).await?;
    let (conversation, viewer) = state.read_access(&tx, p, conversation_id).await?;
    let window = viewer.window();
    let items = store::timeline::list(
        &tx,
        conversation_id,
        window,
        Only::All,
        false,
        Some(after),
        READ_PAGE,
    )
    .await?;
    tx.commit().await?;
    let full = items.len() as u64 == READ_PAGE;
    let newest = items.last().map_or(after, |item| item.seq);
    Ok(Read::of(items, &conversation, window, after, newest, full))
}

impl Read {
    /// What a read found for a viewer with `window` who had passed `after`: `items`, those of
    /// the read they may read after `after`; `newest`, the highest seq the read looked at
    /// (an item read means every seq below it is committed: writes to one conversation commit
    /// in seq order, each holding the conversation's row until it commits); `full`, whether
    /// the read stopped at its page's end rather than at the conversation's last seq.
    fn of(
        items: Vec<TimelineItem>,
        conversation: &Conversation,
        window: ReadWindow,
        after: i64,
        newest: i64,
        full: bool,
    ) -> Self {
        // The last seq the caller may ever read here: below their removal, if removed.
        let last = match window.until {
            Some(until) => conversation.last_seq.min(until - 1),
            None => conversation.last_seq,
        };
        let newest = newest.max(after);
        let passed = if full { newest } else { last.max(newest) };
        Read {
            items,
            passed,
            removed: window.until.is_some() && !full,
            more: full,
        }
    }
}

/// Reads the items after `after` for the watches of `feed` woken at `generation`, once for all
/// of them: the first watch to ask makes the read (every watching user's standing and the
/// items after the lowest seq any watch passed, in one snapshot), the others woken by the
/// same commits take it. Each then judges itself by the rules ([`judge_read`]) and keeps what
/// it may read. A watch the read does not serve (it began before the watch's wake-up, above
/// the watch's place, or without its user) reads alone.
async fn read_shared(
    state: &State,
    p: &Principal,
    feed: &Feed,
    conversation_id: &str,
    generation: u64,
    after: i64,
) -> Result<Read, Error> {
    let user = p.actor().user_id().map(str::to_owned);
    let serves = |r: &SharedRead| {
        r.tenant_id == p.tenant_id
            && r.generation >= generation
            && r.base <= after
            && r.callers.contains_key(&user)
            // A page that ended below the watch's place tells it nothing.
            && !(r.full && r.items.last().is_none_or(|item| item.seq <= after))
    };
    let shared = {
        let mut slot = feed.shared.lock().await;
        match slot.as_ref().filter(|r| serves(r)) {
            Some(read) => read.clone(),
            None => {
                let read = Arc::new(read_for_all(state, p, feed, conversation_id, after).await?);
                *slot = Some(read.clone());
                forget_later(feed, &read);
                read
            }
        }
    };
    let Some(caller) = shared.callers.get(&user).filter(|_| serves(&shared)) else {
        return read_after(state, p, conversation_id, after).await;
    };
    let (conversation, viewer) = super::judge_read(p, conversation_id, caller.clone())?;
    let window = viewer.window();
    let items = shared
        .items
        .iter()
        .filter(|item| item.seq > after && window.admits(item))
        .cloned()
        .collect();
    let newest = shared.items.last().map_or(shared.base, |item| item.seq);
    Ok(Read::of(
        items,
        &conversation,
        window,
        after,
        newest,
        shared.full,
    ))
}

/// How long a read made for all the watches of a conversation is kept for those woken by the
/// same commits: long enough for every one of them to take it (they wait for it at once),
/// short enough that a quiet conversation does not hold a page of items for nothing.
const SHARED_READ_KEPT: std::time::Duration = std::time::Duration::from_secs(1);

/// Lets go of `read` in `feed`'s slot after [`SHARED_READ_KEPT`], unless a newer one took its
/// place.
fn forget_later(feed: &Feed, read: &Arc<SharedRead>) {
    let (slot, read) = (feed.shared.clone(), Arc::downgrade(read));
    tokio::spawn(async move {
        tokio::time::sleep(SHARED_READ_KEPT).await;
        let mut slot = slot.lock().await;
        if slot
            .as_ref()
            .is_some_and(|kept| std::ptr::eq(Arc::as_ptr(kept), read.as_ptr()))
        {
            *slot = None;
        }
    });
}

/// The read behind [`read_shared`]: for every user watching `feed` (and `p`'s), what judges
/// them, and the conversation's items after the lowest seq passed, at most [`READ_PAGE`].
async fn read_for_all(
    state: &State,
    p: &Principal,
    feed: &Feed,
    conversation_id: &str,
    after: i64,
) -> Result<SharedRead, Error> {
    let generation = feed.generation();
    let (mut users, lowest) = feed.readers(&p.tenant_id);
    let user = p.actor().user_id().map(str::to_owned);
    if !users.contains(&user) {
        users.push(user);
    }
    let base = lowest.map_or(after, |l| l.min(after));
    let tx = store::begin_read(&state.db).await?;
    let ids: Vec<Option<&str>> = users.iter().map(Option::as_deref).collect();
    let callers = store::callers_of(&tx, &p.tenant_id, conversation_id, &ids).await?;
    let everything = ReadWindow {
        from: 1,
        until: None,
        hide_internal_events: false,
    };
    let items = store::timeline::list(
        &tx,
        conversation_id,
        everything,
        Only::All,
        false,
        Some(base),
        READ_PAGE,
    )
    .await?;
    tx.commit().await?;
    Ok(SharedRead {
        tenant_id: p.tenant_id.clone(),
        generation,
        base,
        callers: users.into_iter().zip(callers).collect(),
        full: items.len() as u64 == READ_PAGE,
        items,
    })
}

/// Opens a WatchTimeline stream: checks the request, counts the watch, subscribes to the
/// conversation's wake-ups and makes the first read, whose errors (not a participant, no such
/// conversation, …) are the call's own status; later ones end the stream.
pub(crate) async fn open(
    state: Arc<State>,
    p: Principal,
    req: pb::WatchTimelineRequest,
) -> Result<TimelineStream, Error> {
    let id = validate::conversation_id("conversation_id", &req.conversation_id)?;
    if req.after_seq < 0 {
        return Err(Error::field("after_seq", "must not be negative"));
    }
    let permit = state
        .hub
        .admit((p.tenant_id.clone(), p.id.clone(), p.acting_for.clone()))?;
    let feed = state.hub.feed(&id);
    let mut wake = feed.subscribe();
    wake.borrow_and_update();
    let first = read_after(&state, &p, &id, req.after_seq).await?;
    let key = feed.entered(&p.tenant_id, p.actor().user_id(), first.passed);
    let config = state.hub.config().clone();
    let (tx, rx) = mpsc::channel(config.buffer.max(1));
    let ending = Arc::new(Mutex::new(None));
    let watch = Watch {
        state: state.clone(),
        p,
        conversation_id: id,
        tx,
        wake,
        closing: state.hub.closing(),
        feed,
        key,
        _permit: permit,
    };
    tokio::spawn(watch.run(first, ending.clone()));
    Ok(Box::pin(Messages {
        rx,
        ending,
        done: false,
    }))
}

/// One open watch, run by its own task.
struct Watch {
    state: Arc<State>,
    p: Principal,
    conversation_id: String,
    tx: mpsc::Sender<Result<pb::WatchTimelineResponse, Status>>,
    wake: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    feed: Arc<Feed>,
    /// The watch's key among the feed's readers.
    key: u64,
    _permit: Permit,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.feed.left(self.key);
    }
}

/// Why a stream's sending stopped (WatchTimeline, WatchInbox, StreamNotifications).
pub(crate) enum Stop {
    /// The reader went away: nobody to tell.
    Gone,
    /// End the stream with this status.
    End(Status),
}

impl Stop {
    /// The status a stream whose sending ended with `result` ends with.
    pub(crate) fn status(result: Result<(), Stop>) -> Status {
        match result {
            Err(Stop::Gone) | Ok(()) => Status::cancelled("the reader went away"),
            Err(Stop::End(status)) => status,
        }
    }
}

/// Queues `message` for a stream's reader, waiting at most `send_timeout` for room: past it
/// the stream ends with `too_slow`, and with `shutdown` if the server closes meanwhile.
pub(crate) async fn send_or_stop<T>(
    tx: &mpsc::Sender<Result<T, Status>>,
    message: T,
    send_timeout: std::time::Duration,
    closing: &mut watch::Receiver<bool>,
    too_slow: impl FnOnce() -> Error,
    shutdown: fn() -> Status,
) -> Result<(), Stop> {
    tokio::select! {
        sent = tokio::time::timeout(send_timeout, tx.send(Ok(message))) => match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Gone),
            Err(_) => Err(Stop::End(too_slow().into())),
        },
        _ = closing.wait_for(|c| *c) => Err(Stop::End(shutdown())),
    }
}

impl Watch {
    /// Sends reads and heartbeats until the stream must end, then leaves its final status in
    /// `ending` for [`Messages`] and lets go of the queue (and of its place among the watches).
    async fn run(mut self, first: Read, ending: Arc<Mutex<Option<Status>>>) {
        let status = Stop::status(self.serve(first).await);
        *crate::lock(&ending) = Some(status);
    }

    async fn serve(&mut self, first: Read) -> Result<(), Stop> {
        let config = self.state.hub.config().clone();
        let mut last_sent = Instant::now();
        let mut read = first;
        loop {
            for item in &read.items {
                let message = pb::WatchTimelineResponse {
                    kind: Some(pb::watch_timeline_response::Kind::Item(
                        convert::timeline_item(item),
                    )),
                };
                self.send(message, &config).await?;
                last_sent = Instant::now();
            }
            if read.removed {
                return Err(Stop::End(
                    Error::ParticipantRemoved(self.conversation_id.clone()).into(),
                ));
            }
            // After a full page, read on at once; else wait for news, which the watches of
            // the conversation read once for all, or for the heartbeat, which reads alone
            // anyway (a directory change applies, a lost wake-up is made good).
            let mut woken = None;
            if !read.more {
                tokio::select! {
                    changed = self.wake.changed() => {
                        if changed.is_err() {
                            return Err(Stop::End(shutting_down()));
                        }
                        woken = Some(*self.wake.borrow_and_update());
                    }
                    () = tokio::time::sleep_until(last_sent + config.heartbeat) => {}
                    _ = self.closing.wait_for(|c| *c) => return Err(Stop::End(shutting_down())),
                    // The reader went away: let go of the watch now, not at the next send.
                    () = self.tx.closed() => return Err(Stop::Gone),
                }
            }
            let (state, p, id) = (&self.state, &self.p, &self.conversation_id);
            read = match woken {
                Some(generation) => {
                    read_shared(state, p, &self.feed, id, generation, read.passed).await
                }
                None => read_after(state, p, id, read.passed).await,
            }
            .map_err(|e| Stop::End(e.into()))?;
            self.feed.moved(self.key, read.passed);
            if read.items.is_empty() && !read.removed && last_sent.elapsed() >= config.heartbeat {
                let message = pb::WatchTimelineResponse {
                    kind: Some(pb::watch_timeline_response::Kind::Heartbeat(
                        pb::Heartbeat { seq: read.passed },
                    )),
                };
                self.send(message, &config).await?;
                last_sent = Instant::now();
            }
        }
    }

    /// Queues `message` for the reader, waiting at most the send timeout for room.
    async fn send(
        &mut self,
        message: pb::WatchTimelineResponse,
        config: &crate::realtime::WatchConfig,
    ) -> Result<(), Stop> {
        let id = &self.conversation_id;
        send_or_stop(
            &self.tx,
            message,
            config.send_timeout,
            &mut self.closing,
            || Error::WatchTooSlow(id.clone()),
            shutting_down,
        )
        .await
    }
}

/// The status watches and inboxes end with when the server shuts down: the client opens the
/// stream again elsewhere.
pub(crate) fn shutting_down() -> Status {
    Status::unavailable(
        "the server is shutting down; open the stream again on another replica (a watch from its last seq)",
    )
}

/// The stream tonic sends: the queued messages, then the final status the task that queued
/// them left in `ending` before it let go of the queue.
pub(crate) struct Messages<T> {
    pub rx: mpsc::Receiver<Result<T, Status>>,
    pub ending: Arc<Mutex<Option<Status>>>,
    pub done: bool,
}

impl<T> Stream for Messages<T> {
    type Item = Result<T, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(message)) => Poll::Ready(Some(message)),
            Poll::Ready(None) => {
                self.done = true;
                // The task stores its status before it drops the sender.
                let status = crate::lock(&self.ending)
                    .take()
                    .unwrap_or_else(|| Status::internal("the stream ended without a status"));
                Poll::Ready(Some(Err(status)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn shared(generation: u64) -> Arc<SharedRead> {
        Arc::new(SharedRead {
            tenant_id: "t".into(),
            generation,
            base: 0,
            callers: HashMap::new(),
            items: Vec::new(),
            full: false,
        })
    }

    /// A read kept for the watches of a conversation is let go of after a while, unless a
    /// newer one took its place (which is kept its own while).
    #[tokio::test]
    async fn shared_reads_are_let_go_of() {
        let hub = crate::realtime::Hub::new(crate::realtime::WatchConfig::default());
        let feed = hub.feed("c1");
        let first = shared(1);
        *feed.shared.lock().await = Some(first.clone());
        forget_later(&feed, &first);
        drop(first);
        tokio::time::sleep(SHARED_READ_KEPT + Duration::from_millis(200)).await;
        assert!(feed.shared.lock().await.is_none(), "let go of");

        let old = shared(2);
        *feed.shared.lock().await = Some(old.clone());
        forget_later(&feed, &old);
        let newer = shared(3);
        *feed.shared.lock().await = Some(newer.clone());
        tokio::time::sleep(SHARED_READ_KEPT + Duration::from_millis(200)).await;
        let kept = feed.shared.lock().await.as_ref().map(|r| r.generation);
        assert_eq!(
            kept,
            Some(3),
            "a newer read is not let go of with the old one"
        );
    }
}
