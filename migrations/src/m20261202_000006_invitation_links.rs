//! Invitation links are derived, never stored (SPEC rule 23): an INVITATION notification
//! records the invitation it carries the link of, and the column that held the link token in
//! plaintext until acknowledged is dropped, so that no value in the database opens an invitation.
//!
//! Notifications written before this migration keep no invitation id: their token is gone with
//! the column (the invitation's stored hash is of a random token nobody can derive again). A
//! resend of such an invitation gives it the hash of its derived token.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Notifications {
    Table,
    InvitationId,
    InvitationToken,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One change per statement: SQLite's ALTER TABLE takes one (DROP COLUMN needs 3.35+).
        manager
            .alter_table(
                Table::alter()
                    .table(Notifications::Table)
                    .add_column(string_len_null(Notifications::InvitationId, 36))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Notifications::Table)
                    .drop_column(Notifications::InvitationToken)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The tokens cannot come back (they were never stored here): the column returns empty.
        manager
            .alter_table(
                Table::alter()
                    .table(Notifications::Table)
                    .add_column(string_len_null(Notifications::InvitationToken, 128))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Notifications::Table)
                    .drop_column(Notifications::InvitationId)
                    .to_owned(),
            )
            .await
    }
}
