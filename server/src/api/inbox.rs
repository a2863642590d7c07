//! WatchInbox (SPEC §7): a user's whole inbox on one stream.
//!
//! The stream keeps, per conversation it shows, the `(seq, viewer_state)` it last sent, and
//! sends a conversation again only when that changes. What the user may read there is
//! decided where every read decides it ([`crate::domain::visibility`]): the viewer and their
//! window, then [`ReadWindow::readable_top`](crate::domain::visibility::ReadWindow::readable_top).
//!
//! It learns of changes from the [`crate::realtime::Hub`]:
//!
//! - each conversation it shows has its feed, as a WatchTimeline's: a commit on this replica
//!   or the replica's poll of latest seqs marks the conversation, and the stream reads the
//!   user's row and the conversation again, for the marked ones only (one statement, plus one
//!   for the user's directory entry, by which the user is judged afresh at each read, and one
//!   for what an external user is shown);
//! - the replica's poll counts the user's participant rows (all, active): a count that moves
//!   means an addition or a removal anywhere, and the stream reads the whole inbox again;
//! - every [`crate::realtime::WatchConfig::heartbeat`] it reads the whole inbox again anyway,
//!   so that a change of the user's kind in the directory (rule 18) moves a quiet inbox too,
//!   and any wake-up lost is made good.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
};

use futures::Stream;
use parley::pb;
use tokio::sync::mpsc;
use tonic::Status;

use super::State;
use super::watch::{Messages, Stop, send_or_stop, shutting_down};
use crate::domain::model::{Conversation, Participant, ParticipantState};
use crate::domain::principal::{Actor, Principal};
use crate::domain::visibility;
use crate::error::Error;
use crate::realtime::{Feed, InboxWake, Permit};
use crate::store;

/// The messages of a WatchInbox stream.
pub type InboxStream = Pin<Box<dyn Stream<Item = Result<pb::WatchInboxResponse, Status>> + Send>>;

/// Conversations one read of the whole inbox takes per statement.
const PAGE: u64 = 1_000;

/// What the stream last sent for a conversation, and its wake-ups.
struct Shown {
    seq: i64,
    state: ParticipantState,
    _feed: Arc<Feed>,
}

/// Opens a WatchInbox stream: the caller must be a user (or a service acting for one); counts
/// the stream, registers its wake-ups, and reads the inbox once, whose errors are the call's
/// own status.
pub(crate) async fn open(
    state: Arc<State>,
    p: Principal,
    req: pb::WatchInboxRequest,
) -> Result<InboxStream, Error> {
    let Actor::User(user_id) = p.actor() else {
        return Err(Error::NoPermission(
            "an inbox is a user's: a service must act for one (x-parley-act-as)",
        ));
    };
    let permit = state
        .hub
        .admit((p.tenant_id.clone(), p.id.clone(), p.acting_for.clone()))?;
    // Registered before the first read: nothing that commits after it is missed.
    let wake = state.hub.inbox(&p.tenant_id, &user_id);
    let mut inbox = Inbox {
        state: state.clone(),
        p,
        user_id,
        include_removed: req.include_removed,
        shown: HashMap::new(),
        wake,
        _permit: permit,
    };
    let first = inbox.read_all().await?;
    let config = state.hub.config().clone();
    let (tx, rx) = mpsc::channel(config.buffer.max(1));
    let ending = Arc::new(Mutex::new(None));
    tokio::spawn(inbox.run(first, tx, ending.clone()));
    Ok(Box::pin(Messages {
        rx,
        ending,
        done: false,
    }))
}

/// One open inbox, run by its own task.
struct Inbox {
    state: Arc<State>,
    p: Principal,
    user_id: String,
    include_removed: bool,
    shown: HashMap<String, Shown>,
    wake: Arc<InboxWake>,
    _permit: Permit,
}

impl Inbox {
    async fn run(
        mut self,
        first: Vec<pb::WatchInboxResponse>,
        tx: mpsc::Sender<Result<pb::WatchInboxResponse, Status>>,
        ending: Arc<Mutex<Option<Status>>>,
    ) {
        let status = Stop::status(self.serve(first, &tx).await);
        *crate::lock(&ending) = Some(status);
    }

    async fn serve(
        &mut self,
        first: Vec<pb::WatchInboxResponse>,
        tx: &mpsc::Sender<Result<pb::WatchInboxResponse, Status>>,
    ) -> Result<(), Stop> {
        let config = self.state.hub.config().clone();
        let mut closing = self.state.hub.closing();
        let mut changes = first;
        let mut last_full = tokio::time::Instant::now();
        loop {
            for message in changes.drain(..) {
                send_or_stop(
                    tx,
                    message,
                    config.send_timeout,
                    &mut closing,
                    || Error::StreamTooSlow("WatchInbox"),
                    shutting_down,
                )
                .await?;
            }
            let timed_out = tokio::select! {
                () = self.wake.notified() => false,
                () = tokio::time::sleep_until(last_full + config.heartbeat) => true,
                _ = closing.wait_for(|c| *c) => return Err(Stop::End(shutting_down())),
                () = tx.closed() => return Err(Stop::Gone),
            };
            let (dirty, memberships) = self.wake.take();
            let read = if timed_out || memberships {
                last_full = tokio::time::Instant::now();
                self.read_all().await
            } else {
                self.read_some(dirty).await
            };
            changes = read.map_err(|e| Stop::End(e.into()))?;
        }
    }

    /// Reads the whole inbox, judging the user afresh; returns what changed since last sent
    /// (at the first read, everything).
    async fn read_all(&mut self) -> Result<Vec<pb::WatchInboxResponse>, Error> {
        self.state.resolve_directory(&mut self.p).await?;
        let mut rows = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let page = store::conversations::list_for_user(
                &self.state.db,
                &self.p.tenant_id,
                &self.user_id,
                true,
                before.as_deref(),
                PAGE,
            )
            .await?;
            let full = page.len() as u64 == PAGE;
            before = page.last().map(|(c, _)| c.id.clone());
            rows.extend(page);
            if !full {
                break;
            }
        }
        let read: std::collections::HashSet<String> =
            rows.iter().map(|(c, _)| c.id.clone()).collect();
        // Rows do not go away; should one, the conversation is no longer shown.
        self.shown.retain(|id, _| read.contains(id));
        self.changes(rows).await
    }

    /// Reads again the conversations among `ids` that the stream shows.
    async fn read_some(&mut self, ids: Vec<String>) -> Result<Vec<pb::WatchInboxResponse>, Error> {
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| self.shown.contains_key(id))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Rule 18 applies at once: the user is judged by the directory at each read.
        self.state.resolve_directory(&mut self.p).await?;
        let rows = store::conversations::of_user_among(
            &self.state.db,
            &self.p.tenant_id,
            &self.user_id,
            &ids,
        )
        .await?;
        self.changes(rows).await
    }

    /// What the user may read in each of `rows`, as messages for those that changed, keeping
    /// `shown` up to date.
    async fn changes(
        &mut self,
        rows: Vec<(Conversation, Participant)>,
    ) -> Result<Vec<pb::WatchInboxResponse>, Error> {
        let mut judged = Vec::with_capacity(rows.len());
        let mut hidden_windows = Vec::new();
        for (c, row) in rows {
            let state = row.state;
            let viewer = visibility::viewer(&c, &self.p, Some(row))?;
            let window = viewer.window();
            if window.hide_internal_events
                && let Some(top) = window.top(c.last_seq)
            {
                hidden_windows.push((c.id.clone(), window.from, top));
            }
            judged.push((c, state, window));
        }
        let shown_tops = if hidden_windows.is_empty() {
            HashMap::new()
        } else {
            store::timeline::shown_tops(&self.state.db, &hidden_windows).await?
        };
        let mut out = Vec::new();
        for (c, state, window) in judged {
            let seq = window.readable_top(c.last_seq, shown_tops.get(&c.id).copied());
            let kept = state == ParticipantState::Active || self.include_removed;
            let before = self.shown.get(&c.id).map(|s| (s.seq, s.state));
            if before != Some((seq, state)) && (kept || before.is_some()) {
                out.push(pb::WatchInboxResponse {
                    conversation_id: c.id.clone(),
                    seq,
                    viewer_state: state as i32,
                });
            }
            if !kept {
                // Removed, and not asked for: told once, then no longer shown.
                self.shown.remove(&c.id);
                continue;
            }
            match self.shown.get_mut(&c.id) {
                Some(shown) => {
                    shown.seq = seq;
                    shown.state = state;
                }
                None => {
                    let feed = self.state.hub.feed(&c.id);
                    feed.listen(&self.wake);
                    // What committed between the read and now woke nobody: look once more.
                    self.wake.recheck(&c.id);
                    self.shown.insert(
                        c.id.clone(),
                        Shown {
                            seq,
                            state,
                            _feed: feed,
                        },
                    );
                }
            }
        }
        Ok(out)
    }
}
