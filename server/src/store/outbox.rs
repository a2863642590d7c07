//! The notification outbox: rows written in the same transaction as the change that owes
//! them, drained by a sibling notification service (list, then acknowledge).

use sea_orm::{ConnectionTrait, DatabaseBackend, EntityTrait, IdenStatic, Iterable, Statement};

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
    if !list.is_empty() {
        w.notifies();
    }
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

/// The table of acknowledged notifications (migration 14): `notifications`' columns, with
/// `ack_time` set. `notifications` holds the unacknowledged ones only.
const ACKED: &str = "notifications_acked";

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

/// The columns of a notification's row, quoted, in the order of [`n::Column`]; with
/// `ack_time` or without it.
fn columns(with_ack_time: bool) -> String {
    n::Column::iter()
        .filter(|c| with_ack_time || !matches!(c, n::Column::AckTime))
        .map(|c| format!("\"{}\"", c.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text of [`list_query`], made once per engine and per `include_acked`.
fn list_sql(backend: DatabaseBackend, include_acked: bool) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        let mut all = Vec::with_capacity(4);
        for postgres in [false, true] {
            let (t, a, l) = (
                super::mark(postgres, 1),
                super::mark(postgres, 2),
                super::mark(postgres, 3),
            );
            let page = |table: &str| {
                format!(
                    "SELECT {} FROM \"{table}\" WHERE \"tenant_id\" = {t} AND \"id\" > {a} \
                     ORDER BY \"id\" LIMIT {l}",
                    columns(true)
                )
            };
            all.push(page("notifications"));
            all.push(format!(
                "SELECT * FROM ({}) AS unacked UNION ALL SELECT * FROM ({}) AS acked \
                 ORDER BY \"id\" LIMIT {l}",
                page("notifications"),
                page(ACKED)
            ));
        }
        all
    });
    let engine = if backend == DatabaseBackend::Postgres {
        2
    } else {
        0
    };
    &all[engine + usize::from(include_acked)]
}

/// The statement behind [`list`] (public so that a test can ask the engine for its plan).
///
/// Without acknowledged ones it reads `notifications`, which holds only the unacknowledged
/// rows, in the order of its key `(tenant_id, id)`: a page costs the same beside any number
/// of acknowledged rows. With them, it reads a page of each table in key order and keeps the
/// first `limit` of the two: a sort of at most twice the page, whatever the tables hold.
pub fn list_query(
    backend: DatabaseBackend,
    tenant_id: &str,
    include_acked: bool,
    after: Option<&str>,
    limit: u64,
) -> Statement {
    // Every id is longer than nothing: no `after` is the same statement from the start.
    let values: [sea_orm::Value; 3] = [
        tenant_id.into(),
        after.unwrap_or_default().into(),
        i64::try_from(limit).unwrap_or(i64::MAX).into(),
    ];
    Statement::from_sql_and_values(backend, list_sql(backend, include_acked), values)
}

/// Acknowledges notifications (idempotent): moves the tenant's unacknowledged ones among `ids`
/// to `notifications_acked`, stamped now. Returns how many were newly acknowledged.
pub async fn ack<C: sea_orm::ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    ids: &[String],
) -> Result<u64, Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let backend = db.get_database_backend();
    let mark = |i: usize| super::mark(backend == DatabaseBackend::Postgres, i);
    // The tenant is value 1, the time value 2, the ids 3 onwards.
    let listed: Vec<String> = (3..3 + ids.len()).map(mark).collect();
    let which = format!(
        "\"tenant_id\" = {} AND \"id\" IN ({})",
        mark(1),
        listed.join(", ")
    );
    let kept = columns(false);
    let mut values: Vec<sea_orm::Value> = vec![tenant_id.into(), now_micros().into()];
    values.extend(ids.iter().map(|id| sea_orm::Value::from(id.as_str())));
    let moved = match backend {
        // One statement: the delete locks each row it takes, so two acknowledgements of one
        // notification at once move it once (the second finds it gone).
        DatabaseBackend::Postgres => {
            let sql = format!(
                "WITH moved AS (DELETE FROM \"notifications\" WHERE {which} RETURNING {kept}) \
                 INSERT INTO \"{ACKED}\" ({kept}, \"ack_time\") SELECT {kept}, {} FROM moved",
                mark(2)
            );
            db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?
                .rows_affected()
        }
        // SQLite's writes are one at a time: nothing comes between the copy and the delete.
        _ => {
            let copy = format!(
                "INSERT INTO \"{ACKED}\" ({kept}, \"ack_time\") \
                 SELECT {kept}, {} FROM \"notifications\" WHERE {which}",
                mark(2)
            );
            db.execute_raw(Statement::from_sql_and_values(
                backend,
                copy,
                values.clone(),
            ))
            .await?;
            let delete = format!("DELETE FROM \"notifications\" WHERE {which}");
            db.execute_raw(Statement::from_sql_and_values(backend, delete, values))
                .await?
                .rows_affected()
        }
    };
    Ok(moved)
}

/// Leases up to `limit` of the tenant's notifications nobody holds (never leased, given
/// back, or whose lease ended by `now`) to stream `holder` until `until`, oldest first, and
/// returns them oldest first. On PostgreSQL the rows are taken with `FOR UPDATE SKIP LOCKED`:
/// two streams claiming at once, on any replicas, take different rows, and a row being
/// acknowledged is passed over. On SQLite writes are one at a time.
pub async fn claim<C: sea_orm::ConnectionTrait>(
    tx: &C,
    tenant_id: &str,
    holder: &str,
    until: i64,
    now: i64,
    limit: u64,
) -> Result<Vec<Notification>, Error> {
    let backend = tx.get_database_backend();
    let values: [sea_orm::Value; 5] = [
        tenant_id.into(),
        holder.into(),
        until.into(),
        now.into(),
        i64::try_from(limit).unwrap_or(i64::MAX).into(),
    ];
    let statement = Statement::from_sql_and_values(backend, claim_sql(backend), values);
    let mut claimed = n::Entity::find()
        .from_raw_sql(statement)
        .all(tx)
        .await?
        .into_iter()
        .map(from_row)
        .collect::<Result<Vec<_>, Error>>()?;
    // RETURNING promises no order.
    claimed.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(claimed)
}

/// The text of [`claim`], made once per engine.
fn claim_sql(backend: DatabaseBackend) -> &'static str {
    static SQL: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    let [lite, postgres] = SQL.get_or_init(|| {
        [false, true].map(|postgres| {
            let m = |i| super::mark(postgres, i);
            let (t, holder, until, now, limit) = (m(1), m(2), m(3), m(4), m(5));
            let free = format!(
                "SELECT \"id\" AS \"free_id\" FROM \"notifications\" WHERE \"tenant_id\" = {t} \
                 AND (\"lease_until\" IS NULL OR \"lease_until\" <= {now}) \
                 ORDER BY \"id\" LIMIT {limit}"
            );
            let set = format!("SET \"lease_holder\" = {holder}, \"lease_until\" = {until}");
            let columns = columns(true);
            if postgres {
                // The free rows are chosen and locked once, in the CTE: as a subquery of
                // `IN`, the planner may run the choice more than once, and a LIMIT then
                // leased more rows than it said.
                format!(
                    "WITH \"free\" AS MATERIALIZED ({free} FOR UPDATE SKIP LOCKED) \
                     UPDATE \"notifications\" {set} FROM \"free\" \
                     WHERE \"tenant_id\" = {t} AND \"id\" = \"free\".\"free_id\" \
                     RETURNING {columns}"
                )
            } else {
                format!(
                    "UPDATE \"notifications\" {set} WHERE \"tenant_id\" = {t} \
                     AND \"id\" IN (SELECT \"free_id\" FROM ({free})) RETURNING {columns}"
                )
            }
        })
    });
    if backend == DatabaseBackend::Postgres {
        postgres
    } else {
        lite
    }
}

/// The ids of the tenant's notifications that stream `holder` still holds at `now`: leased to
/// it, not acknowledged, the lease not ended. It reads `notifications_by_holder`.
pub async fn held(
    db: &super::Conn,
    tenant_id: &str,
    holder: &str,
    now: i64,
) -> Result<Vec<String>, Error> {
    let backend = db.get_database_backend();
    let m = |i| super::mark(backend == DatabaseBackend::Postgres, i);
    let sql = format!(
        "SELECT \"id\" FROM \"notifications\" WHERE \"lease_holder\" = {} \
         AND \"tenant_id\" = {} AND \"lease_until\" > {} ORDER BY \"id\"",
        m(1),
        m(2),
        m(3)
    );
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [holder.into(), tenant_id.into(), now.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok(r.try_get_by_index::<String>(0)?))
        .collect()
}

/// Whether the tenant has a notification nobody holds at `now`. It walks the tenant's
/// unacknowledged ones in key order past those leased, at most as many as are in flight.
pub async fn any_free(db: &super::Conn, tenant_id: &str, now: i64) -> Result<bool, Error> {
    let backend = db.get_database_backend();
    let m = |i| super::mark(backend == DatabaseBackend::Postgres, i);
    let sql = format!(
        "SELECT 1 FROM \"notifications\" WHERE \"tenant_id\" = {} \
         AND (\"lease_until\" IS NULL OR \"lease_until\" <= {}) LIMIT 1",
        m(1),
        m(2)
    );
    Ok(db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [tenant_id.into(), now.into()],
        ))
        .await?
        .is_some())
}

/// Gives back every notification stream `holder` holds: they are anyone's again at once.
/// Returns how many.
pub async fn release<C: sea_orm::ConnectionTrait>(
    tx: &C,
    tenant_id: &str,
    holder: &str,
) -> Result<u64, Error> {
    let backend = tx.get_database_backend();
    let m = |i| super::mark(backend == DatabaseBackend::Postgres, i);
    let sql = format!(
        "UPDATE \"notifications\" SET \"lease_holder\" = NULL, \"lease_until\" = NULL \
         WHERE \"lease_holder\" = {} AND \"tenant_id\" = {}",
        m(1),
        m(2)
    );
    Ok(tx
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [holder.into(), tenant_id.into()],
        ))
        .await?
        .rows_affected())
}

/// Deletes notifications acknowledged before `cutoff` (the housekeeping sweep); returns how
/// many. Unacknowledged ones are kept however old: delivery is at least once. It reads
/// `notifications_acked_by_time`.
pub async fn prune_acked<C: sea_orm::ConnectionTrait>(db: &C, cutoff: i64) -> Result<u64, Error> {
    let backend = db.get_database_backend();
    let sql = format!(
        "DELETE FROM \"{ACKED}\" WHERE \"ack_time\" < {}",
        super::mark(backend == DatabaseBackend::Postgres, 1)
    );
    Ok(db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [cutoff.into()],
        ))
        .await?
        .rows_affected())
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
