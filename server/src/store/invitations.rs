//! Email invitations (rules 3, 4, 8, 16, 17, 23). The link token is never stored: it is derived
//! from the invitation secret whenever a notification carries it, and the table keeps only its
//! SHA-256, to find the invitation a presented token opens.

use super::WriteTx;
use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, prelude::Expr, sea_query::CaseStatement,
};
use sha2::{Digest, Sha256};

use super::entities::invitations as inv;
use super::writes::Writes;
use crate::domain::model::{Invitation, InvitationState, Micros};
use crate::error::Error;

/// Derives invitation link tokens from the key file's invitation secret (rule 23).
///
/// A token is `base64url(HMAC-SHA256(secret, "parley invitation v1/<tenant>/<invitation id>"))`:
/// every replica sharing the key file derives the same token for an invitation, for as long as
/// the invitation exists, so a resend carries the link already sent, and the database holds
/// nothing that opens an invitation.
#[derive(Clone)]
pub struct LinkKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(..)")
    }
}

impl LinkKey {
    /// A key over the invitation secret ([`crate::auth::KeyFile::invitation_secret`]).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
        }
    }

    /// The link token of an invitation of `tenant_id`.
    pub fn token(&self, tenant_id: &str, invitation_id: &str) -> Result<String, Error> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .map_err(|e| Error::Internal(format!("cannot key HMAC-SHA256: {e}")))?;
        // Invitation ids are UUIDs: the last '/' ends the tenant, whatever the tenant holds.
        mac.update(b"parley invitation v1/");
        mac.update(tenant_id.as_bytes());
        mac.update(b"/");
        mac.update(invitation_id.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// The stored hash of an invitation's link token.
    pub fn token_hash(&self, tenant_id: &str, invitation_id: &str) -> Result<String, Error> {
        Ok(token_hash(&self.token(tenant_id, invitation_id)?))
    }
}

/// What the invitations table keeps of a token: its SHA-256, hex.
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
pub fn insert_many(w: &mut Writes, tenant_id: &str, list: &[(Invitation, String)]) {
    for batch in list.chunks(super::ROWS_PER_INSERT) {
        insert_batch(w, tenant_id, batch);
    }
}

fn insert_batch(w: &mut Writes, tenant_id: &str, list: &[(Invitation, String)]) {
    let rows = list.iter().map(|(i, hash)| inv::ActiveModel {
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
    });
    w.insert_models(rows, "");
}

/// Gives invitations made before links were derived (migration 000006: their hash is of a
/// random token nobody can derive again) the hash of their derived token, so that a resend
/// carries a link that opens them. `hashes` pairs invitation ids with their derived hashes; rows
/// that already hold theirs are left untouched, so for every invitation made since this is one
/// statement that changes nothing.
pub fn adopt_derived_links(w: &mut Writes, hashes: &[(String, String)]) {
    if hashes.is_empty() {
        return;
    }
    let mut case = CaseStatement::new();
    for (id, hash) in hashes {
        case = case.case(inv::Column::Id.eq(id.clone()), Expr::value(hash.clone()));
    }
    let update = inv::Entity::update_many()
        .col_expr(inv::Column::TokenHash, case.into())
        .filter(inv::Column::Id.is_in(hashes.iter().map(|(id, _)| id.clone())))
        .filter(inv::Column::TokenHash.is_not_in(hashes.iter().map(|(_, h)| h.clone())));
    w.update(update.into_query());
}

/// The invitation a token opens, in the tenant, read without a lock: the caller learns its
/// conversation, locks that first (the one lock order of every mutation) and then re-reads the
/// invitation with [`lock_by_id`].
pub async fn find_by_token<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    token: &str,
) -> Result<Invitation, Error> {
    let row = inv::Entity::find()
        .filter(inv::Column::TokenHash.eq(token_hash(token)))
        .filter(inv::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(Error::InvitationNotFound)?;
    from_row(row)
}

/// One invitation of the tenant by id, read without a lock (see [`find_by_token`]).
pub async fn find_by_id<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    id: &str,
) -> Result<Invitation, Error> {
    let row = inv::Entity::find_by_id(id.to_owned())
        .filter(inv::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(Error::InvitationNotFound)?;
    from_row(row)
}

/// One invitation of the tenant by id, locked for the transaction (after its conversation).
pub async fn lock_by_id(tx: &WriteTx, tenant_id: &str, id: &str) -> Result<Invitation, Error> {
    let row = inv::Entity::find_by_id(id.to_owned())
        .filter(inv::Column::TenantId.eq(tenant_id))
        .lock_exclusive()
        .one(tx)
        .await?
        .ok_or(Error::InvitationNotFound)?;
    from_row(row)
}

/// Moves an invitation to a final state.
pub fn set_state(w: &mut Writes, invitation: &Invitation, now: Micros) {
    let update = inv::Entity::update_many()
        .col_expr(inv::Column::State, Expr::value(invitation.state as i32))
        .col_expr(
            inv::Column::AcceptedBy,
            Expr::value(invitation.accepted_by.clone()),
        )
        .col_expr(inv::Column::UpdateTime, Expr::value(now))
        .filter(inv::Column::Id.eq(invitation.id.clone()));
    w.update(update.into_query());
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
