//! The apply step of load → decide → apply: the statements that write one decided plan, sent
//! to the engine together instead of one round trip each.
//!
//! A plan writes to several tables (participants, the timeline, the outbox, the conversation
//! row). Each of those statements alone costs a round trip: on PostgreSQL a network exchange,
//! on SQLite a hand-off to the connection's worker thread and back, taken while the one writer
//! is held. [`Writes`] collects them and [`Writes::run`] sends them as few as possible:
//!
//! - PostgreSQL: one statement, the writes as data-modifying common table expressions
//!   (`WITH w0 AS (INSERT …), w1 AS (INSERT …) UPDATE …`). They run on one snapshot and none
//!   reads another's rows, which a plan's writes never need: each writes rows of its own.
//!   A statement takes at most [`PG_MAX_PARAMETERS`] parameters, so a large plan is cut into as
//!   many statements as that needs, never one per row.
//! - SQLite: one call of several statements (`INSERT …; INSERT …; UPDATE …`), each prepared and
//!   run in turn on the writer with its own parameters, in one hand-off.
//!
//! Either way the writes are all in the caller's transaction: an error in any leaves the
//! transaction to roll back, so a plan is written whole or not at all.

use sea_orm::sea_query::{
    Alias, CommonTableExpression, InsertStatement, UpdateStatement, WithClause,
};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseTransaction, Statement, StatementBuilder, Value,
};

use crate::error::Error;

/// The most parameters one PostgreSQL statement may carry (the protocol counts them in 16
/// bits).
pub const PG_MAX_PARAMETERS: usize = 65_535;

/// One write of a plan.
#[derive(Clone, Debug)]
enum Write {
    Insert(InsertStatement),
    Update(UpdateStatement),
}

impl Write {
    fn build(&self, backend: DatabaseBackend) -> Statement {
        match self {
            Write::Insert(s) => StatementBuilder::build(s, &backend),
            Write::Update(s) => StatementBuilder::build(s, &backend),
        }
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

    pub fn insert(&mut self, s: InsertStatement) {
        self.list.push(Write::Insert(s));
    }

    pub fn update(&mut self, s: UpdateStatement) {
        self.list.push(Write::Update(s));
    }

    /// Runs every write in `tx`, in as few round trips as the engine allows (see the module
    /// documentation).
    pub async fn run(self, tx: &DatabaseTransaction) -> Result<(), Error> {
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
    for write in &list {
        let s = write.build(backend);
        if !sql.is_empty() {
            sql.push_str(";\n");
        }
        sql.push_str(&s.sql);
        values.extend(s.values.map(|v| v.0).unwrap_or_default());
    }
    Statement::from_sql_and_values(backend, sql, values)
}

/// PostgreSQL: consecutive writes grouped while their parameters fit one statement, each
/// group one statement.
fn postgres_bundles(list: Vec<Write>) -> Vec<Statement> {
    let backend = DatabaseBackend::Postgres;
    let mut out = Vec::new();
    let mut group: Vec<Write> = Vec::new();
    let mut parameters = 0;
    for write in list {
        let n = write
            .build(backend)
            .values
            .as_ref()
            .map_or(0, |v| v.0.len());
        if !group.is_empty() && parameters + n > PG_MAX_PARAMETERS {
            out.push(with_query(std::mem::take(&mut group)));
            parameters = 0;
        }
        parameters += n;
        group.push(write);
    }
    if !group.is_empty() {
        out.push(with_query(group));
    }
    out
}

/// One PostgreSQL statement for `group`: the last write is the statement, the others its
/// common table expressions.
fn with_query(mut group: Vec<Write>) -> Statement {
    let backend = DatabaseBackend::Postgres;
    let Some(last) = group.pop() else {
        return Statement::from_string(backend, "SELECT 1");
    };
    if group.is_empty() {
        return last.build(backend);
    }
    let mut with = WithClause::new();
    for (i, write) in group.into_iter().enumerate() {
        let mut cte = CommonTableExpression::new();
        cte.table_name(Alias::new(format!("w{i}")));
        match write {
            Write::Insert(s) => cte.query(s),
            Write::Update(s) => cte.query(s),
        };
        with.cte(cte);
    }
    let query = match last {
        Write::Insert(s) => with.query(s),
        Write::Update(s) => with.query(s),
    };
    StatementBuilder::build(&query, &backend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::sea_query::{Expr, ExprTrait, Query};

    fn insert(table: &str, rows: usize) -> Write {
        let mut s = Query::insert();
        s.into_table(Alias::new(table)).columns([Alias::new("a")]);
        for i in 0..rows {
            s.values_panic([Expr::value(i as i64)]);
        }
        Write::Insert(s)
    }

    fn update(table: &str) -> Write {
        Write::Update(
            Query::update()
                .table(Alias::new(table))
                .value(Alias::new("a"), 7)
                .and_where(Expr::col(Alias::new("id")).eq("x"))
                .to_owned(),
        )
    }

    #[test]
    fn postgres_writes_become_one_statement_with_their_parameters_numbered_in_turn() {
        let out = bundle(
            vec![insert("t", 2), insert("u", 1), update("c")],
            DatabaseBackend::Postgres,
        );
        assert_eq!(out.len(), 1);
        let sql = &out[0].sql;
        assert!(
            sql.starts_with("WITH \"w0\" AS (INSERT INTO \"t\""),
            "{sql}"
        );
        assert!(sql.contains("\"w1\" AS (INSERT INTO \"u\""), "{sql}");
        assert!(
            sql.contains("UPDATE \"c\" SET \"a\" = $4 WHERE \"id\" = $5"),
            "{sql}"
        );
        assert_eq!(out[0].values.as_ref().map(|v| v.0.len()), Some(5));
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
            vec![insert("t", rows), insert("u", rows), update("c")],
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
