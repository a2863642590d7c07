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
//!   A multi-row insert carries its rows as one JSON parameter (`jsonb_populate_recordset`), so a plan's
//!   parameters do not grow with its rows; a statement takes at most [`PG_MAX_PARAMETERS`]
//!   parameters, and writes past that would be cut into as many statements as they need,
//!   never one per row.
//! - SQLite: one call of several statements (`INSERT …; INSERT …; UPDATE …`), each prepared and
//!   run in turn on the writer with its own parameters (SQLite runs in the server's process,
//!   [`super::lite`], so there a statement costs no round trip; one call keeps the plan whole).
//!
//! Either way the writes are all in the caller's transaction: an error in any leaves the
//! transaction to roll back, so a plan is written whole or not at all.

use super::WriteTx;
use sea_orm::sea_query::UpdateStatement;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseBackend, EntityName, EntityTrait, IdenStatic,
    Iterable, Statement, StatementBuilder, Value,
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
}

impl Write {
    fn build(self, backend: DatabaseBackend) -> Statement {
        match self {
            Write::Update(s) => StatementBuilder::build(s.as_ref(), &backend),
            Write::Rows(r) => r.build(backend),
        }
    }
}

/// A multi-row insert of whole rows, its text written directly rather than through
/// sea-query: for a thousand rows, building the statement with sea-query (a value expression
/// per cell, then the text and the values taken out again) cost a fifth of AddParticipants'
/// CPU on SQLite.
///
/// On PostgreSQL, two rows or more travel as one JSON parameter (`INSERT INTO "t" ("a", "b")
/// SELECT "a", "b" FROM jsonb_populate_recordset(NULL::"t", $1::jsonb) …`). A thousand rows of
/// fifteen columns are fifteen thousand parameters otherwise: measured on
/// AddParticipants(1000), binding them took PostgreSQL 39 ms and parsing the statement 38 ms
/// (each connection parses each row count anew), as long as inserting the rows. One row, or a
/// value JSON does not carry (bytes), is sent with a parameter per value. `jsonb`, not `json`:
/// a `json` parameter is parsed twice, once checked as it is read and again by the function.
#[derive(Clone, Debug)]
struct Rows {
    table: &'static str,
    columns: Vec<&'static str>,
    /// Row after row, each a value per column.
    values: Vec<Value>,
    /// What follows the rows (`ON CONFLICT …`), without parameters.
    tail: &'static str,
}

impl Rows {
    fn build(self, backend: DatabaseBackend) -> Statement {
        let width = self.columns.len().max(1);
        let columns = self
            .columns
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let head = format!("INSERT INTO \"{}\" ({columns})", self.table);
        if backend == DatabaseBackend::Postgres
            && self.values.len() >= 2 * width
            && let Some(json) = self.json()
        {
            return Statement::from_sql_and_values(
                backend,
                format!(
                    "{head} SELECT {columns} FROM jsonb_populate_recordset(NULL::\"{}\", $1::jsonb){}",
                    self.table, self.tail
                ),
                [Value::String(Some(json))],
            );
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
                sql.push('$');
                sql.push_str(&(i + 1).to_string());
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
        sql.push_str(self.tail);
        Statement::from_sql_and_values(backend, sql, self.values)
    }

    /// The rows as a JSON array of objects keyed by column, for the types JSON carries
    /// (`None` if a value is of another).
    fn json(&self) -> Option<String> {
        use std::fmt::Write as _;
        let width = self.columns.len().max(1);
        let mut out = String::with_capacity(self.values.len() * 24);
        out.push('[');
        for (r, row) in self.values.chunks(width).enumerate() {
            out.push_str(if r == 0 { "{" } else { ",{" });
            for (i, (name, v)) in self.columns.iter().zip(row).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // Column names are identifiers: no character of theirs needs escaping.
                let _ = write!(out, "\"{name}\":");
                match v {
                    Value::String(Some(s)) => out.push_str(&serde_json::to_string(s).ok()?),
                    Value::Bool(Some(b)) => out.push_str(if *b { "true" } else { "false" }),
                    Value::TinyInt(Some(n)) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::SmallInt(Some(n)) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::Int(Some(n)) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::BigInt(Some(n)) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::String(None)
                    | Value::Bool(None)
                    | Value::TinyInt(None)
                    | Value::SmallInt(None)
                    | Value::Int(None)
                    | Value::BigInt(None) => out.push_str("null"),
                    _ => return None,
                }
            }
            out.push('}');
        }
        out.push(']');
        Some(out)
    }
}

/// The writes of one plan, in the order they were added.
#[derive(Debug, Default)]
#[must_use = "writes do nothing until they are run"]
pub struct Writes {
    list: Vec<Write>,
}

impl Writes {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, s: UpdateStatement) {
        self.list.push(Write::Update(Box::new(s)));
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
            values,
            tail,
        }));
    }

    /// Runs every write in `tx`, in as few round trips as the engine allows (see the module
    /// documentation).
    pub async fn run(self, tx: &WriteTx) -> Result<(), Error> {
        if self.list.is_empty() {
            return Ok(());
        }
        let backend = tx.get_database_backend();
        for statement in bundle(self.list, backend) {
            tx.execute_raw(statement).await?;
        }
        Ok(())
    }
}

/// The statements that carry `list` on `backend`.
fn bundle(list: Vec<Write>, backend: DatabaseBackend) -> Vec<Statement> {
    match backend {
        DatabaseBackend::Postgres => postgres_bundles(list),
        _ => vec![joined(list, backend)],
    }
}

/// SQLite: the statements one after another, their parameters in the same order (each
/// statement binds the next unnumbered parameters).
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
/// one JSON parameter, [`Rows`]), consecutive writes grouped while their parameters fit
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
    let mut sql = String::from("WITH ");
    let mut values: Vec<Value> = Vec::new();
    for (i, s) in group.into_iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("\"w{i}\" AS ("));
        sql.push_str(&renumbered(&s.sql, values.len()));
        sql.push(')');
        values.extend(s.values.map(|v| v.0).unwrap_or_default());
    }
    sql.push(' ');
    sql.push_str(&renumbered(&last.sql, values.len()));
    values.extend(last.values.map(|v| v.0).unwrap_or_default());
    Statement::from_sql_and_values(backend, sql, values)
}

/// `sql` with each parameter `$n` outside quotes renumbered `$(n + offset)`.
fn renumbered(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                out.push(c);
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut digits = String::new();
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    digits.push(d);
                }
                let n: usize = digits.parse().unwrap_or(0);
                out.push('$');
                out.push_str(&(n + offset).to_string());
            }
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};

    fn one_column(table: &'static str, values: Vec<Value>) -> Write {
        Write::Rows(Rows {
            table,
            columns: vec!["a"],
            values,
            tail: "",
        })
    }

    fn insert(table: &'static str, rows: usize) -> Write {
        one_column(table, (0..rows).map(|i| Value::from(i as i64)).collect())
    }

    /// Rows whose values JSON does not carry (bytes): inserted with a parameter per value.
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
        let out = bundle(
            vec![insert_bytes("t", 2), insert("u", 1), update("c")],
            DatabaseBackend::Postgres,
        );
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

    #[test]
    fn postgres_rows_travel_as_one_json_parameter() {
        let s = Write::Rows(Rows {
            table: "t",
            columns: vec!["a", "b", "c"],
            values: vec![
                Value::from("x\"y"),
                Value::from(9_007_199_254_740_993_i64),
                Value::String(None),
                Value::from("z"),
                Value::from(-1_i64),
                Value::from(true),
            ],
            tail: " ON CONFLICT (\"a\") DO UPDATE SET \"b\" = \"excluded\".\"b\"",
        });
        let out = bundle(vec![s, update("c")], DatabaseBackend::Postgres);
        assert_eq!(out.len(), 1);
        let sql = &out[0].sql;
        assert!(
            sql.starts_with(
                "WITH \"w0\" AS (INSERT INTO \"t\" (\"a\", \"b\", \"c\") SELECT \"a\", \"b\", \"c\" \
                 FROM jsonb_populate_recordset(NULL::\"t\", $1::jsonb) ON CONFLICT (\"a\") DO UPDATE"
            ),
            "{sql}"
        );
        assert!(
            sql.ends_with("UPDATE \"c\" SET \"a\" = $2 WHERE \"id\" = $3"),
            "{sql}"
        );
        let values = &out[0].values.as_ref().expect("values").0;
        assert_eq!(values.len(), 3);
        let Value::String(Some(json)) = &values[0] else {
            panic!("the rows are one string: {values:?}");
        };
        let rows: serde_json::Value = serde_json::from_str(json).expect("JSON");
        assert_eq!(
            rows,
            serde_json::json!([
                {"a": "x\"y", "b": 9_007_199_254_740_993_i64, "c": null},
                {"a": "z", "b": -1, "c": true},
            ])
        );
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
            values,
            tail,
        })
    }

    #[test]
    fn sqlite_rows_are_one_insert_binding_each_value_in_turn() {
        let out = bundle(
            vec![rows(2, " ON CONFLICT DO NOTHING")],
            DatabaseBackend::Sqlite,
        );
        assert_eq!(
            out[0].sql,
            "INSERT INTO \"t\" (\"a\", \"b\", \"c\") VALUES (?, ?, ?), (?, ?, ?) ON CONFLICT DO NOTHING"
        );
        let values = &out[0].values.as_ref().expect("values").0;
        assert_eq!(values.len(), 6);
        assert_eq!(values[3], Value::from("r\"1".to_owned()));
    }

    #[test]
    fn postgres_rows_are_one_json_parameter_and_one_row_is_plain() {
        let out = bundle(vec![rows(2, ""), update("c")], DatabaseBackend::Postgres);
        assert_eq!(out.len(), 1);
        let sql = &out[0].sql;
        assert!(
            sql.starts_with(
                "WITH \"w0\" AS (INSERT INTO \"t\" (\"a\", \"b\", \"c\") SELECT \"a\", \"b\", \"c\" \
                 FROM jsonb_populate_recordset(NULL::\"t\", $1::jsonb))"
            ),
            "{sql}"
        );
        let values = &out[0].values.as_ref().expect("values").0;
        let Value::String(Some(json)) = &values[0] else {
            panic!("the rows are one string: {values:?}");
        };
        let rows_read: serde_json::Value = serde_json::from_str(json).expect("JSON");
        assert_eq!(
            rows_read,
            serde_json::json!([
                {"a": "r\"0", "b": 0, "c": null},
                {"a": "r\"1", "b": 1, "c": null},
            ])
        );
        let one = bundle(
            vec![rows(1, " ON CONFLICT DO NOTHING")],
            DatabaseBackend::Postgres,
        );
        assert_eq!(
            one[0].sql,
            "INSERT INTO \"t\" (\"a\", \"b\", \"c\") VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        );
    }

    /// Rows holding a value JSON does not carry go as a parameter per value.
    #[test]
    fn postgres_rows_with_bytes_bind_each_value() {
        let write = Write::Rows(Rows {
            table: "t",
            columns: vec!["a"],
            values: vec![Value::from(vec![1u8]), Value::from(vec![2u8])],
            tail: "",
        });
        let out = bundle(vec![write], DatabaseBackend::Postgres);
        assert_eq!(out[0].sql, "INSERT INTO \"t\" (\"a\") VALUES ($1), ($2)");
        assert_eq!(out[0].values.as_ref().map(|v| v.0.len()), Some(2));
    }

    #[test]
    fn renumbering_skips_quoted_text() {
        assert_eq!(
            renumbered("SELECT $1, '$2', \"$3\", $10 WHERE x = $2", 5),
            "SELECT $6, '$2', \"$3\", $15 WHERE x = $7"
        );
    }

    #[test]
    fn one_postgres_write_is_sent_as_it_is() {
        let out = bundle(vec![update("c")], DatabaseBackend::Postgres);
        assert_eq!(out.len(), 1);
        assert!(out[0].sql.starts_with("UPDATE \"c\""), "{}", out[0].sql);
    }

    #[test]
    fn postgres_writes_past_the_parameter_limit_are_cut_between_writes() {
        let rows = PG_MAX_PARAMETERS / 2 + 1;
        let out = bundle(
            vec![
                insert_bytes("t", rows),
                insert_bytes("u", rows),
                update("c"),
            ],
            DatabaseBackend::Postgres,
        );
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
        // Rows JSON can carry are one parameter: any number share a statement.
        let out = bundle(
            vec![insert("t", rows), insert("u", rows), update("c")],
            DatabaseBackend::Postgres,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].values.as_ref().map(|v| v.0.len()), Some(4));
    }

    #[test]
    fn sqlite_writes_are_one_call_of_several_statements() {
        let out = bundle(
            vec![insert("t", 2), insert("u", 1), update("c")],
            DatabaseBackend::Sqlite,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].sql.matches(";\n").count(), 2, "{}", out[0].sql);
        assert_eq!(out[0].values.as_ref().map(|v| v.0.len()), Some(5));
    }
}
