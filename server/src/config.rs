//! Server settings. Every setting is a flag and a `PARLEY_*` environment variable (see `main.rs`);
//! this module holds the parsed values the library runs on.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

pub use crate::auth::TokenRules;

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
    /// 0 turns the limit off. A service acting for users has this much per user it acts for.
    pub rate_limit_per_second: u32,
    /// Calls per second a service principal may make to one replica in all, whomever it acts
    /// for (bursts of twice that); 0 turns this limit off.
    pub service_rate_limit_per_second: u32,
    /// How long a `request_id` is remembered (AIP-155: 24 hours).
    pub request_id_retention: Duration,
    /// How long an acknowledged notification is kept (for `include_acked` listings).
    pub acked_notification_retention: Duration,
    /// How often each replica forgets expired request ids and old acknowledged notifications.
    pub sweep_interval: Duration,
}

/// The largest `max_group_reach` a server accepts: with one call's direct invitees too, the
/// reply of a call that reaches that many people, each result at its largest (ids of 128
/// characters), fits in [`parley::MAX_REPLY_BYTES`] (a unit test checks the arithmetic).
pub const MAX_GROUP_REACH_CEILING: usize = 40_000;

impl Limits {
    /// Refuses settings the server cannot honour.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.max_group_reach > MAX_GROUP_REACH_CEILING {
            anyhow::bail!(
                "--max-group-reach {} is above {MAX_GROUP_REACH_CEILING}: the reply of such a call \
                 could pass the {} bytes a client decodes",
                self.max_group_reach,
                parley::MAX_REPLY_BYTES
            );
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_participants: 10_000,
            max_initial_participants: 10,
            max_invitees: 1_000,
            max_group_reach: 10_000,
            max_group_members: 1_000,
            invitation_ttl: Duration::from_secs(7 * 24 * 3600),
            rate_limit_per_second: 1_000,
            service_rate_limit_per_second: 10_000,
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
    /// A PEM public key (RS256 or EdDSA) or a JWKS file. Tokens signed with another algorithm
    /// than HS256 are verified with it (a JWKS key chosen by the token's `kid`), HS256 tokens
    /// still with the key file's secret. The file is read again when it changes.
    pub jwt_public_key: Option<PathBuf>,
    /// The `iss` and `aud` every token must carry, when set.
    pub token_rules: TokenRules,
    pub log_format: LogFormat,
    pub limits: Limits,
    /// Serve TLS (HTTPS/2) with this PEM certificate chain and key instead of plaintext.
    pub tls: Option<TlsFiles>,
    /// Serve Prometheus metrics over HTTP at `/metrics` on this address (port 0: any free
    /// port, see [`crate::App::metrics_addr`]); `None` opens no metrics port.
    pub metrics_listen: Option<SocketAddr>,
    /// How many database connections each replica keeps.
    pub db_pool: DbPool,
    /// How SQLite syncs each commit (ignored on PostgreSQL).
    pub sqlite_synchronous: crate::store::SqliteSync,
    /// The bounds and timings of the streams of SPEC §7.
    pub watch: crate::realtime::WatchConfig,
    /// The export of the timeline to NATS JetStream (SPEC §7); `None`: off, nothing connects
    /// to NATS.
    pub export: Option<crate::export::ExportConfig>,
}

/// A replica's database connections: how many, and how PostgreSQL plans on them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbPool {
    /// The most connections open at once; unset, 8 on either engine. On SQLite
    /// these are the readers: writes take turns on one more connection of their own.
    pub max_connections: Option<u32>,
    /// Connections kept open when idle; unset, 1.
    pub min_connections: Option<u32>,
    /// How PostgreSQL plans the executions of a prepared statement (ignored on SQLite).
    pub pg_plan_cache: crate::store::PgPlanCache,
    /// PostgreSQL: the most connections that reads hold at once; unset, three times the cores
    /// this process may run on ([`DbPool::pg_reads`]).
    pub pg_max_reads: Option<u32>,
}

impl DbPool {
    /// The most connections on SQLite when no maximum is set.
    pub const SQLITE_DEFAULT_MAX: u32 = 8;
    /// The most connections on PostgreSQL when no maximum is set. Each is a backend process
    /// on the engine's machine, and past a few per core they only take turns: on 2 cores with
    /// 16 calls in flight, 8 connections rather than 16 cost PostgreSQL 105-110 instead of
    /// 114-138 us of CPU per ListParticipants(50) and served 6.34-6.41k instead of
    /// 5.71-6.28k per second (3 alternations), AddParticipants(1) no slower. A larger
    /// engine takes `--db-max-connections`.
    pub const POSTGRES_DEFAULT_MAX: u32 = 8;

    /// The most of the `max` connections of a PostgreSQL pool that reads hold at once (see
    /// `store::pg::Pool::reader`): as set, or three times the cores this process may run on,
    /// and never more than `max`. On 2 cores with 16 ListParticipants(50) in flight, 6 reads
    /// served more calls per second than 4 in 8 of 9 alternations (10.1-10.8k -> 10.7-11.3k,
    /// the server's CPU per call 82-87 -> 77-83 us: fewer calls wait for a read's turn), and 8
    /// no more than 6; PostgreSQL's CPU per call was the same for the three.
    pub fn pg_reads(&self, max: u32) -> u32 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let default = u32::try_from(cores.saturating_mul(3)).unwrap_or(u32::MAX);
        self.pg_max_reads.unwrap_or(default).clamp(1, max.max(1))
    }

    /// The `(min, max)` connections on SQLite (`sqlite = true`) or PostgreSQL, refusing a
    /// maximum of 0 or a minimum above the maximum (the pool could never open).
    pub fn sizes(&self, sqlite: bool) -> anyhow::Result<(u32, u32)> {
        let default_max = if sqlite {
            Self::SQLITE_DEFAULT_MAX
        } else {
            Self::POSTGRES_DEFAULT_MAX
        };
        let max = self.max_connections.unwrap_or(default_max);
        let min = self.min_connections.unwrap_or(1).min(max);
        if max == 0 {
            anyhow::bail!("--db-max-connections must be at least 1");
        }
        if let Some(asked) = self.min_connections
            && asked > max
        {
            anyhow::bail!("--db-min-connections {asked} is above --db-max-connections {max}");
        }
        Ok((min, max))
    }
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
            token_rules: TokenRules::default(),
            log_format: LogFormat::Pretty,
            limits: Limits::default(),
            tls: None,
            metrics_listen: None,
            db_pool: DbPool::default(),
            sqlite_synchronous: crate::store::SqliteSync::default(),
            watch: crate::realtime::WatchConfig::default(),
            export: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley::pb;
    use prost::Message;

    /// The largest one result of an AddParticipants reply can be: every id at its longest.
    fn largest_result() -> pb::AddParticipantsResult {
        let id = "x".repeat(crate::domain::validate::MAX_ID_LEN);
        let time = Some(prost_types::Timestamp {
            seconds: i64::MAX / 2,
            nanos: 999_999_999,
        });
        pb::AddParticipantsResult {
            invitee: Some(pb::Invitee {
                invitee: Some(pb::invitee::Invitee::UserId(id.clone())),
            }),
            outcome: pb::add_participants_result::Outcome::AlreadyParticipant as i32,
            reason: pb::ErrorReason::TooManyWatches as i32,
            participant: Some(pb::Participant {
                conversation_id: uuid::Uuid::nil().to_string(),
                user_id: id.clone(),
                kind: 2,
                role: 3,
                state: 2,
                added_by: id.clone(),
                join_time: time,
                removed_by: id.clone(),
                remove_time: time,
                history_from: i64::MAX,
            }),
            invitation: None,
            via_group_id: id,
        }
    }

    #[test]
    fn pool_sizes_default_per_engine_and_refuse_what_cannot_open() {
        let unset = DbPool::default();
        assert_eq!(unset.sizes(true).ok(), Some((1, 8)));
        assert_eq!(unset.sizes(false).ok(), Some((1, 8)));
        let set = DbPool {
            max_connections: Some(40),
            min_connections: Some(4),
            ..Default::default()
        };
        assert_eq!(set.sizes(true).ok(), Some((4, 40)));
        assert_eq!(set.sizes(false).ok(), Some((4, 40)));
        let small = DbPool {
            max_connections: Some(1),
            min_connections: None,
            ..Default::default()
        };
        assert_eq!(small.sizes(false).ok(), Some((1, 1)));
        let zero = DbPool {
            max_connections: Some(0),
            min_connections: None,
            ..Default::default()
        };
        assert!(zero.sizes(true).is_err());
        let inverted = DbPool {
            max_connections: Some(2),
            min_connections: Some(3),
            ..Default::default()
        };
        assert!(inverted.sizes(false).is_err());
        // Above the engine's default maximum when no maximum is given.
        let min_only = DbPool {
            max_connections: None,
            min_connections: Some(10),
            ..Default::default()
        };
        assert!(min_only.sizes(true).is_err());
        assert!(min_only.sizes(false).is_err());
        let min_at_default = DbPool {
            max_connections: None,
            min_connections: Some(8),
            ..Default::default()
        };
        assert_eq!(min_at_default.sizes(false).ok(), Some((8, 8)));
    }

    /// Reads take as many of PostgreSQL's connections at once as set, never more than the
    /// pool has nor none; unset, three times the cores, within the same bounds.
    #[test]
    fn reads_take_at_most_the_pool() {
        let set = |reads: Option<u32>| DbPool {
            pg_max_reads: reads,
            ..Default::default()
        };
        assert_eq!(set(Some(3)).pg_reads(8), 3);
        assert_eq!(set(Some(30)).pg_reads(8), 8);
        assert_eq!(set(Some(3)).pg_reads(1), 1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let unset = set(None).pg_reads(1000);
        assert_eq!(unset as usize, 3 * cores);
        assert_eq!(set(None).pg_reads(1), 1);
    }

    #[test]
    fn the_largest_allowed_reply_fits_what_clients_decode() {
        let one = largest_result();
        let limits = Limits::default();
        // Each result is one length-delimited field of the reply: its bytes plus a tag and a
        // length prefix of at most 3 bytes.
        let per_result = one.encoded_len() + 4;
        let worst = (MAX_GROUP_REACH_CEILING + limits.max_invitees) * per_result;
        assert!(
            worst <= parley::MAX_REPLY_BYTES,
            "{worst} bytes > {}",
            parley::MAX_REPLY_BYTES
        );
        assert!(limits.max_group_reach <= MAX_GROUP_REACH_CEILING);
        assert!(limits.check().is_ok());
        let too_far = Limits {
            max_group_reach: MAX_GROUP_REACH_CEILING + 1,
            ..Limits::default()
        };
        assert!(too_far.check().is_err());
    }
}
