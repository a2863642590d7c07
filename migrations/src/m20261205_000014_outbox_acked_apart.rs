//! Acknowledged notifications move to a table of their own, `notifications_acked`, and
//! `notifications` keeps the unacknowledged ones only.
//!
//! The outbox drain reads a tenant's unacknowledged notifications in id order. Kept beside
//! the acknowledged ones, they needed an index of their own (`notifications_unacked`, partial),
//! into which every notification was inserted once more when written, and a change may owe a
//! thousand (AddParticipants of 1,000 people). Kept apart, the unacknowledged rows are read in
//! the order of their table's own key, and a notification is written into one tree on SQLite
//! (the table is `WITHOUT ROWID`) and two on PostgreSQL (the heap, the key): AddParticipants(1000)
//! on SQLite, 120,000 users, 3 alternations, p50 5.7-6.2 -> 5.2-5.6 ms (153-170k -> 171-186k
//! rows/s). Acknowledging one moves its row (deleted here, inserted there, in one
//! statement or transaction): the work the index saved the write moves to the acknowledgement,
//! which the notification service makes after the change, off its path.
//!
//! `notifications_acked` has the same columns, `ack_time` set; `notifications_by_ack_time`,
//! which serves the housekeeping sweep of old acknowledged rows, is made on it as
//! `notifications_acked_by_time`. `notifications.ack_time` stays, always NULL, so that both
//! tables read into one row type.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const COLUMNS: &str = r#""id", "tenant_id", "kind", "recipient_user_id", "recipient_email",
    "conversation_id", "actor_id", "subject_ids", "create_time", "ack_time", "invitation_id""#;

/// The new table on SQLite: `notifications`' columns as migration 9 left them, keyed alike.
const SQLITE_ACKED: &str = r#"CREATE TABLE "notifications_acked" ("id" varchar(36) NOT NULL,
    "tenant_id" varchar(128) NOT NULL, "kind" integer NOT NULL,
    "recipient_user_id" varchar(128) NULL, "recipient_email" varchar(320) NULL,
    "conversation_id" varchar(36) NOT NULL, "actor_id" varchar(128) NOT NULL,
    "subject_ids" text NOT NULL, "create_time" integer NOT NULL, "ack_time" integer NOT NULL,
    "invitation_id" varchar(36) NULL, PRIMARY KEY ("tenant_id", "id")) WITHOUT ROWID"#;

/// The new table on PostgreSQL: `notifications`' columns with their types and collations.
const POSTGRES_ACKED: &str = r#"CREATE TABLE "notifications_acked" (LIKE "notifications");
    ALTER TABLE "notifications_acked" ALTER COLUMN "ack_time" SET NOT NULL,
        ADD CONSTRAINT "notifications_acked_pkey" PRIMARY KEY ("tenant_id", "id")"#;

fn up_sql(backend: DatabaseBackend) -> String {
    let table = match backend {
        DatabaseBackend::Postgres => POSTGRES_ACKED,
        _ => SQLITE_ACKED,
    };
    format!(
        r#"{table};
           INSERT INTO "notifications_acked" ({COLUMNS})
             SELECT {COLUMNS} FROM "notifications" WHERE "ack_time" IS NOT NULL;
           DELETE FROM "notifications" WHERE "ack_time" IS NOT NULL;
           DROP INDEX "notifications_unacked";
           DROP INDEX "notifications_by_ack_time";
           CREATE INDEX "notifications_acked_by_time" ON "notifications_acked" ("ack_time")"#
    )
}

const DOWN: &str = r#"INSERT INTO "notifications" (COLUMNS) SELECT COLUMNS FROM "notifications_acked";
    DROP TABLE "notifications_acked";
    CREATE INDEX "notifications_unacked" ON "notifications" ("tenant_id", "id")
      WHERE "ack_time" IS NULL;
    CREATE INDEX "notifications_by_ack_time" ON "notifications" ("ack_time")
      WHERE "ack_time" IS NOT NULL"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// All of it or none: on SQLite too, where migrations otherwise run outside a transaction.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = up_sql(manager.get_database_backend());
        manager.get_connection().execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = DOWN.replace("COLUMNS", COLUMNS);
        manager.get_connection().execute_unprepared(&sql).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Migrator;
    use sea_orm_migration::MigratorTrait;
    use sea_orm_migration::sea_orm::{ConnectionTrait, DbErr, Statement};

    /// Up moves the acknowledged rows to their table and keeps the others where they were;
    /// down brings them back; up again moves them again. Each time every row is somewhere,
    /// once, as it was.
    #[tokio::test]
    async fn acknowledged_rows_move_and_come_back() -> Result<(), DbErr> {
        let scratch = super::super::Scratch::sqlite("migration-14").await?;
        let db = &scratch.db;
        Migrator::up(db, Some(13)).await?;
        db.execute_unprepared(
            r#"INSERT INTO "notifications" ("id", "tenant_id", "kind", "recipient_user_id",
                 "recipient_email", "conversation_id", "actor_id", "subject_ids", "create_time",
                 "ack_time", "invitation_id")
               VALUES ('n1', 't', 1, 'bob', NULL, 'c', 'ann', '["bob"]', 1, NULL, NULL),
                      ('n2', 't', 2, NULL, 'e@x.example', 'c', 'ann', '[]', 2, 7, 'i1'),
                      ('n3', 'u', 1, 'eve', NULL, 'c', 'ann', '["eve"]', 3, 8, NULL)"#,
        )
        .await?;
        let text = |sql: String| {
            let db = &db;
            async move {
                let row = db
                    .query_one_raw(Statement::from_string(
                        db.get_database_backend(),
                        sql.clone(),
                    ))
                    .await?
                    .ok_or_else(|| DbErr::Custom(format!("no row: {sql}")))?;
                row.try_get_by_index::<Option<String>>(0)
            }
        };
        let rows_of = |table: &str| {
            format!(
                r#"SELECT group_concat("tenant_id" || '/' || "id" || '/' || "kind" || '/'
                     || coalesce("recipient_user_id", '-') || '/'
                     || coalesce("recipient_email", '-') || '/' || "subject_ids" || '/'
                     || "create_time" || '/' || coalesce("ack_time", '-') || '/'
                     || coalesce("invitation_id", '-'), ',')
                   FROM (SELECT * FROM "{table}" ORDER BY "id")"#
            )
        };
        let all = r#"t/n1/1/bob/-/["bob"]/1/-/-,t/n2/2/-/e@x.example/[]/2/7/i1,u/n3/1/eve/-/["eve"]/3/8/-"#;
        assert_eq!(text(rows_of("notifications")).await?.as_deref(), Some(all));
        for step in ["up", "down", "up"] {
            if step == "up" {
                Migrator::up(db, Some(1)).await?;
                assert_eq!(
                    text(rows_of("notifications")).await?.as_deref(),
                    Some(r#"t/n1/1/bob/-/["bob"]/1/-/-"#),
                    "unacknowledged after {step}"
                );
                assert_eq!(
                    text(rows_of("notifications_acked")).await?.as_deref(),
                    Some(r#"t/n2/2/-/e@x.example/[]/2/7/i1,u/n3/1/eve/-/["eve"]/3/8/-"#),
                    "acknowledged after {step}"
                );
                let index = r#"SELECT group_concat("name") FROM "sqlite_master"
                               WHERE "type" = 'index' AND "tbl_name" LIKE 'notifications%'
                                 AND "sql" IS NOT NULL"#;
                assert_eq!(
                    text(index.into()).await?.as_deref(),
                    Some("notifications_acked_by_time"),
                    "indexes after {step}"
                );
                // An acknowledged row has its time.
                let unset = r#"INSERT INTO "notifications_acked" ("id", "tenant_id", "kind",
                                 "conversation_id", "actor_id", "subject_ids", "create_time")
                               VALUES ('n4', 't', 1, 'c', 'ann', '[]', 4)"#;
                assert!(db.execute_unprepared(unset).await.is_err());
            } else {
                Migrator::down(db, Some(1)).await?;
                assert_eq!(
                    text(rows_of("notifications")).await?.as_deref(),
                    Some(all),
                    "rows after {step}"
                );
            }
        }
        scratch.remove().await
    }
}
