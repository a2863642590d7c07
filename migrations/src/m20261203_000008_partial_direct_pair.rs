//! `conversations_direct_pair` holds DIRECT conversations only (`WHERE direct_key IS NOT NULL`).
//!
//! A unique index on `(tenant_id, direct_key)` over every conversation is also an index on
//! `tenant_id`, so every read of a conversation by `tenant_id = $1 AND id = $2` could be
//! planned on it: PostgreSQL did so, on statistics taken while the table was small, and then
//! stepped over every conversation of the tenant to find one (0.15-0.2 ms a call at 1,000
//! conversations, growing with the tenant). Partial, it serves only what implies a direct key
//! (finding a pair's DIRECT conversation), and enforces the same rule: group conversations,
//! whose key is NULL, were never constrained by it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Conversations {
    Table,
    TenantId,
    DirectKey,
}

const DIRECT_PAIR: &str = "conversations_direct_pair";

/// The index, over DIRECT conversations only or over all.
fn direct_pair(partial: bool) -> IndexCreateStatement {
    let mut index = Index::create();
    index
        .name(DIRECT_PAIR)
        .table(Conversations::Table)
        .col(Conversations::TenantId)
        .col(Conversations::DirectKey)
        .unique();
    if partial {
        index.and_where(Expr::col(Conversations::DirectKey).is_not_null());
    }
    index.to_owned()
}

/// Drops the index and makes it again, in one call: on a pool of several SQLite connections
/// (the `migrate` command's), the two statements sent apart could run on two connections, and
/// the second not see the first's drop.
async fn replace(manager: &SchemaManager<'_>, partial: bool) -> Result<(), DbErr> {
    let backend = manager.get_database_backend();
    let drop = Index::drop()
        .name(DIRECT_PAIR)
        .table(Conversations::Table)
        .to_owned();
    let sql = format!(
        "{}; {}",
        backend.build(&drop).sql,
        backend.build(&direct_pair(partial)).sql
    );
    manager.get_connection().execute_unprepared(&sql).await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        replace(manager, true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        replace(manager, false).await
    }
}
