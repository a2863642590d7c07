//! [`InboxWatch`] and [`NotificationStream`]: server streams that reconnect by themselves.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt, stream::BoxStream};
use parley::pb::{
    self, conversation_service_client::ConversationServiceClient as Conversations,
    notification_service_client::NotificationServiceClient as NotificationStub,
};
use tonic::Streaming;

use crate::{Client, Notifications, error::Error};

/// The first wait before reconnecting, doubled after each failed attempt up to
/// [`MAX_BACKOFF`], and back to this once a message arrives.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

type Connect<M> = Arc<
    dyn Fn(Client) -> Pin<Box<dyn Future<Output = Result<Streaming<M>, Error>> + Send>>
        + Send
        + Sync,
>;

/// A server stream opened again, with backoff, whenever it breaks or the server ends it with
/// an error a reconnection cures (UNAVAILABLE, `WATCH_TOO_SLOW`, …); any other error ends it.
struct Reconnecting<M> {
    client: Client,
    connect: Connect<M>,
    open: Option<Streaming<M>>,
    backoff: Duration,
    failures: u32,
    max_reconnects: Option<u32>,
    done: bool,
}

impl<M: Send + 'static> Reconnecting<M> {
    /// The next message; `Some(Ok)` after a reconnection too (the caller learns of those
    /// only by what the server sends first).
    async fn next(&mut self) -> Option<Result<M, Error>> {
        loop {
            if self.done {
                return None;
            }
            let stream = match &mut self.open {
                Some(stream) => stream,
                None => match (self.connect)(self.client.clone()).await {
                    Ok(stream) => self.open.insert(stream),
                    Err(e) => {
                        if let Some(e) = self.failed(e).await {
                            return Some(Err(e));
                        }
                        continue;
                    }
                },
            };
            let error = match stream.message().await {
                Ok(Some(message)) => {
                    self.failures = 0;
                    self.backoff = INITIAL_BACKOFF;
                    return Some(Ok(message));
                }
                Err(status) => Error::from(status),
                // A server ends these streams with a status; an end without one is a broken
                // connection.
                Ok(None) => Error::from(tonic::Status::unavailable(
                    "the stream ended without a status",
                )),
            };
            self.open = None;
            if let Some(e) = self.failed(error).await {
                return Some(Err(e));
            }
        }
    }

    /// After a failure: backs off, or returns `error` when a reconnection does not cure it
    /// (or the reconnections are used up).
    async fn failed(&mut self, error: Error) -> Option<Error> {
        let curable = error.is_retryable() || matches!(error, Error::WatchTooSlow { .. });
        self.failures += 1;
        if !curable || self.max_reconnects.is_some_and(|max| self.failures > max) {
            self.done = true;
            return Some(error);
        }
        let wait = self.backoff.mul_f64(rand::random_range(0.5..=1.0));
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        tokio::time::sleep(wait).await;
        None
    }

    fn into_stream(self) -> BoxStream<'static, Result<M, Error>> {
        futures::stream::unfold(self, |mut this| async move {
            this.next().await.map(|item| (item, this))
        })
        .boxed()
    }
}

fn reconnecting<M: Send + 'static>(
    client: Client,
    max_reconnects: Option<u32>,
    connect: Connect<M>,
) -> Reconnecting<M> {
    Reconnecting {
        client,
        connect,
        open: None,
        backoff: INITIAL_BACKOFF,
        failures: 0,
        max_reconnects,
        done: false,
    }
}

/// One conversation of an inbox: the highest seq the caller may read there, and whether they
/// are still in it (`viewer_state` ACTIVE or REMOVED).
pub type InboxEntry = pb::WatchInboxResponse;

/// The caller's inbox as a [`Stream`] of [`InboxEntry`] (SPEC §7, WatchInbox): first one per
/// conversation the caller is in, then one each time a conversation's readable seq or the
/// caller's standing changes. Open a [`TimelineWatch`](crate::TimelineWatch) or list the
/// timeline for the conversations you show.
///
/// It reconnects by itself with backoff (on another replica, with a client built on several
/// endpoints) and yields, after a reconnection, only the conversations that changed while it
/// was away: it remembers what it yielded. A removal while it was away is yielded only with
/// [`InboxWatch::include_removed`]; without it, a conversation the caller left while the
/// stream was away just stops moving.
///
/// ```no_run
/// # async fn demo(gateway: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
/// use futures::TryStreamExt;
/// use parley_sdk::pb::participant::State;
///
/// // A UI gateway, a service acting for the user it serves: one stream per user.
/// let mut inbox = gateway.act_as("alice")?.conversations().watch_inbox();
/// while let Some(entry) = inbox.try_next().await? {
///     match entry.viewer_state() {
///         State::Removed => println!("{}: alice left (read up to #{})", entry.conversation_id, entry.seq),
///         _ => println!("{}: readable up to #{}", entry.conversation_id, entry.seq),
///     }
/// }
/// # Ok(()) }
/// ```
#[must_use = "a watch does nothing until polled"]
pub struct InboxWatch {
    client: Client,
    include_removed: bool,
    max_reconnects: Option<u32>,
    yielded: HashMap<String, (i64, i32)>,
    stream: Option<BoxStream<'static, Result<InboxEntry, Error>>>,
}

impl fmt::Debug for InboxWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboxWatch")
            .field("include_removed", &self.include_removed)
            .field("conversations", &self.yielded.len())
            .finish_non_exhaustive()
    }
}

impl InboxWatch {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            include_removed: false,
            max_reconnects: None,
            yielded: HashMap::new(),
            stream: None,
        }
    }

    /// Also the conversations the caller was removed from, from the start.
    pub fn include_removed(mut self, include: bool) -> Self {
        self.include_removed = include;
        self
    }

    /// Gives up after `attempts` failed connections in a row, with the last error (default:
    /// never).
    pub fn max_reconnects(mut self, attempts: u32) -> Self {
        self.max_reconnects = Some(attempts);
        self
    }

    fn open(&self) -> BoxStream<'static, Result<InboxEntry, Error>> {
        let include_removed = self.include_removed;
        let connect: Connect<InboxEntry> = Arc::new(move |client: Client| {
            Box::pin(async move {
                let message = pb::WatchInboxRequest { include_removed };
                // No deadline: the stream is meant to stay open.
                let request = client.request(message, None).await?;
                let response = Conversations::new(client.channel())
                    .max_decoding_message_size(parley::MAX_REPLY_BYTES)
                    .watch_inbox(request)
                    .await?;
                Ok(response.into_inner())
            })
        });
        reconnecting(self.client.clone(), self.max_reconnects, connect).into_stream()
    }
}

impl Stream for InboxWatch {
    type Item = Result<InboxEntry, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.stream.is_none() {
            this.stream = Some(this.open());
        }
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(entry))) => {
                    let now = (entry.seq, entry.viewer_state);
                    // What a reconnection sends again unchanged is not news.
                    if this.yielded.insert(entry.conversation_id.clone(), now) == Some(now) {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(entry)));
                }
                other => return other,
            }
        }
    }
}

/// The tenant's notifications as a [`Stream`] (SPEC §7, StreamNotifications; service
/// principals): unacknowledged ones oldest first, then each new one, each leased to this
/// stream until acknowledged or for [`NotificationStream::lease_seconds`]. Acknowledge each
/// once it is delivered, with [`Delivery::ack`] or in batches through an [`Acker`]; one not
/// acknowledged within its lease, or still held when the stream breaks, is delivered again
/// (here or to a competing stream). Delivery is at least once: make handling idempotent.
///
/// ```no_run
/// # async fn demo(service: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
/// use futures::TryStreamExt;
///
/// let mut stream = service.notifications().stream().max_in_flight(50).lease_seconds(60);
/// let acker = stream.acker();
/// let mut done = Vec::new();
/// while let Some(delivery) = stream.try_next().await? {
///     println!("deliver {:?} for {}", delivery.notification.kind(), delivery.notification.conversation_id);
///     done.push(delivery.notification.id.clone());
///     if done.len() == 20 {
///         acker.ack(done.drain(..)).await?;
///     }
/// }
/// # Ok(()) }
/// ```
#[must_use = "a stream does nothing until polled"]
pub struct NotificationStream {
    notifications: Notifications,
    max_in_flight: i32,
    lease_seconds: i32,
    max_reconnects: Option<u32>,
    stream: Option<BoxStream<'static, Result<pb::Notification, Error>>>,
}

impl fmt::Debug for NotificationStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationStream")
            .field("max_in_flight", &self.max_in_flight)
            .field("lease_seconds", &self.lease_seconds)
            .finish_non_exhaustive()
    }
}

/// One notification delivered by a [`NotificationStream`], with what acknowledges it.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The notification, as ListNotifications shows it.
    pub notification: pb::Notification,
    acker: Acker,
}

impl Delivery {
    /// Acknowledges this notification (one call; see [`Acker`] for batches). Returns whether
    /// it was newly acknowledged.
    pub async fn ack(&self) -> Result<bool, Error> {
        Ok(self.acker.ack([self.notification.id.clone()]).await? > 0)
    }
}

/// Acknowledges notifications delivered by a [`NotificationStream`], from any task.
#[derive(Clone, Debug)]
pub struct Acker {
    notifications: Notifications,
}

impl Acker {
    /// Acknowledges `ids`; returns how many were newly acknowledged.
    pub async fn ack<I, S>(&self, ids: I) -> Result<u32, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.notifications.ack(ids).await
    }
}

impl NotificationStream {
    pub(crate) fn new(notifications: Notifications) -> Self {
        Self {
            notifications,
            max_in_flight: 0,
            lease_seconds: 0,
            max_reconnects: None,
            stream: None,
        }
    }

    /// Notifications delivered and not yet acknowledged, at most (1..=1000; default 100):
    /// the stream waits for acknowledgements before it delivers more.
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.max_in_flight = i32::try_from(n).unwrap_or(i32::MAX);
        self
    }

    /// How long a delivered notification stays this stream's without an acknowledgement
    /// (1..=3600 seconds; default 30).
    pub fn lease_seconds(mut self, seconds: u32) -> Self {
        self.lease_seconds = i32::try_from(seconds).unwrap_or(i32::MAX);
        self
    }

    /// Gives up after `attempts` failed connections in a row, with the last error (default:
    /// never).
    pub fn max_reconnects(mut self, attempts: u32) -> Self {
        self.max_reconnects = Some(attempts);
        self
    }

    /// What acknowledges this stream's deliveries in batches.
    pub fn acker(&self) -> Acker {
        Acker {
            notifications: self.notifications.clone(),
        }
    }

    fn open(&self) -> BoxStream<'static, Result<pb::Notification, Error>> {
        let message = pb::StreamNotificationsRequest {
            max_in_flight: self.max_in_flight,
            lease_seconds: self.lease_seconds,
        };
        let connect: Connect<pb::Notification> = Arc::new(move |client: Client| {
            Box::pin(async move {
                let request = client.request(message, None).await?;
                let response = NotificationStub::new(client.channel())
                    .max_decoding_message_size(parley::MAX_REPLY_BYTES)
                    .stream_notifications(request)
                    .await?;
                Ok(response.into_inner())
            })
        });
        let client = self.notifications.client().clone();
        reconnecting(client, self.max_reconnects, connect).into_stream()
    }
}

impl Stream for NotificationStream {
    type Item = Result<Delivery, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.stream.is_none() {
            this.stream = Some(this.open());
        }
        let acker = this.acker();
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(None);
        };
        stream.poll_next_unpin(cx).map(|next| {
            next.map(|result| {
                result.map(|notification| Delivery {
                    notification,
                    acker,
                })
            })
        })
    }
}
