//! Index `timeline_by_type` (`conversation_id`, `item_type`, `seq`) serves the pages of one
//! kind of entry, ListMessages' and ListEvents'.
//!
//! Read through the key (`conversation_id`, `seq`) alone, a page of events in a conversation of
//! a million messages walked the key past every message between two events: its cost grew with
//! the depth of the timeline, and PostgreSQL, told by its statistics that events were rare,
//! chose to read the whole table and sort it. Through this index the page is a range again.
//!
//! Each entry written is written into one more index: every message and every event.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str =
    r#"CREATE INDEX "timeline_by_type" ON "timeline" ("conversation_id", "item_type", "seq")"#;

const DOWN: &str = r#"DROP INDEX "timeline_by_type""#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Migrator;
    use sea_orm_migration::MigratorTrait;
    use sea_orm_migration::sea_orm::{ConnectionTrait, DbErr, Statement};

    /// Up makes the index, down drops it, up makes it again; a page of events is then a
    /// range of it.
    #[tokio::test]
    async fn the_type_index_comes_and_goes() -> Result<(), DbErr> {
        let scratch = super::super::Scratch::sqlite("migration-15").await?;
        let db = &scratch.db;
        Migrator::up(db, Some(14)).await?;
        let backend = db.get_database_backend();
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
        let index = r#"SELECT count(*) FROM "sqlite_master" WHERE "name" = 'timeline_by_type'
                         AND "sql" LIKE '%("conversation_id", "item_type", "seq")'"#;
        for (step, made) in [("up", true), ("down", false), ("up", true)] {
            if made {
                Migrator::up(db, Some(1)).await?;
            } else {
                Migrator::down(db, Some(1)).await?;
            }
            assert_eq!(count(index).await?, i64::from(made), "index after {step}");
        }
        let plan = r#"EXPLAIN QUERY PLAN SELECT "seq" FROM "timeline"
                      WHERE "conversation_id" = 'c' AND "item_type" = 2 AND "seq" < 100
                      ORDER BY "seq" DESC LIMIT 10"#;
        let detail: Vec<String> = db
            .query_all_raw(Statement::from_string(backend, plan))
            .await?
            .iter()
            .map(|r| r.try_get_by_index::<String>(3))
            .collect::<Result<_, _>>()?;
        assert!(
            detail
                .iter()
                .any(|d| d
                    .contains("timeline_by_type (conversation_id=? AND item_type=? AND seq<?)")),
            "{detail:?}"
        );
        assert!(
            !detail.iter().any(|d| d.contains("TEMP B-TREE")),
            "{detail:?}"
        );
        scratch.remove().await
    }
}
