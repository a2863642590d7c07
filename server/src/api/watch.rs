//! WatchTimeline (SPEC §7): one conversation's timeline as a stream, resumable by seq.
//!
//! A watch is a loop of reads. Each read is ListTimeline's: a read transaction that judges the
//! caller afresh ([`State::read_access`], so a removal, a change of kind in the directory or a
//! deactivation applies at the next read) and reads, within the viewer's window, the items
//! after the last seq passed. The stream sends them, then waits for a wake-up from the
//! [`crate::realtime::Hub`] (a commit here, or the replica's poll of the latest seqs) or for
//! its heartbeat. It subscribes to wake-ups before its first read, so a commit is never
//! between a read and the wait unnoticed.
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
use crate::domain::model::TimelineItem;
use crate::domain::principal::Principal;
use crate::domain::validate;
use crate::error::Error;
use crate::realtime::{Feed, Permit};
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
    // The last seq the caller may ever read here: below their removal, if removed.
    let last = match window.until {
        Some(until) => conversation.last_seq.min(until - 1),
        None => conversation.last_seq,
    };
    let full = items.len() as u64 == READ_PAGE;
    // Writes to one conversation commit in seq order (each holds the conversation's row until
    // it commits), so an item read means every seq below it is committed.
    let newest = items.last().map_or(after, |item| item.seq).max(after);
    let passed = if full { newest } else { last.max(newest) };
    Ok(Read {
        items,
        passed,
        removed: window.until.is_some() && !full,
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
        _feed: feed,
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
    _feed: Arc<Feed>,
    _permit: Permit,
}

/// Why a watch's sending stopped.
enum Stop {
    /// The reader went away: nobody to tell.
    Gone,
    /// End the stream with this status.
    End(Status),
}

impl Watch {
    /// Sends reads and heartbeats until the stream must end, then leaves its final status in
    /// `ending` for [`Messages`] and lets go of the queue (and of its place among the watches).
    async fn run(mut self, first: Read, ending: Arc<Mutex<Option<Status>>>) {
        let status = match self.serve(first).await {
            Err(Stop::Gone) | Ok(()) => Status::cancelled("the reader went away"),
            Err(Stop::End(status)) => status,
        };
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
            // After a full page, read on at once; else wait for news or for the heartbeat,
            // which reads anyway (a directory change applies, a lost wake-up is made good).
            if read.items.len() as u64 != READ_PAGE {
                tokio::select! {
                    changed = self.wake.changed() => {
                        if changed.is_err() {
                            return Err(Stop::End(shutting_down()));
                        }
                        self.wake.borrow_and_update();
                    }
                    () = tokio::time::sleep_until(last_sent + config.heartbeat) => {}
                    _ = self.closing.wait_for(|c| *c) => return Err(Stop::End(shutting_down())),
                    // The reader went away: let go of the watch now, not at the next send.
                    () = self.tx.closed() => return Err(Stop::Gone),
                }
            }
            read = read_after(&self.state, &self.p, &self.conversation_id, read.passed)
                .await
                .map_err(|e| Stop::End(e.into()))?;
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
        tokio::select! {
            sent = tokio::time::timeout(config.send_timeout, self.tx.send(Ok(message))) => {
                match sent {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(Stop::Gone),
                    Err(_) => Err(Stop::End(
                        Error::WatchTooSlow(self.conversation_id.clone()).into(),
                    )),
                }
            }
            _ = self.closing.wait_for(|c| *c) => Err(Stop::End(shutting_down())),
        }
    }
}

/// The status streams end with when the server shuts down: the client resumes elsewhere.
pub(crate) fn shutting_down() -> Status {
    Status::unavailable("the server is shutting down; resume the watch from its last seq")
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
