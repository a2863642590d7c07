//! Indexes for the housekeeping sweep: request records by age, notifications by the time they
//! were acknowledged, so that forgetting old rows never scans a whole table.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RequestRecords {
    Table,
    CreateTime,
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    AckTime,
}

const REQUESTS_BY_AGE: &str = "request_records_by_age";
const NOTIFICATIONS_BY_ACK: &str = "notifications_by_ack_time";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(REQUESTS_BY_AGE)
                    .table(RequestRecords::Table)
                    .col(RequestRecords::CreateTime)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(NOTIFICATIONS_BY_ACK)
                    .table(Notifications::Table)
                    .col(Notifications::AckTime)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table) in [
            (REQUESTS_BY_AGE, RequestRecords::Table.into_iden()),
            (NOTIFICATIONS_BY_ACK, Notifications::Table.into_iden()),
        ] {
            manager
                .drop_index(Index::drop().name(name).table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
