//! Safe retries at the request level: a [`tower::retry::Policy`] over a per-call service that
//! replays the prost message (never the HTTP body), with exponential backoff and jitter,
//! bounded by attempts and by total time.
//!
//! What is retried (AIP-194):
//! - UNAVAILABLE, DEADLINE_EXCEEDED, a broken connection and `DATABASE_UNAVAILABLE` — for reads
//!   and for mutations, every one of which carries a `request_id`: the SDK gives each logical
//!   call one and sends the same one on every attempt, so the server applies it once and a
//!   repeat after a lost reply gets the first reply (a retried `DeleteGroup` reports success,
//!   not `GROUP_NOT_FOUND`).
//! - RESOURCE_EXHAUSTED rate limits, after the server's `RetryInfo` delay, and ABORTED write
//!   conflicts (not `ETAG_MISMATCH`) — for every call: the server applied nothing.
//! - Never INTERNAL, UNKNOWN, or a rule violation.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use rand::Rng;
use tonic::{Status, transport::Channel};

use crate::{Client, error::Error};

/// How failed calls are retried. The default makes up to 4 attempts, waiting about 100 ms,
/// 200 ms, 400 ms … (at most 5 s) between them, within 30 s in all.
///
/// ```no_run
/// # async fn demo() -> Result<(), parley_sdk::Error> {
/// use std::time::Duration;
/// use parley_sdk::{Client, RetryPolicy};
///
/// let patient = RetryPolicy::default()
///     .max_attempts(8)
///     .initial_backoff(Duration::from_millis(250))
///     .max_backoff(Duration::from_secs(10))
///     .max_elapsed(Duration::from_secs(120));
/// let client = Client::builder("http://127.0.0.1:50051")
///     .bearer_token("<token>")
///     .retry_policy(patient)
///     .connect()
///     .await?;
/// // One handle without retries:
/// let conversations = client.conversations().with_retry_policy(RetryPolicy::disabled());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            max_elapsed: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// One attempt per call: nothing is retried.
    pub fn disabled() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Attempts per call, the first included (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The wait before the first retry (before jitter).
    #[must_use]
    pub fn initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// The longest wait between two attempts (before jitter).
    #[must_use]
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// How much each wait grows over the previous one (at least 1.0).
    #[must_use]
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// The time a call may take in all, attempts and waits included: no retry starts that
    /// would begin after it.
    #[must_use]
    pub fn max_elapsed(mut self, limit: Duration) -> Self {
        self.max_elapsed = limit;
        self
    }

    /// Attempts per call, the first included.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether calls are ever retried.
    pub fn is_enabled(&self) -> bool {
        self.max_attempts > 1
    }

    /// The wait before retry number `retry` (1 for the first), before jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        Duration::from_secs_f64(secs.min(self.max_backoff.as_secs_f64()))
    }

    /// The backoff with "equal jitter": uniformly between half of it and all of it, so that
    /// clients failing together do not retry together.
    fn jittered_backoff(&self, retry: u32) -> Duration {
        let full = self.backoff(retry);
        full.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

/// Whether a method may run twice without harm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Reads.
    Read,
    /// Mutations the server deduplicates by `request_id`.
    Keyed,
}

impl Idempotency {
    /// Whether running the call again, when the first attempt's outcome is unknown, is
    /// harmless. Every method is a read or carries a `request_id`; a mutation without one would
    /// need a variant of its own here, and this match would make it say what a repeat does.
    const fn repeat_is_harmless(self) -> bool {
        match self {
            Self::Read | Self::Keyed => true,
        }
    }
}

/// One RPC: its name (for logs) and how safe a repeat is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Method {
    pub(crate) name: &'static str,
    pub(crate) idempotency: Idempotency,
}

impl Method {
    pub(crate) const fn read(name: &'static str) -> Self {
        Self {
            name,
            idempotency: Idempotency::Read,
        }
    }

    pub(crate) const fn keyed(name: &'static str) -> Self {
        Self {
            name,
            idempotency: Idempotency::Keyed,
        }
    }

    /// Whether `error` may be retried for this method, given what the error says about
    /// whether the server applied the call.
    pub(crate) fn may_retry(&self, error: &Error) -> bool {
        match error {
            // Rejected before running, or rolled back: nothing was applied.
            Error::RateLimited { .. } | Error::Aborted { .. } | Error::WriteConflict { .. } => true,
            // Maybe applied: only where a repeat is harmless.
            Error::DatabaseUnavailable { .. } => self.idempotency.repeat_is_harmless(),
            e if e.outcome_unknown() => self.idempotency.repeat_is_harmless(),
            _ => false,
        }
    }
}

/// The state of one logical call's retries. Cloned fresh for every call.
#[derive(Clone, Debug)]
pub(crate) struct CallPolicy {
    policy: RetryPolicy,
    method: Method,
    attempts: u32,
    started: Instant,
}

impl CallPolicy {
    pub(crate) fn new(policy: RetryPolicy, method: Method) -> Self {
        Self {
            policy,
            method,
            attempts: 1,
            started: Instant::now(),
        }
    }

    /// The wait before the next attempt, or `None` to give up with `error`.
    fn next_delay(&self, error: &Error) -> Option<Duration> {
        if self.attempts >= self.policy.max_attempts || !self.method.may_retry(error) {
            return None;
        }
        let delay = match error.retry_after() {
            // The server's RetryInfo, plus a little so clients told the same do not collide.
            Some(after) => after + self.policy.jittered_backoff(1) / 4,
            None => self.policy.jittered_backoff(self.attempts),
        };
        (self.started.elapsed() + delay < self.policy.max_elapsed).then_some(delay)
    }
}

impl<Req: Clone, Resp> tower::retry::Policy<Req, Resp, Error> for CallPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _request: &mut Req,
        result: &mut Result<Resp, Error>,
    ) -> Option<Self::Future> {
        let error = result.as_ref().err()?;
        let delay = self.next_delay(error)?;
        self.attempts += 1;
        tracing::debug!(
            method = self.method.name,
            attempt = self.attempts,
            delay_ms = delay.as_millis() as u64,
            %error,
            "retrying"
        );
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

/// The service the retry layer wraps: one attempt of one method, from the prost message to
/// the reply or a typed error.
#[derive(Clone)]
pub(crate) struct Attempt<F> {
    client: Client,
    call: F,
    timeout: Option<Duration>,
}

impl<F> Attempt<F> {
    pub(crate) fn new(client: Client, call: F, timeout: Option<Duration>) -> Self {
        Self {
            client,
            call,
            timeout,
        }
    }
}

type AttemptFuture<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>;

impl<Req, Resp, F, Fut> tower::Service<Req> for Attempt<F>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Channel, tonic::Request<Req>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>> + Send + 'static,
{
    type Response = Resp;
    type Error = Error;
    type Future = AttemptFuture<Resp>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // The generated client waits for the channel itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, message: Req) -> Self::Future {
        let (client, call, timeout) = (self.client.clone(), self.call.clone(), self.timeout);
        Box::pin(async move {
            let request = client.request(message, timeout).await?;
            let response = call(client.channel(), request);
            let result = match timeout {
                // Covers connecting too, which the server's deadline cannot.
                Some(limit) => tokio::time::timeout(limit, response)
                    .await
                    .map_err(|_| Error::Timeout { status: None })?,
                None => response.await,
            };
            result
                .map(tonic::Response::into_inner)
                .map_err(Error::from_status)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::{ErrorDetails, StatusExt};

    fn with_reason(code: Code, reason: parley::pb::ErrorReason) -> Error {
        let details = ErrorDetails::with_error_info(
            reason.as_str_name(),
            parley::ERROR_DOMAIN,
            std::collections::HashMap::new(),
        );
        Error::from_status(Status::with_error_details(code, "x", details))
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let p = RetryPolicy::default()
            .initial_backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(500));
        let waits: Vec<u128> = (1..=5).map(|n| p.backoff(n).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 500, 500]);
        for n in 1..=5 {
            let j = p.jittered_backoff(n);
            assert!(j <= p.backoff(n) && j >= p.backoff(n) / 2, "{j:?}");
        }
    }

    #[test]
    fn what_is_retried_depends_on_the_error_and_the_method() {
        use parley::pb::ErrorReason as R;
        let unavailable = Error::from_status(Status::unavailable("down"));
        let deadline = Error::from_status(Status::deadline_exceeded("slow"));
        let conflict = Error::from_status(Status::aborted("serialization failure"));
        let write_conflict = with_reason(Code::Aborted, R::WriteConflict);
        let etag = with_reason(Code::Aborted, R::EtagMismatch);
        let internal = Error::from_status(Status::internal("bug"));
        let unknown = Error::from_status(Status::unknown("?"));
        let db = with_reason(Code::Unavailable, R::DatabaseUnavailable);
        let limited = with_reason(Code::ResourceExhausted, R::RateLimited);
        let rule = with_reason(Code::FailedPrecondition, R::ConversationArchived);

        let read = Method::read("Get");
        let keyed = Method::keyed("Create");
        for m in [read, keyed] {
            for e in [
                &unavailable,
                &deadline,
                &conflict,
                &write_conflict,
                &db,
                &limited,
            ] {
                assert!(m.may_retry(e), "{} {e:?}", m.name);
            }
            for e in [&etag, &internal, &unknown, &rule] {
                assert!(!m.may_retry(e), "{} {e:?}", m.name);
            }
        }
    }

    #[test]
    fn attempts_and_elapsed_time_bound_the_retries() {
        let unavailable = Error::from_status(Status::unavailable("down"));
        let mut call = CallPolicy::new(RetryPolicy::default().max_attempts(3), Method::read("G"));
        assert!(call.next_delay(&unavailable).is_some());
        call.attempts = 3;
        assert!(call.next_delay(&unavailable).is_none(), "attempts used up");

        let short = RetryPolicy::default().max_elapsed(Duration::from_millis(50));
        let call = CallPolicy::new(short, Method::read("G"));
        let limited = Error::RateLimited {
            retry_after: Some(Duration::from_secs(1)),
            status: Status::resource_exhausted("slow down"),
        };
        assert!(
            call.next_delay(&limited).is_none(),
            "would end past the limit"
        );

        let call = CallPolicy::new(RetryPolicy::default(), Method::read("G"));
        let delay = call.next_delay(&limited).expect("retried");
        assert!(
            delay >= Duration::from_secs(1),
            "waits the server's delay: {delay:?}"
        );

        let call = CallPolicy::new(RetryPolicy::disabled(), Method::read("G"));
        assert!(call.next_delay(&unavailable).is_none(), "disabled");
    }
}
