//! Safe retries (AIP-155): the first response to a `request_id` is recorded in the same
//! transaction as the change, and a repeat from the same principal within 24 hours gets it back.

use super::WriteTx;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    prelude::Expr,
    sea_query::{ExprTrait, OnConflict},
};

use super::entities::request_records as rr;
use crate::domain::model::now_micros;
use crate::error::Error;

/// Identifies one logical call.
#[derive(Clone, Debug)]
pub struct RequestKey {
    pub tenant_id: String,
    pub principal_id: String,
    pub request_id: String,
    pub method: &'static str,
    /// A hash of the request body, to tell a retry from a reuse.
    pub fingerprint: String,
    /// How long the id is remembered ([`crate::Limits::request_id_retention`], 24 h).
    pub retention_micros: i64,
}

/// The recorded response of an earlier call with this key, if any (within the retention).
/// The same id with another method or body is `REQUEST_ID_REUSED`.
pub async fn recorded<C: ConnectionTrait>(
    db: &C,
    key: &RequestKey,
) -> Result<Option<Vec<u8>>, Error> {
    let Some(row) = rr::Entity::find_by_id((
        key.tenant_id.clone(),
        key.principal_id.clone(),
        key.request_id.clone(),
    ))
    .one(db)
    .await?
    else {
        return Ok(None);
    };
    if row.create_time < now_micros() - key.retention_micros {
        return Ok(None);
    }
    if row.method != key.method || row.fingerprint != key.fingerprint {
        return Err(Error::RequestIdReused(key.request_id.clone()));
    }
    Ok(Some(row.response))
}

/// Records the response in one statement, replacing an expired record of the same key.
/// Returns `false`, writing nothing, when a live record of the key exists: a concurrent call
/// with the same request id committed first, and the caller must roll back and answer with
/// that call's reply.
///
/// An insert whose conflict updates only an expired row: on PostgreSQL, an insert racing an
/// uncommitted one of the same key waits for it, then finds its row live and updates nothing;
/// on SQLite, write transactions run one at a time.
pub async fn record(
    tx: &WriteTx,
    key: &RequestKey,
    response: Vec<u8>,
) -> Result<bool, sea_orm::DbErr> {
    let now = now_micros();
    let written = rr::Entity::insert(rr::ActiveModel {
        tenant_id: Set(key.tenant_id.clone()),
        principal_id: Set(key.principal_id.clone()),
        request_id: Set(key.request_id.clone()),
        method: Set(key.method.to_owned()),
        fingerprint: Set(key.fingerprint.clone()),
        response: Set(response),
        create_time: Set(now),
    })
    .on_conflict(
        OnConflict::columns([
            rr::Column::TenantId,
            rr::Column::PrincipalId,
            rr::Column::RequestId,
        ])
        .update_columns([
            rr::Column::Method,
            rr::Column::Fingerprint,
            rr::Column::Response,
            rr::Column::CreateTime,
        ])
        .action_and_where(
            Expr::col((rr::Entity, rr::Column::CreateTime)).lt(now - key.retention_micros),
        )
        .to_owned(),
    )
    .exec_without_returning(tx)
    .await?;
    Ok(written > 0)
}

/// Forgets every request id recorded before `cutoff` (the housekeeping sweep); returns how
/// many. One statement, on the `request_records_by_age` index.
pub async fn prune<C: ConnectionTrait>(db: &C, cutoff: i64) -> Result<u64, Error> {
    Ok(rr::Entity::delete_many()
        .filter(rr::Column::CreateTime.lt(cutoff))
        .exec(db)
        .await?
        .rows_affected)
}
