//! The notification outbox: rows written in the same transaction as the change that owes
//! them, drained by a sibling notification service (list, then acknowledge).

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, Statement, prelude::Expr,
};

use super::entities::notifications as n;
use super::writes::Writes;
use crate::domain::model::now_micros;
pub use crate::domain::notify::{Kind, Notification, Recipient};
use crate::error::Error;

impl Notification {
    /// A notification made now, with a fresh id.
    pub fn new(
        kind: Kind,
        recipient: Recipient,
        conversation_id: &str,
        actor_id: &str,
        subject_ids: Vec<String>,
    ) -> Self {
        Self::at(
            super::new_id(),
            now_micros(),
            kind,
            recipient,
            conversation_id,
            actor_id,
            subject_ids,
        )
    }
}

/// Writes notifications inside the caller's transaction, a statement per
/// [`ROWS_PER_INSERT`](super::ROWS_PER_INSERT) rows.
pub fn enqueue(w: &mut Writes, tenant_id: &str, list: &[Notification]) {
    for batch in list.chunks(super::ROWS_PER_INSERT) {
        enqueue_batch(w, tenant_id, batch);
    }
}

fn enqueue_batch(w: &mut Writes, tenant_id: &str, list: &[Notification]) {
    let mut values = Vec::with_capacity(list.len() * NOTIFICATION_COLUMNS);
    for x in list {
        notification_values(tenant_id, x, &mut values);
    }
    w.insert_values::<n::Entity>(values, "");
}

/// How many columns a notification's row has.
const NOTIFICATION_COLUMNS: usize = 11;

/// A new notification's row, as the values of the columns of `notifications` in their order,
/// appended to `out`.
fn notification_values(tenant_id: &str, x: &Notification, out: &mut Vec<sea_orm::Value>) {
    let (user, email) = match &x.recipient {
        Recipient::User(u) => (Some(u.clone()), None),
        Recipient::Email(e) => (None, Some(e.clone())),
    };
    out.extend([
        x.id.clone().into(),
        tenant_id.to_owned().into(),
        (x.kind as i32).into(),
        user.into(),
        email.into(),
        x.conversation_id.clone().into(),
        x.actor_id.clone().into(),
        serde_json::to_string(&x.subject_ids)
            .unwrap_or_else(|_| "[]".into())
            .into(),
        x.invitation_id.clone().into(),
        x.create_time.into(),
        None::<i64>.into(),
    ]);
}

fn from_row(m: n::Model) -> Result<Notification, Error> {
    Ok(Notification {
        kind: Kind::try_from(m.kind)
            .map_err(|_| Error::Internal(format!("stored notification kind {}", m.kind)))?,
        recipient: match (m.recipient_user_id, m.recipient_email) {
            (Some(u), _) => Recipient::User(u),
            (None, Some(e)) => Recipient::Email(e),
            (None, None) => {
                return Err(Error::Internal("a notification without a recipient".into()));
            }
        },
        subject_ids: serde_json::from_str(&m.subject_ids)
            .map_err(|e| Error::Internal(format!("stored subject ids: {e}")))?,
        id: m.id,
        conversation_id: m.conversation_id,
        actor_id: m.actor_id,
        invitation_id: m.invitation_id,
        create_time: m.create_time,
        ack_time: m.ack_time,
    })
}

/// The tenant's notifications, oldest first, after `after`.
pub async fn list(
    db: &super::Conn,
    tenant_id: &str,
    include_acked: bool,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<Notification>, Error> {
    let statement = list_query(
        db.get_database_backend(),
        tenant_id,
        include_acked,
        after,
        limit,
    );
    n::Entity::find()
        .from_raw_sql(statement)
        .all(db)
        .await?
        .into_iter()
        .map(from_row)
        .collect()
}

/// The statement behind [`list`] (public so that a test can ask the engine for its plan).
///
/// Without acknowledged ones it reads the partial index `notifications_unacked`, which holds
/// only the unacknowledged rows in id order: it names `ack_time IS NULL` as the index does,
/// and on SQLite names the index itself (`INDEXED BY`). SQLite would otherwise walk the
/// table's own key, `(tenant_id, id)`, and step over every acknowledged row it keeps.
pub fn list_query(
    backend: DatabaseBackend,
    tenant_id: &str,
    include_acked: bool,
    after: Option<&str>,
    limit: u64,
) -> Statement {
    let mut q = n::Entity::find().filter(n::Column::TenantId.eq(tenant_id));
    if !include_acked {
        q = q.filter(n::Column::AckTime.is_null());
    }
    if let Some(after) = after {
        q = q.filter(n::Column::Id.gt(after));
    }
    let mut statement = q.order_by_asc(n::Column::Id).limit(limit).build(backend);
    if !include_acked && backend == DatabaseBackend::Sqlite {
        statement.sql = statement.sql.replacen(
            r#"FROM "notifications""#,
            r#"FROM "notifications" INDEXED BY "notifications_unacked""#,
            1,
        );
    }
    statement
}

/// Acknowledges notifications (idempotent). Returns how many were newly acknowledged.
pub async fn ack<C: sea_orm::ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    ids: &[String],
) -> Result<u64, Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let result = n::Entity::update_many()
        .col_expr(n::Column::AckTime, Expr::value(now_micros()))
        .filter(n::Column::TenantId.eq(tenant_id))
        .filter(n::Column::Id.is_in(ids.iter().cloned()))
        .filter(n::Column::AckTime.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// Deletes notifications acknowledged before `cutoff` (the housekeeping sweep); returns how
/// many. Unacknowledged ones are kept however old: delivery is at least once. It names
/// `ack_time IS NOT NULL` as the partial index `notifications_by_ack_time` does.
pub async fn prune_acked<C: sea_orm::ConnectionTrait>(db: &C, cutoff: i64) -> Result<u64, Error> {
    Ok(n::Entity::delete_many()
        .filter(n::Column::AckTime.is_not_null())
        .filter(n::Column::AckTime.lt(cutoff))
        .exec(db)
        .await?
        .rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ActiveModelTrait, ActiveValue::Set, Iterable};

    /// A notification's row as values stands in the order of the table's columns: the value
    /// at each position is the one its model, filled field by field, holds for the column
    /// there.
    #[test]
    fn notification_values_follow_the_columns() {
        let to_user = Notification {
            id: "n1".into(),
            kind: Kind::AddedToConversation,
            recipient: Recipient::User("bob".into()),
            conversation_id: "c1".into(),
            actor_id: "ann".into(),
            subject_ids: vec!["bob".into()],
            invitation_id: None,
            create_time: 7,
            ack_time: None,
        };
        let to_email = Notification {
            kind: Kind::Invitation,
            recipient: Recipient::Email("eve@x.example".into()),
            invitation_id: Some("i1".into()),
            ..to_user.clone()
        };
        assert_eq!(n::Column::iter().count(), NOTIFICATION_COLUMNS);
        for x in [to_user, to_email] {
            let mut values = Vec::new();
            notification_values("acme", &x, &mut values);
            let (user, email) = match &x.recipient {
                Recipient::User(u) => (Some(u.clone()), None),
                Recipient::Email(e) => (None, Some(e.clone())),
            };
            let mut model = n::ActiveModel {
                id: Set(x.id.clone()),
                tenant_id: Set("acme".into()),
                kind: Set(x.kind as i32),
                recipient_user_id: Set(user),
                recipient_email: Set(email),
                conversation_id: Set(x.conversation_id.clone()),
                actor_id: Set(x.actor_id.clone()),
                subject_ids: Set(serde_json::to_string(&x.subject_ids).expect("json")),
                invitation_id: Set(x.invitation_id.clone()),
                create_time: Set(x.create_time),
                ack_time: Set(None),
            };
            let expected: Vec<sea_orm::Value> = n::Column::iter()
                .map(|c| model.take(c).into_value().expect("every column set"))
                .collect();
            assert_eq!(values, expected);
        }
    }
}
