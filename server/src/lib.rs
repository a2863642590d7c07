//! The Parley server: tonic services (`api`) over the domain rules (`domain`) over sea-orm
//! persistence (`store`).
//!
//! [`App::prepare`] connects to the database, applies migrations and loads the keys;
//! [`App::serve`] runs the gRPC server on a listener until a shutdown signal resolves, and the
//! Prometheus endpoint ([`metrics`]) beside it when `metrics_listen` is set.

pub mod api;
pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod export;
pub mod metrics;
pub mod realtime;
pub mod store;
mod telemetry;

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;

pub use config::{Config, DbPool, Limits, LogFormat, TlsFiles, TokenRules};
pub use telemetry::init_logging;

/// `mutex`'s guard, also when a thread panicked while holding it: every value Parley keeps
/// behind a mutex stays whole between statements, so it is as good as before the panic.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A prepared server: database connected and migrated, keys loaded.
pub struct App {
    config: Config,
    db: store::Db,
    verifier: auth::Verifier,
    key: auth::KeyFile,
    tls: Option<tonic::transport::Identity>,
    /// The metrics endpoint, bound in `prepare`, and what it serves.
    metrics: Option<(metrics::Endpoint, Arc<metrics::Metrics>)>,
    /// The connection to JetStream, when export is on.
    export: Option<Arc<export::Link>>,
}

impl App {
    /// Connects to `config.database_url` (creating a SQLite file if missing), applies every
    /// pending migration and loads (or creates) the key file.
    pub async fn prepare(config: Config) -> anyhow::Result<Self> {
        config.limits.check()?;
        config.watch.check()?;
        let key = auth::KeyFile::load_or_create(&config.key_file)?;
        let verifier =
            auth::Verifier::new(&key, config.jwt_public_key.as_deref(), &config.token_rules)?;
        // Read the certificate now, so that a wrong path fails the start, not the first call.
        let tls = match &config.tls {
            Some(files) => {
                let read = |path: &std::path::Path| {
                    std::fs::read(path).map_err(|e| {
                        anyhow::anyhow!("cannot read the TLS file {}: {e}", path.display())
                    })
                };
                Some(tonic::transport::Identity::from_pem(
                    read(&files.cert)?,
                    read(&files.key)?,
                ))
            }
            None => None,
        };
        let db = store::Db::open(
            &config.database_url,
            &config.db_pool,
            config.sqlite_synchronous,
        )
        .await?;
        db.migrate(&config.database_url).await?;
        // Bound here rather than in `serve`, so the address (port 0 in tests) is known before
        // the first call.
        let metrics = match config.metrics_listen {
            Some(addr) => Some((
                metrics::Endpoint::bind(addr).await?,
                Arc::new(metrics::Metrics::with_db(&db)),
            )),
            None => None,
        };
        let export = match &config.export {
            Some(export) => Some(Arc::new(export::Link::connect(export.clone()).await?)),
            None => None,
        };
        Ok(Self {
            config,
            db,
            verifier,
            key,
            tls,
            metrics,
            export,
        })
    }

    /// The database, e.g. to install a metric callback before serving.
    pub fn db_mut(&mut self) -> &mut store::Db {
        &mut self.db
    }

    /// The key file the server signs and verifies HS256 tokens with.
    pub fn key(&self) -> &auth::KeyFile {
        &self.key
    }

    /// Where the metrics endpoint listens: `None` when `metrics_listen` is unset (no port is
    /// open).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(endpoint, _)| endpoint.addr())
    }

    /// Serves gRPC on `listener` (and the metrics endpoint, if bound) until `shutdown`
    /// resolves, then drains in-flight calls and closes the metrics port.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (metrics, endpoint) = match self.metrics {
            Some((endpoint, metrics)) => {
                let task = tokio::spawn(endpoint.serve(metrics.clone()));
                (Some(metrics), Some(task))
            }
            None => (None, None),
        };
        let export_metrics = metrics
            .as_ref()
            .map(|m| m.export().clone())
            .unwrap_or_default();
        let mut state =
            api::State::new(self.config, self.db, self.verifier, &self.key).with_metrics(metrics);
        let exporter = self.export.map(|link| {
            let marks = Arc::new(export::Marks::default());
            state.export = Some(marks.clone());
            Arc::new(export::Exporter::new(
                link,
                marks,
                state.writer.clone(),
                state.db.clone(),
                export_metrics,
            ))
        });
        let state = Arc::new(state);
        let exporting = exporter.map(|e| tokio::spawn(e.run(state.hub.closing())));
        let result = api::serve(state, listener, self.tls, shutdown).await;
        if let Some(task) = endpoint {
            task.abort();
        }
        // The hub closed when shutdown began: the exporter records what it published and
        // gives its conversations back, unless that takes longer than a publish may.
        if let Some(mut task) = exporting
            && tokio::time::timeout(export::NATS_TIMEOUT, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
        result
    }
}
