//! On SQLite, index `users_person` holds what AddParticipants' rules judge a person by
//! (`tenant_id`, `id`, `kind`, `status`), so that the call's read of up to 1,000 people is
//! answered from one index.
//!
//! `users` is a rowid table: its key `(tenant_id, id)` is an index beside the rows, which are
//! stored in the order the users were made. A person read through the key was looked up twice,
//! in the key and then among the rows, and a thousand people read by id touched rows all over
//! the table. Measured on a copy of a benchmark's database (60,000 users), the read of 1,000
//! people and their seats: 2.5-2.7 ms through the key, 0.9 ms from this index.
//!
//! Each user written is written into one more index; a directory sync does that once per
//! user, AddParticipants reads it a thousand times a call. PostgreSQL reads its rows from the
//! heap whatever the index (an index-only scan needs the visibility map to say the heap need
//! not be read, which a table written to steadily rarely gives): nothing changes there.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"CREATE INDEX "users_person" ON "users" ("tenant_id", "id", "kind", "status")"#;

const DOWN: &str = r#"DROP INDEX "users_person""#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::on_engine(manager, DatabaseBackend::Sqlite, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::on_engine(manager, DatabaseBackend::Sqlite, DOWN).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::Migrator;
    use sea_orm_migration::MigratorTrait;
    use sea_orm_migration::sea_orm::{ConnectionTrait, DbErr, Statement};

    /// Up makes the index over the columns the people read takes, for users already in the
    /// directory too; down drops it; up makes it again.
    #[tokio::test]
    async fn the_person_index_comes_and_goes() -> Result<(), DbErr> {
        let scratch = super::super::Scratch::sqlite("migration-13").await?;
        let db = &scratch.db;
        Migrator::up(db, Some(12)).await?;
        db.execute_unprepared(
            r#"INSERT INTO "users" ("tenant_id", "id", "display_name", "name_lower", "email",
                 "email_lower", "kind", "status", "create_time", "update_time")
               VALUES ('t', 'bob', 'Bob', 'bob', 'b@x.example', 'b@x.example', 2, 1, 1, 1)"#,
        )
        .await?;
        let index = r#"SELECT count(*) FROM "sqlite_master"
                       WHERE "name" = 'users_person'
                         AND "sql" LIKE '%("tenant_id", "id", "kind", "status")'"#;
        // The people read, answered from the index alone: its plan names a covering index.
        let plan = r#"EXPLAIN QUERY PLAN SELECT "id", "kind", "status"
                      FROM "users" INDEXED BY "users_person"
                      WHERE "tenant_id" = 't' AND "id" = 'bob'"#;
        let count = |sql: &'static str| {
            let db = &db;
            async move {
                let row = db
                    .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
                    .await?
                    .ok_or_else(|| DbErr::Custom(format!("no row: {sql}")))?;
                row.try_get_by_index::<i64>(0)
            }
        };
        for (step, made) in [("up", true), ("down", false), ("up", true)] {
            if made {
                Migrator::up(db, Some(1)).await?;
            } else {
                Migrator::down(db, Some(1)).await?;
            }
            assert_eq!(count(index).await?, i64::from(made), "index after {step}");
        }
        let detail: Vec<String> = db
            .query_all_raw(Statement::from_string(db.get_database_backend(), plan))
            .await?
            .iter()
            .map(|r| r.try_get_by_index::<String>(3))
            .collect::<Result<_, _>>()?;
        assert!(
            detail
                .iter()
                .any(|d| d.contains("USING COVERING INDEX users_person")),
            "{detail:?}"
        );
        let bob = r#"SELECT count(*) FROM "users" INDEXED BY "users_person"
                     WHERE "tenant_id" = 't' AND "id" = 'bob' AND "kind" = 2"#;
        assert_eq!(
            count(bob).await?,
            1,
            "the user made before the index is in it"
        );
        scratch.remove().await
    }
}
