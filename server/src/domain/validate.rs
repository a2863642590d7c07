//! Shape checks on request fields, before anything touches the database.

use uuid::Uuid;

use crate::error::{Error, FieldViolation};

// Bounds on request fields (SPEC §4 "Bounds"), listed in the README's "Bounds" table and in the
// proto comments. Each is checked before any per-item work, and checking one costs at most
// `4 * max` bytes of scanning however long the field is (see [`longer_than`]). Repeated fields
// bounded by a setting (`participant_ids`, `invitees`, group `member_ids`) are in
// `config::Limits`.

/// Longest user, group or tenant id, and the `x-parley-act-as` header.
pub const MAX_ID_LEN: usize = 128;
/// Longest `request_id`.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// Longest conversation title.
pub const MAX_TITLE_LEN: usize = 200;
/// Longest message body.
pub const MAX_BODY_LEN: usize = 4_000;
/// Longest user display name or group name.
pub const MAX_NAME_LEN: usize = 200;
/// Longest email address (RFC 5321: 64 + 1 + 255).
pub const MAX_EMAIL_LEN: usize = 320;
/// Longest SearchUsers `query` (a name or an email prefix), before trimming.
pub const MAX_QUERY_LEN: usize = MAX_EMAIL_LEN;
/// Longest `etag`: Parley's are a quoted version number, far shorter.
pub const MAX_ETAG_LEN: usize = 64;
/// Most paths in an `update_mask` (there are eight updatable ones).
pub const MAX_UPDATE_MASK_PATHS: usize = 16;
/// Longest path in an `update_mask` (the longest updatable one has 44 characters).
pub const MAX_FIELD_PATH_LEN: usize = 64;
/// Longest `page_token`: about twice the longest Parley seals (a scope naming a 128-character tenant
/// and a 128-character principal, and a 128-character key, all in 4-byte characters, come to
/// about 2,200). Longer input is refused before it is decoded.
pub const MAX_PAGE_TOKEN_LEN: usize = 4_096;
/// Longest invitation `token` (Parley's are 43 characters).
pub const MAX_INVITATION_TOKEN_LEN: usize = 128;
/// Most ids one AckNotifications call takes.
pub const MAX_ACK_IDS: usize = 1_000;
pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 1_000;

/// Whether `s` has more than `max` characters, decided without counting past `max + 1`: a
/// character is 1 to 4 bytes, so the byte length settles most cases and the rest scan at most
/// `4 * max` bytes. A 4 MB field costs no more than a short one.
pub fn longer_than(s: &str, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    if s.len() > max.saturating_mul(4) {
        return true;
    }
    s.chars().nth(max).is_some()
}

/// An id chosen by the identity system: 1..128 characters, no whitespace or control characters.
pub fn external_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    // The length first, so the character scan below is bounded too.
    if longer_than(id, MAX_ID_LEN) {
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

/// A text field of at most `max` characters, without NUL (which PostgreSQL's text cannot
/// hold, so it would otherwise fail there and not on SQLite).
pub fn max_chars(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if longer_than(value, max) {
        return Err(Error::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    // Bounded by the check above: at most 4 × `max` bytes.
    if value.as_bytes().contains(&0) {
        return Err(Error::field(field, "must not contain the NUL character"));
    }
    Ok(())
}

/// A `request_id`: optional, at most [`MAX_REQUEST_ID_LEN`] characters. Mutations check it
/// first, before any other field.
pub fn request_id(value: &str) -> Result<(), Error> {
    max_chars("request_id", value, MAX_REQUEST_ID_LEN)
}

/// A repeated field of at most `max` items, checked before any item is looked at.
pub fn max_items<T>(field: &str, items: &[T], max: usize) -> Result<(), Error> {
    if items.len() > max {
        return Err(Error::field(
            field,
            format!("must have at most {max} items"),
        ));
    }
    Ok(())
}

/// An email address: one `@` with text on both sides, no whitespace, at most 320 characters.
pub fn email(field: &str, value: &str) -> Result<(), Error> {
    email_address(value).map_err(|d| Error::field(field, d))
}

/// [`email`]'s check, saying what is wrong with `value`.
pub fn email_address(value: &str) -> Result<(), String> {
    if longer_than(value, MAX_EMAIL_LEN) {
        return Err(format!(
            "must be an email address of at most {MAX_EMAIL_LEN} characters"
        ));
    }
    let ok = !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(value.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty() && !d.contains('@'));
    if ok {
        Ok(())
    } else {
        Err("must be an email address".into())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longer_than_counts_characters_not_bytes() {
        assert!(!longer_than("", 0));
        assert!(longer_than("a", 0));
        assert!(!longer_than(&"a".repeat(128), 128));
        assert!(longer_than(&"a".repeat(129), 128));
        // Two, three and four bytes a character: the byte length alone does not decide.
        for c in ['é', '€', '𝄞'] {
            let at = c.to_string().repeat(128);
            assert!(!longer_than(&at, 128), "128 × {c}");
            assert!(longer_than(&format!("{at}{c}"), 128), "129 × {c}");
        }
        // Past 4 bytes a character it is too long whatever it holds.
        assert!(longer_than(&"a".repeat(4 * 128 + 1), 128));
    }

    #[test]
    fn ids_emails_and_text_are_bounded() {
        assert!(external_id(&"u".repeat(MAX_ID_LEN)).is_ok());
        assert!(external_id(&"u".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(external_id(&"ü".repeat(MAX_ID_LEN)).is_ok());
        let local = "a".repeat(64);
        let domain = "d".repeat(MAX_EMAIL_LEN - 65);
        assert!(email("e", &format!("{local}@{domain}")).is_ok());
        assert!(email("e", &format!("{local}@{domain}d")).is_err());
        assert!(max_chars("t", &"t".repeat(MAX_TITLE_LEN), MAX_TITLE_LEN).is_ok());
        assert!(max_chars("t", &"t".repeat(MAX_TITLE_LEN + 1), MAX_TITLE_LEN).is_err());
        assert!(request_id(&"r".repeat(MAX_REQUEST_ID_LEN)).is_ok());
        assert!(request_id(&"r".repeat(MAX_REQUEST_ID_LEN + 1)).is_err());
        assert!(max_items("ids", &[0; 3], 3).is_ok());
        assert!(max_items("ids", &[0; 4], 3).is_err());
    }
}
