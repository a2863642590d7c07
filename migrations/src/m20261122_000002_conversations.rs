//! Conversations, their participants and their timeline (messages and events share one
//! gapless `seq` per conversation).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Id,
    TenantId,
    Kind,
    Title,
    OwnerId,
    State,
    AddInternal,
    AddExternal,
    RemovePolicy,
    LockExternal,
    History,
    MaxParticipants,
    ParticipantCount,
    LastSeq,
    FirstMessageTime,
    DirectKey,
    Version,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum Participants {
    Table,
    ConversationId,
    UserId,
    TenantId,
    Kind,
    Role,
    State,
    AddedBy,
    JoinTime,
    RemovedBy,
    RemoveTime,
    HistoryFrom,
    RemovedSeq,
}

#[derive(DeriveIden)]
enum Timeline {
    Table,
    ConversationId,
    Seq,
    ItemType,
    MessageId,
    SenderId,
    Body,
    EventType,
    ActorId,
    SubjectIds,
    InternalOnly,
    CreateTime,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Conversations::Table)
                    .col(string_len(Conversations::Id, 36).primary_key())
                    .col(string_len(Conversations::TenantId, 128))
                    .col(integer(Conversations::Kind))
                    .col(string_len(Conversations::Title, 200))
                    .col(string_len(Conversations::OwnerId, 128))
                    .col(integer(Conversations::State))
                    .col(integer(Conversations::AddInternal))
                    .col(integer(Conversations::AddExternal))
                    .col(integer(Conversations::RemovePolicy))
                    .col(boolean(Conversations::LockExternal))
                    .col(integer(Conversations::History))
                    .col(integer(Conversations::MaxParticipants))
                    .col(integer(Conversations::ParticipantCount))
                    .col(big_integer(Conversations::LastSeq))
                    .col(big_integer_null(Conversations::FirstMessageTime))
                    .col(string_len_null(Conversations::DirectKey, 300))
                    .col(big_integer(Conversations::Version))
                    .col(big_integer(Conversations::CreateTime))
                    .col(big_integer(Conversations::UpdateTime))
                    .to_owned(),
            )
            .await?;
        // One DIRECT conversation per pair of people in a tenant.
        manager
            .create_index(
                Index::create()
                    .name("conversations_direct_pair")
                    .table(Conversations::Table)
                    .col(Conversations::TenantId)
                    .col(Conversations::DirectKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Participants::Table)
                    .col(string_len(Participants::ConversationId, 36))
                    .col(string_len(Participants::UserId, 128))
                    .col(string_len(Participants::TenantId, 128))
                    .col(integer(Participants::Kind))
                    .col(integer(Participants::Role))
                    .col(integer(Participants::State))
                    .col(string_len(Participants::AddedBy, 128))
                    .col(big_integer(Participants::JoinTime))
                    .col(string_len_null(Participants::RemovedBy, 128))
                    .col(big_integer_null(Participants::RemoveTime))
                    .col(big_integer(Participants::HistoryFrom))
                    .col(big_integer_null(Participants::RemovedSeq))
                    // Never two rows for one user in one conversation.
                    .primary_key(
                        Index::create()
                            .col(Participants::ConversationId)
                            .col(Participants::UserId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Participants::Table, Participants::ConversationId)
                            .to(Conversations::Table, Conversations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // ListConversations: the conversations a user is in.
        manager
            .create_index(
                Index::create()
                    .name("participants_by_user")
                    .table(Participants::Table)
                    .col(Participants::TenantId)
                    .col(Participants::UserId)
                    .col(Participants::State)
                    .col(Participants::ConversationId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Timeline::Table)
                    .col(string_len(Timeline::ConversationId, 36))
                    .col(big_integer(Timeline::Seq))
                    .col(integer(Timeline::ItemType))
                    .col(string_len_null(Timeline::MessageId, 36))
                    .col(string_len_null(Timeline::SenderId, 128))
                    .col(text_null(Timeline::Body))
                    .col(integer_null(Timeline::EventType))
                    .col(string_len_null(Timeline::ActorId, 128))
                    .col(text_null(Timeline::SubjectIds))
                    .col(boolean(Timeline::InternalOnly))
                    .col(big_integer(Timeline::CreateTime))
                    .primary_key(
                        Index::create()
                            .col(Timeline::ConversationId)
                            .col(Timeline::Seq),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Timeline::Table, Timeline::ConversationId)
                            .to(Conversations::Table, Conversations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Timeline::Table.into_iden(),
            Participants::Table.into_iden(),
            Conversations::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
