//! Users and groups of each tenant's directory.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    TenantId,
    Id,
    DisplayName,
    NameLower,
    Email,
    EmailLower,
    Kind,
    Status,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum Groups {
    Table,
    TenantId,
    Id,
    Name,
    UpdateTime,
}

#[derive(DeriveIden)]
enum GroupMembers {
    Table,
    TenantId,
    GroupId,
    UserId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(string_len(Users::TenantId, 128))
                    .col(string_len(Users::Id, 128))
                    .col(string_len(Users::DisplayName, 200))
                    .col(string_len(Users::NameLower, 200))
                    .col(string_len(Users::Email, 320))
                    .col(string_len(Users::EmailLower, 320))
                    .col(integer(Users::Kind))
                    .col(integer(Users::Status))
                    .col(big_integer(Users::CreateTime))
                    .col(big_integer(Users::UpdateTime))
                    .primary_key(Index::create().col(Users::TenantId).col(Users::Id))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("users_email")
                    .table(Users::Table)
                    .col(Users::TenantId)
                    .col(Users::EmailLower)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("users_name")
                    .table(Users::Table)
                    .col(Users::TenantId)
                    .col(Users::NameLower)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Groups::Table)
                    .col(string_len(Groups::TenantId, 128))
                    .col(string_len(Groups::Id, 128))
                    .col(string_len(Groups::Name, 200))
                    .col(big_integer(Groups::UpdateTime))
                    .primary_key(Index::create().col(Groups::TenantId).col(Groups::Id))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(GroupMembers::Table)
                    .col(string_len(GroupMembers::TenantId, 128))
                    .col(string_len(GroupMembers::GroupId, 128))
                    .col(string_len(GroupMembers::UserId, 128))
                    .primary_key(
                        Index::create()
                            .col(GroupMembers::TenantId)
                            .col(GroupMembers::GroupId)
                            .col(GroupMembers::UserId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            GroupMembers::Table.into_iden(),
            Groups::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
