//! Bearer-token authentication: the key file, minting development tokens, and verifying a
//! request's token into a [`Principal`].

use std::{fs, io::Write, path::Path, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::principal::{Principal, PrincipalKind};
use crate::error::Error;

/// The claims Parley reads from a bearer token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user (or service) id.
    pub sub: String,
    /// The tenant id.
    pub tid: String,
    /// `internal`, `external` or `service`.
    pub kind: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Claims {
    /// Claims for `sub` in `tid` of `kind`, valid for `ttl` from now.
    pub fn new(tid: &str, sub: &str, kind: &str, ttl: Duration) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        Self {
            sub: sub.to_owned(),
            tid: tid.to_owned(),
            kind: kind.to_owned(),
            exp: now + ttl.as_secs() as i64,
            email: None,
            name: None,
        }
    }
}

/// The server's secrets, kept in the key file (`--key-file`, shared by every replica), one
/// base64url line each:
///
/// 1. the HS256 secret that signs and verifies tokens (and keys page tokens);
/// 2. the invitation secret that invitation link tokens are derived from (SPEC rule 23).
///
/// They are separate so that rotating the first line (the token-verification key) leaves the
/// second alone, and every invitation link already sent keeps working.
#[derive(Clone)]
pub struct KeyFile {
    secret: Vec<u8>,
    invitation_secret: Vec<u8>,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyFile(..)")
    }
}

/// Shortest secret the key file may hold (256 bits).
const MIN_SECRET_LEN: usize = 32;

/// What the invitation secret of a key file written before it had one is derived from.
const INVITATION_SECRET_LABEL: &[u8] = b"parley invitation secret v1";

impl KeyFile {
    /// Reads the key file, or creates it (mode 0600) with two random 256-bit secrets.
    ///
    /// A file of the first version holds only the HS256 line: the invitation line is appended
    /// (see [`KeyFile::invitation_secret`]).
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        let not_a_key = || anyhow::anyhow!("{} does not hold a Parley key", path.display());
        match fs::read_to_string(path) {
            Ok(text) => match parse_lines(&text).ok_or_else(not_a_key)? {
                (secret, Some(invitation_secret)) => Ok(Self {
                    secret,
                    invitation_secret,
                }),
                (secret, None) => {
                    let invitation_secret = add_invitation_line(path, &secret)?;
                    Ok(Self {
                        secret,
                        invitation_secret,
                    })
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let random = || {
                    let mut bytes = vec![0u8; MIN_SECRET_LEN];
                    rand::rng().fill_bytes(&mut bytes);
                    bytes
                };
                let key = Self {
                    secret: random(),
                    invitation_secret: random(),
                };
                let mut options = fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(path) {
                    Ok(mut file) => {
                        write!(
                            file,
                            "{}\n{}\n",
                            URL_SAFE_NO_PAD.encode(&key.secret),
                            URL_SAFE_NO_PAD.encode(&key.invitation_secret)
                        )?;
                        Ok(key)
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(path)
                    }
                    Err(e) => Err(anyhow::anyhow!("cannot create {}: {e}", path.display())),
                }
            }
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    /// The raw HS256 secret.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The secret invitation link tokens are derived from (SPEC rule 23): never the HS256
    /// secret, so that rotating that one does not kill the links already sent.
    ///
    /// A key file from before this secret existed gets it appended at load, derived from its
    /// HS256 line (so replicas starting at once on such a file append the same value) and from
    /// then on read back from the file, so a later rotation of the first line leaves it as it is.
    pub fn invitation_secret(&self) -> &[u8] {
        &self.invitation_secret
    }

    /// Signs `claims` with HS256.
    pub fn mint(&self, claims: &Claims) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&self.secret),
        )?)
    }
}

/// The key file's secrets: the HS256 line and, when present, the invitation line. A repeat of
/// the invitation line (two processes appending at once where file locks do not hold) is
/// tolerated; anything else after it is not a key file of ours.
fn parse_lines(text: &str) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let decode = |line: &str| {
        URL_SAFE_NO_PAD
            .decode(line)
            .ok()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
    };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let secret = decode(lines.next()?)?;
    let Some(second) = lines.next() else {
        return Some((secret, None));
    };
    if lines.any(|l| l != second) {
        return None;
    }
    Some((secret, Some(decode(second)?)))
}

/// Appends the invitation line to a key file that has only the HS256 line, and returns the
/// invitation secret the file holds afterwards.
///
/// The value is derived from the HS256 secret, so that replicas upgrading one file at once
/// agree on it even without the file lock. A file that cannot be written (a read-only mount)
/// keeps working with the derived value, but then rotating its first line would change it:
/// that is logged.
fn add_invitation_line(path: &Path, secret: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .map_err(|e| anyhow::anyhow!("cannot key HMAC-SHA256: {e}"))?;
    mac.update(INVITATION_SECRET_LABEL);
    let derived = mac.finalize().into_bytes().to_vec();
    match append_if_missing(path, &derived) {
        Ok(stored) => Ok(stored),
        Err(e) => {
            tracing::warn!(
                path = %path.display(),
                error = %e,
                "cannot add the invitation secret to the key file; it is derived from the \
                 HS256 secret until it can be written, so rotating that secret now would \
                 invalidate every invitation link sent"
            );
            Ok(derived)
        }
    }
}

/// Under an exclusive lock on the file: appends `derived` as the second line unless another
/// process already did, and returns the second line's secret.
fn append_if_missing(path: &Path, derived: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut file = fs::OpenOptions::new().read(true).append(true).open(path)?;
    file.lock()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text)?;
    let (_, second) = parse_lines(&text)
        .ok_or_else(|| anyhow::anyhow!("{} does not hold a Parley key", path.display()))?;
    if let Some(stored) = second {
        return Ok(stored);
    }
    let separator = if text.ends_with('\n') { "" } else { "\n" };
    writeln!(file, "{separator}{}", URL_SAFE_NO_PAD.encode(derived))?;
    file.sync_all()?;
    // The lock is released when the file is closed.
    Ok(derived.to_vec())
}

/// Verifies bearer tokens.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// HS256 with the key file's secret.
    pub fn hs256(key: &KeyFile) -> Self {
        Self::with(DecodingKey::from_secret(key.secret()), &[Algorithm::HS256])
    }

    /// RS256 or EdDSA with a PEM public key.
    pub fn public_key(pem: &[u8]) -> anyhow::Result<Self> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::with(key, &[Algorithm::RS256]));
        }
        let key = DecodingKey::from_ed_pem(pem)
            .map_err(|e| anyhow::anyhow!("the JWT public key is neither RSA nor Ed25519: {e}"))?;
        Ok(Self::with(key, &[Algorithm::EdDSA]))
    }

    fn with(key: DecodingKey, algorithms: &[Algorithm]) -> Self {
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.to_vec();
        validation.leeway = 5;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self { key, validation }
    }

    /// Turns an `authorization` header value into the principal it names.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Principal, Error> {
        let header = authorization.ok_or(Error::TokenMissing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Error::TokenInvalid(
                "the authorization header is not `Bearer <token>`",
            ))?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => Error::TokenExpired,
                _ => Error::TokenInvalid("the token is malformed or its signature does not verify"),
            },
        )?;
        let claims = data.claims;
        let kind = match claims.kind.as_str() {
            "internal" => PrincipalKind::Internal,
            "external" => PrincipalKind::External,
            "service" => PrincipalKind::Service,
            _ => {
                return Err(Error::TokenInvalid(
                    "the token's `kind` claim is not internal, external or service",
                ));
            }
        };
        crate::domain::validate::external_id(&claims.tid)
            .map_err(|_| Error::TokenInvalid("the token's `tid` claim is not a valid tenant id"))?;
        crate::domain::validate::external_id(&claims.sub)
            .map_err(|_| Error::TokenInvalid("the token's `sub` claim is not a valid id"))?;
        Ok(Principal {
            tenant_id: claims.tid,
            id: claims.sub,
            kind,
            email: claims.email.filter(|e| !e.is_empty()),
            name: claims.name.filter(|n| !n.is_empty()),
            acting_for: None,
        })
    }
}
