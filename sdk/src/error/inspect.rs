//! What callers ask of an [`Error`]: its reason, code, status, retryability and details.

use super::*;

impl Error {
    /// The Parley reason this variant stands for; `None` for the variants that stand for a bare
    /// gRPC code or a local failure.
    ///
    /// Derived from the variant alone, so `Error::CantInviteSelf { .. }.reason()` is always
    /// `Some(ErrorReason::CantInviteSelf)`.
    pub fn reason(&self) -> Option<ErrorReason> {
        use ErrorReason as R;
        Some(match self {
            Self::InvalidField { .. } => R::InvalidField,
            Self::TokenMissing { .. } => R::TokenMissing,
            Self::TokenInvalid { .. } => R::TokenInvalid,
            Self::TokenExpired { .. } => R::TokenExpired,
            Self::NoPermission { .. } => R::NoPermission,
            Self::NotAParticipant { .. } => R::NotAParticipant,
            Self::NoInvitePermission { .. } => R::NoInvitePermission,
            Self::NoExternalInvitePermission { .. } => R::NoExternalInvitePermission,
            Self::NoRemovePermission { .. } => R::NoRemovePermission,
            Self::ParticipantRemoved { .. } => R::ParticipantRemoved,
            Self::ConversationNotFound { .. } => R::ConversationNotFound,
            Self::ParticipantNotFound { .. } => R::ParticipantNotFound,
            Self::UserNotFound { .. } => R::UserNotFound,
            Self::GroupNotFound { .. } => R::GroupNotFound,
            Self::GroupEmpty { .. } => R::GroupEmpty,
            Self::WatchTooSlow { .. } => R::WatchTooSlow,
            Self::TooManyWatches { .. } => R::TooManyWatches,
            Self::InvitationNotFound { .. } => R::InvitationNotFound,
            Self::UserDeactivated { .. } => R::UserDeactivated,
            Self::CantInviteSelf { .. } => R::CantInviteSelf,
            Self::AlreadyParticipant { .. } => R::AlreadyParticipant,
            Self::AlreadyInvited { .. } => R::AlreadyInvited,
            Self::TooManyInvitees { .. } => R::TooManyInvitees,
            Self::TooManyInitialParticipants { .. } => R::TooManyInitialParticipants,
            Self::CantRemoveSelf { .. } => R::CantRemoveSelf,
            Self::CantRemoveOwner { .. } => R::CantRemoveOwner,
            Self::ConversationArchived { .. } => R::ConversationArchived,
            Self::ConversationClosed { .. } => R::ConversationClosed,
            Self::UnsupportedForDirect { .. } => R::UnsupportedForDirect,
            Self::ExternalRosterLocked { .. } => R::ExternalRosterLocked,
            Self::ParticipantLimitExceeded { .. } => R::ParticipantLimitExceeded,
            Self::InvitationExpired { .. } => R::InvitationExpired,
            Self::InvitationNotPending { .. } => R::InvitationNotPending,
            Self::InvitationEmailMismatch { .. } => R::InvitationEmailMismatch,
            Self::EtagMismatch { .. } => R::EtagMismatch,
            Self::RequestIdReused { .. } => R::RequestIdReused,
            Self::RateLimited { .. } => R::RateLimited,
            Self::DatabaseUnavailable { .. } => R::DatabaseUnavailable,
            Self::WriteConflict { .. } => R::WriteConflict,
            Self::Internal { .. } => R::Internal,
            Self::Unauthenticated { .. }
            | Self::PermissionDenied { .. }
            | Self::NotFound { .. }
            | Self::InvalidArgument { .. }
            | Self::FailedPrecondition { .. }
            | Self::AlreadyExists { .. }
            | Self::Aborted { .. }
            | Self::Unavailable { .. }
            | Self::Timeout { .. }
            | Self::Cancelled { .. }
            | Self::Unimplemented { .. }
            | Self::Transport { .. }
            | Self::Other { .. }
            | Self::TokenProvider { .. }
            | Self::InvalidConfiguration { .. } => return None,
        })
    }

    /// The status this error was rebuilt from, if it came from a status.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Self::InvalidField { status, .. }
            | Self::TokenMissing { status }
            | Self::TokenInvalid { status }
            | Self::TokenExpired { status }
            | Self::NoPermission { status }
            | Self::NotAParticipant { status, .. }
            | Self::NoInvitePermission { status, .. }
            | Self::NoExternalInvitePermission { status, .. }
            | Self::NoRemovePermission { status, .. }
            | Self::ParticipantRemoved { status, .. }
            | Self::ConversationNotFound { status, .. }
            | Self::ParticipantNotFound { status, .. }
            | Self::UserNotFound { status, .. }
            | Self::GroupNotFound { status, .. }
            | Self::GroupEmpty { status, .. }
            | Self::WatchTooSlow { status }
            | Self::TooManyWatches { status }
            | Self::InvitationNotFound { status }
            | Self::UserDeactivated { status, .. }
            | Self::CantInviteSelf { status, .. }
            | Self::AlreadyParticipant { status }
            | Self::AlreadyInvited { status }
            | Self::TooManyInvitees { status, .. }
            | Self::TooManyInitialParticipants { status, .. }
            | Self::CantRemoveSelf { status }
            | Self::CantRemoveOwner { status, .. }
            | Self::ConversationArchived { status, .. }
            | Self::ConversationClosed { status, .. }
            | Self::UnsupportedForDirect { status, .. }
            | Self::ExternalRosterLocked { status, .. }
            | Self::ParticipantLimitExceeded { status, .. }
            | Self::InvitationExpired { status }
            | Self::InvitationNotPending { status }
            | Self::InvitationEmailMismatch { status }
            | Self::EtagMismatch { status, .. }
            | Self::RequestIdReused { status, .. }
            | Self::RateLimited { status, .. }
            | Self::DatabaseUnavailable { status }
            | Self::WriteConflict { status }
            | Self::Internal { status }
            | Self::Unauthenticated { status }
            | Self::PermissionDenied { status }
            | Self::NotFound { status }
            | Self::InvalidArgument { status, .. }
            | Self::FailedPrecondition { status }
            | Self::AlreadyExists { status }
            | Self::Aborted { status }
            | Self::Unavailable { status }
            | Self::Cancelled { status }
            | Self::Unimplemented { status }
            | Self::Other { status } => Some(status),
            Self::Timeout { status } => status.as_ref(),
            Self::Transport { source } => source.downcast_ref::<Status>(),
            Self::TokenProvider { .. } | Self::InvalidConfiguration { .. } => None,
        }
    }

    /// The gRPC code: the status's, or the closest one for local failures.
    pub fn code(&self) -> Code {
        if let Some(status) = self.status() {
            return status.code();
        }
        match self {
            Self::Timeout { .. } => Code::DeadlineExceeded,
            Self::TokenProvider { .. } => Code::Unauthenticated,
            Self::InvalidConfiguration { .. } => Code::InvalidArgument,
            _ => Code::Unavailable,
        }
    }

    /// Whether trying the same call again later may succeed: the server or network was
    /// unavailable, the deadline passed, the caller was rate limited, or a write conflict
    /// aborted the call. Never for INTERNAL, UNKNOWN, `ETAG_MISMATCH` or rule violations.
    ///
    /// The SDK's retry policy retries these by itself where it is safe (see
    /// [`RetryPolicy`](crate::RetryPolicy)); an error that reaches the caller has used up
    /// the policy's attempts or time.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::DatabaseUnavailable { .. }
                | Self::Timeout { .. }
                | Self::RateLimited { .. }
                | Self::Aborted { .. }
                | Self::WriteConflict { .. }
                | Self::Transport { .. }
        )
    }

    /// Whether the server may have applied the call although it failed: the connection broke
    /// or the deadline passed while the call was in flight. Errors the server sent say it did
    /// not.
    pub(crate) fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::Timeout { .. } | Self::Transport { .. }
        )
    }

    /// How long the server asked the caller to wait before trying again (`RetryInfo`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The per-invitee failures of an atomic `AddParticipants` call (empty for other errors).
    pub fn invitee_failures(&self) -> &[InviteeFailure] {
        match self {
            Self::NoInvitePermission { invitees, .. }
            | Self::NoExternalInvitePermission { invitees, .. }
            | Self::UserNotFound { invitees, .. }
            | Self::GroupNotFound { invitees, .. }
            | Self::GroupEmpty { invitees, .. }
            | Self::UserDeactivated { invitees, .. }
            | Self::CantInviteSelf { invitees, .. }
            | Self::ExternalRosterLocked { invitees, .. } => invitees,
            _ => &[],
        }
    }

    /// The invalid fields of an `INVALID_FIELD` (or bare INVALID_ARGUMENT) error.
    pub fn field_violations(&self) -> &[FieldViolation] {
        match self {
            Self::InvalidField { violations, .. } | Self::InvalidArgument { violations, .. } => {
                violations
            }
            _ => &[],
        }
    }

    /// The conversation the error is about, when the server named one.
    pub fn conversation_id(&self) -> Option<&str> {
        match self {
            Self::NotAParticipant {
                conversation_id, ..
            }
            | Self::NoInvitePermission {
                conversation_id, ..
            }
            | Self::NoExternalInvitePermission {
                conversation_id, ..
            }
            | Self::NoRemovePermission {
                conversation_id, ..
            }
            | Self::ParticipantRemoved {
                conversation_id, ..
            }
            | Self::ConversationNotFound {
                conversation_id, ..
            }
            | Self::ParticipantNotFound {
                conversation_id, ..
            }
            | Self::CantRemoveOwner {
                conversation_id, ..
            }
            | Self::ConversationArchived {
                conversation_id, ..
            }
            | Self::ConversationClosed {
                conversation_id, ..
            }
            | Self::UnsupportedForDirect {
                conversation_id, ..
            }
            | Self::ExternalRosterLocked {
                conversation_id, ..
            }
            | Self::ParticipantLimitExceeded {
                conversation_id, ..
            } => Some(conversation_id)
                .filter(|c| !c.is_empty())
                .map(String::as_str),
            _ => None,
        }
    }

    pub(crate) fn invalid_configuration(message: impl Into<String>) -> Self {
        Self::InvalidConfiguration {
            message: message.into(),
        }
    }
}
