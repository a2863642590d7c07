//! The gRPC transport: one file per service. Handlers decode and validate the request, call
//! the store (which applies the domain rules inside its transaction) and encode the reply.

mod conversation;
pub(crate) mod convert;
mod directory;
mod inbox;
mod notification;
mod notification_stream;
mod participant;
mod watch;

use std::{future::Future, sync::Arc, time::Instant};

use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::Instrument;

use crate::auth::{KeyFile, Verifier};
use crate::config::Config;
use crate::domain::model::Conversation;
use crate::domain::model::{Candidate, UserKind, micros, now_micros};
use crate::domain::paging::Pager;
use crate::domain::principal::{
    Actor, DirectoryVerdict, Principal, PrincipalKind, entry_from_token, judge_directory, judged,
};
use crate::domain::validate;
use crate::domain::visibility::{self, Viewer};
use crate::error::Error;
use crate::store::{
    self, directory as dir,
    requests::{self, RequestKey},
};

/// When a call reads the directory entry of the user it is judged as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Directory {
    /// Before the handler runs.
    First,
    /// In the statement that loads the call's conversation: [`State::read_access`] for a read,
    /// [`store::lock_with_caller`] for a mutation.
    WithConversation,
}

/// The metadata key a service principal names the user it acts for with.
pub const ACT_AS_HEADER: &str = "x-parley-act-as";

/// What every handler shares.
pub struct State {
    pub config: Config,
    /// Reads (on PostgreSQL, the same pool as the writer).
    pub db: store::Conn,
    /// Every write goes through it (on SQLite, one connection that writes take turns on).
    pub writer: store::Writer,
    pub verifier: Verifier,
    pub pager: Pager,
    /// Derives invitation link tokens (rule 23) from the key file's invitation secret.
    pub invitation_links: store::invitations::LinkKey,
    limiter: Option<RateLimiter<Bucket>>,
    service_limiter: Option<RateLimiter<(String, String)>>,
    /// Where each call is counted; `None` when metrics are off.
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The open watches of this replica and what wakes them.
    pub hub: Arc<crate::realtime::Hub>,
    /// What the replica's exporter is told of each commit that added timeline items, when
    /// export is on.
    pub export: Option<Arc<crate::export::Marks>>,
}

type RateLimiter<K> = governor::DefaultKeyedRateLimiter<K>;

/// Whose calls one rate-limit bucket counts. Users and services are separate namespaces
/// (SPEC §5): a user whose `sub` equals a service's name does not share its budget.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Bucket {
    User {
        tenant: String,
        id: String,
    },
    /// A service, per user it acts for (`None`: acting as administrator).
    Service {
        tenant: String,
        id: String,
        acting_for: Option<String>,
    },
}

/// Past this many keys a limiter forgets the buckets that are full again.
const MAX_LIMITER_KEYS: usize = 100_000;

fn rate_limiter<K: Clone + Eq + std::hash::Hash>(per_second: u32) -> Option<RateLimiter<K>> {
    let rate = std::num::NonZeroU32::new(per_second)?;
    let burst = rate.saturating_mul(std::num::NonZeroU32::MIN.saturating_add(1));
    Some(governor::RateLimiter::keyed(
        governor::Quota::per_second(rate).allow_burst(burst),
    ))
}

/// Takes one call from `key`'s bucket, or says how long to wait for one.
fn take<K: Clone + Eq + std::hash::Hash>(
    limiter: Option<&RateLimiter<K>>,
    key: &K,
) -> Result<(), Error> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    if limiter.len() > MAX_LIMITER_KEYS {
        limiter.retain_recent();
    }
    // The limiter's own clock: making one per call would probe the CPU (a `cpuid`, which traps
    // to the hypervisor on a virtual machine) every time.
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(limiter.clock()));
        // Whole milliseconds, rounded up: "retry in 0 ms" would invite a retry too early.
        let millis = wait.as_nanos().div_ceil(1_000_000).max(1);
        Error::RateLimited {
            retry_after: std::time::Duration::from_millis(
                u64::try_from(millis).unwrap_or(u64::MAX),
            ),
        }
    })
}

impl State {
    pub fn new(config: Config, db: store::Db, verifier: Verifier, key: &KeyFile) -> Self {
        let limiter = rate_limiter(config.limits.rate_limit_per_second);
        let service_limiter = rate_limiter(config.limits.service_rate_limit_per_second);
        let hub = crate::realtime::Hub::new(config.watch.clone());
        Self {
            config,
            db: db.read,
            writer: db.writer,
            verifier,
            pager: Pager::new(key.secret()),
            invitation_links: store::invitations::LinkKey::new(key.invitation_secret()),
            limiter,
            service_limiter,
            metrics: None,
            hub,
            export: None,
        }
    }

    /// Counts every call in `metrics` (`None`: metrics off, nothing is recorded).
    pub fn with_metrics(mut self, metrics: Option<Arc<crate::metrics::Metrics>>) -> Self {
        if let Some(metrics) = &metrics {
            self.hub.count_in(metrics.watch_streams().clone());
        }
        self.metrics = metrics;
        self
    }

    /// Each principal's calls per second on this replica (RESOURCE_EXHAUSTED with RetryInfo past
    /// it). A service is limited per user it acts for and, in a second bucket, in all; the
    /// per-user bucket is asked first, so one busy user does not spend the service's total.
    /// Runs on the token alone, before any database work, so a flood costs no statements.
    fn admit(&self, p: &Principal) -> Result<(), Error> {
        if !p.is_service() {
            return take(
                self.limiter.as_ref(),
                &Bucket::User {
                    tenant: p.tenant_id.clone(),
                    id: p.id.clone(),
                },
            );
        }
        take(
            self.limiter.as_ref(),
            &Bucket::Service {
                tenant: p.tenant_id.clone(),
                id: p.id.clone(),
                acting_for: p.acting_for.clone(),
            },
        )?;
        take(
            self.service_limiter.as_ref(),
            &(p.tenant_id.clone(), p.id.clone()),
        )
    }

    /// Verifies the bearer token and reads the act-as header: everything about the caller that
    /// needs no database. The act-as user is checked against the directory later, in
    /// [`State::resolve_directory`].
    fn identify(&self, metadata: &MetadataMap) -> Result<Principal, Error> {
        let authorization = match metadata.get("authorization") {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| Error::TokenInvalid("the authorization header is not text"))?,
            ),
        };
        let mut principal = self.verifier.verify(authorization)?;
        let act_as = match metadata.get(ACT_AS_HEADER) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| Error::field(ACT_AS_HEADER, "must be text"))?
                    .to_owned(),
            ),
        };
        match (principal.kind, act_as) {
            (PrincipalKind::Service, Some(user_id)) => {
                validate::id_field(ACT_AS_HEADER, &user_id)?;
                principal.acting_for = Some(user_id);
            }
            (_, None) => {}
            (_, Some(_)) => {
                return Err(Error::NoPermission(
                    "only service principals may act for another user",
                ));
            }
        }
        Ok(principal)
    }

    /// The directory kind of the user the call is judged as (see
    /// [`Principal::directory_kind`]), given that user's entry as just read (`entry`), as
    /// [`judge_directory`] decides; a user principal's first call adds its entry.
    async fn judge_directory(
        &self,
        p: &Principal,
        entry: Option<crate::domain::model::User>,
    ) -> Result<Option<UserKind>, Error> {
        match judge_directory(p, entry.as_ref().map(Candidate::from).as_ref())? {
            DirectoryVerdict::Known(kind) => Ok(kind),
            DirectoryVerdict::Add(kind) => self.add_directory_entry(p, kind).await.map(Some),
        }
    }

    /// Reads the directory entry of the user `p` is judged as and judges it
    /// ([`Self::judge_directory`]).
    async fn resolve_directory(&self, p: &mut Principal) -> Result<(), Error> {
        let entry = match p.actor() {
            Actor::User(id) => dir::get_user(&self.db, &p.tenant_id, &id).await?,
            Actor::Admin(_) => None,
        };
        p.directory_kind = self.judge_directory(p, entry).await?;
        p.directory_read = true;
        Ok(())
    }

    /// A user principal's first call adds it to the directory from its token claims (a
    /// concurrent first call may win; either way the entry exists after). Returns the stored
    /// entry's kind.
    async fn add_directory_entry(&self, p: &Principal, kind: UserKind) -> Result<UserKind, Error> {
        dir::insert_user_if_missing(self.writer.conn(), entry_from_token(p, kind, now_micros()))
            .await?;
        // The stored entry, which a concurrent first call may have written.
        let stored = dir::get_user(self.writer.conn(), &p.tenant_id, &p.id).await?;
        match judge_directory(p, stored.as_ref().map(Candidate::from).as_ref())? {
            DirectoryVerdict::Known(Some(kind)) => Ok(kind),
            _ => Ok(kind),
        }
    }

    /// Authenticates a call in the order that keeps floods cheap: the token and headers (no
    /// database, [`Self::identify`], already done), then the rate limit, then the directory
    /// reads. With [`Directory::WithConversation`], the directory is left for the call's own
    /// load.
    async fn authenticate(
        &self,
        identified: Result<Principal, Error>,
        directory: Directory,
    ) -> Result<Principal, Error> {
        let mut principal = identified?;
        self.admit(&principal)?;
        if directory == Directory::First {
            self.resolve_directory(&mut principal).await?;
        }
        Ok(principal)
    }

    /// A conversation of the caller's tenant and who the caller is to it: any participant,
    /// active or removed (rules 15, 18, 19), or a service acting as administrator. Run it on
    /// the read transaction ([`store::begin_read`]) the rest of the read uses, so that the
    /// authorization and the fetch see one snapshot.
    pub(crate) async fn read_access<C: store::EachRow>(
        &self,
        db: &C,
        p: &Principal,
        conversation_id: &str,
    ) -> Result<(Conversation, Viewer), Error> {
        let actor = p.actor();
        let read =
            store::conversation_with_caller(db, &p.tenant_id, conversation_id, actor.user_id())
                .await?;
        judge_read(p, conversation_id, read)
    }

    /// Runs one RPC: authenticates, calls `f` (again, a few times, if its write lost to a
    /// concurrent one), maps its error, and logs one line.
    pub(crate) async fn handle<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        request: Request<Req>,
        f: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        F: Fn(Principal, Req) -> Fut,
        Fut: Future<Output = Result<Resp, Error>>,
    {
        self.run(method, request, Directory::First, |_, _| Ok(()), f)
            .await
    }

    /// [`Self::handle`] for a call about one conversation, which reads the caller's directory
    /// entry in the statement that loads the conversation and the caller's seat
    /// ([`Self::read_access`] for a read, [`store::lock_with_caller`] for a mutation): one
    /// statement instead of two. The handler must load the conversation that way before
    /// anything judges the caller ([`visibility::viewer`] refuses a caller not judged yet).
    pub(crate) async fn handle_conversation<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        request: Request<Req>,
        f: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        F: Fn(Principal, Req) -> Fut,
        Fut: Future<Output = Result<Resp, Error>>,
    {
        self.run(
            method,
            request,
            Directory::WithConversation,
            |_, _| Ok(()),
            f,
        )
        .await
    }

    /// [`Self::handle_conversation`] with [`Self::handle_bounded`]'s bounds.
    pub(crate) async fn handle_conversation_bounded<Req, Resp, B, F, Fut>(
        &self,
        method: &'static str,
        request: Request<Req>,
        bounds: B,
        f: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        B: FnOnce(&crate::config::Limits, &Req) -> Result<(), Error>,
        F: Fn(Principal, Req) -> Fut,
        Fut: Future<Output = Result<Resp, Error>>,
    {
        self.run(method, request, Directory::WithConversation, bounds, f)
            .await
    }

    /// [`Self::handle`], checking `bounds` (given the server's limits) on the request as soon
    /// as the caller is known: before the request is copied (each attempt gets a copy) or a
    /// handler sees it, so a request with a huge list is refused without any per-item work
    /// (SPEC §4 "Bounds").
    pub(crate) async fn handle_bounded<Req, Resp, B, F, Fut>(
        &self,
        method: &'static str,
        request: Request<Req>,
        bounds: B,
        f: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        B: FnOnce(&crate::config::Limits, &Req) -> Result<(), Error>,
        F: Fn(Principal, Req) -> Fut,
        Fut: Future<Output = Result<Resp, Error>>,
    {
        self.run(method, request, Directory::First, bounds, f).await
    }

    async fn run<Req, Resp, B, F, Fut>(
        &self,
        method: &'static str,
        request: Request<Req>,
        directory: Directory,
        bounds: B,
        f: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        B: FnOnce(&crate::config::Limits, &Req) -> Result<(), Error>,
        F: Fn(Principal, Req) -> Fut,
        Fut: Future<Output = Result<Resp, Error>>,
    {
        let started = Instant::now();
        // The token first (no IO), so that the span is made once with every field: recording a
        // field later re-formats the span's fields, and a call would pay that five times.
        let identified = self.identify(request.metadata());
        let who = identified.as_ref().ok();
        let trace = request
            .metadata()
            .get(TRACEPARENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse);
        // One span per RPC: every line logged inside the call carries who made it, and the
        // caller's trace when it sent one.
        let span = tracing::info_span!(
            "rpc",
            method,
            tenant = who.map(|p| p.tenant_id.as_str()),
            principal = who.map(|p| p.id.as_str()),
            act_as = who.map(|p| p.acting_for.as_deref().unwrap_or("")),
            trace_id = trace.as_ref().map(|t| t.trace_id),
            parent_span_id = trace.as_ref().map(|t| t.parent_id),
        );
        async move {
            let (_, _, message) = request.into_parts();
            let limits = &self.config.limits;
            let result = match self
                .authenticate(identified, directory)
                .await
                .and_then(|p| bounds(limits, &message).map(|()| p))
            {
                Ok(mut p) => match retry_write_conflicts(|| f(p.clone(), message.clone())).await {
                    // A newcomer's first call: add its directory entry, then run it again,
                    // judged by that entry.
                    Err(Error::NewcomerEntry) => match self.resolve_directory(&mut p).await {
                        Ok(()) => retry_write_conflicts(|| f(p.clone(), message.clone())).await,
                        Err(e) => Err(e),
                    },
                    other => other,
                },
                Err(e) => Err(e),
            };
            let elapsed = started.elapsed();
            let latency_ms = elapsed.as_secs_f64() * 1000.0;
            let code = match &result {
                Ok(_) => tonic::Code::Ok,
                Err(e) => e.code(),
            };
            if let Some(metrics) = &self.metrics {
                metrics.record(method, code, elapsed);
            }
            match result {
                Ok(reply) => {
                    tracing::info!(code = ?code, latency_ms, "rpc");
                    Ok(Response::new(reply))
                }
                Err(e) => {
                    let reason = e.reason().as_str_name();
                    tracing::info!(code = ?code, reason, latency_ms, "rpc");
                    Err(e.into())
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// Who the caller is to a conversation, given what [`store::conversation_with_caller`] read:
/// the directory first, as a call that reads it up front would (a deactivated caller learns
/// nothing of which conversations exist), then the conversation of the tenant, then the
/// caller's standing in it ([`visibility::viewer`]).
pub(crate) fn judge_read(
    p: &Principal,
    conversation_id: &str,
    read: store::WithCaller,
) -> Result<(Conversation, Viewer), Error> {
    let p = judged(p, read.user.as_ref())?;
    let c = read
        .conversation
        .ok_or_else(|| Error::ConversationNotFound(conversation_id.to_owned()))?;
    let viewer = visibility::viewer(&c, &p, read.participant)?;
    Ok((c, viewer))
}

/// [`judge_read`] for a read that took of the conversation only whether it is the tenant's
/// ([`store::CallerSeat`]): who the caller is to it depends on nothing else.
pub(crate) fn judge_seat(
    p: &Principal,
    conversation_id: &str,
    read: store::CallerSeat,
) -> Result<Viewer, Error> {
    let p = judged(p, read.user.as_ref())?;
    if !read.conversation {
        return Err(Error::ConversationNotFound(conversation_id.to_owned()));
    }
    visibility::viewer_by_id(conversation_id, &p, read.participant)
}

/// The W3C trace context header (<https://www.w3.org/TR/trace-context/>).
const TRACEPARENT_HEADER: &str = "traceparent";

/// The parts of a caller's `traceparent` the RPC's span records, borrowed from the header.
#[derive(Debug, PartialEq, Eq)]
struct TraceParent<'a> {
    trace_id: &'a str,
    parent_id: &'a str,
}

impl<'a> TraceParent<'a> {
    /// `version-trace_id-parent_id-flags`, each lowercase hex of 2, 32, 16 and 2 digits, ids
    /// not all zero, version not `ff`. A later version may append fields after the flags (the
    /// specification asks to read the first four then); version 00 may not. Anything else is
    /// `None`: a malformed header is ignored, never an error.
    fn parse(header: &'a str) -> Option<Self> {
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let non_zero = |s: &str| s.bytes().any(|b| b != b'0');
        let mut parts = header.splitn(5, '-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let parent_id = parts.next()?;
        let flags = parts.next()?;
        let rest = parts.next();
        let well_formed = hex(version, 2)
            && version != "ff"
            && hex(trace_id, 32)
            && non_zero(trace_id)
            && hex(parent_id, 16)
            && non_zero(parent_id)
            && hex(flags, 2)
            && (rest.is_none() || version != "00");
        well_formed.then_some(Self {
            trace_id,
            parent_id,
        })
    }
}

/// Attempts after the first when a write loses to a concurrent one.
const WRITE_CONFLICT_RETRIES: u32 = 3;
/// Past this much time the conflict is answered, not retried: a SQLite writer that waited out
/// its whole busy timeout should not wait it out again.
const WRITE_CONFLICT_RETRY_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs `attempt` until it does not fail with [`Error::WriteConflict`], at most
/// [`WRITE_CONFLICT_RETRIES`] more times and within [`WRITE_CONFLICT_RETRY_WINDOW`], with a short
/// jittered backoff. A conflict rolls the whole transaction back (its request record
/// included), so running the call again is safe; the client sees ABORTED `WRITE_CONFLICT`
/// only if the conflicts outlast these retries (SPEC §4).
pub(crate) async fn retry_write_conflicts<T, F, Fut>(mut attempt: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    use rand::Rng;
    let started = Instant::now();
    let mut retries = 0;
    loop {
        match attempt().await {
            Err(Error::WriteConflict(detail))
                if retries < WRITE_CONFLICT_RETRIES
                    && started.elapsed() < WRITE_CONFLICT_RETRY_WINDOW =>
            {
                retries += 1;
                tracing::debug!(%detail, retries, "write conflict: running the call again");
                let base_ms = 5u64 << retries;
                let wait = rand::rng().random_range(base_ms / 2..=base_ms);
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            }
            other => return other,
        }
    }
}

/// Deletes request records past their retention and notifications acknowledged longer ago
/// than theirs, every `sweep_interval`. Every replica sweeps; the deletes are idempotent.
fn spawn_sweeper(state: Arc<State>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let limits = state.config.limits.clone();
        let mut tick = tokio::time::interval(limits.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = now_micros();
            let requests = requests::prune(
                state.writer.conn(),
                now - micros(limits.request_id_retention),
            )
            .await;
            let acked = store::outbox::prune_acked(
                state.writer.conn(),
                now - micros(limits.acked_notification_retention),
            )
            .await;
            match (requests, acked) {
                (Ok(0), Ok(0)) => {}
                (Ok(requests), Ok(acked)) => {
                    tracing::info!(requests, acked_notifications = acked, "swept expired rows");
                }
                (r, a) => tracing::warn!(requests = ?r.err(), acked = ?a.err(), "sweep failed"),
            }
        }
    })
}

/// A mutation's transaction, or the reply recorded for its `request_id`.
pub(crate) enum Begun<R> {
    Replayed(R),
    Fresh(Box<Mutation>),
}

/// One write transaction that records its reply under the request id, if any.
pub(crate) struct Mutation {
    tx: store::WriteTx,
    key: Option<RequestKey>,
    db: store::Conn,
    /// The replica's streams, which the commit wakes.
    hub: Arc<crate::realtime::Hub>,
    /// The conversation whose watches on this replica the commit wakes.
    woken: Option<String>,
    /// The replica's exporter, handed the items the commit added, and the caller's tenant.
    export: Option<(Arc<crate::export::Marks>, String)>,
}

fn decode<R: prost::Message + Default>(bytes: &[u8]) -> Result<R, Error> {
    R::decode(bytes).map_err(|e| Error::Internal(format!("a recorded reply does not decode: {e}")))
}

/// Whose request ids a call's `request_id` is among. Users and services are separate
/// namespaces (SPEC §5): a user whose `sub` equals a service's name must not get the service's
/// recorded reply. A service acting for a user is a principal of its own per user: one service
/// retrying for alice and for bob with the same request id must not get alice's reply for bob.
/// A user's key is its id; a service's contains a space, which no id may, so neither can be
/// mistaken for a user's, and is hashed to fit the 128-character column.
fn request_principal(p: &Principal) -> String {
    match (p.kind, &p.acting_for) {
        (PrincipalKind::Service, None) => {
            format!("service {}", hex::encode(Sha256::digest(&p.id)))
        }
        (PrincipalKind::Service, Some(user)) => format!(
            "act-as {}",
            hex::encode(Sha256::digest(format!("{} {user}", p.id)))
        ),
        _ => p.id.clone(),
    }
}

impl State {
    /// Starts a mutation: returns the recorded reply if this `request_id` was already
    /// applied for this principal (AIP-155), else an open write transaction.
    pub(crate) async fn begin<Req: prost::Message, R: prost::Message + Default>(
        &self,
        p: &Principal,
        method: &'static str,
        request_id: &str,
        request: &Req,
        conversation_id: Option<&str>,
    ) -> Result<Begun<R>, Error> {
        let key = if request_id.is_empty() {
            None
        } else {
            // Handlers check it first too; this keeps every mutation covered.
            validate::request_id(request_id)?;
            Some(RequestKey {
                tenant_id: p.tenant_id.clone(),
                principal_id: request_principal(p),
                request_id: request_id.to_owned(),
                method,
                fingerprint: hex::encode(Sha256::digest(request.encode_to_vec())),
                retention_micros: micros(self.config.limits.request_id_retention),
            })
        };
        if let Some(key) = &key
            && let Some(bytes) = requests::recorded(&self.db, key).await?
        {
            // The directory still applies to a repeat: a caller deactivated since gets no
            // recorded reply.
            if !p.directory_read {
                self.resolve_directory(&mut p.clone()).await?;
            }
            return Ok(Begun::Replayed(decode(&bytes)?));
        }
        let tx = match conversation_id {
            // Writes to one conversation take turns on its lock: they commit in groups.
            Some(id) => {
                let key = format!("{}/{id}", p.tenant_id);
                self.writer.begin_on(&key).await?
            }
            None => self.writer.begin().await?,
        };
        Ok(Begun::Fresh(Box::new(Mutation {
            tx,
            key,
            db: self.db.clone(),
            hub: self.hub.clone(),
            woken: conversation_id.map(str::to_owned),
            export: self
                .export
                .as_ref()
                .map(|marks| (marks.clone(), p.tenant_id.clone())),
        })))
    }
}

impl Mutation {
    /// The transaction the mutation's statements run in.
    pub(crate) fn tx(&self) -> &store::WriteTx {
        &self.tx
    }

    /// Records the reply under the request id and commits. If a concurrent call with the same
    /// request id committed first, this one is rolled back and the winner's reply returned.
    pub(crate) async fn finish<R: prost::Message + Default>(self, reply: R) -> Result<R, Error> {
        let Mutation {
            tx,
            key,
            db,
            hub,
            woken,
            export,
        } = self;
        if let Some(key) = &key
            && !requests::record(&tx, key, reply.encode_to_vec()).await?
        {
            // The winner may have committed in this write's SQLite group: the group ends
            // before the winner's record is read.
            tx.rollback().await?;
            return match requests::recorded(&db, key).await? {
                Some(bytes) => decode(&bytes),
                // The winner's record expired in between (a retention of moments): this call
                // was rolled back, so running it again is safe, and it will record its own.
                None => Err(Error::WriteConflict(
                    "a concurrent call's request record expired".into(),
                )),
            };
        }
        let outbox = tx.outbox_changed();
        let appended = tx.appended();
        tx.commit().await?;
        if let Some((marks, tenant_id)) = export {
            marks.mark(&tenant_id, appended);
        }
        if let Some(conversation_id) = woken {
            hub.committed(&conversation_id);
        }
        if outbox {
            hub.outbox_changed();
        }
        Ok(reply)
    }
}

/// Starts a mutation or returns its recorded reply from the enclosing function; `on =` names
/// the conversation whose lock it takes first, if any (see [`crate::store::Writer::begin_on`]).
macro_rules! begin_mutation {
    ($state:expr, $p:expr, $method:expr, $req:expr) => {
        begin_mutation!(@ $state, $p, $method, $req, None)
    };
    ($state:expr, $p:expr, $method:expr, $req:expr, on = $conversation:expr) => {
        begin_mutation!(@ $state, $p, $method, $req, Some($conversation))
    };
    (@ $state:expr, $p:expr, $method:expr, $req:expr, $on:expr) => {
        match $state.begin($p, $method, &$req.request_id, &$req, $on).await? {
            $crate::api::Begun::Replayed(reply) => return Ok(reply),
            $crate::api::Begun::Fresh(m) => *m,
        }
    };
}
pub(crate) use begin_mutation;

/// Cuts a list read with `size + 1` rows down to `size` and seals the token of the page after
/// it (empty on the last page).
pub(crate) fn next_page<T>(
    pager: &Pager,
    list: &str,
    scope: &str,
    items: &mut Vec<T>,
    size: u64,
    key: impl Fn(&T) -> String,
) -> String {
    if items.len() as u64 <= size {
        return String::new();
    }
    items.truncate(size as usize);
    items
        .last()
        .map(|last| pager.seal(list, scope, &key(last)))
        .unwrap_or_default()
}

/// The caller must be a service principal (DirectoryService, NotificationService).
pub(crate) fn require_service(p: &Principal) -> Result<(), Error> {
    if p.is_service() {
        Ok(())
    } else {
        Err(Error::NoPermission(
            "only service principals may call this method",
        ))
    }
}

/// Whom the call is judged as (for reads and writes on conversations).
pub(crate) fn actor(p: &Principal) -> Actor {
    p.actor()
}

/// How often the health service checks that the database answers.
const HEALTH_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// How often a quiet connection is pinged.
const HTTP2_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);
/// How long a ping may go unanswered before the connection and its streams are dropped.
const HTTP2_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const TCP_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(60);
/// Streams (calls and watches) one connection may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 1_000;

/// Serves every Parley service plus health and reflection until `shutdown` resolves.
pub async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    tls: Option<tonic::transport::Identity>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use parley::pb::{
        conversation_service_server::ConversationServiceServer,
        directory_service_server::DirectoryServiceServer,
        notification_service_server::NotificationServiceServer,
        participant_service_server::ParticipantServiceServer,
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // Health follows the database: every service (and "") is NOT_SERVING while it is unreachable.
    let services = [
        "",
        <ConversationServiceServer<conversation::Conversations> as tonic::server::NamedService>::NAME,
        <ParticipantServiceServer<participant::Participants> as tonic::server::NamedService>::NAME,
        <DirectoryServiceServer<directory::Directory> as tonic::server::NamedService>::NAME,
        <NotificationServiceServer<notification::Notifications> as tonic::server::NamedService>::NAME,
    ];
    let set_health = move |reporter: tonic_health::server::HealthReporter, up: bool| async move {
        let status = if up {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        for service in services {
            reporter.set_service_status(service, status).await;
        }
    };
    set_health(health_reporter.clone(), true).await;
    let watcher = {
        let db = state.db.clone();
        let reporter = health_reporter.clone();
        tokio::spawn(async move {
            let mut up = true;
            let mut tick = tokio::time::interval(HEALTH_CHECK_INTERVAL);
            loop {
                tick.tick().await;
                let now_up = db.ping().await.is_ok();
                if now_up != up {
                    up = now_up;
                    tracing::warn!(database_reachable = up, "health changed");
                    set_health(reporter.clone(), up).await;
                }
            }
        })
    };
    let sweeper = spawn_sweeper(state.clone());
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(parley::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc.Status and the error details as tonic-types encodes them, so that grpcurl
        // decodes an error's ErrorInfo and BadRequest exactly as they are sent.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(parley::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let hub = state.hub.clone();
    let poller = hub.spawn_poller(state.db.clone());
    // Open watches end (UNAVAILABLE) as soon as shutdown begins, so the drain of in-flight
    // calls that follows does not wait for streams that would never end.
    let shutdown = {
        let hub = hub.clone();
        async move {
            shutdown.await;
            hub.close();
        }
    };
    // A long stream needs the transport to notice a peer that is gone: HTTP/2 pings on a quiet
    // connection (a peer that does not answer within the timeout is dropped with its
    // streams) and TCP keepalive underneath; and each connection's streams are bounded.
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .tcp_keepalive(Some(TCP_KEEPALIVE))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION));
    if let Some(identity) = tls {
        server = server.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    let result = server
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(ConversationServiceServer::new(conversation::Conversations(
            state.clone(),
        )))
        .add_service(ParticipantServiceServer::new(participant::Participants(
            state.clone(),
        )))
        .add_service(DirectoryServiceServer::new(directory::Directory(
            state.clone(),
        )))
        .add_service(NotificationServiceServer::new(notification::Notifications(
            state,
        )))
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY, replies of several segments wait for a delayed ACK (~40 ms).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await;
    hub.close();
    watcher.abort();
    sweeper.abort();
    poller.abort();
    result?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn a_well_formed_traceparent_names_the_trace_and_the_parent() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            TraceParent::parse(header),
            Some(TraceParent {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
                parent_id: "00f067aa0ba902b7",
            })
        );
        // A later version may carry more fields; the first four are read.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
                .is_some()
        );
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        for header in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(header), None, "{header:?}");
        }
    }

    #[tokio::test]
    async fn write_conflicts_are_run_again_until_they_pass() {
        let calls = AtomicU32::new(0);
        let result = retry_write_conflicts(|| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(Error::WriteConflict("lost".into())),
                _ => Ok("applied"),
            }
        })
        .await;
        assert!(matches!(result, Ok("applied")), "{result:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn lasting_write_conflicts_are_answered() {
        let calls = AtomicU32::new(0);
        let result: Result<(), Error> = retry_write_conflicts(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::WriteConflict("lost".into()))
        })
        .await;
        assert!(matches!(result, Err(Error::WriteConflict(_))), "{result:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1 + WRITE_CONFLICT_RETRIES);
    }

    #[tokio::test]
    async fn other_errors_are_not_run_again() {
        let calls = AtomicU32::new(0);
        let result: Result<(), Error> = retry_write_conflicts(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::Internal("bug".into()))
        })
        .await;
        assert!(matches!(result, Err(Error::Internal(_))), "{result:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
