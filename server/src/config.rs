//! Server settings. Every setting is a flag and a `PARLEY_*` environment variable (see `main.rs`);
//! this module holds the parsed values the library runs on.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable, one line per RPC.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Limits a deployment may tune.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The largest `max_participants` a conversation may have, and the default for new ones.
    pub max_participants: i32,
    /// People in a conversation at creation, the creator included.
    pub max_initial_participants: usize,
    /// Invitees in one AddParticipants call.
    pub max_invitees: usize,
    /// Group memberships one AddParticipants call may expand (the sum of its groups' sizes),
    /// so that a call naming many large groups is refused before they are loaded.
    pub max_group_reach: usize,
    /// Members one UpsertGroup call may list.
    pub max_group_members: usize,
    /// How long an email invitation stays acceptable.
    pub invitation_ttl: Duration,
    /// Calls per second each principal may make to one replica (bursts of twice that);
    /// 0 turns the limit off.
    pub rate_limit_per_second: u32,
    /// How long a `request_id` is remembered (AIP-155: 24 hours).
    pub request_id_retention: Duration,
    /// How long an acknowledged notification is kept (for `include_acked` listings).
    pub acked_notification_retention: Duration,
    /// How often each replica forgets expired request ids and old acknowledged notifications.
    pub sweep_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_participants: 10_000,
            max_initial_participants: 10,
            max_invitees: 1_000,
            max_group_reach: 100_000,
            max_group_members: 1_000,
            invitation_ttl: Duration::from_secs(7 * 24 * 3600),
            rate_limit_per_second: 1_000,
            request_id_retention: Duration::from_secs(24 * 3600),
            acked_notification_retention: Duration::from_secs(7 * 24 * 3600),
            sweep_interval: Duration::from_secs(600),
        }
    }
}

/// Everything the server needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// `sqlite://…` (the default, created if missing) or `postgres://…`.
    pub database_url: String,
    /// The HS256 secret, created with mode 0600 on first start if missing. It also keys the
    /// page-token MAC, so replicas that share a database must share this file.
    pub key_file: PathBuf,
    /// A PEM public key (RS256 or EdDSA). When set, bearer tokens are verified with it instead
    /// of the key file's secret.
    pub jwt_public_key: Option<PathBuf>,
    pub log_format: LogFormat,
    pub limits: Limits,
    /// Serve TLS (HTTPS/2) with this PEM certificate chain and key instead of plaintext.
    pub tls: Option<TlsFiles>,
}

/// A PEM certificate chain and its private key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// The defaults of `parley-server serve`, with the given database.
    pub fn new(database_url: impl Into<String>, key_file: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: database_url.into(),
            key_file: key_file.into(),
            jwt_public_key: None,
            log_format: LogFormat::Pretty,
            limits: Limits::default(),
            tls: None,
        }
    }
}
