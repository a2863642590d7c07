//! Parley's schema, one migration per change. The server applies pending migrations on start;
//! `parley-server migrate up|down|status` runs them by hand.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_directory;
mod m20261122_000002_conversations;
mod m20261122_000003_invitations_outbox_requests;
mod m20261122_000004_housekeeping_indexes;
mod m20261202_000005_viewer_views;
mod m20261202_000006_invitation_links;
mod m20261202_000007_unacked_and_prefix_indexes;
mod m20261203_000008_partial_direct_pair;
mod m20261204_000009_outbox_keys;
mod m20261204_000010_participants_keyed_rows;
pub mod m20261204_000011_identifier_collation;
mod m20261204_000012_participants_unchecked_parent;
mod m20261205_000013_users_person_index;
mod m20261205_000014_outbox_acked_apart;
mod m20261205_000015_timeline_by_type;
pub mod m20261205_000016_notification_leases;
mod m20261205_000017_timeline_unchecked_parent;
pub mod m20261205_000018_export_cursors;

/// Runs `sql` (several statements) if the database is `backend`'s, and nothing otherwise: for a
/// migration that changes one engine's storage only.
async fn on_engine(
    manager: &SchemaManager<'_>,
    backend: sea_orm_migration::sea_orm::DatabaseBackend,
    sql: &str,
) -> Result<(), DbErr> {
    if manager.get_database_backend() == backend {
        manager.get_connection().execute_unprepared(sql).await?;
    }
    Ok(())
}

/// Every migration, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_directory::Migration),
            Box::new(m20261122_000002_conversations::Migration),
            Box::new(m20261122_000003_invitations_outbox_requests::Migration),
            Box::new(m20261122_000004_housekeeping_indexes::Migration),
            Box::new(m20261202_000005_viewer_views::Migration),
            Box::new(m20261202_000006_invitation_links::Migration),
            Box::new(m20261202_000007_unacked_and_prefix_indexes::Migration),
            Box::new(m20261203_000008_partial_direct_pair::Migration),
            Box::new(m20261204_000009_outbox_keys::Migration),
            Box::new(m20261204_000010_participants_keyed_rows::Migration),
            Box::new(m20261204_000011_identifier_collation::Migration),
            Box::new(m20261204_000012_participants_unchecked_parent::Migration),
            Box::new(m20261205_000013_users_person_index::Migration),
            Box::new(m20261205_000014_outbox_acked_apart::Migration),
            Box::new(m20261205_000015_timeline_by_type::Migration),
            Box::new(m20261205_000016_notification_leases::Migration),
            Box::new(m20261205_000017_timeline_unchecked_parent::Migration),
            Box::new(m20261205_000018_export_cursors::Migration),
        ]
    }
}

/// A database file of its own for a migration's test, in a fresh folder under the system's
/// temporary one; [`Scratch::remove`] deletes it.
#[cfg(test)]
struct Scratch {
    dir: std::path::PathBuf,
    db: sea_orm_migration::sea_orm::DatabaseConnection,
}

#[cfg(test)]
impl Scratch {
    async fn sqlite(name: &str) -> Result<Self, DbErr> {
        let dir = std::env::temp_dir().join(format!(
            "parley-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).map_err(|e| DbErr::Custom(e.to_string()))?;
        let url = format!("sqlite://{}/m.db?mode=rwc", dir.display());
        let db = sea_orm_migration::sea_orm::Database::connect(&url).await?;
        Ok(Self { dir, db })
    }

    async fn remove(self) -> Result<(), DbErr> {
        self.db.close().await?;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}
