//! Development tokens (feature `dev-tokens`): HS256 bearer tokens signed with a Parley server's
//! key file, the way `parley-server token …` mints them.
//!
//! This is for local development, tests and examples against a server that signs with its key
//! file. In production, tokens come from your identity provider (the server then verifies
//! them with `--jwt-public-key`), and applications hand them to
//! [`ClientBuilder::bearer_token`](crate::ClientBuilder::bearer_token) or a
//! [`TokenProvider`](crate::TokenProvider); they never read the server's secret.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use parley_sdk::{Client, dev::{DevClaims, mint_token}};
//!
//! let service = mint_token("parley.key", &DevClaims::service("acme", "identity-sync"))?;
//! let alice = mint_token(
//!     "parley.key",
//!     &DevClaims::internal("acme", "alice").email("alice@acme.example").name("Alice"),
//! )?;
//! let client = Client::connect("http://127.0.0.1:50051", alice).await?;
//! # Ok(()) }
//! ```

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The shortest secret the server accepts, in bytes.
const MIN_SECRET_LEN: usize = 32;

/// How long a development token is valid unless [`DevClaims::ttl`] says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// Why a development token could not be minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevTokenError {
    /// The key file could not be read.
    #[error("cannot read the key file {}: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key file does not hold a Parley key (one line: the base64url encoding, without
    /// padding, of a secret of at least 32 bytes).
    #[error("{} does not hold a Parley key", path.display())]
    InvalidKey {
        /// The key file.
        path: PathBuf,
    },
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// What kind of principal a token names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// A team member.
    Internal,
    /// A customer, supplier or guest.
    External,
    /// A sibling microservice (its tenant's administrator, or acting as a user).
    Service,
}

/// The claims Parley reads from a bearer token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[must_use]
pub struct DevClaims {
    /// The user (or service) id.
    pub sub: String,
    /// The tenant id.
    pub tid: String,
    /// The principal's kind.
    pub kind: PrincipalKind,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// The email address (needed to accept email invitations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The display name (used when the server adds a user principal to its directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl DevClaims {
    /// `sub` of `tenant`, of `kind`, valid for an hour.
    pub fn new(tenant: impl Into<String>, sub: impl Into<String>, kind: PrincipalKind) -> Self {
        Self {
            sub: sub.into(),
            tid: tenant.into(),
            kind,
            exp: 0,
            email: None,
            name: None,
        }
        .ttl(DEFAULT_TTL)
    }

    /// An internal user.
    pub fn internal(tenant: impl Into<String>, sub: impl Into<String>) -> Self {
        Self::new(tenant, sub, PrincipalKind::Internal)
    }

    /// An external user.
    pub fn external(tenant: impl Into<String>, sub: impl Into<String>) -> Self {
        Self::new(tenant, sub, PrincipalKind::External)
    }

    /// A service principal.
    pub fn service(tenant: impl Into<String>, sub: impl Into<String>) -> Self {
        Self::new(tenant, sub, PrincipalKind::Service)
    }

    /// The `email` claim.
    pub fn email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }

    /// The `name` claim.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Valid for `ttl` from now.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.exp = i64::try_from(now.saturating_add(ttl.as_secs())).unwrap_or(i64::MAX);
        self
    }
}

/// An HS256 signing key: a Parley server's key-file secret.
#[derive(Clone)]
pub struct DevKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for DevKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevKey(..)")
    }
}

impl DevKey {
    /// Reads a server key file (`--key-file`, default `parley.key`).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, DevTokenError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| DevTokenError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).ok_or_else(|| DevTokenError::InvalidKey {
            path: path.to_owned(),
        })
    }

    /// The key from the text of a key file: its first line (the HS256 secret; the server keeps
    /// other secrets on the lines after it).
    pub fn parse(text: &str) -> Option<Self> {
        let first = text.lines().map(str::trim).find(|l| !l.is_empty())?;
        let secret = URL_SAFE_NO_PAD.decode(first).ok()?;
        (secret.len() >= MIN_SECRET_LEN).then_some(Self { secret })
    }

    /// Signs `claims`.
    pub fn mint(&self, claims: &DevClaims) -> Result<String, DevTokenError> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&self.secret),
        )?)
    }
}

/// Reads `key_file` and signs `claims` with it.
pub fn mint_token(key_file: impl AsRef<Path>, claims: &DevClaims) -> Result<String, DevTokenError> {
    DevKey::load(key_file)?.mint(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_a_token_with_the_claims() {
        let key = DevKey::parse(&URL_SAFE_NO_PAD.encode([7u8; 32])).expect("a key");
        let claims = DevClaims::service("acme", "svc").name("Sync");
        let token = key.mint(&claims).expect("a token");
        let payload = token.split('.').nth(1).expect("three parts");
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64"))
                .expect("json");
        assert_eq!(json["sub"], "svc");
        assert_eq!(json["tid"], "acme");
        assert_eq!(json["kind"], "service");
        assert_eq!(json["name"], "Sync");
        assert!(json.get("email").is_none());
        assert!(json["exp"].as_i64().expect("exp") > 0);
    }

    #[test]
    fn short_or_malformed_keys_are_rejected() {
        assert!(DevKey::parse(&URL_SAFE_NO_PAD.encode([1u8; 16])).is_none());
        assert!(DevKey::parse("not base64 !").is_none());
        // The server's second line (its invitation secret) is not part of the signing key.
        let two_lines = format!(
            "{}\n{}\n",
            URL_SAFE_NO_PAD.encode([7u8; 32]),
            URL_SAFE_NO_PAD.encode([9u8; 32])
        );
        let claims = DevClaims::service("acme", "svc");
        assert_eq!(
            DevKey::parse(&two_lines).expect("a key").mint(&claims).ok(),
            DevKey::parse(&URL_SAFE_NO_PAD.encode([7u8; 32]))
                .expect("a key")
                .mint(&claims)
                .ok()
        );
        let dir = std::env::temp_dir().join(format!("parley-sdk-{}", uuid::Uuid::new_v4()));
        assert!(matches!(
            DevKey::load(&dir),
            Err(DevTokenError::Read { .. })
        ));
    }
}
