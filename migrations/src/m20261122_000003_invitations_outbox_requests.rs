//! Email invitations, the notification outbox, and the records that make retried
//! mutations (same `request_id`) safe.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Invitations {
    Table,
    Id,
    TenantId,
    ConversationId,
    Email,
    InvitedBy,
    State,
    TokenHash,
    AcceptedBy,
    CreateTime,
    ExpireTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Id,
    TenantId,
    Kind,
    RecipientUserId,
    RecipientEmail,
    ConversationId,
    ActorId,
    SubjectIds,
    InvitationToken,
    CreateTime,
    AckTime,
}

#[derive(DeriveIden)]
enum RequestRecords {
    Table,
    TenantId,
    PrincipalId,
    RequestId,
    Method,
    Fingerprint,
    Response,
    CreateTime,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Invitations::Table)
                    .col(string_len(Invitations::Id, 36).primary_key())
                    .col(string_len(Invitations::TenantId, 128))
                    .col(string_len(Invitations::ConversationId, 36))
                    .col(string_len(Invitations::Email, 320))
                    .col(string_len(Invitations::InvitedBy, 128))
                    .col(integer(Invitations::State))
                    .col(string_len(Invitations::TokenHash, 64))
                    .col(string_len_null(Invitations::AcceptedBy, 128))
                    .col(big_integer(Invitations::CreateTime))
                    .col(big_integer(Invitations::ExpireTime))
                    .col(big_integer(Invitations::UpdateTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("invitations_token")
                    .table(Invitations::Table)
                    .col(Invitations::TokenHash)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("invitations_by_conversation")
                    .table(Invitations::Table)
                    .col(Invitations::ConversationId)
                    .col(Invitations::Email)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Notifications::Table)
                    .col(string_len(Notifications::Id, 36).primary_key())
                    .col(string_len(Notifications::TenantId, 128))
                    .col(integer(Notifications::Kind))
                    .col(string_len_null(Notifications::RecipientUserId, 128))
                    .col(string_len_null(Notifications::RecipientEmail, 320))
                    .col(string_len(Notifications::ConversationId, 36))
                    .col(string_len(Notifications::ActorId, 128))
                    .col(text(Notifications::SubjectIds))
                    .col(string_len_null(Notifications::InvitationToken, 128))
                    .col(big_integer(Notifications::CreateTime))
                    .col(big_integer_null(Notifications::AckTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("notifications_by_tenant")
                    .table(Notifications::Table)
                    .col(Notifications::TenantId)
                    .col(Notifications::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RequestRecords::Table)
                    .col(string_len(RequestRecords::TenantId, 128))
                    .col(string_len(RequestRecords::PrincipalId, 128))
                    .col(string_len(RequestRecords::RequestId, 128))
                    .col(string_len(RequestRecords::Method, 64))
                    .col(string_len(RequestRecords::Fingerprint, 64))
                    .col(blob(RequestRecords::Response))
                    .col(big_integer(RequestRecords::CreateTime))
                    .primary_key(
                        Index::create()
                            .col(RequestRecords::TenantId)
                            .col(RequestRecords::PrincipalId)
                            .col(RequestRecords::RequestId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            RequestRecords::Table.into_iden(),
            Notifications::Table.into_iden(),
            Invitations::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
