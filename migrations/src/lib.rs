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
        ]
    }
}
