//! On PostgreSQL, a participant's row no longer has its conversation checked row by row (the
//! foreign key `participants_conversation_id_fkey` is dropped).
//!
//! PostgreSQL checks a foreign key with a trigger per inserted row, each a query of its own
//! that finds and share-locks the conversation's row. AddParticipants(1000) inserts a thousand
//! rows into one conversation, so it checked the same row a thousand times, a quarter of the
//! engine's work in the call: measured on two databases alike but for the key (alternated, 3
//! each), 29.4-30.3k -> 36.3-38.8k rows/s and PostgreSQL's CPU per call 22-23 -> 16-18 ms.
//!
//! What the key guarded still holds, by the write path rather than per row:
//!
//! - every statement that writes a participant's row runs in a transaction that first read
//!   and locked its conversation's row (`FOR UPDATE`, the load step of every mutation), and a
//!   call whose conversation is not found writes nothing;
//! - no conversation is ever deleted (no RPC deletes one, and no statement of the server's
//!   does), so the row found stays.
//!
//! Should conversations ever be deleted, their participants are to be deleted in the same
//! transaction (the key's `ON DELETE CASCADE` did it). SQLite checks its key in the server's
//! process at no measurable cost (its `AddParticipants(1000)` with foreign keys off was within
//! the noise), and keeps it; so does `timeline`, whose writes add one row per call.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str =
    r#"ALTER TABLE "participants" DROP CONSTRAINT "participants_conversation_id_fkey""#;

const DOWN: &str = r#"ALTER TABLE "participants" ADD CONSTRAINT "participants_conversation_id_fkey"
    FOREIGN KEY ("conversation_id") REFERENCES "conversations" ("id") ON DELETE CASCADE"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::on_engine(manager, DatabaseBackend::Postgres, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::on_engine(manager, DatabaseBackend::Postgres, DOWN).await
    }
}
