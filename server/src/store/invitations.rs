//! Email invitations (rules 3, 4, 8, 16, 17). The secret token travels only in the INVITATION
//! notification; the table keeps its SHA-256.

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, prelude::Expr, sea_query::CaseStatement,
};
use sha2::{Digest, Sha256};

use super::entities::invitations as inv;
use crate::domain::model::{Invitation, InvitationState, Micros};
use crate::error::Error;

/// A new random invitation token (256 bits) and the hash that is stored.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn from_row(m: inv::Model) -> Result<Invitation, Error> {
    Ok(Invitation {
        state: InvitationState::try_from(m.state)
            .map_err(|_| Error::Internal(format!("stored invitation state {}", m.state)))?,
        id: m.id,
        conversation_id: m.conversation_id,
        email: m.email,
        invited_by: m.invited_by,
        accepted_by: m.accepted_by,
        create_time: m.create_time,
        expire_time: m.expire_time,
    })
}

/// The pending, unexpired invitations of a conversation to any of `emails`, by email.
pub async fn pending_for<C: ConnectionTrait>(
    db: &C,
    conversation_id: &str,
    emails: &[String],
    now: Micros,
) -> Result<HashMap<String, Invitation>, Error> {
    if emails.is_empty() {
        return Ok(HashMap::new());
    }
    inv::Entity::find()
        .filter(inv::Column::ConversationId.eq(conversation_id))
        .filter(inv::Column::Email.is_in(emails.iter().cloned()))
        .filter(inv::Column::State.eq(InvitationState::Pending as i32))
        .filter(inv::Column::ExpireTime.gt(now))
        .all(db)
        .await?
        .into_iter()
        .map(|m| from_row(m).map(|i| (i.email.clone(), i)))
        .collect()
}

/// How many pending, unexpired invitations a conversation has (they count against its cap).
pub async fn count_pending<C: ConnectionTrait>(
    db: &C,
    conversation_id: &str,
    now: Micros,
) -> Result<i64, Error> {
    Ok(inv::Entity::find()
        .filter(inv::Column::ConversationId.eq(conversation_id))
        .filter(inv::Column::State.eq(InvitationState::Pending as i32))
        .filter(inv::Column::ExpireTime.gt(now))
        .count(db)
        .await? as i64)
}

/// Inserts invitations with their token hashes, a statement per
/// [`ROWS_PER_INSERT`](super::ROWS_PER_INSERT) rows (one call invites at most 1,000 emails).
pub async fn insert_many(
    tx: &DatabaseTransaction,
    tenant_id: &str,
    list: &[(Invitation, String)],
) -> Result<(), Error> {
    for batch in list.chunks(super::ROWS_PER_INSERT) {
        insert_batch(tx, tenant_id, batch).await?;
    }
    Ok(())
}

async fn insert_batch(
    tx: &DatabaseTransaction,
    tenant_id: &str,
    list: &[(Invitation, String)],
) -> Result<(), Error> {
    inv::Entity::insert_many(list.iter().map(|(i, hash)| inv::ActiveModel {
        id: Set(i.id.clone()),
        tenant_id: Set(tenant_id.to_owned()),
        conversation_id: Set(i.conversation_id.clone()),
        email: Set(i.email.clone()),
        invited_by: Set(i.invited_by.clone()),
        state: Set(i.state as i32),
        token_hash: Set(hash.clone()),
        accepted_by: Set(None),
        create_time: Set(i.create_time),
        expire_time: Set(i.expire_time),
        update_time: Set(i.create_time),
    }))
    .exec_without_returning(tx)
    .await?;
    Ok(())
}

/// Replaces the token hashes of invitations being sent again, in one statement.
pub async fn rotate_tokens(
    tx: &DatabaseTransaction,
    hashes: &[(String, String)],
    now: Micros,
) -> Result<(), Error> {
    if hashes.is_empty() {
        return Ok(());
    }
    let mut case = CaseStatement::new();
    for (id, hash) in hashes {
        case = case.case(inv::Column::Id.eq(id.clone()), Expr::value(hash.clone()));
    }
    inv::Entity::update_many()
        .col_expr(inv::Column::TokenHash, case.into())
        .col_expr(inv::Column::UpdateTime, Expr::value(now))
        .filter(inv::Column::Id.is_in(hashes.iter().map(|(id, _)| id.clone())))
        .exec(tx)
        .await?;
    Ok(())
}

/// The invitation a token opens, in the tenant, locked for the transaction.
pub async fn by_token(
    tx: &DatabaseTransaction,
    tenant_id: &str,
    token: &str,
) -> Result<Invitation, Error> {
    let row = inv::Entity::find()
        .filter(inv::Column::TokenHash.eq(token_hash(token)))
        .filter(inv::Column::TenantId.eq(tenant_id))
        .lock_exclusive()
        .one(tx)
        .await?
        .ok_or(Error::InvitationNotFound)?;
    from_row(row)
}

/// One invitation of the tenant by id, locked for the transaction.
pub async fn by_id(
    tx: &DatabaseTransaction,
    tenant_id: &str,
    id: &str,
) -> Result<Invitation, Error> {
    let row = inv::Entity::find_by_id(id.to_owned())
        .filter(inv::Column::TenantId.eq(tenant_id))
        .lock_exclusive()
        .one(tx)
        .await?
        .ok_or(Error::InvitationNotFound)?;
    from_row(row)
}

/// Moves an invitation to a final state.
pub async fn set_state(
    tx: &DatabaseTransaction,
    invitation: &Invitation,
    now: Micros,
) -> Result<(), Error> {
    inv::Entity::update_many()
        .col_expr(inv::Column::State, Expr::value(invitation.state as i32))
        .col_expr(
            inv::Column::AcceptedBy,
            Expr::value(invitation.accepted_by.clone()),
        )
        .col_expr(inv::Column::UpdateTime, Expr::value(now))
        .filter(inv::Column::Id.eq(invitation.id.clone()))
        .exec(tx)
        .await?;
    Ok(())
}

/// A conversation's invitations by id (creation order), after `after`.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    conversation_id: &str,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<Invitation>, Error> {
    let mut q = inv::Entity::find().filter(inv::Column::ConversationId.eq(conversation_id));
    if let Some(after) = after {
        q = q.filter(inv::Column::Id.gt(after));
    }
    q.order_by_asc(inv::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(from_row)
        .collect()
}
