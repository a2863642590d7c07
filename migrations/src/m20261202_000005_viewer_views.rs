//! What external and removed viewers see of a conversation (rules 15 and 18).
//!
//! - `conversations.shared_version` / `shared_update_time`: the version and update time as an
//!   external viewer sees them, which internal-only roster changes do not move;
//! - `conversations.external_view_count`: the active participants an external viewer is shown
//!   (external participants and the owner);
//! - `participants.removed_view`: the conversation as the participant saw it just after their
//!   latest removal (JSON), which is all a removed participant reads of it from then on.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Conversations {
    Table,
    SharedVersion,
    SharedUpdateTime,
    ExternalViewCount,
}

#[derive(DeriveIden)]
enum Participants {
    Table,
    RemovedView,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in [
            big_integer(Conversations::SharedVersion)
                .default(1)
                .to_owned(),
            big_integer(Conversations::SharedUpdateTime)
                .default(0)
                .to_owned(),
            integer(Conversations::ExternalViewCount)
                .default(0)
                .to_owned(),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(Conversations::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Participants::Table)
                    .add_column(text_null(Participants::RemovedView))
                    .to_owned(),
            )
            .await?;
        // Existing conversations: the shared view starts where the full one is; participant
        // state 1 is ACTIVE, kind 2 EXTERNAL and role 1 OWNER (parley.v1.Participant).
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE conversations SET shared_version = version, \
                 shared_update_time = update_time, \
                 external_view_count = (SELECT COUNT(*) FROM participants p \
                   WHERE p.conversation_id = conversations.id AND p.state = 1 \
                   AND (p.kind = 2 OR p.role = 1))",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Participants::Table)
                    .drop_column(Participants::RemovedView)
                    .to_owned(),
            )
            .await?;
        for column in [
            Conversations::SharedVersion,
            Conversations::SharedUpdateTime,
            Conversations::ExternalViewCount,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Conversations::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
