//! How far each conversation's timeline has been exported to NATS JetStream (SPEC §7, Export),
//! and which replica is exporting it now.
//!
//! The timeline is the export's outbox: an item is written in the transaction that makes it,
//! and `conversations.last_seq` moves with it, so what is due is every item after a
//! conversation's `done_seq` here (no row: nothing exported yet). Only the exporter writes
//! this table, after JetStream acknowledged a publish: the write path pays nothing for export.
//!
//! - `done_seq`: every item up to it is acknowledged by JetStream.
//! - `holder`, `lease_until` (microseconds since the epoch): the replica exporting the
//!   conversation and until when; a holder that gave the conversation back cleanly sets
//!   `holder` to NULL.
//! - `prior`: the holder before the latest claim. A claim that takes a conversation from a
//!   holder who did not give it back (a replica killed, a lease run out) asks JetStream what
//!   it last stored for the conversation, since `done_seq` may lag what was published.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The identifier columns of `export_cursors` (compared by bytes on PostgreSQL, as migration 11
/// made every other identifier).
pub const IDENTIFIERS: &[(&str, &[(&str, &str)])] = &[(
    "export_cursors",
    &[
        ("conversation_id", "varchar(36)"),
        ("holder", "varchar(64)"),
        ("prior", "varchar(64)"),
    ],
)];

const UP_SQLITE: &str = r#"CREATE TABLE "export_cursors" (
    "conversation_id" varchar(36) NOT NULL PRIMARY KEY,
    "done_seq" bigint NOT NULL DEFAULT 0,
    "holder" varchar(64) NULL,
    "prior" varchar(64) NULL,
    "lease_until" bigint NULL
)"#;

const UP_POSTGRES: &str = r#"CREATE TABLE "export_cursors" (
    "conversation_id" varchar(36) COLLATE "C" NOT NULL PRIMARY KEY,
    "done_seq" bigint NOT NULL DEFAULT 0,
    "holder" varchar(64) COLLATE "C" NULL,
    "prior" varchar(64) COLLATE "C" NULL,
    "lease_until" bigint NULL
)"#;

const DOWN: &str = r#"DROP TABLE "export_cursors""#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = match manager.get_database_backend() {
            sea_orm_migration::sea_orm::DatabaseBackend::Postgres => UP_POSTGRES,
            _ => UP_SQLITE,
        };
        manager.get_connection().execute_unprepared(sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
