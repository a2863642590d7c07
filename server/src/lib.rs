//! The Parley server: tonic services (`api`) over the domain rules (`domain`) over sea-orm
//! persistence (`store`).
//!
//! [`App::prepare`] connects to the database, applies migrations and loads the keys;
//! [`App::serve`] runs the gRPC server on a listener until a shutdown signal resolves.

pub mod api;
pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod store;
mod telemetry;

use std::{future::Future, sync::Arc};

use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

pub use config::{Config, DbPool, Limits, LogFormat, TlsFiles, TokenRules};
pub use telemetry::init_logging;

/// A prepared server: database connected and migrated, keys loaded.
pub struct App {
    config: Config,
    db: DatabaseConnection,
    verifier: auth::Verifier,
    key: auth::KeyFile,
    tls: Option<tonic::transport::Identity>,
}

impl App {
    /// Connects to `config.database_url` (creating a SQLite file if missing), applies every
    /// pending migration and loads (or creates) the key file.
    pub async fn prepare(config: Config) -> anyhow::Result<Self> {
        config.limits.check()?;
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
        let db = store::connect(&config.database_url, &config.db_pool).await?;
        store::migrate_up(&db).await?;
        Ok(Self {
            config,
            db,
            verifier,
            key,
            tls,
        })
    }

    /// The database connection, e.g. to install a metric callback before serving.
    pub fn db_mut(&mut self) -> &mut DatabaseConnection {
        &mut self.db
    }

    /// The key file the server signs and verifies HS256 tokens with.
    pub fn key(&self) -> &auth::KeyFile {
        &self.key
    }

    /// Serves gRPC on `listener` until `shutdown` resolves, then drains in-flight calls.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = Arc::new(api::State::new(
            self.config,
            self.db,
            self.verifier,
            &self.key,
        ));
        api::serve(state, listener, self.tls, shutdown).await
    }
}
