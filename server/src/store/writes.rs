//! The apply step of load → decide → apply: the statements that write one decided plan, sent
//! to the engine together instead of one round trip each.
//!
//! A plan writes to several tables (participants, the timeline, the outbox, the conversation
//! row). On PostgreSQL each of those statements alone costs a round trip, a network exchange
//! taken while the conversation is locked. [`Writes`] collects them and [`Writes::run`] sends
//! them as few as possible:
//!
//! - PostgreSQL: one statement, the writes as data-modifying common table expressions
//!   (`WITH w0 AS (INSERT …), w1 AS (INSERT …) UPDATE …`). They run on one snapshot and none
//!   reads another's rows, which a plan's writes never need: each writes rows of its own.
//!   A multi-row insert carries its rows as an array parameter per column (`unnest`), so a
//!   plan's parameters do not grow with its rows; a statement takes at most [`PG_MAX_PARAMETERS`]
//!   parameters, and writes past that would be cut into as many statements as they need,
//!   never one per row.
//! - SQLite: the writes in turn on the writer (SQLite runs in the server's process,
//!   [`super::lite`], so there a statement costs no round trip): a multi-row insert as its
//!   one-row statement, prepared once and run per row, binding only the values that differ
//!   from the row before, and the writes between as one call of several statements
//!   (`run_each`).
//!
//! Either way the writes are all in the caller's transaction: an error in any leaves the
//! transaction to roll back, so a plan is written whole or not at all.

use super::WriteTx;
use sea_orm::sea_query::{ArrayType, UpdateStatement};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, EntityName, EntityTrait,
    IdenStatic, Iterable, Statement, StatementBuilder, Value,
};

use crate::error::Error;

/// The most parameters one PostgreSQL statement may carry (the protocol counts them in 16
/// bits).
pub const PG_MAX_PARAMETERS: usize = 65_535;

/// One write of a plan.
#[derive(Clone, Debug)]
enum Write {
    Update(Box<UpdateStatement>),
    Rows(Rows),
    /// A statement whose text is made once per engine ([`Writes::fixed`]).
    Fixed {
        sql: [&'static str; 2],
        values: Vec<Value>,
    },
}

impl Write {
    fn build(self, backend: DatabaseBackend) -> Statement {
        match self {
            Write::Update(s) => StatementBuilder::build(s.as_ref(), &backend),
            Write::Rows(r) => r.build(backend),
            Write::Fixed {
                sql: [sqlite, postgres],
                values,
            } => {
                let sql = if backend == DatabaseBackend::Postgres {
                    postgres
                } else {
                    sqlite
                };
                Statement::from_sql_and_values(backend, sql, values)
            }
        }
    }
}

/// A multi-row insert of whole rows, its text written directly rather than through
/// sea-query: for a thousand rows, building the statement with sea-query (a value expression
/// per cell, then the text and the values taken out again) cost a fifth of AddParticipants'
/// CPU on SQLite.
///
/// On PostgreSQL, two rows or more travel as one array parameter per column (`INSERT INTO "t"
/// ("a", "b") SELECT "a", CASE WHEN "b present" THEN "b" END FROM unnest($1::text[],
/// $2::int8[], $3::bool[]) AS "r" ("a", "b", "b present") …`), sent in PostgreSQL's binary
/// format. A thousand rows of fifteen columns are fifteen thousand parameters otherwise:
/// measured on AddParticipants(1000), binding them took PostgreSQL 39 ms and parsing the
/// statement 38 ms (each connection parses each row count anew). The rows were then one JSON
/// parameter (`jsonb_populate_recordset`), whose parsing (a tree per row, its keys sorted) was a
/// quarter of PostgreSQL's CPU under AddParticipants(1000); an array is read element by element
/// as it arrives. An array cannot carry `NULL` through sea-query (its binder takes every element
/// as a value), so a column that may be `NULL` travels with a second array saying which of its
/// elements are present. One row, or a value no array here carries (bytes), is sent with a
/// parameter per value.
#[derive(Clone, Debug)]
struct Rows {
    table: &'static str,
    columns: Vec<&'static str>,
    /// Whether each column may be `NULL`.
    nullable: Vec<bool>,
    /// Row after row, each a value per column.
    values: Vec<Value>,
    /// What follows the rows (`ON CONFLICT …`), without parameters.
    tail: &'static str,
}

/// How a column travels as an array ([`Rows::arrays`]): its elements' type, PostgreSQL's name
/// for it, and whether a second array says which elements are present.
#[derive(Clone)]
struct ArrayColumn {
    element: ArrayType,
    pg_type: &'static str,
    with_presence: bool,
}

impl Rows {
    fn build(self, backend: DatabaseBackend) -> Statement {
        let width = self.columns.len().max(1);
        let head = self.head();
        if backend == DatabaseBackend::Postgres
            && self.values.len() >= 2 * width
            && let Some(kinds) = self.array_columns()
        {
            return self.arrays(&head, &kinds);
        }
        let mut sql = String::with_capacity(head.len() + self.values.len() * 6 + self.tail.len());
        sql.push_str(&head);
        sql.push_str(" VALUES ");
        for (i, _) in self.values.iter().enumerate() {
            if i % width == 0 {
                sql.push_str(if i == 0 { "(" } else { "), (" });
            } else {
                sql.push_str(", ");
            }
            if backend == DatabaseBackend::Postgres {
                use std::fmt::Write as _;
                // Writing to a String cannot fail.
                let _ = write!(sql, "${}", i + 1);
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
        sql.push_str(self.tail);
        Statement::from_sql_and_values(backend, sql, self.values)
    }

    /// `INSERT INTO "table" ("a", "b", …)`, what every form of these rows' insert begins with.
    fn head(&self) -> String {
        let length = self.columns.iter().map(|c| c.len() + 4).sum::<usize>();
        let mut head = String::with_capacity(self.table.len() + length + 16);
        head.push_str("INSERT INTO \"");
        head.push_str(self.table);
        head.push_str("\" (");
        for (i, c) in self.columns.iter().enumerate() {
            if i > 0 {
                head.push_str(", ");
            }
            head.push('"');
            head.push_str(c);
            head.push('"');
        }
        head.push(')');
        head
    }

    /// The insert of one row of these columns, with SQLite's unnumbered parameters.
    fn one_row_sql(&self) -> String {
        let marks = vec!["?"; self.columns.len()].join(", ");
        format!("{} VALUES ({marks}){}", self.head(), self.tail)
    }

    /// How each column travels as an array, or `None` if one holds a type no array here
    /// carries, or values of more than one type.
    fn array_columns(&self) -> Option<Vec<ArrayColumn>> {
        let width = self.columns.len().max(1);
        let mut kinds: Vec<ArrayColumn> = Vec::with_capacity(width);
        for (i, v) in self.values.iter().enumerate() {
            let (element, pg_type, present) = array_element(v)?;
            let column = i % width;
            if i < width {
                kinds.push(ArrayColumn {
                    element: element.clone(),
                    pg_type,
                    with_presence: self.nullable.get(column).copied().unwrap_or(true),
                });
            }
            let kind = kinds.get_mut(column)?;
            if kind.element != element {
                return None;
            }
            // A NULL where the schema allows none still reaches the engine as a NULL, to be
            // refused there.
            kind.with_presence |= !present;
        }
        Some(kinds)
    }

    /// The statement with the rows as arrays, one per column (and one per column that may be
    /// `NULL` saying which of its elements are present), moved out of `self`. A column holding
    /// the same value in every row (a plan's rows share their conversation, tenant, actor and
    /// time) goes as that one value instead: PostgreSQL then neither decodes nor unnests an
    /// array of copies. One column stays an array whatever it holds, to carry the rows' count.
    /// Which columns are alike is in the statement's text, so a table's inserts take a few
    /// texts (in practice two or three), each prepared once per connection.
    fn arrays(self, head: &str, kinds: &[ArrayColumn]) -> Statement {
        let width = kinds.len().max(1);
        let rows = self.values.len() / width;
        let mut constant: Vec<bool> = (0..width)
            .map(|c| {
                let first = self.values.get(c);
                self.values
                    .iter()
                    .skip(c)
                    .step_by(width)
                    .all(|v| Some(v) == first)
            })
            .collect();
        if constant.iter().skip(1).all(|c| *c)
            && let Some(first) = constant.first_mut()
        {
            *first = false;
        }
        let mut single: Vec<Option<Value>> = vec![None; width];
        let mut elements: Vec<Vec<Value>> = constant
            .iter()
            .map(|&c| Vec::with_capacity(if c { 0 } else { rows }))
            .collect();
        let mut presence: Vec<Vec<Value>> = kinds
            .iter()
            .zip(&constant)
            .map(|(k, &c)| Vec::with_capacity(if k.with_presence && !c { rows } else { 0 }))
            .collect();
        for (i, v) in self.values.into_iter().enumerate() {
            let column = i % width;
            if constant[column] {
                if i < width {
                    single[column] = Some(v);
                }
                continue;
            }
            let present = array_element(&v).is_none_or(|(_, _, present)| present);
            // An absent element holds a value of its type that nothing reads.
            let v = if present {
                v
            } else {
                match v {
                    Value::String(_) => Value::String(Some(String::new())),
                    Value::BigInt(_) => Value::BigInt(Some(0)),
                    Value::Int(_) => Value::Int(Some(0)),
                    Value::SmallInt(_) => Value::SmallInt(Some(0)),
                    _ => Value::Bool(Some(false)),
                }
            };
            elements[column].push(v);
            if kinds[column].with_presence {
                presence[column].push(Value::Bool(Some(present)));
            }
        }
        let (mut params, mut names, mut exprs) = (Vec::new(), Vec::new(), Vec::new());
        let mut values = Vec::with_capacity(2 * width);
        for (((name, kind), (column, present)), single) in self
            .columns
            .iter()
            .zip(kinds)
            .zip(elements.into_iter().zip(presence))
            .zip(single)
        {
            if let Some(value) = single {
                values.push(value);
                exprs.push(format!("${}::{}", values.len(), kind.pg_type));
                continue;
            }
            values.push(Value::Array(kind.element.clone(), Some(Box::new(column))));
            params.push(format!("${}::{}[]", values.len(), kind.pg_type));
            names.push(format!("\"{name}\""));
            if kind.with_presence {
                values.push(Value::Array(ArrayType::Bool, Some(Box::new(present))));
                params.push(format!("${}::bool[]", values.len()));
                names.push(format!("\"{name} present\""));
                exprs.push(format!("CASE WHEN \"{name} present\" THEN \"{name}\" END"));
            } else {
                exprs.push(format!("\"{name}\""));
            }
        }
        Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            format!(
                "{head} SELECT {} FROM unnest({}) AS \"r\" ({}){}",
                exprs.join(", "),
                params.join(", "),
                names.join(", "),
                self.tail
            ),
            values,
        )
    }
}

/// How `v` travels in an array: the elements' type, PostgreSQL's name for it, and whether `v`
/// is present (not `NULL`); `None` for a type no array here carries.
pub(super) fn array_element(v: &Value) -> Option<(ArrayType, &'static str, bool)> {
    Some(match v {
        Value::String(s) => (ArrayType::String, "text", s.is_some()),
        Value::BigInt(n) => (ArrayType::BigInt, "int8", n.is_some()),
        Value::Int(n) => (ArrayType::Int, "int4", n.is_some()),
        Value::SmallInt(n) => (ArrayType::SmallInt, "int2", n.is_some()),
        Value::Bool(b) => (ArrayType::Bool, "bool", b.is_some()),
        _ => return None,
    })
}

/// The writes of one plan, in the order they were added.
#[derive(Debug, Default)]
#[must_use = "writes do nothing until they are run"]
pub struct Writes {
    list: Vec<Write>,
    /// Some of the writes add notifications to the outbox.
    notifies: bool,
    /// The timeline items the writes add.
    appended: Vec<crate::domain::model::TimelineItem>,
}

impl Writes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that the writes add notifications to the outbox (see [`WriteTx::touch_outbox`]).
    pub fn notifies(&mut self) {
        self.notifies = true;
    }

    /// Notes that the writes add `items` to the timeline (see [`WriteTx::appended`]).
    pub fn appends(&mut self, items: &[crate::domain::model::TimelineItem]) {
        self.appended.extend_from_slice(items);
    }

    pub fn update(&mut self, s: UpdateStatement) {
        self.list.push(Write::Update(Box::new(s)));
    }

    /// A statement of text made once, `sql` on SQLite (parameters `?`) then on PostgreSQL
    /// (`$1`, `$2`, …), with `values` in the order of its parameters: for the writes every
    /// mutation makes, whose text sea-query would build anew per call.
    pub fn fixed(&mut self, sql: [&'static str; 2], values: Vec<Value>) {
        self.list.push(Write::Fixed { sql, values });
    }

    /// Inserts `models`, every column of each set, followed by `tail` (`ON CONFLICT …`, or
    /// nothing). A column left unset would be written `NULL`.
    pub fn insert_models<A>(&mut self, models: impl IntoIterator<Item = A>, tail: &'static str)
    where
        A: ActiveModelTrait,
    {
        let columns: Vec<&'static str> = <A::Entity as EntityTrait>::Column::iter()
            .map(|c| c.as_str())
            .collect();
        let nullable = <A::Entity as EntityTrait>::Column::iter()
            .map(|c| c.def().is_null())
            .collect();
        let mut values = Vec::new();
        for mut model in models {
            for column in <A::Entity as EntityTrait>::Column::iter() {
                let value = model.take(column).into_value();
                debug_assert!(value.is_some(), "every column of an inserted row is set");
                values.push(value.unwrap_or(Value::String(None)));
            }
        }
        if values.is_empty() {
            return;
        }
        self.list.push(Write::Rows(Rows {
            table: A::Entity::default().table_name(),
            columns,
            nullable,
            values,
            tail,
        }));
    }

    /// Inserts rows of `E` given as their values (each row's values in the order of `E`'s
    /// columns, row after row), followed by `tail`: [`Self::insert_models`] without a model
    /// built, filled and taken apart per row, for the plans that write a thousand rows.
    pub fn insert_values<E: EntityTrait>(&mut self, values: Vec<Value>, tail: &'static str) {
        let columns: Vec<&'static str> = E::Column::iter().map(|c| c.as_str()).collect();
        debug_assert!(
            values.len().is_multiple_of(columns.len().max(1)),
            "whole rows of {} values",
            columns.len()
        );
        if values.is_empty() {
            return;
        }
        let nullable = E::Column::iter().map(|c| c.def().is_null()).collect();
        self.list.push(Write::Rows(Rows {
            table: E::default().table_name(),
            columns,
            nullable,
            values,
            tail,
        }));
    }

    /// Runs every write in `tx`, in as few round trips as the engine allows (see the module
    /// documentation).
    pub async fn run(self, tx: &WriteTx) -> Result<(), Error> {
        if self.notifies {
            tx.touch_outbox();
        }
        tx.touch_timeline(self.appended);
        if self.list.is_empty() {
            return Ok(());
        }
        let backend = tx.get_database_backend();
        if backend != DatabaseBackend::Postgres {
            return run_each(self.list, backend, tx).await;
        }
        for statement in postgres_bundles(self.list) {
            tx.execute_raw(statement).await?;
        }
        Ok(())
    }
}

/// SQLite: the writes in order, a multi-row insert as its one-row statement run once per row
/// (`WriteTx::lite_rows`), which binds only the values that differ from the row before, and
/// the writes between such inserts as one call of several statements ([`joined`]). Sent as one
/// statement of a thousand rows, each of a row's values was bound (text copied) and the
/// statement's text built, parsed and kept per row count; the rows of a plan mostly share
/// their values (the conversation, the tenant, the actor, the time).
async fn run_each(list: Vec<Write>, backend: DatabaseBackend, tx: &WriteTx) -> Result<(), Error> {
    let mut pending: Vec<Write> = Vec::new();
    for write in list {
        match write {
            Write::Rows(rows) if rows.values.len() > rows.columns.len() => {
                if !pending.is_empty() {
                    tx.execute_raw(joined(std::mem::take(&mut pending), backend))
                        .await?;
                }
                let sql = rows.one_row_sql();
                if tx
                    .lite_rows(&sql, rows.columns.len(), &rows.values)
                    .await?
                    .is_none()
                {
                    tx.execute_raw(Write::Rows(rows).build(backend)).await?;
                }
            }
            other => pending.push(other),
        }
    }
    if !pending.is_empty() {
        tx.execute_raw(joined(pending, backend)).await?;
    }
    Ok(())
}

/// The statements of `list` one after another as one call, their parameters in the same
/// order (each statement binds the next unnumbered parameters).
fn joined(list: Vec<Write>, backend: DatabaseBackend) -> Statement {
    let mut sql = String::new();
    let mut values: Vec<Value> = Vec::new();
    for write in list {
        let s = write.build(backend);
        if !sql.is_empty() {
            sql.push_str(";\n");
        }
        sql.push_str(&s.sql);
        values.extend(s.values.map(|v| v.0).unwrap_or_default());
    }
    Statement::from_sql_and_values(backend, sql, values)
}

/// PostgreSQL: each write as a statement of its own numbering (a multi-row insert carried as
/// an array parameter per column, [`Rows`]), consecutive writes grouped while their parameters fit
/// one statement, each group one statement.
fn postgres_bundles(list: Vec<Write>) -> Vec<Statement> {
    let backend = DatabaseBackend::Postgres;
    let mut out = Vec::new();
    let mut group: Vec<Statement> = Vec::new();
    let mut parameters = 0;
    for write in list {
        let statement = write.build(backend);
        let n = statement.values.as_ref().map_or(0, |v| v.0.len());
        if !group.is_empty() && parameters + n > PG_MAX_PARAMETERS {
            out.push(with_query(std::mem::take(&mut group)));
            parameters = 0;
        }
        parameters += n;
        group.push(statement);
    }
    if !group.is_empty() {
        out.push(with_query(group));
    }
    out
}

/// One PostgreSQL statement for `group`: the last statement is the statement, the others its
/// common table expressions (`WITH "w0" AS (…), "w1" AS (…) …`), each one's parameters
/// renumbered after those before it.
fn with_query(mut group: Vec<Statement>) -> Statement {
    let backend = DatabaseBackend::Postgres;
    let Some(last) = group.pop() else {
        return Statement::from_string(backend, "SELECT 1");
    };
    if group.is_empty() {
        return last;
    }
    let length = group.iter().map(|s| s.sql.len() + 16).sum::<usize>() + last.sql.len() + 16;
    let mut sql = String::with_capacity(length);
    sql.push_str("WITH ");
    let mut values: Vec<Value> = Vec::new();
    for (i, s) in group.into_iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("\"w");
        sql.push_str(&i.to_string());
        sql.push_str("\" AS (");
        push_renumbered(&mut sql, &s.sql, values.len());
        sql.push(')');
        values.extend(s.values.map(|v| v.0).unwrap_or_default());
    }
    sql.push(' ');
    push_renumbered(&mut sql, &last.sql, values.len());
    values.extend(last.values.map(|v| v.0).unwrap_or_default());
    Statement::from_sql_and_values(backend, sql, values)
}

/// `sql` with each parameter `$n` outside quotes renumbered `$(n + offset)`.
#[cfg(test)]
fn renumbered(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    push_renumbered(&mut out, sql, offset);
    out
}

/// Appends `sql` to `out` with each parameter `$n` outside quotes renumbered `$(n + offset)`.
/// The text between parameters and quotes is copied a run at a time: built character by
/// character, renumbering AddParticipants(1)'s statement was about 2 % of the server's CPU
/// per call on PostgreSQL.
fn push_renumbered(out: &mut String, sql: &str, offset: usize) {
    use std::fmt::Write as _;
    if offset == 0 {
        out.push_str(sql);
        return;
    }
    let bytes = sql.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'"') => {
                // Up to the closing quote (or the end), copied as it is.
                i += 1;
                while i < bytes.len() && bytes[i] != q {
                    i += 1;
                }
                i += 1;
            }
            b'$' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                out.push_str(&sql[copied..i]);
                let digits = i + 1;
                let mut end = digits;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                let n: usize = sql[digits..end].parse().unwrap_or(0);
                // Writing to a String cannot fail.
                let _ = write!(out, "${}", n + offset);
                copied = end;
                i = end;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};

    fn one_column(table: &'static str, values: Vec<Value>) -> Write {
        Write::Rows(Rows {
            table,
            columns: vec!["a"],
            nullable: vec![false],
            values,
            tail: "",
        })
    }

    fn insert(table: &'static str, rows: usize) -> Write {
        one_column(table, (0..rows).map(|i| Value::from(i as i64)).collect())
    }

    /// Rows whose values no array here carries (bytes): inserted with a parameter per value.
    fn insert_bytes(table: &'static str, rows: usize) -> Write {
        one_column(
            table,
            (0..rows).map(|i| Value::from(vec![i as u8])).collect(),
        )
    }

    fn update(table: &str) -> Write {
        Write::Update(Box::new(
            Query::update()
                .table(Alias::new(table))
                .value(Alias::new("a"), 7)
                .and_where(Expr::col(Alias::new("id")).eq("x"))
                .to_owned(),
        ))
    }

    #[test]
    fn postgres_writes_become_one_statement_with_their_parameters_numbered_in_turn() {
        let out = postgres_bundles(vec![insert_bytes("t", 2), insert("u", 1), update("c")]);
        assert_eq!(out.len(), 1);
        let sql = &out[0].sql;
        assert!(
            sql.starts_with("WITH \"w0\" AS (INSERT INTO \"t\" (\"a\") VALUES ($1), ($2))"),
            "{sql}"
        );
        assert!(
            sql.contains("\"w1\" AS (INSERT INTO \"u\" (\"a\") VALUES ($3))"),
            "{sql}"
        );
        assert!(
            sql.ends_with(") UPDATE \"c\" SET \"a\" = $4 WHERE \"id\" = $5"),
            "{sql}"
        );
        assert_eq!(out[0].values.as_ref().map(|v| v.0.len()), Some(5));
    }

    fn strings(values: &Value) -> Vec<Option<String>> {
        let Value::Array(ArrayType::String, Some(list)) = values else {
            panic!("not an array of text: {values:?}");
        };
        list.iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => panic!("not text: {other:?}"),
            })
            .collect()
    }

    fn bools(values: &Value) -> Vec<bool> {
        let Value::Array(ArrayType::Bool, Some(list)) = values else {
            panic!("not an array of booleans: {values:?}");
        };
        list.iter()
            .map(|v| match v {
                Value::Bool(Some(b)) => *b,
                other => panic!("not a boolean: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn postgres_rows_travel_as_an_array_per_column() {
        let s = Write::Rows(Rows {
            table: "t",
            columns: vec!["a", "b", "c"],
            nullable: vec![false, false, true],
            values: vec![
                Value::from("x\"y"),
                Value::from(9_007_199_254_740_993_i64),
                Value::Bool(None),
                Value::from("z"),
                Value::from(-1_i64),
                Value::from(true),
            ],
            tail: " ON CONFLICT (\"a\") DO UPDATE SET \"b\" = \"excluded\".\"b\"",
        });
        let out = postgres_bundles(vec![s, update("c")]);
        assert_eq!(out.len(), 1);
        let sql = &out[0].sql;
        assert!(
            sql.starts_with(
                "WITH \"w0\" AS (INSERT INTO \"t\" (\"a\", \"b\", \"c\") SELECT \"a\", \"b\", \
                 CASE WHEN \"c present\" THEN \"c\" END \
                 FROM unnest($1::text[], $2::int8[], $3::bool[], $4::bool[]) \
                 AS \"r\" (\"a\", \"b\", \"c\", \"c present\") ON CONFLICT (\"a\") DO UPDATE"
            ),
            "{sql}"
        );
        assert!(
            sql.ends_with("UPDATE \"c\" SET \"a\" = $5 WHERE \"id\" = $6"),
            "{sql}"
        );
        let values = &out[0].values.as_ref().expect("values").0;
        assert_eq!(values.len(), 6);
        assert_eq!(
            strings(&values[0]),
            vec![Some("x\"y".to_owned()), Some("z".to_owned())]
        );
        assert_eq!(
            values[1],
            Value::Array(
                ArrayType::BigInt,
                Some(Box::new(vec![
                    Value::from(9_007_199_254_740_993_i64),
                    Value::from(-1_i64)
                ]))
            )
        );
        assert_eq!(bools(&values[3]), vec![false, true], "c is absent in row 1");
        assert_eq!(
            bools(&values[2]),
            vec![false, true],
            "c's values, the absent one a placeholder"
        );
    }

    /// A `NULL` in a column the schema declares `NOT NULL` still travels as a `NULL`, so the
    /// engine refuses the row instead of storing the placeholder.
    #[test]
    fn postgres_rows_keep_a_null_the_schema_forbids() {
        let s = Write::Rows(Rows {
            table: "t",
            columns: vec!["a", "b"],
            nullable: vec![false, false],
            values: vec![
                Value::from("x"),
                Value::from(1_i64),
                Value::String(None),
                Value::from(2_i64),
            ],
            tail: "",
        });
        let out = postgres_bundles(vec![s]);
        assert_eq!(
            out[0].sql,
            "INSERT INTO \"t\" (\"a\", \"b\") SELECT CASE WHEN \"a present\" THEN \"a\" END, \"b\" \
             FROM unnest($1::text[], $2::bool[], $3::int8[]) AS \"r\" (\"a\", \"a present\", \"b\")"
        );
        let values = &out[0].values.as_ref().expect("values").0;
        assert_eq!(bools(&values[1]), vec![true, false]);
        assert_eq!(
            strings(&values[0]),
            vec![Some("x".to_owned()), Some(String::new())],
            "an absent element holds a placeholder of its type"
        );
    }

    /// A column whose values are of two types goes as a parameter per value.
    #[test]
    fn postgres_rows_of_mixed_types_bind_each_value() {
        let s = Write::Rows(Rows {
            table: "t",
            columns: vec!["a"],
            nullable: vec![true],
            values: vec![Value::from("x"), Value::from(1_i64)],
            tail: "",
        });
        let out = postgres_bundles(vec![s]);
        assert_eq!(out[0].sql, "INSERT INTO \"t\" (\"a\") VALUES ($1), ($2)");
    }

    fn rows(n: usize, tail: &'static str) -> Write {
        let mut values = Vec::new();
        for i in 0..n {
            values.push(Value::from(format!("r\"{i}")));
            values.push(Value::from(i as i64));
            values.push(Value::Int(None));
        }
        Write::Rows(Rows {
            table: "t",
            columns: vec!["a", "b", "c"],
            nullable: vec![false, false, true],
            values,
            tail,
        })
    }

    #[test]
    fn sqlite_rows_are_one_insert_binding_each_value_in_turn() {
        // A SQLite transaction sea-orm runs takes the rows as one statement.
        let out = [rows(2, " ON CONFLICT DO NOTHING").build(DatabaseBackend::Sqlite)];
        assert_eq!(
            out[0].sql,
            "INSERT INTO \"t\" (\"a\", \"b\", \"c\") VALUES (?, ?, ?), (?, ?, ?) ON CONFLICT DO NOTHING"
        );
        let values = &out[0].values.as_ref().expect("values").0;
        assert_eq!(values.len(), 6);
        assert_eq!(values[3], Value::from("r\"1".to_owned()));
    }

    #[test]
    fn postgres_rows_are_arrays_and_one_row_is_plain() {
        let out = postgres_bundles(vec![rows(2, ""), update("c")]);
        assert_eq!(out.len(), 1);
        let sql = &out[0].sql;
        assert!(
            sql.starts_with(
                "WITH \"w0\" AS (INSERT INTO \"t\" (\"a\", \"b\", \"c\") SELECT \"a\", \"b\", \
                 $3::int4 FROM unnest($1::text[], $2::int8[]) AS \"r\" (\"a\", \"b\"))"
            ),
            "{sql}"
        );
        let values = &out[0].values.as_ref().expect("values").0;
        assert_eq!(
            strings(&values[0]),
            vec![Some("r\"0".to_owned()), Some("r\"1".to_owned())]
        );
        assert_eq!(values[2], Value::Int(None), "c is NULL in every row");
        let one = postgres_bundles(vec![rows(1, " ON CONFLICT DO NOTHING")]);
        assert_eq!(
            one[0].sql,
            "INSERT INTO \"t\" (\"a\", \"b\", \"c\") VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        );
    }

    /// A column holding one value in every row travels as that value, once, and the rows'
    /// count in the arrays of the others; rows alike in every column keep their first column
    /// an array.
    #[test]
    fn postgres_columns_alike_in_every_row_travel_once() {
        let s = Write::Rows(Rows {
            table: "t",
            columns: vec!["a", "b", "c", "d"],
            nullable: vec![false, true, true, false],
            values: vec![
                Value::from("k"),
                Value::from("x"),
                Value::String(None),
                Value::from(1_i64),
                Value::from("k"),
                Value::from("y"),
                Value::String(None),
                Value::from(1_i64),
                Value::from("k"),
                Value::String(None),
                Value::String(None),
                Value::from(1_i64),
            ],
            tail: " ON CONFLICT DO NOTHING",
        });
        let out = postgres_bundles(vec![s]);
        assert_eq!(
            out[0].sql,
            "INSERT INTO \"t\" (\"a\", \"b\", \"c\", \"d\") SELECT $1::text, \
             CASE WHEN \"b present\" THEN \"b\" END, $4::text, $5::int8 \
             FROM unnest($2::text[], $3::bool[]) AS \"r\" (\"b\", \"b present\") ON CONFLICT DO NOTHING"
        );
        let values = &out[0].values.as_ref().expect("values").0;
        assert_eq!(values.len(), 5);
        assert_eq!(values[0], Value::from("k"));
        assert_eq!(
            strings(&values[1]),
            vec![
                Some("x".to_owned()),
                Some("y".to_owned()),
                Some(String::new())
            ]
        );
        assert_eq!(bools(&values[2]), vec![true, true, false]);
        assert_eq!(values[3], Value::String(None));
        assert_eq!(values[4], Value::from(1_i64));

        let alike = one_column("t", vec![Value::from(3_i64); 3]);
        let out = postgres_bundles(vec![alike]);
        assert_eq!(
            out[0].sql,
            "INSERT INTO \"t\" (\"a\") SELECT \"a\" FROM unnest($1::int8[]) AS \"r\" (\"a\")"
        );
        let values = &out[0].values.as_ref().expect("values").0;
        assert_eq!(
            values[0],
            Value::Array(
                ArrayType::BigInt,
                Some(Box::new(vec![Value::from(3_i64); 3]))
            ),
            "three rows go in as three"
        );
    }

    /// Rows holding a value no array here carries go as a parameter per value.
    #[test]
    fn postgres_rows_with_bytes_bind_each_value() {
        let write = Write::Rows(Rows {
            table: "t",
            columns: vec!["a"],
            nullable: vec![false],
            values: vec![Value::from(vec![1u8]), Value::from(vec![2u8])],
            tail: "",
        });
        let out = postgres_bundles(vec![write]);
        assert_eq!(out[0].sql, "INSERT INTO \"t\" (\"a\") VALUES ($1), ($2)");
        assert_eq!(out[0].values.as_ref().map(|v| v.0.len()), Some(2));
    }

    #[test]
    fn renumbering_skips_quoted_text() {
        assert_eq!(
            renumbered("SELECT $1, '$2', \"$3\", $10 WHERE x = $2", 5),
            "SELECT $6, '$2', \"$3\", $15 WHERE x = $7"
        );
        // A `$` without digits, a parameter at the very end, an unclosed quote, no offset.
        assert_eq!(renumbered("SELECT $a, $ , $9", 1), "SELECT $a, $ , $10");
        assert_eq!(renumbered("SELECT $1 || '$2", 3), "SELECT $4 || '$2");
        assert_eq!(renumbered("SELECT $1", 0), "SELECT $1");
        assert_eq!(renumbered("", 4), "");
    }

    #[test]
    fn one_postgres_write_is_sent_as_it_is() {
        let out = postgres_bundles(vec![update("c")]);
        assert_eq!(out.len(), 1);
        assert!(out[0].sql.starts_with("UPDATE \"c\""), "{}", out[0].sql);
    }

    #[test]
    fn postgres_writes_past_the_parameter_limit_are_cut_between_writes() {
        let rows = PG_MAX_PARAMETERS / 2 + 1;
        let out = postgres_bundles(vec![
            insert_bytes("t", rows),
            insert_bytes("u", rows),
            update("c"),
        ]);
        assert_eq!(
            out.len(),
            2,
            "the two large inserts cannot share a statement"
        );
        let counts: Vec<usize> = out
            .iter()
            .map(|s| s.values.as_ref().map_or(0, |v| v.0.len()))
            .collect();
        assert_eq!(counts, vec![rows, rows + 2]);
        assert!(counts.iter().all(|&n| n <= PG_MAX_PARAMETERS));
        // Rows that travel as arrays are a parameter per column: any number share a statement.
        let out = postgres_bundles(vec![insert("t", rows), insert("u", rows), update("c")]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].values.as_ref().map(|v| v.0.len()), Some(4));
    }

    #[test]
    fn a_row_of_sqlite_is_inserted_by_a_statement_of_one_row() {
        let Write::Rows(rows) = insert("t", 3) else {
            unreachable!("insert makes rows")
        };
        assert_eq!(rows.one_row_sql(), "INSERT INTO \"t\" (\"a\") VALUES (?)");
        let two = Rows {
            table: "u",
            columns: vec!["a", "b"],
            nullable: vec![false, true],
            values: vec![Value::from(1i64), Value::String(None)],
            tail: " ON CONFLICT DO NOTHING",
        };
        assert_eq!(
            two.one_row_sql(),
            "INSERT INTO \"u\" (\"a\", \"b\") VALUES (?, ?) ON CONFLICT DO NOTHING"
        );
    }

    #[test]
    fn sqlite_writes_of_a_row_each_are_one_call_of_several_statements() {
        let out = joined(
            vec![insert("t", 1), insert("u", 1), update("c")],
            DatabaseBackend::Sqlite,
        );
        assert_eq!(out.sql.matches(";\n").count(), 2, "{}", out.sql);
        assert_eq!(out.values.as_ref().map(|v| v.0.len()), Some(4));
    }
}
