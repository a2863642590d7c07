//! The typed [`Error`] every SDK call returns, rebuilt from the server's `google.rpc.Status`
//! details (`ErrorInfo`, `BadRequest`, `RetryInfo`).
//!
//! Each [`ErrorReason`] the server can send has a variant of its own carrying the reason's
//! metadata; statuses without a Parley `ErrorInfo` (a proxy, a load balancer, the transport)
//! fall back to one variant per gRPC code. The original [`tonic::Status`] stays available as the
//! error's [`source`](std::error::Error::source) and through [`Error::status`].

use std::{collections::HashMap, error::Error as StdError, time::Duration};

use parley::pb::ErrorReason;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// A boxed error, as token providers and transports return them.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The result of an SDK call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One invalid request field, from the status's `BadRequest` details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The request field, e.g. `title` or `conversation.policy.max_participants`.
    pub field: String,
    /// Why the value was rejected, in words.
    pub description: String,
    /// The machine-readable reason, when the server named a known one.
    pub reason: Option<ErrorReason>,
}

/// Why one invitee of an atomic `AddParticipants` call failed (nothing was applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteeFailure {
    /// The index of the invitee in the request's invitee list.
    pub index: usize,
    /// The field as the server named it, e.g. `invitees[2]`.
    pub field: String,
    /// The reason this invitee failed (e.g. [`ErrorReason::CantInviteSelf`]).
    pub reason: Option<ErrorReason>,
    /// The failure in words, e.g. naming the user and the group it came through.
    pub description: String,
}

/// Everything a Parley call can fail with.
///
/// Match on the variants you handle and keep a catch-all arm: new variants may be added.
///
/// ```no_run
/// # async fn demo(client: parley_sdk::Client) {
/// use parley_sdk::Error;
/// match client.conversations().archive("0190c7e2-…").await {
///     Ok(conversation) => println!("archived {}", conversation.id),
///     Err(Error::NoPermission { .. } | Error::NotAParticipant { .. }) => println!("not allowed"),
///     Err(Error::ConversationNotFound { conversation_id, .. }) => {
///         println!("{conversation_id} is gone")
///     }
///     Err(e) if e.is_retryable() => println!("try again later: {e}"),
///     Err(e) => println!("failed: {e}"),
/// }
/// # }
/// ```
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ----- one variant per ErrorReason -------------------------------------------------------
    /// `INVALID_FIELD`: request fields are malformed, empty or too long.
    #[error("invalid request: {}", describe(violations))]
    InvalidField {
        /// The offending fields.
        violations: Vec<FieldViolation>,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `TOKEN_MISSING`: the call carried no bearer token.
    #[error("no bearer token was sent")]
    TokenMissing {
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `TOKEN_INVALID`: the token is malformed, forged or names no valid principal.
    #[error("the bearer token is not valid")]
    TokenInvalid {
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `TOKEN_EXPIRED`: the token has expired; fetch a new one.
    #[error("the bearer token has expired")]
    TokenExpired {
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `NO_PERMISSION`: the principal lacks the role this call needs (e.g. a user calling
    /// DirectoryService).
    #[error("the caller may not make this call")]
    NoPermission {
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `NOT_A_PARTICIPANT`: the caller is not an active participant of the conversation.
    #[error("the caller is not a participant of conversation {conversation_id}")]
    NotAParticipant {
        /// The conversation.
        conversation_id: String,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `NO_INVITE_PERMISSION`: the policy's `add_internal` does not let the caller add.
    #[error("{}", with_invitees(format!("the caller may not add internal participants to conversation {conversation_id}"), invitees))]
    NoInvitePermission {
        /// The conversation.
        conversation_id: String,
        /// Every failing invitee of the batch (nothing was applied).
        invitees: Vec<InviteeFailure>,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `NO_EXTERNAL_INVITE_PERMISSION`: the policy's `add_external` does not let the caller add
    /// external users or invite by email.
    #[error("{}", with_invitees(format!("the caller may not add external participants to conversation {conversation_id}"), invitees))]
    NoExternalInvitePermission {
        /// The conversation.
        conversation_id: String,
        /// Every failing invitee of the batch (nothing was applied).
        invitees: Vec<InviteeFailure>,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `NO_REMOVE_PERMISSION`: the policy's `remove` does not let the caller remove.
    #[error("the caller may not remove participants of conversation {conversation_id}")]
    NoRemovePermission {
        /// The conversation.
        conversation_id: String,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `PARTICIPANT_REMOVED`: the caller was removed; they may read their history only.
    #[error("the caller was removed from conversation {conversation_id}")]
    ParticipantRemoved {
        /// The conversation.
        conversation_id: String,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `CONVERSATION_NOT_FOUND`: no such conversation in the caller's tenant.
    #[error("conversation {conversation_id} not found")]
    ConversationNotFound {
        /// The conversation id as sent.
        conversation_id: String,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `PARTICIPANT_NOT_FOUND`: the user is not a participant of the conversation.
    #[error("user {user_id} is not a participant of conversation {conversation_id}")]
    ParticipantNotFound {
        /// The conversation.
        conversation_id: String,
        /// The user.
        user_id: String,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `USER_NOT_FOUND`: no such user in the directory.
    #[error(
        "{}",
        with_invitees(one_or_batch("user", user_id, "not found"), invitees)
    )]
    UserNotFound {
        /// The user, when one call named one user.
        user_id: Option<String>,
        /// Every failing invitee, when an `AddParticipants` batch failed.
        invitees: Vec<InviteeFailure>,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `GROUP_NOT_FOUND`: no such group in the directory.
    #[error(
        "{}",
        with_invitees(one_or_batch("group", group_id, "not found"), invitees)
    )]
    GroupNotFound {
        /// The group, when one call named one group.
        group_id: Option<String>,
        /// Every failing invitee, when an `AddParticipants` batch failed.
        invitees: Vec<InviteeFailure>,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `GROUP_EMPTY`: the group has no active member, so it adds nobody.
    #[error(
        "{}",
        with_invitees(one_or_batch("group", group_id, "has no active member"), invitees)
    )]
    GroupEmpty {
        /// The group, when one call named one group.
        group_id: Option<String>,
        /// Every failing invitee, when an `AddParticipants` batch failed.
        invitees: Vec<InviteeFailure>,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `INVITATION_NOT_FOUND`: no invitation with this token or id.
    #[error("invitation not found")]
    InvitationNotFound {
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `USER_DEACTIVATED`: the user is deactivated in the directory.
    #[error(
        "{}",
        with_invitees(one_or_batch("user", user_id, "is deactivated"), invitees)
    )]
    UserDeactivated {
        /// The user, when one call named one user.
        user_id: Option<String>,
        /// Every failing invitee, when an `AddParticipants` batch failed.
        invitees: Vec<InviteeFailure>,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `CANT_INVITE_SELF`: the caller named themselves as an invitee.
    #[error("{}", with_invitees("the caller cannot invite themselves".to_owned(), invitees))]
    CantInviteSelf {
        /// Every failing invitee of the batch (nothing was applied).
        invitees: Vec<InviteeFailure>,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `ALREADY_PARTICIPANT`: an outcome rather than a failure; the server reports it in
    /// `AddParticipants` results, not as an error.
    #[error("already a participant")]
    AlreadyParticipant {
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `ALREADY_INVITED`: an outcome rather than a failure, like [`Error::AlreadyParticipant`].
    #[error("already invited")]
    AlreadyInvited {
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `TOO_MANY_INVITEES`: one `AddParticipants` call takes at most `max` invitees.
    #[error("too many invitees in one call (at most {})", or_unknown(max))]
    TooManyInvitees {
        /// The server's limit.
        max: Option<u32>,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `TOO_MANY_INITIAL_PARTICIPANTS`: a new conversation takes at most `max` people, the
    /// creator included.
    #[error(
        "too many participants at creation (at most {}, the creator included)",
        or_unknown(max)
    )]
    TooManyInitialParticipants {
        /// The server's limit.
        max: Option<u32>,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `CANT_REMOVE_SELF`: nobody removes themselves, the owner included.
    #[error("the caller cannot remove themselves")]
    CantRemoveSelf {
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `CANT_REMOVE_OWNER`: the owner cannot be removed.
    #[error("the owner of conversation {conversation_id} cannot be removed")]
    CantRemoveOwner {
        /// The conversation.
        conversation_id: String,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `CONVERSATION_ARCHIVED`: the conversation is read-only until unarchived.
    #[error("conversation {conversation_id} is archived")]
    ConversationArchived {
        /// The conversation.
        conversation_id: String,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `CONVERSATION_CLOSED`: the conversation is read-only for good.
    #[error("conversation {conversation_id} is closed")]
    ConversationClosed {
        /// The conversation.
        conversation_id: String,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `UNSUPPORTED_FOR_DIRECT`: a DIRECT conversation's roster never changes.
    #[error("the roster of direct conversation {conversation_id} cannot change")]
    UnsupportedForDirect {
        /// The conversation.
        conversation_id: String,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `EXTERNAL_ROSTER_LOCKED`: external participants are fixed since the first message.
    #[error("{}", with_invitees(format!("external participants of conversation {conversation_id} are locked"), invitees))]
    ExternalRosterLocked {
        /// The conversation.
        conversation_id: String,
        /// Every failing invitee, when an `AddParticipants` batch failed.
        invitees: Vec<InviteeFailure>,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `PARTICIPANT_LIMIT_EXCEEDED`: the change would put the conversation over its
    /// `max_participants`.
    #[error(
        "conversation {conversation_id} would exceed its participant limit of {}",
        or_unknown(max_participants)
    )]
    ParticipantLimitExceeded {
        /// The conversation.
        conversation_id: String,
        /// The conversation's limit.
        max_participants: Option<i32>,
        /// The number of active participants the change would have led to.
        would_have: Option<i64>,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `INVITATION_EXPIRED`: the invitation is past its expiry time.
    #[error("the invitation has expired")]
    InvitationExpired {
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `INVITATION_NOT_PENDING`: the invitation was already accepted, declined or revoked.
    #[error("the invitation is no longer pending")]
    InvitationNotPending {
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `INVITATION_EMAIL_MISMATCH`: the invitation was sent to another email than the
    /// caller's token carries.
    #[error("the invitation was sent to another email address")]
    InvitationEmailMismatch {
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `ETAG_MISMATCH`: the conversation changed since it was read; read it again and retry
    /// the update with the new etag. Never retried by the SDK.
    #[error("the conversation changed since it was read (stale etag)")]
    EtagMismatch {
        /// The etag the request carried.
        etag: Option<String>,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `REQUEST_ID_REUSED`: the request id was used before for a different request.
    #[error("request id {request_id} was already used for a different request")]
    RequestIdReused {
        /// The request id.
        request_id: String,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `RATE_LIMITED` (or RESOURCE_EXHAUSTED with a `RetryInfo`): the principal sends too many
    /// calls. Retried by the SDK after the server's delay.
    #[error("rate limited{}", match retry_after { Some(d) => format!(", retry after {d:?}"), None => String::new() })]
    RateLimited {
        /// How long the server asked the client to wait (its `RetryInfo`).
        retry_after: Option<Duration>,
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `DATABASE_UNAVAILABLE`: the server cannot reach its database; it recovers by itself.
    #[error("the server's database is unavailable")]
    DatabaseUnavailable {
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `WRITE_CONFLICT` (ABORTED): the write collided with a concurrent one and was rolled
    /// back; nothing was applied. Retried by the SDK.
    #[error("the write collided with a concurrent one and was rolled back")]
    WriteConflict {
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `WATCH_TOO_SLOW` (RESOURCE_EXHAUSTED): a watch stream fell too far behind and was ended;
    /// open it again from the last seq received.
    #[error("the watch fell too far behind and was ended")]
    WatchTooSlow {
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `TOO_MANY_WATCHES` (RESOURCE_EXHAUSTED): too many watch streams are open for this
    /// principal (or this service in total) on the replica.
    #[error("too many open watch streams")]
    TooManyWatches {
        /// The status the server sent.
        #[source]
        status: Status,
    },
    /// `INTERNAL` (or a status with code INTERNAL or DATA_LOSS): a server fault. Never retried.
    #[error("internal server error")]
    Internal {
        /// The status the server sent.
        #[source]
        status: Status,
    },

    // ----- statuses without a Parley reason ----------------------------------------------------
    /// UNAUTHENTICATED without a Parley reason.
    #[error("unauthenticated: {}", status.message())]
    Unauthenticated {
        /// The status received.
        #[source]
        status: Status,
    },
    /// PERMISSION_DENIED without a Parley reason.
    #[error("permission denied: {}", status.message())]
    PermissionDenied {
        /// The status received.
        #[source]
        status: Status,
    },
    /// NOT_FOUND without a Parley reason.
    #[error("not found: {}", status.message())]
    NotFound {
        /// The status received.
        #[source]
        status: Status,
    },
    /// INVALID_ARGUMENT without a Parley reason.
    #[error("invalid argument: {}", status.message())]
    InvalidArgument {
        /// The `BadRequest` violations, if any.
        violations: Vec<FieldViolation>,
        /// The status received.
        #[source]
        status: Status,
    },
    /// FAILED_PRECONDITION without a Parley reason.
    #[error("failed precondition: {}", status.message())]
    FailedPrecondition {
        /// The status received.
        #[source]
        status: Status,
    },
    /// ALREADY_EXISTS without a Parley reason.
    #[error("already exists: {}", status.message())]
    AlreadyExists {
        /// The status received.
        #[source]
        status: Status,
    },
    /// ABORTED other than `ETAG_MISMATCH`: a write conflict (e.g. a serialization failure) that
    /// outlived the server's own retries. Nothing was applied; retried by the SDK.
    #[error("the call conflicted with another and was aborted: {}", status.message())]
    Aborted {
        /// The status received.
        #[source]
        status: Status,
    },
    /// UNAVAILABLE: the server or the network is down; the server may not have seen the call.
    #[error("unavailable: {}", status.message())]
    Unavailable {
        /// The status received (or made by the transport).
        #[source]
        status: Status,
    },
    /// The call's deadline passed: the per-call timeout fired (`status` is `None`) or the
    /// server answered DEADLINE_EXCEEDED.
    #[error("the call timed out")]
    Timeout {
        /// The DEADLINE_EXCEEDED status, when one was received.
        #[source]
        status: Option<Status>,
    },
    /// CANCELLED: the call was cancelled.
    #[error("cancelled: {}", status.message())]
    Cancelled {
        /// The status received.
        #[source]
        status: Status,
    },
    /// UNIMPLEMENTED: the server does not know this method (an older server?).
    #[error("not implemented by the server: {}", status.message())]
    Unimplemented {
        /// The status received.
        #[source]
        status: Status,
    },
    /// The connection failed: it could not be opened, or it broke during the call (the server
    /// may or may not have applied it).
    #[error("transport error: {source}")]
    Transport {
        /// The transport's error (a [`tonic::transport::Error`], or the `Status` the transport
        /// made).
        #[source]
        source: BoxError,
    },
    /// Any other status (UNKNOWN, OUT_OF_RANGE, RESOURCE_EXHAUSTED without a `RetryInfo`, …).
    /// Never retried.
    #[error("{:?}: {}", status.code(), status.message())]
    Other {
        /// The status received.
        #[source]
        status: Status,
    },

    // ----- local failures ------------------------------------------------------------------------
    /// The token provider failed to produce a token.
    #[error("the token provider failed: {source}")]
    TokenProvider {
        /// The provider's error.
        #[source]
        source: BoxError,
    },
    /// The client was configured with something unusable (an endpoint that is not a URI, a token
    /// or user id that is not valid header text, …).
    #[error("invalid client configuration: {message}")]
    InvalidConfiguration {
        /// What is wrong.
        message: String,
    },
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_invitees(invitees: &[InviteeFailure]) -> String {
    invitees
        .iter()
        .map(|f| format!("{}: {}", f.field, f.description))
        .collect::<Vec<_>>()
        .join("; ")
}

/// "user alice not found", or "a user invitee not found" for a batch.
fn one_or_batch(what: &str, id: &Option<String>, problem: &str) -> String {
    match id {
        Some(id) => format!("{what} {id} {problem}"),
        None => format!("a {what} invitee {problem}"),
    }
}

/// The summary, followed by every failing invitee of a batch.
fn with_invitees(summary: String, invitees: &[InviteeFailure]) -> String {
    if invitees.is_empty() {
        summary
    } else {
        format!(
            "{summary}; nothing was applied: {}",
            describe_invitees(invitees)
        )
    }
}

fn or_unknown<T: std::fmt::Display>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map_or_else(|| "?".to_owned(), ToString::to_string)
}

mod decode;
mod inspect;
#[cfg(test)]
mod tests;
