//! [`TimelineWatch`]: a conversation's timeline as a [`Stream`] that reconnects by itself.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use parley::pb::{
    self, conversation_service_client::ConversationServiceClient as Stub,
    watch_timeline_response::Kind,
};
use tonic::Streaming;

use crate::{Client, error::Error};

/// The first wait before reconnecting, doubled after each failed attempt up to
/// [`MAX_BACKOFF`], and back to this once a message arrives.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

type Connecting =
    Pin<Box<dyn Future<Output = Result<Streaming<pb::WatchTimelineResponse>, Error>> + Send>>;

enum State {
    /// Not connected: connect at the next poll.
    Idle,
    Connecting(Connecting),
    Open(Box<Streaming<pb::WatchTimelineResponse>>),
    /// Waiting before the next attempt.
    Backoff(Pin<Box<tokio::time::Sleep>>),
    /// Ended: by an error the caller got, or by [`TimelineWatch::max_reconnects`].
    Done,
}

/// A conversation's timeline, item after item, as they are committed: the items the caller
/// may read after [`TimelineWatch::after_seq`], oldest first, then each new one (SPEC §7).
///
/// The stream survives the connection: when the server goes away (a restart, a replica that
/// stops, a network failure) or ends the watch because the reader fell behind
/// (`WATCH_TOO_SLOW`), it reconnects with exponential backoff and resumes after the last seq
/// it passed, so no item is lost and none repeats. With a client built on several endpoints
/// ([`Client::builder_with_endpoints`]) it resumes on another replica. It ends with
/// [`Error::ParticipantRemoved`] once the caller is removed (after the last item they may
/// read), and with any other error the server answers (not a participant, no such
/// conversation, …). Heartbeats are not items: they move [`TimelineWatch::last_seq`] on.
///
/// ```no_run
/// # async fn demo(client: parley_sdk::Client, conversation_id: &str) -> Result<(), parley_sdk::Error> {
/// use futures::TryStreamExt;
///
/// let mut watch = client.conversations().watch_timeline(conversation_id).after_seq(0);
/// while let Some(item) = watch.try_next().await? {
///     println!("#{}: {:?}", item.seq, item.item);
/// }
/// # Ok(()) }
/// ```
#[must_use = "a watch does nothing until polled"]
pub struct TimelineWatch {
    client: Client,
    conversation_id: String,
    /// Every seq up to this one has been yielded or passed over.
    passed: i64,
    backoff: Duration,
    failures: u32,
    max_reconnects: Option<u32>,
    state: State,
}

impl fmt::Debug for TimelineWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimelineWatch")
            .field("conversation_id", &self.conversation_id)
            .field("last_seq", &self.passed)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl TimelineWatch {
    pub(crate) fn new(client: Client, conversation_id: String) -> Self {
        Self {
            client,
            conversation_id,
            passed: 0,
            backoff: INITIAL_BACKOFF,
            failures: 0,
            max_reconnects: None,
            state: State::Idle,
        }
    }

    /// Starts after `seq`: the last seq the caller already has (0, the default: from the
    /// beginning).
    pub fn after_seq(mut self, seq: i64) -> Self {
        self.passed = seq;
        self
    }

    /// Gives up after `attempts` failed connections in a row, with the last error (default:
    /// never; the stream keeps trying, backing off up to 5 s between attempts).
    pub fn max_reconnects(mut self, attempts: u32) -> Self {
        self.max_reconnects = Some(attempts);
        self
    }

    /// The highest seq passed so far (items yielded, and the seqs of items the caller may not
    /// read, which heartbeats pass over): store it to resume later with
    /// [`TimelineWatch::after_seq`].
    pub fn last_seq(&self) -> i64 {
        self.passed
    }

    fn connect(&self) -> Connecting {
        let client = self.client.clone();
        let message = pb::WatchTimelineRequest {
            conversation_id: self.conversation_id.clone(),
            after_seq: self.passed,
        };
        Box::pin(async move {
            // No deadline: the stream is meant to stay open.
            let request = client.request(message, None).await?;
            let response = Stub::new(client.channel())
                .max_decoding_message_size(parley::MAX_REPLY_BYTES)
                .watch_timeline(request)
                .await?;
            Ok(response.into_inner())
        })
    }

    /// After a failure: back off and try again, or end with `error` when it is not one a
    /// reconnection cures (or the reconnections are used up).
    fn failed(&mut self, error: Error) -> Option<Error> {
        let curable = error.is_retryable() || matches!(error, Error::WatchTooSlow { .. });
        self.failures += 1;
        if !curable || self.max_reconnects.is_some_and(|max| self.failures > max) {
            self.state = State::Done;
            return Some(error);
        }
        let wait = self.backoff.mul_f64(rand::random_range(0.5..=1.0));
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.state = State::Backoff(Box::pin(tokio::time::sleep(wait)));
        None
    }
}

impl Stream for TimelineWatch {
    type Item = Result<pb::TimelineItem, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Idle => this.state = State::Connecting(this.connect()),
                State::Backoff(sleep) => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.state = State::Idle;
                }
                State::Connecting(connecting) => match connecting.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(stream)) => this.state = State::Open(Box::new(stream)),
                    Poll::Ready(Err(e)) => {
                        if let Some(e) = this.failed(e) {
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                },
                State::Open(stream) => match Pin::new(stream.as_mut()).poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(message))) => {
                        this.failures = 0;
                        this.backoff = INITIAL_BACKOFF;
                        match message.kind {
                            Some(Kind::Item(item)) if item.seq > this.passed => {
                                this.passed = item.seq;
                                return Poll::Ready(Some(Ok(item)));
                            }
                            Some(Kind::Heartbeat(heartbeat)) => {
                                this.passed = this.passed.max(heartbeat.seq);
                            }
                            // Not after the last seq passed (never sent by a server keeping
                            // its promise), or a kind this SDK does not know: passed over.
                            Some(Kind::Item(_)) | None => {}
                        }
                    }
                    Poll::Ready(Some(Err(status))) => {
                        if let Some(e) = this.failed(Error::from(status)) {
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                    // A server ends a watch with a status; an end without one is a broken
                    // connection.
                    Poll::Ready(None) => {
                        let broken = Error::from(tonic::Status::unavailable(
                            "the watch ended without a status",
                        ));
                        if let Some(e) = this.failed(broken) {
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                },
            }
        }
    }
}
