//! On PostgreSQL, every identifier column compares by bytes (`COLLATE "C"`): ids, tenant ids,
//! emails as matched, hashes, request ids.
//!
//! An identifier is matched and ordered, never read by a person, so the database's linguistic
//! collation only cost and misled:
//!
//! - **Cost.** Each comparison of an index on such a column went through the locale (the two
//!   strings copied to terminated buffers, then `strcoll`). Under AddParticipants(1000) a fifth
//!   of PostgreSQL's CPU was in those comparisons (inserting into the keys of `participants` and
//!   `notifications`, and looking up 1,000 people by key). Measured with the columns altered by
//!   hand on one database against another as it was (same load, alternated): PostgreSQL's CPU
//!   per call 46-48 -> 40-44 ms, p50 57-61 -> 50-55 ms.
//! - **Order.** Pages are keyed by id (`id > $after ORDER BY id`), and the server sorts and
//!   compares ids by their bytes. Under a linguistic collation (`en_US.UTF-8`, ICU) PostgreSQL
//!   orders `B` after `a` and may place an accented id anywhere: a page token taken from the
//!   server's order could then skip or repeat ids. In the bytes' order both agree on every
//!   database, whatever locale it was created with.
//!
//! Display names and titles keep the database's collation; SQLite compares text by its bytes
//! already (`BINARY`), so nothing changes there.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Each table's identifier columns with their types.
pub const IDENTIFIERS: &[(&str, &[(&str, &str)])] = &[
    (
        "conversations",
        &[
            ("id", "varchar(36)"),
            ("tenant_id", "varchar(128)"),
            ("owner_id", "varchar(128)"),
            ("direct_key", "varchar(300)"),
        ],
    ),
    (
        "group_members",
        &[
            ("tenant_id", "varchar(128)"),
            ("group_id", "varchar(128)"),
            ("user_id", "varchar(128)"),
        ],
    ),
    (
        "groups",
        &[("tenant_id", "varchar(128)"), ("id", "varchar(128)")],
    ),
    (
        "invitations",
        &[
            ("id", "varchar(36)"),
            ("tenant_id", "varchar(128)"),
            ("conversation_id", "varchar(36)"),
            ("email", "varchar(320)"),
            ("invited_by", "varchar(128)"),
            ("token_hash", "varchar(64)"),
            ("accepted_by", "varchar(128)"),
        ],
    ),
    (
        "notifications",
        &[
            ("id", "varchar(36)"),
            ("tenant_id", "varchar(128)"),
            ("recipient_user_id", "varchar(128)"),
            ("recipient_email", "varchar(320)"),
            ("conversation_id", "varchar(36)"),
            ("actor_id", "varchar(128)"),
            ("invitation_id", "varchar(36)"),
        ],
    ),
    (
        "participants",
        &[
            ("conversation_id", "varchar(36)"),
            ("user_id", "varchar(128)"),
            ("tenant_id", "varchar(128)"),
            ("added_by", "varchar(128)"),
            ("removed_by", "varchar(128)"),
        ],
    ),
    (
        "request_records",
        &[
            ("tenant_id", "varchar(128)"),
            ("principal_id", "varchar(128)"),
            ("request_id", "varchar(128)"),
            ("method", "varchar(64)"),
            ("fingerprint", "varchar(64)"),
        ],
    ),
    (
        "timeline",
        &[
            ("conversation_id", "varchar(36)"),
            ("message_id", "varchar(36)"),
            ("sender_id", "varchar(128)"),
            ("actor_id", "varchar(128)"),
        ],
    ),
    (
        "users",
        &[
            ("tenant_id", "varchar(128)"),
            ("id", "varchar(128)"),
            ("email", "varchar(320)"),
            ("email_lower", "varchar(320)"),
        ],
    ),
];

/// One `ALTER TABLE` per table, each column given `collation`. PostgreSQL rebuilds the indexes
/// and foreign keys on the columns it changes; a key and the columns that refer to it may
/// differ in collation between two statements (both are deterministic).
fn statements(collation: &str) -> String {
    IDENTIFIERS
        .iter()
        .map(|(table, columns)| {
            let alters = columns
                .iter()
                .map(|(column, ty)| {
                    format!(r#"ALTER COLUMN "{column}" TYPE {ty} COLLATE "{collation}""#)
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!(r#"ALTER TABLE "{table}" {alters}"#)
        })
        .collect::<Vec<_>>()
        .join(";\n")
}

async fn apply(manager: &SchemaManager<'_>, collation: &str) -> Result<(), DbErr> {
    super::on_engine(manager, DatabaseBackend::Postgres, &statements(collation)).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// All of it or none.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        apply(manager, "C").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        apply(manager, "default").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column named is altered, in one statement per table.
    #[test]
    fn each_table_is_one_statement() {
        let up = statements("C");
        assert_eq!(up.matches("ALTER TABLE").count(), IDENTIFIERS.len());
        let columns: usize = IDENTIFIERS.iter().map(|(_, c)| c.len()).sum();
        assert_eq!(up.matches(r#"COLLATE "C""#).count(), columns);
        assert!(up.contains(
            r#"ALTER TABLE "participants" ALTER COLUMN "conversation_id" TYPE varchar(36) COLLATE "C", ALTER COLUMN "user_id""#
        ));
        assert_eq!(
            statements("default")
                .matches(r#"COLLATE "default""#)
                .count(),
            columns
        );
    }
}
