//! `parley-server`: run the server, mint development tokens, manage migrations.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use parley_server::{App, Config, DbPool, Limits, LogFormat, auth};

/// mimalloc rather than the system's allocator: under AddParticipants(1000) glibc's malloc,
/// free and consolidation were a sixth of the server's CPU. Built as its version 2 and without
/// transparent huge pages (`v2`, `no_thp`): mimalloc 3 asks the kernel for huge pages on its
/// arenas, and a huge page is resident whole once touched. Peak resident memory under
/// `parley.sh`'s SQLite AddParticipants(1000), the largest of its figures: system allocator
/// 48 MiB, mimalloc 3 with huge pages 111 MiB, without 56-70 MiB, mimalloc 2 without 59 MiB
/// (52 MiB since SQLite inserts a plan's rows with a one-row statement, `store::writes`), where
/// the speed issue allows 64 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "parley-server",
    version,
    about = "Parley: conversations and who is in them, over gRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server (the default).
    Serve(Box<ServeArgs>),
    /// Print a bearer token signed with the key file (development and operations).
    Token(TokenArgs),
    /// Apply or roll back database migrations.
    Migrate(MigrateArgs),
}

#[derive(Args, Clone)]
struct DatabaseArgs {
    /// `sqlite://parley.db` (created if missing) or a `postgres://` URL.
    #[arg(
        long,
        env = "PARLEY_DATABASE_URL",
        default_value = "sqlite://parley.db"
    )]
    database_url: String,
    /// The most database connections this process opens (default: 8).
    #[arg(long, env = "PARLEY_DB_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    db_max_connections: Option<u32>,
    /// Database connections kept open when idle (default: 1).
    #[arg(long, env = "PARLEY_DB_MIN_CONNECTIONS")]
    db_min_connections: Option<u32>,
    /// PostgreSQL only: the most of those connections that reads hold at once (default: three
    /// times the cores, at most --db-max-connections). Reads keep the engine's CPU busy, and past a
    /// couple per core its processes only take turns; writes use every connection.
    #[arg(long, env = "PARLEY_PG_MAX_READS", value_parser = clap::value_parser!(u32).range(1..))]
    pg_max_reads: Option<u32>,
    /// SQLite only: `normal` syncs the write-ahead log at checkpoints (at most 50 ms apart
    /// while writes go on), so a power cut or an OS crash (not a crash of the server) can lose
    /// the commits of the last 50 ms or so before it, never the database's consistency;
    /// `full` syncs it at every commit, so nothing committed is lost, at the cost of a disk
    /// flush per write.
    #[arg(
        long,
        env = "PARLEY_SQLITE_SYNCHRONOUS",
        value_enum,
        default_value = "normal"
    )]
    sqlite_synchronous: parley_server::store::SqliteSync,
    /// PostgreSQL only: `auto` lets PostgreSQL keep a generic plan of a statement a connection
    /// runs often, planned once; `force-custom-plan` plans every execution with its values,
    /// which costs a busy write path about a third of its throughput but never keeps a plan
    /// made while a table was empty (see the README).
    #[arg(
        long,
        env = "PARLEY_PG_PLAN_CACHE_MODE",
        value_enum,
        default_value = "auto"
    )]
    pg_plan_cache_mode: parley_server::store::PgPlanCache,
}

impl DatabaseArgs {
    fn pool(&self) -> DbPool {
        DbPool {
            max_connections: self.db_max_connections,
            min_connections: self.db_min_connections,
            pg_plan_cache: self.pg_plan_cache_mode,
            pg_max_reads: self.pg_max_reads,
        }
    }
}

#[derive(Args, Clone)]
struct KeyArgs {
    /// The HS256 secret, created (mode 0600) on first start if missing.
    #[arg(long, env = "PARLEY_KEY_FILE", default_value = "parley.key")]
    key_file: PathBuf,
}

/// The `iss` and `aud` tokens carry: the server checks them, `token` writes them.
#[derive(Args, Clone)]
struct TokenRuleArgs {
    /// The issuer (`iss`) every token must have; unchecked when unset.
    #[arg(long, env = "PARLEY_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// The audience every token's `aud` must name; unchecked when unset.
    #[arg(long, env = "PARLEY_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
}

impl From<TokenRuleArgs> for parley_server::TokenRules {
    fn from(args: TokenRuleArgs) -> Self {
        Self {
            issuer: args.jwt_issuer,
            audience: args.jwt_audience,
        }
    }
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PARLEY_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// A PEM public key (RS256 or EdDSA) or a JWKS file (keys chosen by `kid`, re-read when it
    /// changes) to verify tokens with, besides the key file's HS256 secret.
    #[arg(long, env = "PARLEY_JWT_PUBLIC_KEY")]
    jwt_public_key: Option<PathBuf>,
    #[command(flatten)]
    token_rules: TokenRuleArgs,
    /// Serve TLS with this PEM certificate chain (with --tls-key) instead of plaintext.
    #[arg(long, env = "PARLEY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "PARLEY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[arg(long, env = "PARLEY_LOG_FORMAT", value_enum, default_value = "pretty")]
    log_format: LogFormat,
    /// Serve Prometheus metrics over HTTP at /metrics on this address; unset: no metrics port.
    #[arg(long, env = "PARLEY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// The largest `max_participants` of a conversation, and the default.
    #[arg(long, env = "PARLEY_MAX_PARTICIPANTS", default_value_t = 10_000)]
    max_participants: i32,
    /// People at creation, the creator included.
    #[arg(long, env = "PARLEY_MAX_INITIAL_PARTICIPANTS", default_value_t = 10)]
    max_initial_participants: usize,
    /// Invitees in one AddParticipants call.
    #[arg(long, env = "PARLEY_MAX_INVITEES", default_value_t = 1_000)]
    max_invitees: usize,
    /// Group memberships one AddParticipants call may expand (the sum of its groups' sizes).
    #[arg(long, env = "PARLEY_MAX_GROUP_REACH", default_value_t = 10_000)]
    max_group_reach: usize,
    /// Members one UpsertGroup call may list.
    #[arg(long, env = "PARLEY_MAX_GROUP_MEMBERS", default_value_t = 1_000)]
    max_group_members: usize,
    /// How long an email invitation stays valid.
    #[arg(long, env = "PARLEY_INVITATION_TTL", default_value = "7d", value_parser = humantime::parse_duration)]
    invitation_ttl: Duration,
    /// Calls per second per principal on this replica (bursts of twice that); 0 = unlimited.
    /// A service acting for users has this much per user.
    #[arg(long, env = "PARLEY_RATE_LIMIT", default_value_t = 1_000)]
    rate_limit: u32,
    /// Calls per second a service may make on this replica in all, whomever it acts for
    /// (bursts of twice that); 0 = unlimited. Unset: ten times `--rate-limit` (so 10,000 by
    /// default, and unlimited when `--rate-limit` is 0).
    #[arg(long, env = "PARLEY_SERVICE_RATE_LIMIT")]
    service_rate_limit: Option<u32>,
    /// How long a request_id is remembered.
    #[arg(long, env = "PARLEY_REQUEST_ID_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    request_id_retention: Duration,
    /// How long an acknowledged notification is kept.
    #[arg(long, env = "PARLEY_ACKED_NOTIFICATION_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    acked_notification_retention: Duration,
    /// How often expired request ids and old acknowledged notifications are deleted.
    #[arg(long, env = "PARLEY_SWEEP_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    sweep_interval: Duration,
    /// Open watch streams per caller (principal, act-as user) on each replica.
    #[arg(long, env = "PARLEY_MAX_WATCHES_PER_CALLER", default_value_t = 100)]
    max_watches_per_caller: usize,
    /// Open watch streams on each replica in all.
    #[arg(long, env = "PARLEY_MAX_WATCHES", default_value_t = 10_000)]
    max_watches: usize,
    /// How often each replica reads the latest seq of the conversations watched on it.
    #[arg(long, env = "PARLEY_WATCH_POLL_INTERVAL", default_value = "250ms", value_parser = humantime::parse_duration)]
    watch_poll_interval: Duration,
    /// How long a watch waits for a reader that takes nothing before WATCH_TOO_SLOW.
    #[arg(long, env = "PARLEY_WATCH_SEND_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    watch_send_timeout: Duration,
    /// Export every timeline item to NATS JetStream at this URL (stream PARLEY, subjects
    /// parley.<tenant>.<conversation>); unset: no export, nothing connects to NATS.
    #[arg(long, env = "PARLEY_NATS_URL")]
    nats_url: Option<String>,
    /// The duplicate window Parley sets on the PARLEY stream.
    #[arg(long, env = "PARLEY_EXPORT_DUPLICATE_WINDOW", default_value = "2m", value_parser = humantime::parse_duration)]
    export_duplicate_window: Duration,
    /// How long a replica holds a conversation it exports (another takes it over after).
    #[arg(long, env = "PARLEY_EXPORT_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    export_lease: Duration,
    /// The pause between two passes of the export's sweep of all conversations.
    #[arg(long, env = "PARLEY_EXPORT_SWEEP_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    export_sweep_interval: Duration,
}

#[derive(Args)]
struct TokenArgs {
    #[arg(long)]
    tenant: String,
    /// The subject: a user id, or a service name.
    #[arg(long)]
    sub: String,
    #[arg(long, default_value = "internal", value_parser = ["internal", "external", "service"])]
    kind: String,
    #[arg(long)]
    email: Option<String>,
    #[arg(long)]
    name: Option<String>,
    /// Lifetime, e.g. 1h, 30m, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    token_rules: TokenRuleArgs,
}

#[derive(Args)]
struct MigrateArgs {
    #[arg(value_enum, default_value = "up")]
    action: MigrateAction,
    #[command(flatten)]
    database: DatabaseArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MigrateAction {
    Up,
    Down,
    Status,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(*args).await,
        Some(Command::Token(args)) => token(args),
        Some(Command::Migrate(args)) => migrate(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    parley_server::init_logging(args.log_format)?;
    let service_rate_limit = args.service_rate_limit();
    let config = Config {
        listen: args.listen,
        db_pool: args.database.pool(),
        sqlite_synchronous: args.database.sqlite_synchronous,
        database_url: args.database.database_url,
        key_file: args.key.key_file,
        jwt_public_key: args.jwt_public_key,
        token_rules: args.token_rules.into(),
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(parley_server::TlsFiles { cert, key }),
            _ => None,
        },
        log_format: args.log_format,
        metrics_listen: args.metrics_listen,
        limits: Limits {
            max_participants: args.max_participants,
            max_initial_participants: args.max_initial_participants,
            max_invitees: args.max_invitees,
            max_group_reach: args.max_group_reach,
            max_group_members: args.max_group_members,
            invitation_ttl: args.invitation_ttl,
            rate_limit_per_second: args.rate_limit,
            service_rate_limit_per_second: service_rate_limit,
            request_id_retention: args.request_id_retention,
            acked_notification_retention: args.acked_notification_retention,
            sweep_interval: args.sweep_interval,
        },
        watch: parley_server::realtime::WatchConfig {
            max_per_caller: args.max_watches_per_caller,
            max_total: args.max_watches,
            poll_interval: args.watch_poll_interval,
            send_timeout: args.watch_send_timeout,
            ..Default::default()
        },
        export: args
            .nats_url
            .map(|url| parley_server::export::ExportConfig {
                duplicate_window: args.export_duplicate_window,
                lease: args.export_lease,
                sweep_interval: args.export_sweep_interval,
                ..parley_server::export::ExportConfig::new(url)
            }),
    };
    let listen = config.listen;
    let app = App::prepare(config).await?;
    if let Some(addr) = app.metrics_addr() {
        tracing::info!(%addr, "serving Prometheus metrics at http://{addr}/metrics");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, "parley-server listening");
    app.serve(listener, shutdown_signal()).await?;
    tracing::info!("parley-server stopped");
    Ok(())
}

impl ServeArgs {
    /// `--service-rate-limit`, or ten times `--rate-limit` where unset.
    fn service_rate_limit(&self) -> u32 {
        self.service_rate_limit
            .unwrap_or(self.rate_limit.saturating_mul(10))
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: draining in-flight calls");
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let key = auth::KeyFile::load_or_create(&args.key.key_file)?;
    let mut claims = auth::Claims::new(&args.tenant, &args.sub, &args.kind, args.ttl);
    claims.email = args.email;
    claims.name = args.name;
    claims.iss = args.token_rules.jwt_issuer;
    claims.aud = args.token_rules.jwt_audience.map(auth::Audience::One);
    println!("{}", key.mint(&claims)?);
    Ok(())
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    use parley_migration::{Migrator, MigratorTrait};
    let db =
        parley_server::store::connect(&args.database.database_url, &args.database.pool()).await?;
    match args.action {
        MigrateAction::Up => {
            Migrator::up(&db, None).await?;
            println!("migrations applied");
        }
        MigrateAction::Down => {
            Migrator::down(&db, Some(1)).await?;
            println!("rolled back the last migration");
        }
        MigrateAction::Status => {
            for m in Migrator::get_migration_with_status(&db).await? {
                println!("{}\t{}", m.name(), m.status());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(flags: &[&str]) -> ServeArgs {
        let argv = ["parley-server", "serve"].iter().chain(flags);
        match Cli::try_parse_from(argv).map(|cli| cli.command) {
            Ok(Some(Command::Serve(args))) => *args,
            _ => panic!("{flags:?} do not parse as serve"),
        }
    }

    /// A service's total follows the per-principal limit unless given: off when it is off.
    #[test]
    fn the_service_limit_follows_the_rate_limit_unless_given() {
        assert_eq!(serve_args(&[]).service_rate_limit(), 10_000);
        assert_eq!(serve_args(&["--rate-limit", "0"]).service_rate_limit(), 0);
        assert_eq!(
            serve_args(&["--rate-limit", "50"]).service_rate_limit(),
            500
        );
        let given = ["--rate-limit", "0", "--service-rate-limit", "7"];
        assert_eq!(serve_args(&given).service_rate_limit(), 7);
    }
}
