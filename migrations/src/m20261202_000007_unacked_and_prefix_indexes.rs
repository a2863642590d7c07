//! Indexes that keep two reads flat as tables grow:
//!
//! - `notifications_unacked`: the outbox drain (ListNotifications without `include_acked`)
//!   reads a tenant's unacknowledged notifications in id order. On `notifications_by_tenant`
//!   it stepped over every acknowledged row kept for the retention; this partial index holds
//!   the unacknowledged ones only, so a page costs the same beside a million acknowledged rows.
//! - `users_name_prefix`, `users_email_prefix` (PostgreSQL): SearchUsers matches a prefix as
//!   a range of the lower-cased columns compared in the "C" collation (code point order, in
//!   which a range is exactly a prefix), and an index serves a comparison only in its own
//!   collation, whatever the database's default. On SQLite, whose default collation is already
//!   code point order, `users_name` and `users_email` of the first migration serve the range.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Notifications {
    Table,
    TenantId,
    Id,
    AckTime,
}

const UNACKED: &str = "notifications_unacked";
const NAME_PREFIX: &str = "users_name_prefix";
const EMAIL_PREFIX: &str = "users_email_prefix";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(UNACKED)
                    .table(Notifications::Table)
                    .col(Notifications::TenantId)
                    .col(Notifications::Id)
                    .and_where(Expr::col(Notifications::AckTime).is_null())
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            // sea-query's index builder cannot name a column's collation.
            let db = manager.get_connection();
            db.execute_unprepared(&format!(
                r#"CREATE INDEX "{NAME_PREFIX}" ON "users" ("tenant_id", "name_lower" COLLATE "C")"#
            ))
            .await?;
            db.execute_unprepared(&format!(
                r#"CREATE INDEX "{EMAIL_PREFIX}" ON "users" ("tenant_id", "email_lower" COLLATE "C")"#
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            let db = manager.get_connection();
            for name in [NAME_PREFIX, EMAIL_PREFIX] {
                db.execute_unprepared(&format!(r#"DROP INDEX IF EXISTS "{name}""#))
                    .await?;
            }
        }
        manager
            .drop_index(
                Index::drop()
                    .name(UNACKED)
                    .table(Notifications::Table)
                    .to_owned(),
            )
            .await
    }
}
