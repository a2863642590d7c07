//! Shape checks on request fields, before anything touches the database.

use uuid::Uuid;

use crate::error::{Error, FieldViolation};

/// Longest user, group or tenant id.
pub const MAX_ID_LEN: usize = 128;
pub const MAX_TITLE_LEN: usize = 200;
pub const MAX_BODY_LEN: usize = 4_000;
pub const MAX_NAME_LEN: usize = 200;
pub const MAX_EMAIL_LEN: usize = 320;
pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 1_000;

/// An id chosen by the identity system: 1..128 characters, no whitespace or control characters.
pub fn external_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.chars().count() > MAX_ID_LEN {
        return Err(format!("must be at most {MAX_ID_LEN} characters"));
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".into());
    }
    Ok(())
}

/// A user or group id field.
pub fn id_field(field: &str, id: &str) -> Result<(), Error> {
    external_id(id).map_err(|d| Error::field(field, d))
}

/// A conversation id: a UUID in its hyphenated form, returned lower-case.
pub fn conversation_id(field: &str, id: &str) -> Result<String, Error> {
    if id.is_empty() {
        return Err(Error::field(field, "must not be empty"));
    }
    Uuid::try_parse(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| Error::field(field, "must be a UUID"))
}

/// A text field of at most `max` characters.
pub fn max_chars(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.chars().count() > max {
        return Err(Error::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// An email address: one `@` with text on both sides, no whitespace, at most 320 characters.
pub fn email(field: &str, value: &str) -> Result<(), Error> {
    let ok = value.chars().count() <= MAX_EMAIL_LEN
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(value.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty() && !d.contains('@'));
    if ok {
        Ok(())
    } else {
        Err(Error::field(field, "must be an email address"))
    }
}

/// An enum field: `Ok(None)` when unset (zero), the value when known, an error when unknown.
pub fn enum_field<E: TryFrom<i32>>(field: &str, raw: i32) -> Result<Option<E>, Error> {
    if raw == 0 {
        return Ok(None);
    }
    E::try_from(raw)
        .map(Some)
        .map_err(|_| Error::field(field, format!("{raw} is not a known value")))
}

/// A List method's page size: 0 means the default, negative is refused, past the maximum is capped.
pub fn page_size(raw: i32) -> Result<u64, Error> {
    match raw {
        n if n < 0 => Err(Error::field("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as u64).min(MAX_PAGE_SIZE)),
    }
}

/// Collects the violations of several checks into one error.
#[derive(Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn check<T>(&mut self, r: Result<T, Error>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(Error::InvalidField(v)) => {
                self.0.extend(v);
                None
            }
            Err(other) => {
                self.0.push(FieldViolation::new("", other.to_string()));
                None
            }
        }
    }

    pub fn finish(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidField(self.0))
        }
    }
}
