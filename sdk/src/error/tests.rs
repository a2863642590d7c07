//! The proto and the SDK cannot drift apart: every `ErrorReason` value has a variant of its
//! own; and each kind of status becomes the variant a caller expects.

use std::collections::HashSet;

use tonic_types::{ErrorDetails, FieldViolation as PbViolation};

use super::*;

fn status_with(
    code: Code,
    reason: &str,
    metadata: &[(&str, &str)],
    configure: impl FnOnce(&mut ErrorDetails),
) -> Status {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut details = ErrorDetails::with_error_info(reason, parley::ERROR_DOMAIN, metadata);
    configure(&mut details);
    Status::with_error_details(code, "message", details)
}

fn from_reason(code: Code, reason: ErrorReason) -> Error {
    Error::from_status(status_with(code, reason.as_str_name(), &[], |_| {}))
}

/// Every value of the proto enum, found by walking the i32 values until the enum ends.
fn every_reason() -> Vec<ErrorReason> {
    let reasons: Vec<ErrorReason> = (0..)
        .map_while(|n: i32| ErrorReason::try_from(n).ok())
        .collect();
    assert!(
        ErrorReason::try_from(reasons.len() as i32 + 1).is_err(),
        "the enum has gaps; walk further"
    );
    reasons
}

#[test]
fn every_error_reason_maps_to_a_dedicated_variant() {
    let reasons = every_reason();
    assert!(reasons.len() > 30, "found {} reasons", reasons.len());
    let mut variants = HashSet::new();
    for reason in reasons
        .into_iter()
        .filter(|r| *r != ErrorReason::Unspecified)
    {
        // The variant follows the reason, whatever code carries it.
        for code in [
            Code::FailedPrecondition,
            Code::Unknown,
            Code::InvalidArgument,
        ] {
            let error = from_reason(code, reason);
            assert_eq!(
                error.reason(),
                Some(reason),
                "{} with {code:?} became {error:?}",
                reason.as_str_name()
            );
            assert!(error.status().is_some(), "the status is kept");
            assert!(
                StdError::source(&error).is_some(),
                "the status is the source"
            );
        }
        variants.insert(std::mem::discriminant(&from_reason(Code::Unknown, reason)));
    }
    assert_eq!(
        variants.len(),
        every_reason().len() - 1,
        "two reasons share a variant"
    );
}

#[test]
fn no_reason_or_an_unknown_one_falls_back_to_the_code() {
    let unspecified = from_reason(Code::NotFound, ErrorReason::Unspecified);
    assert!(
        matches!(unspecified, Error::NotFound { .. }),
        "{unspecified:?}"
    );
    assert_eq!(unspecified.reason(), None);

    let newer = Error::from_status(status_with(
        Code::FailedPrecondition,
        "A_REASON_FROM_A_NEWER_SERVER",
        &[],
        |_| {},
    ));
    assert!(
        matches!(newer, Error::FailedPrecondition { .. }),
        "{newer:?}"
    );

    let foreign = Error::from_status(Status::with_error_details(
        Code::PermissionDenied,
        "m",
        ErrorDetails::with_error_info("NOT_A_PARTICIPANT", "other.example", HashMap::new()),
    ));
    assert!(
        matches!(foreign, Error::PermissionDenied { .. }),
        "{foreign:?}"
    );

    let cases = [
        (Code::Unauthenticated, "Unauthenticated"),
        (Code::Unavailable, "Unavailable"),
        (Code::DeadlineExceeded, "Timeout"),
        (Code::Aborted, "Aborted"),
        (Code::Internal, "Internal"),
        (Code::DataLoss, "Internal"),
        (Code::Unknown, "Other"),
        (Code::ResourceExhausted, "Other"),
        (Code::Unimplemented, "Unimplemented"),
        (Code::Cancelled, "Cancelled"),
        (Code::AlreadyExists, "AlreadyExists"),
    ];
    for (code, variant) in cases {
        let error = Error::from_status(Status::new(code, "bare"));
        assert!(
            format!("{error:?}").starts_with(variant),
            "{code:?} became {error:?}"
        );
        assert_eq!(error.code(), code);
    }
}

#[test]
fn reason_metadata_becomes_fields() {
    let error = Error::from_status(status_with(
        Code::FailedPrecondition,
        "PARTICIPANT_LIMIT_EXCEEDED",
        &[
            ("conversation_id", "c1"),
            ("max_participants", "3"),
            ("would_have", "4"),
        ],
        |_| {},
    ));
    match &error {
        Error::ParticipantLimitExceeded {
            conversation_id,
            max_participants,
            would_have,
            ..
        } => {
            assert_eq!(
                (conversation_id.as_str(), *max_participants, *would_have),
                ("c1", Some(3), Some(4))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(error.conversation_id(), Some("c1"));
    assert!(!error.is_retryable());
    assert_eq!(
        error.to_string(),
        "conversation c1 would exceed its participant limit of 3"
    );

    let error = Error::from_status(status_with(
        Code::NotFound,
        "PARTICIPANT_NOT_FOUND",
        &[("conversation_id", "c1"), ("user_id", "dave")],
        |_| {},
    ));
    assert!(matches!(
        &error,
        Error::ParticipantNotFound { conversation_id, user_id, .. }
            if conversation_id == "c1" && user_id == "dave"
    ));

    let error = Error::from_status(status_with(
        Code::InvalidArgument,
        "TOO_MANY_INVITEES",
        &[("max", "1000")],
        |_| {},
    ));
    assert!(matches!(
        error,
        Error::TooManyInvitees {
            max: Some(1000),
            ..
        }
    ));
}

#[test]
fn per_invitee_failures_come_from_bad_request() {
    let error = Error::from_status(status_with(
        Code::InvalidArgument,
        "CANT_INVITE_SELF",
        &[("conversation_id", "c1"), ("failed_invitees", "2")],
        |d| {
            d.set_bad_request(vec![
                PbViolation {
                    field: "invitees[3]".into(),
                    description: "ghost is not in the directory".into(),
                    reason: "USER_NOT_FOUND".into(),
                    localized_message: None,
                },
                PbViolation {
                    field: "invitees[0]".into(),
                    description: "alice is the caller".into(),
                    reason: "CANT_INVITE_SELF".into(),
                    localized_message: None,
                },
            ]);
        },
    ));
    let Error::CantInviteSelf { invitees, .. } = &error else {
        panic!("{error:?}");
    };
    let got: Vec<(usize, Option<ErrorReason>)> =
        invitees.iter().map(|f| (f.index, f.reason)).collect();
    assert_eq!(
        got,
        vec![
            (0, Some(ErrorReason::CantInviteSelf)),
            (3, Some(ErrorReason::UserNotFound))
        ]
    );
    assert_eq!(error.invitee_failures().len(), 2);
}

#[test]
fn invalid_fields_carry_their_violations() {
    let error = Error::from_status(status_with(
        Code::InvalidArgument,
        "INVALID_FIELD",
        &[],
        |d| {
            d.add_bad_request_violation("title", "is longer than 200 characters");
        },
    ));
    assert_eq!(error.field_violations().len(), 1);
    assert_eq!(error.field_violations()[0].field, "title");
    assert_eq!(
        error.to_string(),
        "invalid request: title: is longer than 200 characters"
    );
}

#[test]
fn rate_limits_carry_the_retry_delay() {
    let error = Error::from_status(status_with(
        Code::ResourceExhausted,
        "RATE_LIMITED",
        &[],
        |d| {
            d.set_retry_info(Some(Duration::from_millis(1500)));
        },
    ));
    assert!(matches!(error, Error::RateLimited { .. }), "{error:?}");
    assert_eq!(error.retry_after(), Some(Duration::from_millis(1500)));
    assert!(error.is_retryable());

    let mut details = ErrorDetails::new();
    details.set_retry_info(Some(Duration::from_secs(2)));
    let bare = Error::from_status(Status::with_error_details(
        Code::ResourceExhausted,
        "slow down",
        details,
    ));
    assert_eq!(bare.retry_after(), Some(Duration::from_secs(2)));
}

#[test]
fn database_unavailable_is_retryable_and_internal_is_not() {
    let db = from_reason(Code::Unavailable, ErrorReason::DatabaseUnavailable);
    assert!(matches!(db, Error::DatabaseUnavailable { .. }));
    assert!(db.is_retryable());

    for error in [
        from_reason(Code::Internal, ErrorReason::Internal),
        Error::from_status(Status::internal("x")),
        Error::from_status(Status::unknown("x")),
        from_reason(Code::Aborted, ErrorReason::EtagMismatch),
        from_reason(Code::PermissionDenied, ErrorReason::NotAParticipant),
    ] {
        assert!(!error.is_retryable(), "{error:?}");
    }
    for error in [
        Error::from_status(Status::unavailable("x")),
        Error::from_status(Status::deadline_exceeded("x")),
        Error::from_status(Status::aborted("could not serialize access")),
        Error::Timeout { status: None },
    ] {
        assert!(error.is_retryable(), "{error:?}");
    }
}

#[test]
fn statuses_made_by_the_transport_are_transport_errors() {
    let io = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
    let status = Status::from_error(Box::new(io));
    assert!(status.source().is_some());
    let error = Error::from_status(status);
    assert!(matches!(error, Error::Transport { .. }), "{error:?}");
    assert!(error.is_retryable());
    assert!(error.status().is_some());
}
