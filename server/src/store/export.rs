//! The export's bookkeeping (SPEC §7, Export; migration 18): which items of which
//! conversations are still to be published to JetStream, who is publishing them, and how far
//! each conversation got.
//!
//! The timeline is the outbox: every item is written in the transaction that makes it, and
//! `conversations.last_seq` moves with it, so a conversation owes JetStream every item after
//! its `export_cursors.done_seq` (no row: all of them). The write path writes nothing more for
//! export; only the exporter writes `export_cursors`: its leases, and `done_seq` only up to
//! what JetStream acknowledged. Every function here is one statement, whatever the number of
//! conversations it is given (up to [`PER_STATEMENT`]).

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DatabaseBackend, Statement, Value, sea_query::ArrayType};

use super::cells::{Cells, EachRow, Kind, big_int, text};
use crate::domain::model::TimelineItem;
use crate::error::Error;

/// The most conversations one statement of this module takes.
pub const PER_STATEMENT: usize = 500;

/// A conversation as the sweep found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scanned {
    pub conversation_id: String,
    /// Its latest seq.
    pub last_seq: i64,
    /// Every item up to this one is exported.
    pub done_seq: i64,
    /// When its first item not exported was made, if it has one.
    pub oldest: Option<i64>,
}

/// Up to `limit` conversations after `after` in key order, each with how far it is exported;
/// one statement over the key of `conversations`, then one look-up of `export_cursors` (and,
/// for a conversation that owes items, of its first owed item) per row.
pub async fn scan(db: &super::Conn, after: &str, limit: u64) -> Result<Vec<Scanned>, Error> {
    let backend = db.get_database_backend();
    let m = |i| super::mark(backend == DatabaseBackend::Postgres, i);
    let sql = format!(
        "SELECT \"c\".\"id\", \"c\".\"last_seq\", COALESCE(\"x\".\"done_seq\", 0), \
         \"t\".\"create_time\" \
         FROM (SELECT \"id\", \"last_seq\" FROM \"conversations\" WHERE \"id\" > {} \
         ORDER BY \"id\" LIMIT {}) AS \"c\" \
         LEFT JOIN \"export_cursors\" AS \"x\" ON \"x\".\"conversation_id\" = \"c\".\"id\" \
         LEFT JOIN \"timeline\" AS \"t\" ON \"c\".\"last_seq\" > COALESCE(\"x\".\"done_seq\", 0) \
         AND \"t\".\"conversation_id\" = \"c\".\"id\" \
         AND \"t\".\"seq\" = COALESCE(\"x\".\"done_seq\", 0) + 1 \
         ORDER BY \"c\".\"id\"",
        m(1),
        m(2)
    );
    let values: [Value; 2] = [
        after.into(),
        i64::try_from(limit).unwrap_or(i64::MAX).into(),
    ];
    let mut out = Vec::new();
    db.each_row(
        Statement::from_sql_and_values(backend, sql, values),
        &mut |row: &dyn Cells| {
            out.push(Scanned {
                conversation_id: text(row, 0)?.unwrap_or_default(),
                last_seq: big_int(row, 1)?.unwrap_or_default(),
                done_seq: big_int(row, 2)?.unwrap_or_default(),
                oldest: big_int(row, 3)?,
            });
            Ok(())
        },
    )
    .await?;
    Ok(out)
}

/// A conversation this exporter now holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub conversation_id: String,
    pub done_seq: i64,
    /// Who held it before this claim: `None` if nobody (or a holder who gave it back after
    /// recording what it published), `holder` itself for a renewal, anyone else a holder that
    /// did not give it back (killed, or its lease ran out), who may have published past
    /// `done_seq`.
    pub prior: Option<String>,
}

/// Takes the conversations `ids` for `holder` until `until`, those that nobody holds or whose
/// lease ended by `now` (or that `holder` holds already); returns those taken. Two claims at
/// once, from any replicas, take each conversation at most once: the statement locks the rows
/// it changes.
pub async fn claim<C: ConnectionTrait>(
    tx: &C,
    holder: &str,
    ids: &[String],
    now: i64,
    until: i64,
) -> Result<Vec<Claimed>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let backend = tx.get_database_backend();
    let postgres = backend == DatabaseBackend::Postgres;
    let mut values: Vec<Value> = vec![holder.into(), until.into(), now.into()];
    let rows = table(
        postgres,
        ids.iter().map(|id| vec![id.as_str().into()]),
        &mut values,
    );
    let now_mark = super::mark(postgres, 3);
    let (holder_mark, until_mark) = (super::mark(postgres, 1), super::mark(postgres, 2));
    // `WHERE true`: SQLite reads `ON CONFLICT` after a plain `SELECT … FROM` as a join's.
    let sql = format!(
        "WITH \"i\" (\"id\") AS ({rows}) INSERT INTO \"export_cursors\" \
         (\"conversation_id\", \"done_seq\", \"holder\", \"prior\", \"lease_until\") \
         SELECT \"id\", 0, {holder_mark}, NULL, {until_mark} FROM \"i\" WHERE true \
         ON CONFLICT (\"conversation_id\") DO UPDATE SET \
         \"prior\" = \"export_cursors\".\"holder\", \"holder\" = \"excluded\".\"holder\", \
         \"lease_until\" = \"excluded\".\"lease_until\" \
         WHERE \"export_cursors\".\"holder\" IS NULL \
         OR \"export_cursors\".\"holder\" = \"excluded\".\"holder\" \
         OR \"export_cursors\".\"lease_until\" <= {now_mark} \
         RETURNING \"conversation_id\", \"done_seq\", \"prior\""
    );
    let found = tx
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    found
        .iter()
        .map(|r| {
            Ok(Claimed {
                conversation_id: r.try_get_by_index(0)?,
                done_seq: r.try_get_by_index(1)?,
                prior: r.try_get_by_index(2)?,
            })
        })
        .collect()
}

/// One conversation's line of [`settle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    pub conversation_id: String,
    /// JetStream acknowledged every item up to this seq.
    pub done_seq: i64,
    /// Hold it on (the lease renewed); `false`: give it back (`holder` NULL: the next claim
    /// knows `done_seq` is whole).
    pub keep: bool,
}

/// Records how far each conversation is exported, renewing the lease of those kept until
/// `until` and giving back the others, where `holder` still holds them; returns the
/// conversations it still held (the others were taken over after their lease ended).
pub async fn settle<C: ConnectionTrait>(
    tx: &C,
    holder: &str,
    lines: &[Settled],
    until: i64,
) -> Result<Vec<String>, Error> {
    if lines.is_empty() {
        return Ok(Vec::new());
    }
    let backend = tx.get_database_backend();
    let postgres = backend == DatabaseBackend::Postgres;
    let mut values: Vec<Value> = vec![holder.into(), until.into()];
    let rows = table(
        postgres,
        lines.iter().map(|l| {
            vec![
                l.conversation_id.as_str().into(),
                l.done_seq.into(),
                l.keep.into(),
            ]
        }),
        &mut values,
    );
    let m = |i| super::mark(postgres, i);
    let sql = format!(
        "WITH \"d\" (\"id\", \"seq\", \"keep\") AS ({rows}) \
         UPDATE \"export_cursors\" SET \"done_seq\" = \"d\".\"seq\", \
         \"holder\" = CASE WHEN \"d\".\"keep\" THEN \"export_cursors\".\"holder\" END, \
         \"prior\" = CASE WHEN \"d\".\"keep\" THEN \"export_cursors\".\"prior\" END, \
         \"lease_until\" = CASE WHEN \"d\".\"keep\" THEN {} END FROM \"d\" \
         WHERE \"export_cursors\".\"conversation_id\" = \"d\".\"id\" \
         AND \"export_cursors\".\"holder\" = {} \
         RETURNING \"export_cursors\".\"conversation_id\"",
        m(2),
        m(1)
    );
    let found = tx
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    found
        .iter()
        .map(|r| Ok(r.try_get_by_index::<String>(0)?))
        .collect()
}

/// The items of each `(conversation, after, upto)` with `after < seq <= upto`, in seq order
/// per conversation, with the conversation's tenant: one statement, a range of the
/// timeline's key per conversation.
pub async fn items<C: EachRow>(
    db: &C,
    wanted: &[(String, i64, i64)],
) -> Result<HashMap<String, (String, Vec<TimelineItem>)>, Error> {
    let mut out: HashMap<String, (String, Vec<TimelineItem>)> = HashMap::new();
    if wanted.is_empty() {
        return Ok(out);
    }
    let backend = db.get_database_backend();
    let postgres = backend == DatabaseBackend::Postgres;
    let columns = super::timeline::COLUMNS
        .split(", ")
        .map(|c| format!("\"t\".\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut values: Vec<Value> = Vec::new();
    let rows = table(
        postgres,
        wanted
            .iter()
            .map(|(id, after, upto)| vec![id.as_str().into(), (*after).into(), (*upto).into()]),
        &mut values,
    );
    let sql = format!(
        "WITH \"w\" (\"id\", \"after\", \"upto\") AS ({rows}) \
         SELECT \"c\".\"tenant_id\", \"t\".\"conversation_id\", {columns} FROM \"w\" \
         JOIN \"conversations\" AS \"c\" ON \"c\".\"id\" = \"w\".\"id\" \
         JOIN \"timeline\" AS \"t\" ON \"t\".\"conversation_id\" = \"w\".\"id\" \
         AND \"t\".\"seq\" > \"w\".\"after\" AND \"t\".\"seq\" <= \"w\".\"upto\" \
         ORDER BY \"t\".\"conversation_id\", \"t\".\"seq\""
    );
    db.each_row(
        Statement::from_sql_and_values(backend, sql, values),
        &mut |row: &dyn Cells| {
            let tenant = text(row, 0)?.unwrap_or_default();
            let conversation = text(row, 1)?.unwrap_or_default();
            let item = super::timeline::item_at(&Shifted(row, 2), &conversation)?;
            out.entry(conversation)
                .or_insert_with(|| (tenant, Vec::new()))
                .1
                .push(item);
            Ok(())
        },
    )
    .await?;
    Ok(out)
}

/// A row read from column `.1` on, as if that were its first.
struct Shifted<'a>(&'a dyn Cells, usize);

impl Cells for Shifted<'_> {
    fn value(&self, i: usize, kind: Kind) -> Result<Value, sea_orm::DbErr> {
        self.0.value(i + self.1, kind)
    }
}

/// `rows` (each the same width and kinds of value) as the body of a `WITH` table, their
/// values appended to `values` as its parameters: on PostgreSQL one array per column,
/// `unnest`ed (a statement whose text is the same for any number of rows), on SQLite a
/// `VALUES` list.
fn table(
    postgres: bool,
    rows: impl Iterator<Item = Vec<Value>>,
    values: &mut Vec<Value>,
) -> String {
    let rows: Vec<Vec<Value>> = rows.collect();
    let width = rows.first().map_or(0, Vec::len);
    if postgres {
        let mut arrays = Vec::with_capacity(width);
        for column in 0..width {
            let (kind, name) = rows
                .first()
                .and_then(|row| super::writes::array_element(&row[column]))
                .map_or((ArrayType::String, "text"), |(kind, name, _)| (kind, name));
            let column: Vec<Value> = rows.iter().map(|row| row[column].clone()).collect();
            values.push(Value::Array(kind, Some(Box::new(column))));
            arrays.push(format!("${}::{name}[]", values.len()));
        }
        format!("SELECT * FROM unnest({})", arrays.join(", "))
    } else {
        let mut out = String::from("VALUES ");
        for (n, row) in rows.into_iter().enumerate() {
            if n > 0 {
                out.push_str(", ");
            }
            let marks: Vec<String> = row
                .into_iter()
                .map(|v| {
                    values.push(v);
                    format!("?{}", values.len())
                })
                .collect();
            out.push_str(&format!("({})", marks.join(", ")));
        }
        out
    }
}
