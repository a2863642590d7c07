//! The end-to-end test harness: a real Parley server on an ephemeral port, over SQLite or a
//! fresh PostgreSQL database, driven through the generated gRPC clients.
//!
//! [`spawn_app`] starts a server; [`TestApp`] mints tokens and hands out [`Caller`]s (a channel
//! plus a bearer token, optionally acting as a user); the `Caller` methods wrap the RPCs the
//! tests use most; [`assert_error`] and friends check a failure's code, `ErrorInfo` and
//! `BadRequest` details; [`both_dbs!`] runs a test once per database.

#![allow(clippy::unwrap_used)]

use std::{
    fmt::Debug,
    net::SocketAddr,
    sync::{
        Arc, Once,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

pub use parley::pb;
use parley_server::auth::{Claims, KeyFile};
use sea_orm::ConnectionTrait;
use tonic::transport::Channel;

pub use parley::pb::ErrorReason;
pub use tonic::Code as GrpcCode;

/// The database a test server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The kind of a principal (and, for users, of their directory entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Internal,
    External,
    Service,
}

impl Kind {
    /// The token's `kind` claim.
    pub fn claim(self) -> &'static str {
        match self {
            Kind::Internal => "internal",
            Kind::External => "external",
            Kind::Service => "service",
        }
    }

    /// The directory kind of a user of this kind.
    pub fn user_kind(self) -> pb::user::Kind {
        match self {
            Kind::Internal => pb::user::Kind::Internal,
            Kind::External => pb::user::Kind::External,
            Kind::Service => panic!("a service is not a directory user"),
        }
    }
}

/// The tenant most tests run in.
pub const TENANT: &str = "acme";
/// Another tenant, for isolation tests.
pub const OTHER_TENANT: &str = "globex";

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

static LOGGING: Once = Once::new();

/// A running server and what a test needs to talk to it. Dropping it stops the server and,
/// on PostgreSQL, drops the test database.
pub struct TestApp {
    pub addr: SocketAddr,
    /// Where the metrics endpoint listens, when the configuration turned it on.
    pub metrics_addr: Option<SocketAddr>,
    pub key: KeyFile,
    /// The number of SQL statements the server has run so far.
    pub statements: Arc<AtomicU64>,
    pub db: Db,
    channel: Channel,
    /// The configuration it was started with (for replicas).
    config: parley_server::Config,
    dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pg: Option<PgDatabase>,
}

struct PgDatabase {
    admin_url: String,
    name: String,
}

/// Starts a server on `db` with the default settings.
pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

/// Starts a server on `db`, letting the test adjust the configuration first.
pub async fn spawn_app_with(db: Db, configure: impl FnOnce(&mut parley_server::Config)) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        LOGGING.call_once(|| {
            let _ = parley_server::init_logging(parley_server::LogFormat::Pretty);
        });
    }
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let key_path = dir.path().join("parley.key");
    let (url, pg) = match db {
        Db::Sqlite => (
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("parley.db").display()
            ),
            None,
        ),
        Db::Postgres => {
            let admin_url = std::env::var("PARLEY_TEST_DATABASE_URL")
                .unwrap_or_else(|_| DEFAULT_PG_URL.to_owned());
            let name = format!("parley_test_{}", uuid::Uuid::new_v4().simple());
            let admin = sea_orm::Database::connect(&admin_url)
                .await
                .unwrap_or_else(|e| panic!("connect to PostgreSQL at {admin_url}: {e}"));
            admin
                .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await
                .expect("create the test database");
            let _ = admin.close().await;
            (
                with_database(&admin_url, &name),
                Some(PgDatabase { admin_url, name }),
            )
        }
    };

    let mut config = parley_server::Config::new(url, key_path);
    configure(&mut config);
    let server = start_server(config.clone()).await;
    TestApp {
        addr: server.addr,
        metrics_addr: server.metrics_addr,
        key: server.key,
        statements: server.statements,
        db,
        channel: server.channel,
        config,
        dir,
        shutdown: Some(server.shutdown),
        pg,
    }
}

/// One running server process's worth of state: its address, channel and shutdown switch.
struct Started {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    key: KeyFile,
    statements: Arc<AtomicU64>,
    channel: Channel,
    shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn start_server(config: parley_server::Config) -> Started {
    start_server_at(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// [`start_server`] listening on `addr`; a port that a server just stopped on may still be
/// held for a moment, so binding is tried again for up to ten seconds.
async fn start_server_at(config: parley_server::Config, addr: SocketAddr) -> Started {
    let mut app = parley_server::App::prepare(config)
        .await
        .expect("prepare the server");
    let statements = Arc::new(AtomicU64::new(0));
    let counter = statements.clone();
    app.db_mut()
        .set_metric_callback(move |_info: &sea_orm::metric::Info<'_>| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
    let key = app.key().clone();
    let metrics_addr = app.metrics_addr();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    };
    let addr = listener.local_addr().expect("the listener's address");
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        if let Err(e) = app
            .serve(listener, async move {
                let _ = shutdown_rx.await;
            })
            .await
        {
            eprintln!("the test server stopped with an error: {e:#}");
        }
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid endpoint")
        .connect_lazy();
    Started {
        addr,
        metrics_addr,
        key,
        statements,
        channel,
        shutdown: shutdown_tx,
    }
}

/// A second server on the same database and key file as a [`TestApp`]: another replica of a
/// stateless service. Dropping it stops it; the database belongs to the app.
pub struct Replica {
    pub addr: SocketAddr,
    channel: Channel,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Replica {
    /// `caller` talking to this replica instead of the one it came from.
    pub fn serve(&self, caller: &Caller) -> Caller {
        caller.via(self.channel.clone())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Watches tuned for tests: heartbeats every 300 ms, the replica's poll every 100 ms.
pub fn quick_watches(config: &mut parley_server::Config) {
    config.watch = parley_server::realtime::WatchConfig {
        heartbeat: std::time::Duration::from_millis(300),
        poll_interval: std::time::Duration::from_millis(100),
        ..parley_server::realtime::WatchConfig::default()
    };
}

/// A replica on a runtime of its own, so that it can die as a killed process does
/// ([`KillableReplica::kill`]): every task of it dropped at once, its connections closed
/// without a status, its open transactions never committed.
pub struct KillableReplica {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl KillableReplica {
    /// Drops the replica's every task now, as `kill -9` would.
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for KillableReplica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `url` with its path (the database name) replaced by `name`, keeping any query string.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(pg) = self.pg.take() {
            if std::env::var_os("PARLEY_TEST_KEEP_DB").is_some() {
                return;
            }
            // Best effort, on a thread of its own: Drop cannot await, and this may run on a
            // runtime worker.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    if let Ok(admin) = sea_orm::Database::connect(&pg.admin_url).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                                pg.name
                            ))
                            .await;
                        let _ = admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}

impl TestApp {
    /// Starts another replica of this server: same database, same key file, own listener.
    pub async fn replica(&self) -> Replica {
        let server = start_server(self.config.clone()).await;
        Replica {
            addr: server.addr,
            channel: server.channel,
            shutdown: Some(server.shutdown),
        }
    }

    /// Starts another replica of this server with its configuration adjusted by `configure`
    /// (e.g. export turned on).
    pub async fn replica_with(
        &self,
        configure: impl FnOnce(&mut parley_server::Config),
    ) -> Replica {
        let mut config = self.config.clone();
        configure(&mut config);
        let server = start_server(config).await;
        Replica {
            addr: server.addr,
            channel: server.channel,
            shutdown: Some(server.shutdown),
        }
    }

    /// Starts another replica on a runtime of its own, which the test can kill.
    pub async fn killable_replica(&self) -> KillableReplica {
        let config = self.config.clone();
        let (started, runtime) = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the replica");
            let started = runtime.block_on(start_server(config));
            (started, runtime)
        })
        .await
        .expect("start the replica");
        KillableReplica {
            addr: started.addr,
            runtime: Some(runtime),
            _shutdown: started.shutdown,
        }
    }

    /// Starts another replica listening on `addr` (e.g. where a stopped one listened).
    pub async fn replica_at(&self, addr: SocketAddr) -> Replica {
        let server = start_server_at(self.config.clone(), addr).await;
        Replica {
            addr: server.addr,
            channel: server.channel,
            shutdown: Some(server.shutdown),
        }
    }

    /// The temporary directory holding the key file (and the SQLite database).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The channel every client of this app shares.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A token for `sub` in `tenant`, valid for an hour.
    pub fn token(&self, tenant: &str, sub: &str, kind: Kind, email: Option<&str>) -> String {
        let mut claims = Claims::new(tenant, sub, kind.claim(), Duration::from_secs(3600));
        claims.email = email.map(str::to_owned);
        claims.name = Some(format!("{sub} (test)"));
        self.key.mint(&claims).expect("mint a token")
    }

    /// A token that expired a minute ago (well past the 5 s leeway).
    pub fn expired_token(&self, tenant: &str, sub: &str) -> String {
        let mut claims = Claims::new(tenant, sub, Kind::Internal.claim(), Duration::ZERO);
        claims.exp -= 60;
        self.key.mint(&claims).expect("mint a token")
    }

    /// A well-formed token signed with some other secret.
    pub fn forged_token(&self, tenant: &str, sub: &str) -> String {
        let other = KeyFile::load_or_create(
            &self
                .dir
                .path()
                .join(format!("forged-{}.key", uuid::Uuid::new_v4())),
        )
        .expect("create another key");
        let claims = Claims::new(
            tenant,
            sub,
            Kind::Internal.claim(),
            Duration::from_secs(3600),
        );
        other.mint(&claims).expect("mint a token")
    }

    /// A caller presenting `token` as is.
    pub fn with_token(&self, token: impl Into<String>) -> Caller {
        Caller {
            channel: self.channel(),
            token: Some(token.into()),
            act_as: None,
            tenant: TENANT.to_owned(),
            outbox_reader: Some(self.outbox_token(TENANT)),
        }
    }

    /// The token snapshots read `tenant`'s outbox with.
    fn outbox_token(&self, tenant: &str) -> String {
        self.token(tenant, "svc-outbox-reader", Kind::Service, None)
    }

    /// A caller with no `authorization` header.
    pub fn anonymous(&self) -> Caller {
        Caller {
            channel: self.channel(),
            token: None,
            act_as: None,
            tenant: TENANT.to_owned(),
            outbox_reader: None,
        }
    }

    /// A user principal of `kind` (its email claim is `<sub>@<tenant>.example`).
    pub fn caller(&self, tenant: &str, sub: &str, kind: Kind) -> Caller {
        let email = email_of(tenant, sub);
        let mut caller = self.with_token(self.token(tenant, sub, kind, Some(&email)));
        caller.tenant = tenant.to_owned();
        caller.outbox_reader = Some(self.outbox_token(tenant));
        caller
    }

    /// An internal user of `tenant`.
    pub fn user(&self, tenant: &str, sub: &str) -> Caller {
        self.caller(tenant, sub, Kind::Internal)
    }

    /// An external user of `tenant`.
    pub fn external(&self, tenant: &str, sub: &str) -> Caller {
        self.caller(tenant, sub, Kind::External)
    }

    /// A service principal of `tenant` (its administrator).
    pub fn service(&self, tenant: &str) -> Caller {
        let mut caller = self.with_token(self.token(tenant, "svc-identity", Kind::Service, None));
        caller.tenant = tenant.to_owned();
        caller.outbox_reader = Some(self.outbox_token(tenant));
        caller
    }

    /// A service principal of `tenant` acting as `user`.
    pub fn service_as(&self, tenant: &str, user: &str) -> Caller {
        let mut caller = self.service(tenant);
        caller.act_as = Some(user.to_owned());
        caller
    }

    /// Every unacknowledged notification of `tenant`, oldest first, over all pages (read as a
    /// service of that tenant).
    pub async fn unacked_notifications(&self, tenant: &str) -> Vec<pb::Notification> {
        let service = self.service(tenant);
        let (mut out, mut page_token) = (Vec::new(), String::new());
        for _ in 0..1_000 {
            let msg = pb::ListNotificationsRequest {
                page_size: 1000,
                page_token,
                include_acked: false,
            };
            let page = service
                .notif()
                .list_notifications(service.req(msg))
                .await
                .expect("ListNotifications")
                .into_inner();
            out.extend(page.notifications);
            if page.next_page_token.is_empty() {
                return out;
            }
            page_token = page.next_page_token;
        }
        panic!("ListNotifications did not end");
    }

    /// The URL of this server's database, for tests that look at housekeeping directly.
    pub fn database_url(&self) -> &str {
        &self.config.database_url
    }

    /// The name of this server's PostgreSQL database (None on SQLite).
    pub fn database_name(&self) -> Option<&str> {
        self.pg.as_ref().map(|pg| pg.name.as_str())
    }

    /// Reads the statement counter.
    pub fn statement_count(&self) -> u64 {
        self.statements.load(Ordering::SeqCst)
    }

    /// `grpc.health.v1.Health` client (no token needed).
    pub fn health(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        tonic_health::pb::health_client::HealthClient::new(self.channel())
    }
}

mod caller;
mod errors;
mod fixtures;
pub mod nats;
pub use caller::{Caller, Snapshot};
pub use errors::*;
pub use fixtures::*;

/// Runs each listed `async fn name(db: Db)` of the calling file once on SQLite and once on
/// PostgreSQL, as the tests `name::sqlite` and `name::postgres`, each on a 4-worker runtime:
///
/// ```text
/// async fn creates_things(db: Db) {
///     let app = spawn_app(db).await;
///     // …
/// }
///
/// both_dbs!(creates_things);
/// ```
///
/// A test function left out of the list is dead code, so the compiler warns about it.
#[macro_export]
macro_rules! both_dbs {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name($crate::Db::Sqlite).await
                }

                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name($crate::Db::Postgres).await
                }
            }
        )+
    };
}

// Re-exported for the test files.
#[doc(hidden)]
pub use {futures, prost_types, tokio, tonic, tonic_reflection, tonic_types, uuid};

/// Runs every future on its own task, released together by a barrier, and returns their
/// results in order: the concurrency and duplicate-request tests race calls with it.
pub async fn all_at_once<T, F>(futures: Vec<F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(futures.len()));
    let handles: Vec<_> = futures
        .into_iter()
        .map(|f| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                f.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("the task did not panic"));
    }
    out
}
