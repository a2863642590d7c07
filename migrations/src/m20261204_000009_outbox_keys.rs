//! The outbox is keyed by `(tenant_id, id)`, and `notifications_by_ack_time` holds
//! acknowledged rows only.
//!
//! Every notification is written once per person a change owes one to (AddParticipants of
//! 1,000 people writes 1,000), and each of its indexes is one more tree to insert into.
//! Before this migration a notification was inserted into five: the table, the primary key on
//! `id`, `notifications_by_tenant (tenant_id, id)`, `notifications_by_ack_time` and
//! `notifications_unacked`.
//!
//! - Every read of the outbox names its tenant, so the key is `(tenant_id, id)` and
//!   `notifications_by_tenant`, the same columns, goes. On SQLite the table is made again
//!   `WITHOUT ROWID`, its rows stored in the key's order (the key and the table one tree).
//! - `notifications_by_ack_time` serves the housekeeping sweep, which deletes rows
//!   acknowledged before a time: an unacknowledged row (every new one) has no place in it.
//!
//! A notification is inserted into two trees on SQLite and three on PostgreSQL (the heap, the
//! key, `notifications_unacked`) while unacknowledged, one more once acknowledged.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The table as migrations 3 and 6 left it, and as this one leaves it, on SQLite: the columns
/// in the same order, their types as sea-query wrote them.
fn sqlite_table(name: &str, keyed: bool) -> String {
    let key = if keyed {
        r#"PRIMARY KEY ("tenant_id", "id")) WITHOUT ROWID"#
    } else {
        r#"PRIMARY KEY ("id"))"#
    };
    format!(
        r#"CREATE TABLE "{name}" ("id" varchar(36) NOT NULL, "tenant_id" varchar(128) NOT NULL,
             "kind" integer NOT NULL, "recipient_user_id" varchar(128) NULL,
             "recipient_email" varchar(320) NULL, "conversation_id" varchar(36) NOT NULL,
             "actor_id" varchar(128) NOT NULL, "subject_ids" text NOT NULL,
             "create_time" integer NOT NULL, "ack_time" integer NULL,
             "invitation_id" varchar(36) NULL, {key}"#
    )
}

const COLUMNS: &str = r#""id", "tenant_id", "kind", "recipient_user_id", "recipient_email",
    "conversation_id", "actor_id", "subject_ids", "create_time", "ack_time", "invitation_id""#;

/// The statements that take the outbox to the new layout (`up`) or back.
fn statements(backend: DatabaseBackend, up: bool) -> String {
    let ack_where = if up {
        r#" WHERE "ack_time" IS NOT NULL"#
    } else {
        ""
    };
    let by_ack = format!(
        r#"CREATE INDEX "notifications_by_ack_time" ON "notifications" ("ack_time"){ack_where}"#
    );
    let unacked = r#"CREATE INDEX "notifications_unacked" ON "notifications" ("tenant_id", "id") WHERE "ack_time" IS NULL"#;
    let by_tenant =
        r#"CREATE INDEX "notifications_by_tenant" ON "notifications" ("tenant_id", "id")"#;
    match backend {
        DatabaseBackend::Postgres => {
            let (key, tenant) = if up {
                (
                    r#"("tenant_id", "id")"#,
                    r#"DROP INDEX "notifications_by_tenant""#,
                )
            } else {
                (r#"("id")"#, by_tenant)
            };
            format!(
                r#"DROP INDEX "notifications_by_ack_time";
                   {by_ack};
                   ALTER TABLE "notifications" DROP CONSTRAINT "notifications_pkey",
                       ADD CONSTRAINT "notifications_pkey" PRIMARY KEY {key};
                   {tenant}"#
            )
        }
        _ => {
            // SQLite changes no table's key in place: the rows move to a new table, which
            // then takes the old one's name; its indexes go with the old table.
            let tenant = if up { "" } else { by_tenant };
            format!(
                r#"{new};
                   INSERT INTO "notifications_new" ({COLUMNS}) SELECT {COLUMNS} FROM "notifications";
                   DROP TABLE "notifications";
                   ALTER TABLE "notifications_new" RENAME TO "notifications";
                   {by_ack};
                   {unacked};
                   {tenant}"#,
                new = sqlite_table("notifications_new", up),
            )
        }
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// All of it or none: on SQLite too, where migrations otherwise run outside a transaction.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = statements(manager.get_database_backend(), true);
        manager.get_connection().execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = statements(manager.get_database_backend(), false);
        manager.get_connection().execute_unprepared(&sql).await?;
        Ok(())
    }
}
