//! StreamNotifications (SPEC §7): the outbox delivered to competing streams, each
//! notification leased to one of them at a time.
//!
//! A stream is a random holder id and a loop. Each turn it learns what it still holds (leased
//! to it, neither acknowledged nor expired: one read of `notifications_by_holder`), and while
//! it holds fewer than `max_in_flight` it claims the oldest notifications nobody holds, up to
//! the difference, in one short write transaction (on PostgreSQL `FOR UPDATE SKIP LOCKED`, so
//! streams on any replicas claim different rows), and sends them. Then it waits for a write on
//! this replica that added notifications or acknowledged some ([`crate::realtime::Hub::outbox`]),
//! or for the replica's poll interval, for writes and acknowledgements elsewhere; before it
//! claims again after a poll it asks, with a read, whether anything is free, so an idle stream
//! writes nothing.
//!
//! A lease ends by an acknowledgement (the row leaves `notifications`), by its time
//! (`lease_seconds`; any stream may claim it then, this one included), or with its stream: a
//! stream that ends for any reason gives back what it holds at once. A replica that dies
//! gives back nothing; its leases end by their time. Delivery is at least once: a consumer
//! that acknowledges late may see a notification twice.

use std::{
    collections::BTreeSet,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::Stream;
use parley::pb;
use tokio::sync::{mpsc, watch};
use tonic::Status;

use super::watch::{Messages, Stop, send_or_stop};
use super::{State, convert, require_service};
use crate::domain::model::now_micros;
use crate::domain::principal::Principal;
use crate::error::Error;
use crate::realtime::Permit;
use crate::store::{self, outbox};

/// The messages of a StreamNotifications stream.
pub type NotificationStream = Pin<Box<dyn Stream<Item = Result<pb::Notification, Status>> + Send>>;

/// `max_in_flight` when the request leaves it 0, and its bound.
pub const DEFAULT_IN_FLIGHT: usize = 100;
pub const MAX_IN_FLIGHT: usize = 1_000;
/// `lease_seconds` when the request leaves it 0, and its bound.
pub const DEFAULT_LEASE_SECONDS: u64 = 30;
pub const MAX_LEASE_SECONDS: u64 = 3_600;

/// The request's settings, checked: every field at once (AIP-193).
fn settings(req: &pb::StreamNotificationsRequest) -> Result<(usize, Duration), Error> {
    let mut v = crate::domain::validate::Violations::default();
    let in_flight = match usize::try_from(req.max_in_flight) {
        Ok(0) => DEFAULT_IN_FLIGHT,
        Ok(n) if n <= MAX_IN_FLIGHT => n,
        _ => {
            v.check::<()>(Err(Error::field(
                "max_in_flight",
                format!("must be 1..{MAX_IN_FLIGHT}, or 0 for {DEFAULT_IN_FLIGHT}"),
            )));
            0
        }
    };
    let lease = match u64::try_from(req.lease_seconds) {
        Ok(0) => DEFAULT_LEASE_SECONDS,
        Ok(n) if n <= MAX_LEASE_SECONDS => n,
        _ => {
            v.check::<()>(Err(Error::field(
                "lease_seconds",
                format!("must be 1..{MAX_LEASE_SECONDS}, or 0 for {DEFAULT_LEASE_SECONDS}"),
            )));
            0
        }
    };
    v.finish()?;
    Ok((in_flight, Duration::from_secs(lease)))
}

/// A notification as the wire carries it. Rule 23: an invitation's link token is derived
/// again, never read from the row; once acknowledged the notification has been delivered and
/// goes without it (see the proto's `invitation_token`).
pub(crate) fn to_wire(
    links: &store::invitations::LinkKey,
    tenant_id: &str,
    n: outbox::Notification,
) -> Result<pb::Notification, Error> {
    let invitation_token = match (&n.invitation_id, n.ack_time) {
        (Some(id), None) => links.token(tenant_id, id)?,
        _ => String::new(),
    };
    Ok(pb::Notification {
        id: n.id,
        kind: n.kind as i32,
        recipient: Some(match n.recipient {
            outbox::Recipient::User(u) => pb::notification::Recipient::RecipientUserId(u),
            outbox::Recipient::Email(e) => pb::notification::Recipient::RecipientEmail(e),
        }),
        conversation_id: n.conversation_id,
        actor_id: n.actor_id,
        subject_ids: n.subject_ids,
        invitation_token,
        create_time: Some(convert::timestamp(n.create_time)),
    })
}

/// Opens a StreamNotifications stream: checks the caller and the request, counts the stream
/// among the replica's watches and makes the first claim, whose errors are the call's own
/// status; later ones end the stream.
pub(crate) async fn open(
    state: Arc<State>,
    p: Principal,
    req: pb::StreamNotificationsRequest,
) -> Result<NotificationStream, Error> {
    require_service(&p)?;
    let (max_in_flight, lease) = settings(&req)?;
    let permit = state
        .hub
        .admit((p.tenant_id.clone(), p.id.clone(), p.acting_for.clone()))?;
    let mut wake = state.hub.outbox();
    wake.borrow_and_update();
    let mut streamer = Streamer {
        state: state.clone(),
        tenant_id: p.tenant_id.clone(),
        holder: store::new_id(),
        max_in_flight,
        lease,
        held: BTreeSet::new(),
        wake,
        closing: state.hub.closing(),
        _permit: permit,
    };
    let first = match streamer.claim().await {
        Ok(first) => first,
        Err(e) => {
            streamer.give_back().await;
            return Err(e);
        }
    };
    let (tx, rx) = mpsc::channel(max_in_flight);
    let ending = Arc::new(Mutex::new(None));
    tokio::spawn(streamer.run(first, tx, ending.clone()));
    Ok(Box::pin(Messages {
        rx,
        ending,
        done: false,
    }))
}

/// One open stream, run by its own task.
struct Streamer {
    state: Arc<State>,
    tenant_id: String,
    /// This stream's name in the rows it leases.
    holder: String,
    max_in_flight: usize,
    lease: Duration,
    /// What the stream delivered and, as far as it knows, still holds.
    held: BTreeSet<String>,
    wake: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    _permit: Permit,
}

impl Streamer {
    /// Sends until the stream must end, gives back what it holds, then leaves its final
    /// status in `ending` and lets go of the queue.
    async fn run(
        mut self,
        first: Vec<pb::Notification>,
        tx: mpsc::Sender<Result<pb::Notification, Status>>,
        ending: Arc<Mutex<Option<Status>>>,
    ) {
        let status = Stop::status(self.serve(first, &tx).await);
        self.give_back().await;
        *crate::lock(&ending) = Some(status);
        drop(tx);
    }

    async fn serve(
        &mut self,
        first: Vec<pb::Notification>,
        tx: &mpsc::Sender<Result<pb::Notification, Status>>,
    ) -> Result<(), Stop> {
        let poll = self.state.hub.config().poll_interval;
        let send_timeout = self.state.hub.config().send_timeout;
        let mut batch = first;
        loop {
            for n in batch.drain(..) {
                send_or_stop(
                    tx,
                    n,
                    send_timeout,
                    &mut self.closing,
                    || Error::StreamTooSlow("StreamNotifications"),
                    shutting_down,
                )
                .await?;
            }
            // Wait for news: a write here, or the poll interval for writes elsewhere.
            let polled = tokio::select! {
                changed = self.wake.changed() => {
                    if changed.is_err() {
                        return Err(Stop::End(shutting_down()));
                    }
                    self.wake.borrow_and_update();
                    false
                }
                () = tokio::time::sleep(poll) => true,
                _ = self.closing.wait_for(|c| *c) => return Err(Stop::End(shutting_down())),
                () = tx.closed() => return Err(Stop::Gone),
            };
            let end = |e: Error| Stop::End(e.into());
            self.refresh().await.map_err(end)?;
            if self.held.len() >= self.max_in_flight {
                continue;
            }
            if polled && !self.anything_free().await.map_err(end)? {
                continue;
            }
            batch = self.claim().await.map_err(end)?;
        }
    }

    /// Forgets what is no longer this stream's: acknowledged, or its lease over.
    async fn refresh(&mut self) -> Result<(), Error> {
        if self.held.is_empty() {
            return Ok(());
        }
        let still =
            outbox::held(&self.state.db, &self.tenant_id, &self.holder, now_micros()).await?;
        self.held = still.into_iter().collect();
        Ok(())
    }

    /// Whether the tenant has a notification nobody holds now.
    async fn anything_free(&self) -> Result<bool, Error> {
        outbox::any_free(&self.state.db, &self.tenant_id, now_micros()).await
    }

    /// Leases the oldest free notifications, up to the room left, to this stream.
    async fn claim(&mut self) -> Result<Vec<pb::Notification>, Error> {
        let room = self.max_in_flight.saturating_sub(self.held.len());
        if room == 0 {
            return Ok(Vec::new());
        }
        let now = now_micros();
        let until = now.saturating_add(i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX));
        let tx = self.state.writer.begin().await?;
        let claimed =
            outbox::claim(&tx, &self.tenant_id, &self.holder, until, now, room as u64).await?;
        tx.commit().await?;
        self.held.extend(claimed.iter().map(|n| n.id.clone()));
        let links = &self.state.invitation_links;
        claimed
            .into_iter()
            .map(|n| to_wire(links, &self.tenant_id, n))
            .collect()
    }

    /// Gives back what the stream holds, so that another stream gets it now rather than when
    /// its lease ends. A failure is logged: the leases then end by their time.
    async fn give_back(&mut self) {
        let released = async {
            let tx = self.state.writer.begin().await?;
            let n = outbox::release(&tx, &self.tenant_id, &self.holder).await?;
            tx.commit().await?;
            Ok::<u64, Error>(n)
        };
        match tokio::time::timeout(Duration::from_secs(5), released).await {
            Ok(Ok(n)) => {
                self.held.clear();
                if n > 0 {
                    // The replica's other streams may take them now.
                    self.state.hub.outbox_changed();
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "a notification stream's leases were not given back; they end by their time")
            }
            Err(_) => tracing::warn!(
                "giving back a notification stream's leases took too long; they end by their time"
            ),
        }
    }
}

/// The status streams end with when the server shuts down: the consumer opens another.
fn shutting_down() -> Status {
    Status::unavailable(
        "the server is shutting down; what this stream held is delivered again to another",
    )
}
