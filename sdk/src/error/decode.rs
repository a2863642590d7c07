//! Rebuilding an [`Error`] from a [`tonic::Status`]: the transport's own statuses first, then
//! the Parley `ErrorInfo` reason, then the bare gRPC code.

use super::*;

/// What a status carries besides its code: the `ErrorInfo` metadata, the `BadRequest`
/// violations and the `RetryInfo` delay.
struct Parts {
    metadata: HashMap<String, String>,
    violations: Vec<tonic_types::FieldViolation>,
    retry_after: Option<Duration>,
    status: Status,
}

impl Parts {
    fn new(status: Status, metadata: HashMap<String, String>) -> Self {
        let violations = status
            .get_details_bad_request()
            .map(|b| b.field_violations)
            .unwrap_or_default();
        let retry_after = status.get_details_retry_info().and_then(|r| r.retry_delay);
        Self {
            metadata,
            violations,
            retry_after,
            status,
        }
    }

    /// A metadata value the server always sends with this reason ("" if it did not).
    fn take(&mut self, key: &str) -> String {
        self.metadata.remove(key).unwrap_or_default()
    }

    /// A metadata value the server sends with this reason only sometimes.
    fn opt(&mut self, key: &str) -> Option<String> {
        self.metadata.remove(key).filter(|v| !v.is_empty())
    }

    fn number<T: std::str::FromStr>(&mut self, key: &str) -> Option<T> {
        self.opt(key).and_then(|v| v.parse().ok())
    }

    fn field_violations(&self) -> Vec<FieldViolation> {
        self.violations
            .iter()
            .map(|v| FieldViolation {
                field: v.field.clone(),
                description: v.description.clone(),
                reason: ErrorReason::from_str_name(&v.reason),
            })
            .collect()
    }

    /// The violations that name an invitee (`invitees[<index>]…`), in index order.
    fn invitees(&self) -> Vec<InviteeFailure> {
        let mut out: Vec<InviteeFailure> = self
            .violations
            .iter()
            .filter_map(|v| {
                let index = invitee_index(&v.field)?;
                Some(InviteeFailure {
                    index,
                    field: v.field.clone(),
                    reason: ErrorReason::from_str_name(&v.reason),
                    description: v.description.clone(),
                })
            })
            .collect();
        out.sort_by_key(|f| f.index);
        out
    }
}

/// Whether tonic's own deadline ended the call.
fn caused_by_timeout(status: &Status) -> bool {
    let mut cause = status.source();
    while let Some(error) = cause {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// `invitees[12]` or `invitees[12].email` → 12.
fn invitee_index(field: &str) -> Option<usize> {
    let rest = field.strip_prefix("invitees[")?;
    let end = rest.find(']')?;
    rest[..end].parse().ok()
}

impl Error {
    /// Rebuilds the typed error from a status received from Parley (or made by the transport).
    ///
    /// The SDK's own calls already return typed errors; this is for statuses obtained
    /// elsewhere, e.g. from the generated stubs in [`crate::pb`].
    ///
    /// ```
    /// use parley_sdk::{Error, pb::ErrorReason};
    /// use tonic_types::{ErrorDetails, StatusExt};
    ///
    /// let details = ErrorDetails::with_error_info(
    ///     ErrorReason::ConversationArchived.as_str_name(),
    ///     "parley.v1",
    ///     [("conversation_id".to_owned(), "c1".to_owned())],
    /// );
    /// let status = tonic::Status::with_error_details(
    ///     tonic::Code::FailedPrecondition,
    ///     "archived",
    ///     details,
    /// );
    /// match Error::from_status(status) {
    ///     Error::ConversationArchived { conversation_id, .. } => assert_eq!(conversation_id, "c1"),
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// ```
    pub fn from_status(status: Status) -> Self {
        // A status with a source was made on this side from a transport failure; a status
        // received from a server never has one.
        if status.source().is_some() {
            return Self::from_transport(status);
        }
        if let Some(info) = status.get_details_error_info()
            && info.domain == parley::ERROR_DOMAIN
            && let Some(reason) = ErrorReason::from_str_name(&info.reason)
            && reason != ErrorReason::Unspecified
        {
            return Self::from_reason(reason, Parts::new(status, info.metadata));
        }
        Self::from_code(status)
    }

    fn from_transport(status: Status) -> Self {
        if caused_by_timeout(&status) {
            // tonic enforces the deadline the SDK sends (`grpc-timeout`) on its side too.
            return Self::Timeout {
                status: Some(status),
            };
        }
        match status.code() {
            Code::Unavailable => Self::Unavailable { status },
            Code::DeadlineExceeded => Self::Timeout {
                status: Some(status),
            },
            Code::Cancelled => Self::Cancelled { status },
            // The connection broke mid-call (tonic reports that as UNKNOWN or INTERNAL).
            _ => Self::Transport {
                source: Box::new(status),
            },
        }
    }

    /// One arm per reason, and no wildcard: a reason added to the proto does not compile until
    /// it has a variant here.
    fn from_reason(reason: ErrorReason, mut p: Parts) -> Self {
        use ErrorReason as R;
        match reason {
            R::Unspecified => Self::from_code(p.status),
            R::InvalidField => Self::InvalidField {
                violations: p.field_violations(),
                status: p.status,
            },
            R::TokenMissing => Self::TokenMissing { status: p.status },
            R::TokenInvalid => Self::TokenInvalid { status: p.status },
            R::TokenExpired => Self::TokenExpired { status: p.status },
            R::NoPermission => Self::NoPermission { status: p.status },
            R::NotAParticipant => Self::NotAParticipant {
                conversation_id: p.take("conversation_id"),
                status: p.status,
            },
            R::NoInvitePermission => Self::NoInvitePermission {
                conversation_id: p.take("conversation_id"),
                invitees: p.invitees(),
                status: p.status,
            },
            R::NoExternalInvitePermission => Self::NoExternalInvitePermission {
                conversation_id: p.take("conversation_id"),
                invitees: p.invitees(),
                status: p.status,
            },
            R::NoRemovePermission => Self::NoRemovePermission {
                conversation_id: p.take("conversation_id"),
                status: p.status,
            },
            R::ParticipantRemoved => Self::ParticipantRemoved {
                conversation_id: p.take("conversation_id"),
                status: p.status,
            },
            R::ConversationNotFound => Self::ConversationNotFound {
                conversation_id: p.take("conversation_id"),
                status: p.status,
            },
            R::ParticipantNotFound => Self::ParticipantNotFound {
                conversation_id: p.take("conversation_id"),
                user_id: p.take("user_id"),
                status: p.status,
            },
            R::UserNotFound => Self::UserNotFound {
                user_id: p.opt("user_id"),
                invitees: p.invitees(),
                status: p.status,
            },
            R::GroupNotFound => Self::GroupNotFound {
                group_id: p.opt("group_id"),
                invitees: p.invitees(),
                status: p.status,
            },
            R::GroupEmpty => Self::GroupEmpty {
                group_id: p.opt("group_id"),
                invitees: p.invitees(),
                status: p.status,
            },
            R::WatchTooSlow => Self::WatchTooSlow { status: p.status },
            R::TooManyWatches => Self::TooManyWatches { status: p.status },
            R::InvitationNotFound => Self::InvitationNotFound { status: p.status },
            R::UserDeactivated => Self::UserDeactivated {
                user_id: p.opt("user_id"),
                invitees: p.invitees(),
                status: p.status,
            },
            R::CantInviteSelf => Self::CantInviteSelf {
                invitees: p.invitees(),
                status: p.status,
            },
            R::AlreadyParticipant => Self::AlreadyParticipant { status: p.status },
            R::AlreadyInvited => Self::AlreadyInvited { status: p.status },
            R::TooManyInvitees => Self::TooManyInvitees {
                max: p.number("max"),
                status: p.status,
            },
            R::TooManyInitialParticipants => Self::TooManyInitialParticipants {
                max: p.number("max"),
                status: p.status,
            },
            R::CantRemoveSelf => Self::CantRemoveSelf { status: p.status },
            R::CantRemoveOwner => Self::CantRemoveOwner {
                conversation_id: p.take("conversation_id"),
                status: p.status,
            },
            R::ConversationArchived => Self::ConversationArchived {
                conversation_id: p.take("conversation_id"),
                status: p.status,
            },
            R::ConversationClosed => Self::ConversationClosed {
                conversation_id: p.take("conversation_id"),
                status: p.status,
            },
            R::UnsupportedForDirect => Self::UnsupportedForDirect {
                conversation_id: p.take("conversation_id"),
                status: p.status,
            },
            R::ExternalRosterLocked => Self::ExternalRosterLocked {
                conversation_id: p.take("conversation_id"),
                invitees: p.invitees(),
                status: p.status,
            },
            R::ParticipantLimitExceeded => Self::ParticipantLimitExceeded {
                conversation_id: p.take("conversation_id"),
                max_participants: p.number("max_participants"),
                would_have: p.number("would_have"),
                status: p.status,
            },
            R::InvitationExpired => Self::InvitationExpired { status: p.status },
            R::InvitationNotPending => Self::InvitationNotPending { status: p.status },
            R::InvitationEmailMismatch => Self::InvitationEmailMismatch { status: p.status },
            R::EtagMismatch => Self::EtagMismatch {
                etag: p.opt("etag"),
                status: p.status,
            },
            R::RequestIdReused => Self::RequestIdReused {
                request_id: p.take("request_id"),
                status: p.status,
            },
            R::RateLimited => Self::RateLimited {
                retry_after: p.retry_after,
                status: p.status,
            },
            R::DatabaseUnavailable => Self::DatabaseUnavailable { status: p.status },
            R::Internal => Self::Internal { status: p.status },
            R::WriteConflict => Self::WriteConflict { status: p.status },
        }
    }

    /// A status without a (known) Parley reason: one variant per code.
    fn from_code(status: Status) -> Self {
        match status.code() {
            Code::Unauthenticated => Self::Unauthenticated { status },
            Code::PermissionDenied => Self::PermissionDenied { status },
            Code::NotFound => Self::NotFound { status },
            Code::InvalidArgument => {
                let p = Parts::new(status, HashMap::new());
                Self::InvalidArgument {
                    violations: p.field_violations(),
                    status: p.status,
                }
            }
            Code::FailedPrecondition => Self::FailedPrecondition { status },
            Code::AlreadyExists => Self::AlreadyExists { status },
            Code::Aborted => Self::Aborted { status },
            Code::Unavailable => Self::Unavailable { status },
            Code::DeadlineExceeded => Self::Timeout {
                status: Some(status),
            },
            // Without a RetryInfo it is not a rate limit (e.g. a message over a size limit).
            Code::ResourceExhausted => match status.get_details_retry_info() {
                Some(info) => Self::RateLimited {
                    retry_after: info.retry_delay,
                    status,
                },
                None => Self::Other { status },
            },
            Code::Cancelled => Self::Cancelled { status },
            Code::Unimplemented => Self::Unimplemented { status },
            Code::Internal | Code::DataLoss => Self::Internal { status },
            Code::Ok | Code::Unknown | Code::OutOfRange => Self::Other { status },
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Self::from_status(status)
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(error: tonic::transport::Error) -> Self {
        Self::Transport {
            source: Box::new(error),
        }
    }
}
