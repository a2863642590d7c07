//! The one domain error enum, and the one mapping from it to `tonic::Status` with
//! `ErrorInfo` (reason, domain `parley.v1`, metadata) and `BadRequest` violations.

use std::collections::HashMap;

use parley::pb::ErrorReason;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// A request field that failed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
    pub reason: ErrorReason,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
            reason: ErrorReason::InvalidField,
        }
    }
}

/// Everything a Parley call can fail with. Variants follow `ErrorReason`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {}", describe(.0))]
    InvalidField(Vec<FieldViolation>),
    #[error("the authorization header is missing")]
    TokenMissing,
    #[error("{0}")]
    TokenInvalid(&'static str),
    #[error("the token has expired")]
    TokenExpired,
    #[error("{0}")]
    NoPermission(&'static str),
    #[error("the caller is not a participant of conversation {0}")]
    NotAParticipant(String),
    #[error("the caller was removed from conversation {0}")]
    ParticipantRemoved(String),
    #[error("the caller may not remove participants of conversation {0}")]
    NoRemovePermission(String),
    #[error("conversation {0} not found")]
    ConversationNotFound(String),
    #[error("user {user_id} is not a participant of conversation {conversation_id}")]
    ParticipantNotFound {
        conversation_id: String,
        user_id: String,
    },
    #[error("user {0} not found")]
    UserNotFound(String),
    #[error("user {0} is deactivated")]
    UserDeactivated(String),
    #[error("group {0} not found")]
    GroupNotFound(String),
    #[error("at most {max} invitees per call")]
    TooManyInvitees { max: usize },
    #[error("the call's groups hold {reach} memberships; one call may expand at most {max}")]
    GroupReachExceeded { reach: u64, max: usize },
    #[error("at most {max} participants at creation, the creator included")]
    TooManyInitialParticipants { max: usize },
    #[error("nobody can remove themselves from a conversation")]
    CantRemoveSelf,
    #[error("the owner of conversation {0} cannot be removed")]
    CantRemoveOwner(String),
    #[error("conversation {0} is archived")]
    ConversationArchived(String),
    #[error("conversation {0} is closed")]
    ConversationClosed(String),
    #[error("the roster of direct conversation {0} cannot change")]
    UnsupportedForDirect(String),
    #[error("external participants of conversation {0} are fixed since its first message")]
    ExternalRosterLocked(String),
    #[error(
        "conversation {conversation_id} would have {would_have} active participants, over its limit of {max}"
    )]
    ParticipantLimitExceeded {
        conversation_id: String,
        max: i32,
        would_have: i64,
    },
    /// An atomic AddParticipants with failing invitees: nothing was applied.
    #[error("{}", summarise(.failures))]
    InviteesFailed {
        conversation_id: String,
        failures: Vec<FieldViolation>,
    },
    #[error("request id {0} was already used for a different request")]
    RequestIdReused(String),
    #[error("the conversation changed since etag {0} was read")]
    EtagMismatch(String),
    #[error("invitation not found")]
    InvitationNotFound,
    #[error("the invitation has expired")]
    InvitationExpired,
    #[error("the invitation is no longer pending")]
    InvitationNotPending,
    #[error("the invitation was sent to another email address")]
    InvitationEmailMismatch,
    #[error("too many calls: retry in {} ms", .retry_after.as_millis())]
    RateLimited { retry_after: std::time::Duration },
    #[error("the database is unavailable")]
    DatabaseUnavailable(String),
    #[error("the watch of conversation {0} fell too far behind; resume from its last seq")]
    WatchTooSlow(String),
    /// A stream other than a WatchTimeline (named) whose reader took nothing for too long.
    #[error("the {0} stream's reader took nothing for too long; open it again")]
    StreamTooSlow(&'static str),
    #[error("at most {limit} open watches per {scope} on this replica")]
    TooManyWatches { limit: usize, scope: &'static str },
    #[error("the write collided with a concurrent one and was rolled back; retry")]
    WriteConflict(String),
    #[error("internal error")]
    Internal(String),
    /// Not an answer: a user principal's first call found no directory entry while loading
    /// its conversation, and must add it outside the call's transaction (so that it stays
    /// whatever the call's outcome) and run again. The API layer does both; should it ever
    /// reach a caller, it is INTERNAL.
    #[error("internal error")]
    NewcomerEntry,
}

/// An atomic AddParticipants failure in one line: how many failed and the first of them. The
/// full list travels in the BadRequest detail, not again in the message (a 1,000-invitee
/// failure would otherwise put ~100 KB in the trailers).
fn summarise(failures: &[FieldViolation]) -> String {
    match failures.first() {
        None => "invitees failed, nothing was applied".to_owned(),
        Some(first) if failures.len() == 1 => format!(
            "1 invitee failed, nothing was applied: {}: {}",
            first.field, first.description
        ),
        Some(first) => format!(
            "{} invitees failed, nothing was applied; the first: {}: {} (the BadRequest detail \
             lists them, the first listed_invitees of them if they are many)",
            failures.len(),
            first.field,
            first.description
        ),
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// One invalid field.
    pub fn field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidField(vec![FieldViolation::new(field, description)])
    }

    /// The reason this error reports.
    pub fn reason(&self) -> ErrorReason {
        use ErrorReason as R;
        match self {
            Self::InvalidField(_) => R::InvalidField,
            Self::TokenMissing => R::TokenMissing,
            Self::TokenInvalid(_) => R::TokenInvalid,
            Self::TokenExpired => R::TokenExpired,
            Self::NoPermission(_) => R::NoPermission,
            Self::NotAParticipant(_) => R::NotAParticipant,
            Self::ParticipantRemoved(_) => R::ParticipantRemoved,
            Self::NoRemovePermission(_) => R::NoRemovePermission,
            Self::ConversationNotFound(_) => R::ConversationNotFound,
            Self::ParticipantNotFound { .. } => R::ParticipantNotFound,
            Self::UserNotFound(_) => R::UserNotFound,
            Self::UserDeactivated(_) => R::UserDeactivated,
            Self::GroupNotFound(_) => R::GroupNotFound,
            Self::TooManyInvitees { .. } | Self::GroupReachExceeded { .. } => R::TooManyInvitees,
            Self::TooManyInitialParticipants { .. } => R::TooManyInitialParticipants,
            Self::CantRemoveSelf => R::CantRemoveSelf,
            Self::CantRemoveOwner(_) => R::CantRemoveOwner,
            Self::ConversationArchived(_) => R::ConversationArchived,
            Self::ConversationClosed(_) => R::ConversationClosed,
            Self::UnsupportedForDirect(_) => R::UnsupportedForDirect,
            Self::ExternalRosterLocked(_) => R::ExternalRosterLocked,
            Self::ParticipantLimitExceeded { .. } => R::ParticipantLimitExceeded,
            Self::InviteesFailed { failures, .. } => {
                failures.first().map_or(R::InvalidField, |f| f.reason)
            }
            Self::RequestIdReused(_) => R::RequestIdReused,
            Self::EtagMismatch(_) => R::EtagMismatch,
            Self::InvitationNotFound => R::InvitationNotFound,
            Self::InvitationExpired => R::InvitationExpired,
            Self::InvitationNotPending => R::InvitationNotPending,
            Self::InvitationEmailMismatch => R::InvitationEmailMismatch,
            Self::RateLimited { .. } => R::RateLimited,
            Self::DatabaseUnavailable(_) => R::DatabaseUnavailable,
            Self::WatchTooSlow(_) | Self::StreamTooSlow(_) => R::WatchTooSlow,
            Self::TooManyWatches { .. } => R::TooManyWatches,
            Self::WriteConflict(_) => R::WriteConflict,
            Self::Internal(_) | Self::NewcomerEntry => R::Internal,
        }
    }

    fn metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        match self {
            Self::NotAParticipant(c)
            | Self::ParticipantRemoved(c)
            | Self::NoRemovePermission(c)
            | Self::ConversationNotFound(c)
            | Self::CantRemoveOwner(c)
            | Self::ConversationArchived(c)
            | Self::ConversationClosed(c)
            | Self::UnsupportedForDirect(c)
            | Self::ExternalRosterLocked(c)
            | Self::WatchTooSlow(c) => {
                m.insert("conversation_id".into(), c.clone());
            }
            Self::ParticipantNotFound {
                conversation_id,
                user_id,
            } => {
                m.insert("conversation_id".into(), conversation_id.clone());
                m.insert("user_id".into(), user_id.clone());
            }
            Self::UserNotFound(u) | Self::UserDeactivated(u) => {
                m.insert("user_id".into(), u.clone());
            }
            Self::RequestIdReused(r) => {
                m.insert("request_id".into(), r.clone());
            }
            Self::EtagMismatch(e) => {
                m.insert("etag".into(), e.clone());
            }
            Self::GroupNotFound(g) => {
                m.insert("group_id".into(), g.clone());
            }
            Self::TooManyInvitees { max } | Self::TooManyInitialParticipants { max } => {
                m.insert("max".into(), max.to_string());
            }
            Self::TooManyWatches { limit, scope } => {
                m.insert("max".into(), limit.to_string());
                m.insert("scope".into(), (*scope).to_owned());
            }
            Self::GroupReachExceeded { reach, max } => {
                m.insert("max".into(), max.to_string());
                m.insert("group_reach".into(), reach.to_string());
            }
            Self::ParticipantLimitExceeded {
                conversation_id,
                max,
                would_have,
            } => {
                m.insert("conversation_id".into(), conversation_id.clone());
                m.insert("max_participants".into(), max.to_string());
                m.insert("would_have".into(), would_have.to_string());
            }
            Self::InviteesFailed {
                conversation_id,
                failures,
            } => {
                m.insert("conversation_id".into(), conversation_id.clone());
                m.insert("failed_invitees".into(), failures.len().to_string());
                m.insert(
                    "listed_invitees".into(),
                    within_trailer_budget(failures).len().to_string(),
                );
            }
            _ => {}
        }
        m
    }

    /// The canonical gRPC code of a reason.
    pub fn code_of(reason: ErrorReason) -> Code {
        use ErrorReason as R;
        match reason {
            R::InvalidField
            | R::TooManyInvitees
            | R::TooManyInitialParticipants
            | R::CantInviteSelf
            | R::CantRemoveSelf
            | R::RequestIdReused => Code::InvalidArgument,
            R::TokenMissing | R::TokenInvalid | R::TokenExpired => Code::Unauthenticated,
            R::NoPermission
            | R::NotAParticipant
            | R::NoInvitePermission
            | R::NoExternalInvitePermission
            | R::NoRemovePermission
            | R::ParticipantRemoved
            | R::CantRemoveOwner
            | R::InvitationEmailMismatch => Code::PermissionDenied,
            R::ConversationNotFound
            | R::ParticipantNotFound
            | R::UserNotFound
            | R::GroupNotFound
            | R::InvitationNotFound => Code::NotFound,
            R::UserDeactivated
            | R::ConversationArchived
            | R::ConversationClosed
            | R::UnsupportedForDirect
            | R::ExternalRosterLocked
            | R::ParticipantLimitExceeded
            | R::InvitationExpired
            | R::InvitationNotPending
            | R::GroupEmpty => Code::FailedPrecondition,
            R::AlreadyParticipant | R::AlreadyInvited => Code::AlreadyExists,
            R::EtagMismatch | R::WriteConflict => Code::Aborted,
            R::RateLimited | R::WatchTooSlow | R::TooManyWatches => Code::ResourceExhausted,
            R::DatabaseUnavailable => Code::Unavailable,
            R::Internal | R::Unspecified => Code::Internal,
        }
    }

    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        Self::code_of(self.reason())
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let message = match &error {
            Error::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error".to_owned()
            }
            Error::DatabaseUnavailable(detail) => {
                tracing::warn!(%detail, "database unavailable");
                error.to_string()
            }
            Error::WriteConflict(detail) => {
                tracing::warn!(%detail, "write conflict");
                error.to_string()
            }
            other => other.to_string(),
        };
        let mut details = ErrorDetails::with_error_info(
            error.reason().as_str_name(),
            parley::ERROR_DOMAIN,
            error.metadata(),
        );
        let violations = match &error {
            Error::InvalidField(v) => Some(v),
            Error::InviteesFailed { failures, .. } => Some(failures),
            _ => None,
        };
        if let Error::RateLimited { retry_after } = &error {
            details.set_retry_info(Some(*retry_after));
        }
        if let Some(violations) = violations {
            let list = within_trailer_budget(violations)
                .iter()
                .map(|v| tonic_types::FieldViolation {
                    field: v.field.clone(),
                    description: v.description.clone(),
                    reason: v.reason.as_str_name().to_owned(),
                    localized_message: None,
                })
                .collect::<Vec<_>>();
            details.set_bad_request(list);
        }
        tonic::Status::with_error_details(error.code(), message, details)
    }
}

/// Bytes of field violations one error carries. The details travel in the trailers, and a
/// client refuses a header block past its limit (16 KiB for hyper-based clients, tonic's
/// included): a 1,000-invitee failure listed whole would be ~100 KB, and the call would end as
/// a protocol error instead of its reason.
const VIOLATION_BUDGET: usize = 6 * 1024;

/// The first violations that fit [`VIOLATION_BUDGET`] (at least one). The ErrorInfo metadata
/// says how many failed in all (`failed_invitees`) and how many are listed (`listed_invitees`).
fn within_trailer_budget(violations: &[FieldViolation]) -> &[FieldViolation] {
    let mut used = 0;
    let fit = violations
        .iter()
        .take_while(|v| {
            used += v.field.len() + v.description.len() + v.reason.as_str_name().len() + 8;
            used <= VIOLATION_BUDGET
        })
        .count();
    &violations[..fit.max(1).min(violations.len())]
}

impl From<sea_orm::DbErr> for Error {
    fn from(e: sea_orm::DbErr) -> Self {
        use sea_orm::{DbErr, RuntimeErr, sqlx};
        let unreachable = match &e {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
            DbErr::Exec(RuntimeErr::SqlxError(inner))
            | DbErr::Query(RuntimeErr::SqlxError(inner)) => {
                matches!(
                    inner.as_ref(),
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Tls(_)
                ) || is_connection_lost(inner)
            }
            _ => false,
        };
        let conflict = match &e {
            DbErr::Exec(RuntimeErr::SqlxError(inner))
            | DbErr::Query(RuntimeErr::SqlxError(inner))
            | DbErr::Conn(RuntimeErr::SqlxError(inner)) => is_write_conflict(inner),
            _ => false,
        };
        if conflict {
            Self::WriteConflict(e.to_string())
        } else if unreachable {
            Self::DatabaseUnavailable(e.to_string())
        } else {
            Self::Internal(e.to_string())
        }
    }
}

/// PostgreSQL ended the session: a connection exception (class 08), or the server shut down,
/// crashed or is starting (57P01-57P03), as a connection that lost its server learns on its
/// next statement. The call may be retried once the database is back.
fn is_connection_lost(e: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::postgres::PgDatabaseError;
    let sea_orm::sqlx::Error::Database(db) = e else {
        return false;
    };
    db.try_downcast_ref::<PgDatabaseError>().is_some_and(|pg| {
        pg.code().starts_with("08") || matches!(pg.code(), "57P01" | "57P02" | "57P03")
    })
}

/// A write that lost to a concurrent one and was rolled back, so that running it again is
/// safe: PostgreSQL's serialization_failure (40001) and deadlock_detected (40P01); SQLite's
/// BUSY and LOCKED, with their extended codes (a lock still held when the busy timeout ran out).
fn is_write_conflict(e: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::{postgres::PgDatabaseError, sqlite::SqliteError};
    let sea_orm::sqlx::Error::Database(db) = e else {
        return false;
    };
    if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
        return matches!(pg.code(), "40001" | "40P01");
    }
    if db.try_downcast_ref::<SqliteError>().is_some()
        || db
            .try_downcast_ref::<crate::store::lite::LiteError>()
            .is_some()
    {
        const SQLITE_BUSY: i64 = 5;
        const SQLITE_LOCKED: i64 = 6;
        return db
            .code()
            .and_then(|code| code.parse::<i64>().ok())
            .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED));
    }
    false
}
