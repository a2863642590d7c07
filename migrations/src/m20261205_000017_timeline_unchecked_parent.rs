//! On PostgreSQL, a timeline item no longer has its conversation checked row by row (the
//! foreign key `timeline_conversation_id_fkey` is dropped), as migration 12 did for
//! participants.
//!
//! PostgreSQL checks a foreign key with a trigger per inserted row: a query of its own that
//! finds the conversation's row and share-locks it, although the write already holds that row
//! locked (`FOR UPDATE`). Every mutation adds at least one item, so every mutation paid it.
//!
//! What the key guarded holds by the write path, as for participants (migration 12): every
//! statement that writes an item runs in a transaction that first found and locked its
//! conversation's row, a call whose conversation is not found writes nothing, and no
//! conversation is ever deleted. Should conversations ever be deleted, their items are to be
//! deleted in the same transaction. SQLite checks its key in the server's process and keeps it.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"ALTER TABLE "timeline" DROP CONSTRAINT "timeline_conversation_id_fkey""#;

const DOWN: &str = r#"ALTER TABLE "timeline" ADD CONSTRAINT "timeline_conversation_id_fkey"
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
