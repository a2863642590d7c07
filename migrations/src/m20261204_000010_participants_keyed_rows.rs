//! On SQLite, `participants` is stored in its key's order (`WITHOUT ROWID`): the table and its
//! primary key `(conversation_id, user_id)` one tree instead of two.
//!
//! A rowid table keeps its rows in one tree and its primary key in another, so each row added
//! was inserted into three trees (the rows, the key, `participants_by_user`) and each row of a
//! ListParticipants page, read in the key's order, was looked up a second time in the rows' tree.
//! Keyed by its primary key, a row is inserted into two trees and a page is one range of one.
//! A participant's row is small (ids and numbers; `removed_view`, set once removed, a short JSON
//! object), which is what a `WITHOUT ROWID` table asks for.
//!
//! PostgreSQL's tables are heaps whatever their key: nothing changes there.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The table as migrations 2 and 5 left it (`keyed`: false), and as this one leaves it: the
/// columns in the same order, their types as sea-query wrote them.
fn sqlite_table(name: &str, keyed: bool) -> String {
    let rowid = if keyed { " WITHOUT ROWID" } else { "" };
    format!(
        r#"CREATE TABLE "{name}" ("conversation_id" varchar(36) NOT NULL,
             "user_id" varchar(128) NOT NULL, "tenant_id" varchar(128) NOT NULL,
             "kind" integer NOT NULL, "role" integer NOT NULL, "state" integer NOT NULL,
             "added_by" varchar(128) NOT NULL, "join_time" integer NOT NULL,
             "removed_by" varchar(128) NULL, "remove_time" integer NULL,
             "history_from" integer NOT NULL, "removed_seq" integer NULL,
             "removed_view" text NULL,
             PRIMARY KEY ("conversation_id", "user_id"),
             FOREIGN KEY ("conversation_id") REFERENCES "conversations" ("id")
               ON DELETE CASCADE){rowid}"#
    )
}

const COLUMNS: &str = r#""conversation_id", "user_id", "tenant_id", "kind", "role", "state",
    "added_by", "join_time", "removed_by", "remove_time", "history_from", "removed_seq",
    "removed_view""#;

/// The statements that move the rows to a table keyed as `keyed` says. SQLite changes no
/// table's storage in place: the rows move to a new table, which then takes the old one's
/// name; the old table's index goes with it and is made again. No other table refers to
/// `participants`, and no view or trigger names it.
fn sqlite_statements(keyed: bool) -> String {
    format!(
        r#"{new};
           INSERT INTO "participants_new" ({COLUMNS}) SELECT {COLUMNS} FROM "participants";
           DROP TABLE "participants";
           ALTER TABLE "participants_new" RENAME TO "participants";
           CREATE INDEX "participants_by_user" ON "participants"
             ("tenant_id", "user_id", "state", "conversation_id")"#,
        new = sqlite_table("participants_new", keyed),
    )
}

async fn apply(manager: &SchemaManager<'_>, keyed: bool) -> Result<(), DbErr> {
    super::on_engine(manager, DatabaseBackend::Sqlite, &sqlite_statements(keyed)).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// All of it or none: on SQLite too, where migrations otherwise run outside a transaction.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        apply(manager, true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        apply(manager, false).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::Migrator;
    use sea_orm_migration::MigratorTrait;
    use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};

    async fn one_text(db: &DatabaseConnection, sql: &str) -> Result<String, DbErr> {
        let row = db
            .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
                db.get_database_backend(),
                sql,
            ))
            .await?
            .ok_or_else(|| DbErr::Custom(format!("no row: {sql}")))?;
        row.try_get_by_index(0)
    }

    /// Up keys the rows and keeps them with their index; down gives the rowid table back, the
    /// rows unchanged; up again keys them again.
    #[tokio::test]
    async fn participants_move_between_layouts_whole() -> Result<(), DbErr> {
        let scratch = super::super::Scratch::sqlite("migration-10").await?;
        let db = &scratch.db;
        Migrator::up(db, Some(9)).await?;
        db.execute_unprepared(
            r#"INSERT INTO "conversations" ("id", "tenant_id", "kind", "title", "owner_id",
                 "state", "add_internal", "add_external", "remove_policy", "lock_external",
                 "history", "max_participants", "participant_count", "last_seq", "version",
                 "create_time", "update_time")
               VALUES ('c1', 't', 0, 'x', 'ann', 0, 0, 0, 0, false, 0, 10, 2, 2, 1, 1, 1);
               INSERT INTO "participants" ("conversation_id", "user_id", "tenant_id", "kind",
                 "role", "state", "added_by", "join_time", "removed_by", "remove_time",
                 "history_from", "removed_seq", "removed_view")
               VALUES ('c1', 'bob', 't', 1, 0, 0, 'ann', 5, NULL, NULL, 0, NULL, NULL),
                      ('c1', 'ann', 't', 1, 2, 1, 'ann', 4, 'ann', 9, 0, 3, '{"v":1}')"#,
        )
        .await?;
        let rows = r#"SELECT group_concat("user_id" || '/' || "role" || '/' || "state" || '/'
                        || coalesce("removed_by", '-') || '/' || coalesce("removed_view", '-'), ',')
                      FROM (SELECT * FROM "participants" ORDER BY "user_id")"#;
        let table = r#"SELECT "sql" FROM "sqlite_master" WHERE "name" = 'participants'"#;
        let index = r#"SELECT "sql" FROM "sqlite_master" WHERE "name" = 'participants_by_user'"#;
        let before = one_text(db, rows).await?;
        assert_eq!(before, r#"ann/2/1/ann/{"v":1},bob/0/0/-/-"#);

        for (step, keyed) in [("up", true), ("down", false), ("up", true)] {
            if keyed {
                Migrator::up(db, Some(1)).await?;
            } else {
                Migrator::down(db, Some(1)).await?;
            }
            assert_eq!(one_text(db, rows).await?, before, "rows after {step}");
            assert_eq!(
                one_text(db, table).await?.contains("WITHOUT ROWID"),
                keyed,
                "layout after {step}"
            );
            assert!(
                one_text(db, index)
                    .await?
                    .contains(r#"("tenant_id", "user_id", "state", "conversation_id")"#),
                "index after {step}"
            );
        }
        // The key still refuses a second row for one user.
        assert!(
            db.execute_unprepared(
                r#"INSERT INTO "participants" ("conversation_id", "user_id", "tenant_id", "kind",
                     "role", "state", "added_by", "join_time", "history_from")
                   VALUES ('c1', 'bob', 't', 1, 0, 0, 'ann', 6, 0)"#
            )
            .await
            .is_err()
        );
        scratch.remove().await
    }
}
