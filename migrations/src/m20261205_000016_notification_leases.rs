//! Notification leases (StreamNotifications, SPEC §7): `notifications` gets `lease_holder`
//! (the stream a notification is delivered to, a random id per stream) and `lease_until`
//! (microseconds since the epoch after which the lease is void), both NULL while nobody holds
//! it, and index `notifications_by_holder` (`lease_holder`, `id`) over the leased rows only,
//! by which a stream finds what it still holds and gives it back when it ends.
//!
//! `notifications_acked` gets neither: an acknowledged notification is nobody's.
//!
//! On PostgreSQL `lease_holder`, an identifier, compares by bytes (`COLLATE "C"`, as migration
//! 11 made every identifier column before it).

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

/// The identifier columns this migration adds, with their types (see migration 11).
pub const IDENTIFIERS: &[(&str, &[(&str, &str)])] =
    &[("notifications", &[("lease_holder", "varchar(36)")])];

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    r#"ALTER TABLE "notifications" ADD COLUMN "lease_holder" varchar(36){collate} NULL"#,
    r#"ALTER TABLE "notifications" ADD COLUMN "lease_until" bigint NULL"#,
    r#"CREATE INDEX "notifications_by_holder" ON "notifications" ("lease_holder", "id")
         WHERE "lease_holder" IS NOT NULL"#,
];

const DOWN: &[&str] = &[
    r#"DROP INDEX "notifications_by_holder""#,
    r#"ALTER TABLE "notifications" DROP COLUMN "lease_until""#,
    r#"ALTER TABLE "notifications" DROP COLUMN "lease_holder""#,
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let collate = match manager.get_database_backend() {
            DatabaseBackend::Postgres => r#" COLLATE "C""#,
            _ => "",
        };
        for sql in UP {
            let sql = sql.replace("{collate}", collate);
            manager.get_connection().execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for sql in DOWN {
            manager.get_connection().execute_unprepared(sql).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Migrator;
    use sea_orm_migration::MigratorTrait;
    use sea_orm_migration::sea_orm::{ConnectionTrait, DbErr, Statement};

    /// Up adds the columns and the index, down takes them away, up adds them again; a
    /// notification written before keeps its row and is nobody's.
    #[tokio::test]
    async fn leases_come_and_go() -> Result<(), DbErr> {
        let scratch = super::super::Scratch::sqlite("migration-16").await?;
        let db = &scratch.db;
        Migrator::up(db, Some(15)).await?;
        let backend = db.get_database_backend();
        db.execute_unprepared(
            r#"INSERT INTO "notifications" ("id", "tenant_id", "kind", "recipient_user_id",
                 "conversation_id", "actor_id", "subject_ids", "create_time")
               VALUES ('n1', 't', 2, 'bob', 'c1', 'ann', '[]', 1)"#,
        )
        .await?;
        let count = |sql: &'static str| {
            let db = &db;
            async move {
                let row = db
                    .query_one_raw(Statement::from_string(backend, sql))
                    .await?
                    .ok_or_else(|| DbErr::Custom(format!("no row: {sql}")))?;
                row.try_get_by_index::<i64>(0)
            }
        };
        let columns = r#"SELECT count(*) FROM pragma_table_info('notifications')
                         WHERE "name" IN ('lease_holder', 'lease_until')"#;
        let index = r#"SELECT count(*) FROM "sqlite_master"
                       WHERE "name" = 'notifications_by_holder'"#;
        for (step, made) in [("up", true), ("down", false), ("up", true)] {
            if made {
                Migrator::up(db, Some(1)).await?;
            } else {
                Migrator::down(db, Some(1)).await?;
            }
            assert_eq!(
                count(columns).await?,
                2 * i64::from(made),
                "columns after {step}"
            );
            assert_eq!(count(index).await?, i64::from(made), "index after {step}");
        }
        let free = r#"SELECT count(*) FROM "notifications"
                      WHERE "id" = 'n1' AND "lease_holder" IS NULL AND "lease_until" IS NULL"#;
        assert_eq!(count(free).await?, 1);
        scratch.remove().await
    }
}
