//! Assertions on a failed call's code, `ErrorInfo` and `BadRequest` details.

use std::fmt::Debug;

use tonic::{Code, Status};
use tonic_types::{FieldViolation, StatusExt};

use crate::ErrorReason;

/// Asserts `status` has `code` and an `ErrorInfo` with `reason` in domain `parley.v1`.
#[track_caller]
pub fn assert_error(status: &Status, code: Code, reason: ErrorReason) {
    assert_eq!(status.code(), code, "unexpected code; status: {status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in the status details: {status:?}"));
    assert_eq!(
        info.reason,
        reason.as_str_name(),
        "unexpected reason; status: {status:?}"
    );
    assert_eq!(
        info.domain,
        parley::ERROR_DOMAIN,
        "unexpected domain; status: {status:?}"
    );
}

/// Unwraps the error of `result` and asserts its code and reason.
#[track_caller]
pub fn expect_err<T: Debug>(result: Result<T, Status>, code: Code, reason: ErrorReason) -> Status {
    match result {
        Ok(value) => panic!(
            "expected {code:?} {}, got Ok({value:?})",
            reason.as_str_name()
        ),
        Err(status) => {
            assert_error(&status, code, reason);
            status
        }
    }
}

/// The `ErrorInfo` of `status`; panics if it has none.
#[track_caller]
pub fn error_info(status: &Status) -> tonic_types::ErrorInfo {
    status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in the status details: {status:?}"))
}

/// The `BadRequest` field violations of `status` (empty if none).
pub fn field_violations(status: &Status) -> Vec<FieldViolation> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations)
        .unwrap_or_default()
}

fn field_matches(actual: &str, expected: &str) -> bool {
    actual == expected
        || actual.ends_with(&format!(".{expected}"))
        || expected.ends_with(&format!(".{actual}"))
}

/// Asserts `status` is INVALID_ARGUMENT `INVALID_FIELD` with a violation naming `field`
/// (`user.id` and `id` match each other).
#[track_caller]
pub fn assert_invalid_field(status: &Status, field: &str) {
    assert_error(status, Code::InvalidArgument, ErrorReason::InvalidField);
    let violations = field_violations(status);
    assert!(
        violations.iter().any(|v| field_matches(&v.field, field)),
        "no BadRequest violation for `{field}`: {violations:?} (status: {status:?})"
    );
}

/// Unwraps the error of `result` and asserts it is `INVALID_FIELD` naming `field`.
#[track_caller]
pub fn expect_invalid<T: Debug>(result: Result<T, Status>, field: &str) -> Status {
    match result {
        Ok(value) => panic!("expected INVALID_FIELD `{field}`, got Ok({value:?})"),
        Err(status) => {
            assert_invalid_field(&status, field);
            status
        }
    }
}

/// Flips one character of a page token (keeping it printable).
pub fn tamper(token: &str) -> String {
    assert!(!token.is_empty(), "cannot tamper with an empty page token");
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// Asserts the per-invitee BadRequest violations of `status` are exactly `expected`
/// (`invitees[<index>]`, reason name).
#[track_caller]
pub fn assert_invitee_violations(status: &Status, expected: &[(usize, ErrorReason)]) {
    let mut got: Vec<(String, String)> = field_violations(status)
        .into_iter()
        .map(|v| (v.field, v.reason))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = expected
        .iter()
        .map(|(i, r)| (format!("invitees[{i}]"), r.as_str_name().to_owned()))
        .collect();
    want.sort();
    assert_eq!(got, want, "per-invitee violations of {status:?}");
}
