//! Opaque page tokens: the last key of a page, bound to the list and scope it came from and
//! sealed with an HMAC, so a tampered or foreign token is refused rather than followed.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::validate::MAX_PAGE_TOKEN_LEN;
use crate::error::Error;

type HmacSha256 = Hmac<Sha256>;
const TAG_LEN: usize = 16;

#[derive(Serialize, Deserialize)]
struct Payload {
    /// Which List method.
    l: String,
    /// What it lists (tenant, conversation, order, filters).
    s: String,
    /// The last key of the previous page.
    k: String,
}

/// Seals and opens page tokens.
#[derive(Clone)]
pub struct Pager {
    key: Vec<u8>,
}

impl Pager {
    /// A pager keyed from the server secret (shared by every replica).
    pub fn new(secret: &[u8]) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
        mac.update(b"parley page tokens v1");
        Self {
            key: mac.finalize().into_bytes().to_vec(),
        }
    }

    fn tag(&self, body: &[u8]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key).unwrap_or_else(|_| unreachable_hmac());
        mac.update(body);
        mac.finalize().into_bytes()[..TAG_LEN].to_vec()
    }

    /// The token that resumes `list` over `scope` after `last_key`.
    pub fn seal(&self, list: &str, scope: &str, last_key: &str) -> String {
        let body = serde_json::to_vec(&Payload {
            l: list.into(),
            s: scope.into(),
            k: last_key.into(),
        })
        .unwrap_or_default();
        let mut bytes = self.tag(&body);
        bytes.extend_from_slice(&body);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The last key a token carries; `None` for the first page (an empty token).
    pub fn open(&self, token: &str, list: &str, scope: &str) -> Result<Option<String>, Error> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || Error::field("page_token", "is not a page token of this list");
        // Bounded before decoding: no sealed token is this long, so garbage of any size costs
        // one comparison.
        if token.len() > MAX_PAGE_TOKEN_LEN {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        if bytes.len() <= TAG_LEN {
            return Err(invalid());
        }
        let (tag, body) = bytes.split_at(TAG_LEN);
        let mut mac = HmacSha256::new_from_slice(&self.key).map_err(|_| invalid())?;
        mac.update(body);
        mac.verify_truncated_left(tag).map_err(|_| invalid())?;
        let payload: Payload = serde_json::from_slice(body).map_err(|_| invalid())?;
        if payload.l != list || payload.s != scope {
            return Err(invalid());
        }
        Ok(Some(payload.k))
    }
}

fn unreachable_hmac() -> HmacSha256 {
    // HMAC accepts keys of any length; this is never reached.
    panic!("HMAC rejected a key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_token_parley_seals_is_within_the_bound() {
        let pager = Pager::new(b"secret");
        // Ids of 128 four-byte characters, and ids of 128 characters JSON escapes: the tenant
        // and the acting principal make the longest scope, a user id the longest key.
        for c in ['𝄞', '"'] {
            let id = c.to_string().repeat(128);
            let scope = format!("{id}/{id}/{}", "x".repeat(40));
            let token = pager.seal("ListConversations", &scope, &id);
            assert!(
                token.len() <= MAX_PAGE_TOKEN_LEN,
                "{} characters",
                token.len()
            );
            assert_eq!(
                pager
                    .open(&token, "ListConversations", &scope)
                    .ok()
                    .flatten(),
                Some(id)
            );
        }
    }

    #[test]
    fn an_overlong_token_is_refused_before_decoding() {
        let pager = Pager::new(b"secret");
        let err = pager.open(&"A".repeat(MAX_PAGE_TOKEN_LEN + 1), "L", "s");
        assert!(matches!(err, Err(Error::InvalidField(_))));
    }
}
