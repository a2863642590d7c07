//! Bearer-token authentication: the key file, minting development tokens, and verifying a
//! request's token into a [`Principal`].

use std::{fs, io::Write, path::Path, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use rand::RngCore;
use serde::{Deserialize, Serialize};

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

/// The server's HS256 secret, kept in the key file.
#[derive(Clone)]
pub struct KeyFile {
    secret: Vec<u8>,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyFile(..)")
    }
}

impl KeyFile {
    /// Reads the key file, or creates it (mode 0600) with a random 256-bit secret.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        match fs::read_to_string(path) {
            Ok(text) => Self::parse(&text)
                .ok_or_else(|| anyhow::anyhow!("{} does not hold a Parley key", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = vec![0u8; 32];
                rand::rng().fill_bytes(&mut secret);
                let mut options = fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(path) {
                    Ok(mut file) => {
                        writeln!(file, "{}", URL_SAFE_NO_PAD.encode(&secret))?;
                        Ok(Self { secret })
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

    fn parse(text: &str) -> Option<Self> {
        let secret = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
        (secret.len() >= 32).then_some(Self { secret })
    }

    /// The raw secret.
    pub fn secret(&self) -> &[u8] {
        &self.secret
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
            directory_kind: None,
        })
    }
}
