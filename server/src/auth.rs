//! Bearer-token authentication: the key file, minting development tokens, and verifying a
//! request's token into a [`Principal`].
//!
//! A token is verified with the key its header names: `alg: HS256` with the key file's secret,
//! any other algorithm with the public keys of `--jwt-public-key` (a PEM key, or a JWKS whose
//! key is chosen by the token's `kid`). Both are accepted at once, so an operator can move from
//! development tokens to an identity provider, or rotate the provider's keys, without downtime
//! (SPEC §5).

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse},
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::principal::{Principal, PrincipalKind};
use crate::domain::validate;
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
    /// Not valid before, seconds since the Unix epoch (checked when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// The issuer (checked against `--jwt-issuer` when that is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The audience (checked against `--jwt-audience` when that is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// The user's email address, copied into the directory on a user's first call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The user's display name, copied into the directory on a user's first call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A token's `aud` claim: one audience or several (RFC 7519 §4.1.3 allows both).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "parley"`.
    One(String),
    /// `"aud": ["parley", "billing"]`.
    Many(Vec<String>),
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
            nbf: None,
            iss: None,
            aud: None,
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
                // Written whole to a temporary file, then linked into place (which fails if
                // the file exists): a replica starting at the same moment never reads a
                // half-written key file, and the first to link wins.
                let tmp = path.with_file_name(format!(
                    ".{}.{}.tmp",
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    uuid::Uuid::new_v4().simple()
                ));
                let mut options = fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let written = options.open(&tmp).and_then(|mut file| {
                    write!(
                        file,
                        "{}\n{}\n",
                        URL_SAFE_NO_PAD.encode(&key.secret),
                        URL_SAFE_NO_PAD.encode(&key.invitation_secret)
                    )?;
                    file.sync_all()
                });
                let linked = written.and_then(|()| fs::hard_link(&tmp, path));
                let _ = fs::remove_file(&tmp);
                match linked {
                    Ok(()) => Ok(key),
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

/// What a token must carry besides a good signature and a future `exp`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenRules {
    /// The `iss` every token must have (`--jwt-issuer`); any, or none, when unset.
    pub issuer: Option<String>,
    /// An `aud` every token must name (`--jwt-audience`); any, or none, when unset.
    pub audience: Option<String>,
}

/// Seconds of clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;

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
    hs256: Arc<DecodingKey>,
    public: Option<Arc<PublicKeyFile>>,
    validation: Validation,
    verified: Arc<std::sync::Mutex<std::collections::HashMap<String, Verified>>>,
}

/// An HS256 token whose signature and claims were checked, and the principal it named.
///
/// A client sends the same token on every call until it expires, so its signature is checked,
/// and its claims parsed, once: a call of a known token pays a lookup instead (those were 7 %
/// of the server's CPU per GetConversation). The key file's secret does not change while the
/// server runs, so a known token stays as valid as it was, but for time: each use checks its
/// `exp` and `nbf` again, as the full check does. Tokens of the public keys are not kept: those
/// keys are reloaded, and one taken out must refuse its tokens at once.
struct Verified {
    principal: Principal,
    exp: i64,
    nbf: Option<i64>,
}

/// The most verified tokens kept; past it the list starts over.
const VERIFIED_TOKENS: usize = 1024;

/// Longer tokens are checked on every call (so that the list's memory stays small).
const VERIFIED_TOKEN_MAX_LEN: usize = 2048;

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("public_key_file", &self.public.as_ref().map(|p| &p.path))
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Verifies HS256 tokens with the key file's secret and, if `public_key` names a file, the
    /// other algorithms with the keys in it (a PEM public key or a JWKS). Fails if that file
    /// cannot be read or holds no usable key.
    pub fn new(
        key: &KeyFile,
        public_key: Option<&Path>,
        rules: &TokenRules,
    ) -> anyhow::Result<Self> {
        let public = match public_key {
            Some(path) => Some(Arc::new(PublicKeyFile::load(path)?)),
            None => None,
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &rules.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &rules.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // Without a configured audience, a token's `aud` is not Parley's to judge.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Self {
            hs256: Arc::new(DecodingKey::from_secret(key.secret())),
            public,
            validation,
            verified: Default::default(),
        })
    }

    /// The principal of `token` if it was verified before and is still within its time.
    fn known(&self, token: &str) -> Option<Principal> {
        let mut verified = crate::lock(&self.verified);
        let entry = verified.get(token)?;
        let now = jsonwebtoken::get_current_timestamp();
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(i64::MAX);
        // The full check's conditions (jsonwebtoken's `validate`): expired when `exp` is
        // before now less the leeway, not yet valid when `nbf` is after now plus the leeway.
        let timely = entry.exp >= now.saturating_sub(leeway)
            && entry
                .nbf
                .is_none_or(|nbf| nbf <= now.saturating_add(leeway));
        if timely {
            Some(entry.principal.clone())
        } else {
            // The full check says why.
            verified.remove(token);
            None
        }
    }

    fn remember(&self, token: &str, principal: &Principal, exp: i64, nbf: Option<i64>) {
        if token.len() > VERIFIED_TOKEN_MAX_LEN {
            return;
        }
        let mut verified = crate::lock(&self.verified);
        if verified.len() >= VERIFIED_TOKENS {
            verified.clear();
        }
        verified.insert(
            token.to_owned(),
            Verified {
                principal: principal.clone(),
                exp,
                nbf,
            },
        );
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
        if let Some(known) = self.known(token) {
            return Ok(known);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Error::TokenInvalid("the token is malformed"))?;
        let key = self.key_for(&header)?;
        // Exactly the algorithm of the chosen key: a public key must never be taken for an
        // HMAC secret, nor an RSA key for an EdDSA one.
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => Error::TokenExpired,
            ErrorKind::ImmatureSignature => Error::TokenInvalid("the token is not valid yet"),
            ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                Error::TokenInvalid("the token is not issued for this server")
            }
            ErrorKind::MissingRequiredClaim(_) => {
                Error::TokenInvalid("the token lacks a required claim")
            }
            _ => Error::TokenInvalid("the token is malformed or its signature does not verify"),
        })?;
        let (exp, nbf) = (data.claims.exp, data.claims.nbf);
        let principal = principal_from(data.claims)?;
        if header.alg == Algorithm::HS256 {
            self.remember(token, &principal, exp, nbf);
        }
        Ok(principal)
    }

    /// The key that verifies a token with this header.
    fn key_for(&self, header: &Header) -> Result<Arc<DecodingKey>, Error> {
        if header.alg == Algorithm::HS256 {
            return Ok(self.hs256.clone());
        }
        let public = self
            .public
            .as_ref()
            .ok_or(Error::TokenInvalid("the token's algorithm is not accepted"))?;
        public.key(header.kid.as_deref(), header.alg)
    }
}

/// The principal named by verified claims, once they are within the bounds every request
/// field has (SPEC §4 Bounds): past them the token is refused, before anything is stored.
fn principal_from(claims: Claims) -> Result<Principal, Error> {
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
    validate::external_id(&claims.tid)
        .map_err(|_| Error::TokenInvalid("the token's `tid` claim is not a valid tenant id"))?;
    validate::external_id(&claims.sub)
        .map_err(|_| Error::TokenInvalid("the token's `sub` claim is not a valid id"))?;
    let email = claims.email.filter(|e| !e.is_empty());
    if let Some(email) = &email {
        validate::email("email", email).map_err(|_| {
            Error::TokenInvalid(
                "the token's `email` claim is not an email address of at most 320 characters",
            )
        })?;
    }
    let name = claims.name.filter(|n| !n.is_empty());
    if let Some(name) = &name {
        validate::max_chars("name", name, validate::MAX_NAME_LEN).map_err(|_| {
            Error::TokenInvalid("the token's `name` claim is longer than 200 characters")
        })?;
    }
    Ok(Principal {
        tenant_id: claims.tid,
        id: claims.sub,
        kind,
        email,
        name,
        acting_for: None,
        directory_kind: None,
        directory_read: false,
    })
}

/// How often, at most, the public key file is looked at again.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// A public key file larger than this is refused (a JWKS is a few kilobytes).
const MAX_KEY_FILE_BYTES: u64 = 1 << 20;

/// The `--jwt-public-key` file and the keys last read from it. It is read again, at most once
/// a second and only when a token needs it, and its keys replaced when its contents changed, so
/// an identity provider's keys rotate without a restart. A file that no longer reads or parses
/// leaves the last good keys in place.
struct PublicKeyFile {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

struct Loaded {
    keys: Arc<PublicKeys>,
    contents: Vec<u8>,
    checked: Instant,
}

impl PublicKeyFile {
    fn load(path: &Path) -> anyhow::Result<Self> {
        let contents = read_key_file(path).map_err(|e| {
            anyhow::anyhow!("cannot read the JWT public key {}: {e}", path.display())
        })?;
        let keys = PublicKeys::parse(&contents)
            .map_err(|e| anyhow::anyhow!("the JWT public key {}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            loaded: Mutex::new(Loaded {
                keys: Arc::new(keys),
                contents,
                checked: Instant::now(),
            }),
        })
    }

    /// The key for a token's `kid` and `alg`, after re-reading the file if it is due.
    fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<DecodingKey>, Error> {
        let keys = {
            // A panic elsewhere while holding the lock leaves consistent data: keep going.
            let mut loaded = self
                .loaded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if loaded.checked.elapsed() >= RELOAD_INTERVAL {
                loaded.checked = Instant::now();
                self.reload(&mut loaded);
            }
            loaded.keys.clone()
        };
        keys.find(kid, alg)
    }

    fn reload(&self, loaded: &mut Loaded) {
        let contents = match read_key_file(&self.path) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the JWT public key file again; keeping its last keys");
                return;
            }
        };
        if contents == loaded.contents {
            return;
        }
        match PublicKeys::parse(&contents) {
            Ok(keys) => {
                tracing::info!(path = %self.path.display(), keys = keys.len(), "JWT public keys reloaded");
                loaded.keys = Arc::new(keys);
                loaded.contents = contents;
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "the JWT public key file no longer parses; keeping its last keys");
            }
        }
    }
}

fn read_key_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut contents = Vec::new();
    fs::File::open(path)?
        .take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut contents)?;
    if contents.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(std::io::Error::other("the file is larger than 1 MiB"));
    }
    Ok(contents)
}

/// The public keys of one version of the key file.
enum PublicKeys {
    /// One PEM key; a token's `kid`, if any, is not looked at.
    Pem(PublicKey),
    /// A JWKS: the token's `kid` names its key.
    Jwks(Vec<PublicKey>),
}

struct PublicKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: Arc<DecodingKey>,
}

impl PublicKeys {
    /// A JWKS (`{"keys": [...]}`) or a PEM public key (RS256 or EdDSA).
    fn parse(contents: &[u8]) -> anyhow::Result<Self> {
        if contents.trim_ascii_start().starts_with(b"{") {
            let set: JwkSet =
                serde_json::from_slice(contents).map_err(|e| anyhow::anyhow!("not a JWKS: {e}"))?;
            let mut keys = Vec::with_capacity(set.keys.len());
            for jwk in &set.keys {
                match jwk_key(jwk) {
                    Ok(key) => keys.push(key),
                    Err(e) => tracing::warn!(
                        kid = jwk.common.key_id.as_deref().unwrap_or(""),
                        "JWKS key skipped: {e}"
                    ),
                }
            }
            if keys.is_empty() {
                anyhow::bail!("the JWKS holds no usable signature key");
            }
            return Ok(Self::Jwks(keys));
        }
        let pem_key = |key, algorithm| {
            Self::Pem(PublicKey {
                kid: None,
                algorithm,
                key: Arc::new(key),
            })
        };
        if let Ok(key) = DecodingKey::from_rsa_pem(contents) {
            return Ok(pem_key(key, Algorithm::RS256));
        }
        let key = DecodingKey::from_ed_pem(contents).map_err(|e| {
            anyhow::anyhow!("neither a JWKS nor an RSA or Ed25519 PEM public key: {e}")
        })?;
        Ok(pem_key(key, Algorithm::EdDSA))
    }

    fn len(&self) -> usize {
        match self {
            Self::Pem(_) => 1,
            Self::Jwks(keys) => keys.len(),
        }
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<DecodingKey>, Error> {
        let key = match self {
            Self::Pem(key) => key,
            Self::Jwks(keys) => keys
                .iter()
                .find(|k| k.kid.as_deref() == kid)
                .ok_or(Error::TokenInvalid("the token's `kid` names no known key"))?,
        };
        if key.algorithm != alg {
            return Err(Error::TokenInvalid(
                "the token's algorithm is not its key's",
            ));
        }
        Ok(key.key.clone())
    }
}

/// A JWKS entry as a verification key with its algorithm: the entry's `alg` if it has one,
/// else the one its key type implies. Symmetric (`oct`) and encryption keys are refused: a
/// public key file holds no secrets, and HS256 is the key file's.
fn jwk_key(jwk: &Jwk) -> anyhow::Result<PublicKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        anyhow::bail!("an encryption key");
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => anyhow::bail!("an unsupported elliptic curve"),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKey(_) => anyhow::bail!("a symmetric key"),
        _ => anyhow::bail!("an unsupported key type"),
    };
    let algorithm = match jwk.common.key_algorithm {
        Some(alg) => Algorithm::try_from(alg)
            .map_err(|_| anyhow::anyhow!("the unsupported algorithm {alg}"))?,
        None => implied,
    };
    if algorithm.family() != implied.family() {
        anyhow::bail!("its `alg` does not fit its key type");
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(PublicKey {
        kid: jwk.common.key_id.clone(),
        algorithm,
        key: Arc::new(key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "alice".into(),
            tid: "acme".into(),
            kind: "internal".into(),
            exp,
            nbf: None,
            iss: None,
            aud: None,
            email: None,
            name: None,
        }
    }

    fn now() -> i64 {
        i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX)
    }

    fn setup() -> (tempfile::TempDir, KeyFile, Verifier) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let key = KeyFile::load_or_create(&dir.path().join("parley.key")).expect("a key file");
        let verifier = Verifier::new(&key, None, &TokenRules::default()).expect("a verifier");
        (dir, key, verifier)
    }

    fn known_tokens(v: &Verifier) -> usize {
        v.verified.lock().map(|m| m.len()).unwrap_or(0)
    }

    #[test]
    fn a_token_verified_once_is_known_after() {
        let (_dir, key, verifier) = setup();
        let token = key.mint(&claims(now() + 3600)).expect("a token");
        let header = format!("Bearer {token}");
        let first = verifier.verify(Some(&header)).expect("verified");
        assert_eq!(known_tokens(&verifier), 1);
        let again = verifier.verify(Some(&header)).expect("known");
        assert_eq!((again.tenant_id, again.id), (first.tenant_id, first.id));
        // Another token (a forged one among them) is checked in full.
        let forged = format!("Bearer {}x", token);
        assert!(matches!(
            verifier.verify(Some(&forged)),
            Err(Error::TokenInvalid(_))
        ));
        assert_eq!(known_tokens(&verifier), 1);
    }

    #[test]
    fn a_known_token_that_expired_is_refused_as_expired() {
        let (_dir, key, verifier) = setup();
        let exp = now() - 2 * i64::try_from(LEEWAY_SECS).unwrap_or(0) - 1;
        let token = key.mint(&claims(exp)).expect("a token");
        // As if it had been verified while still valid.
        let principal = Principal {
            tenant_id: "acme".into(),
            ..verifier
                .verify(Some(&format!(
                    "Bearer {}",
                    key.mint(&claims(now() + 3600)).expect("a token")
                )))
                .expect("verified")
        };
        verifier.remember(&token, &principal, exp, None);
        assert!(matches!(
            verifier.verify(Some(&format!("Bearer {token}"))),
            Err(Error::TokenExpired)
        ));
        assert!(
            verifier
                .verified
                .lock()
                .map(|m| !m.contains_key(&token))
                .unwrap_or(false),
            "the expired token is forgotten"
        );
    }

    #[test]
    fn a_known_token_not_yet_valid_is_refused() {
        let (_dir, key, verifier) = setup();
        let nbf = now() + 3600;
        let token = key
            .mint(&Claims {
                nbf: Some(nbf),
                ..claims(now() + 7200)
            })
            .expect("a token");
        let valid = key.mint(&claims(now() + 3600)).expect("a token");
        let principal = verifier
            .verify(Some(&format!("Bearer {valid}")))
            .expect("verified");
        verifier.remember(&token, &principal, now() + 7200, Some(nbf));
        assert!(matches!(
            verifier.verify(Some(&format!("Bearer {token}"))),
            Err(Error::TokenInvalid(_))
        ));
    }
}
