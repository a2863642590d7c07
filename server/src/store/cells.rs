//! Rows read by column position, on either engine.
//!
//! The store's hottest reads ([`super::conversation_with_caller`], the participants' page, the
//! mutations' locking read) return many columns of several tables in one row. Read by name,
//! through sea-orm's rows, each column costs a prefixed name built and looked up; on a SQLite
//! file each row was first built as a map of names ([`super::lite`]). Read by position, a
//! SQLite row is decoded where the engine left it, and a PostgreSQL row by index.
//!
//! [`EachRow::each_row`] hands each row of a statement to a closure as [`Cells`];
//! [`model_at`] reads an entity's model from the columns starting at a position, in the order
//! of the entity's columns (the order in which the caller's read lists them), through a model
//! filled column by column. The reads every call makes (the caller's directory entry,
//! conversation and seat; a page of participants; AddParticipants' people) read their rows cell
//! by cell with [`text`], [`int`], [`big_int`] and [`boolean`] instead (`store::candidate_at`,
//! `store::conversation_at`, `store::seat_at`), each tested to read what [`model_at`] reads.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ColumnType, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbErr, EntityTrait, Iterable, QueryResult, Statement, TryIntoModel, Value,
};

/// The variant of [`Value`] a column's values are read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int,
    BigInt,
    Bool,
    Text,
    Bytes,
    Double,
    /// A computed column: its value's own type.
    Natural,
}

impl Kind {
    /// The variant an entity's field of column type `t` decodes from.
    pub fn of(t: &ColumnType) -> Self {
        match t {
            ColumnType::Integer | ColumnType::SmallInteger | ColumnType::TinyInteger => Kind::Int,
            ColumnType::BigInteger => Kind::BigInt,
            ColumnType::Boolean => Kind::Bool,
            ColumnType::String(_) | ColumnType::Text | ColumnType::Char(_) => Kind::Text,
            ColumnType::Binary(_) | ColumnType::VarBinary(_) | ColumnType::Blob => Kind::Bytes,
            ColumnType::Double | ColumnType::Float => Kind::Double,
            _ => Kind::Natural,
        }
    }
}

/// One row of a result, read by column position.
pub trait Cells {
    /// The value of column `i` as `kind`'s variant (`NULL` as that variant's `None`).
    fn value(&self, i: usize, kind: Kind) -> Result<Value, DbErr>;
}

impl Cells for QueryResult {
    fn value(&self, i: usize, kind: Kind) -> Result<Value, DbErr> {
        Ok(match kind {
            Kind::Int => Value::Int(self.try_get_by_index(i)?),
            Kind::BigInt => Value::BigInt(self.try_get_by_index(i)?),
            Kind::Bool => Value::Bool(self.try_get_by_index(i)?),
            Kind::Text | Kind::Natural => Value::String(self.try_get_by_index(i)?),
            Kind::Bytes => Value::Bytes(self.try_get_by_index(i)?),
            Kind::Double => Value::Double(self.try_get_by_index(i)?),
        })
    }
}

/// The model of entity `E` held by the columns of `row` from position `at`, one per column of
/// `E` in its order, or `None` where a column `E` does not allow to be `NULL` is (a left join
/// that found no row).
pub fn model_at<E>(row: &dyn Cells, at: usize) -> Result<Option<E::Model>, DbErr>
where
    E: EntityTrait,
    E::ActiveModel: TryIntoModel<E::Model>,
{
    Layout::<E>::new().read(row, at)
}

/// How [`model_at`] reads `E`'s columns: each one's kind and whether it may be `NULL`, found
/// once for the rows of a statement rather than for each of their cells.
pub struct Layout<E: EntityTrait> {
    columns: Vec<(E::Column, Kind, bool)>,
}

impl<E> Layout<E>
where
    E: EntityTrait,
    E::ActiveModel: TryIntoModel<E::Model>,
{
    pub fn new() -> Self {
        let columns = E::Column::iter()
            .map(|column| {
                let def = column.def();
                (column, Kind::of(def.get_column_type()), def.is_null())
            })
            .collect();
        Self { columns }
    }

    /// [`model_at`] with this layout.
    pub fn read(&self, row: &dyn Cells, at: usize) -> Result<Option<E::Model>, DbErr> {
        let mut model = <E::ActiveModel as ActiveModelTrait>::default();
        for (i, (column, kind, nullable)) in self.columns.iter().enumerate() {
            let value = row.value(at + i, *kind)?;
            if !nullable && is_null(&value) {
                return Ok(None);
            }
            model.try_set(*column, value)?;
        }
        model.try_into_model().map(Some)
    }
}

impl<E> Default for Layout<E>
where
    E: EntityTrait,
    E::ActiveModel: TryIntoModel<E::Model>,
{
    fn default() -> Self {
        Self::new()
    }
}

/// Readers of one column as one type, `None` for `NULL`, a value of another type refused.
macro_rules! typed_cells {
    ($($(#[$doc:meta])* $name:ident: $t:ty = $kind:ident / $variant:ident, $wanted:literal;)*) => {$(
        $(#[$doc])*
        pub fn $name(row: &dyn Cells, i: usize) -> Result<Option<$t>, DbErr> {
            match row.value(i, Kind::$kind)? {
                Value::$variant(x) => Ok(x),
                other => Err(mismatch(i, $wanted, &other)),
            }
        }
    )*};
}

typed_cells! {
    /// Column `i` of `row` as text (`None` for `NULL`).
    text: String = Text / String, "text";
    /// Column `i` of `row` as a 32-bit integer (`None` for `NULL`).
    int: i32 = Int / Int, "a 32-bit integer";
    /// Column `i` of `row` as a 64-bit integer (`None` for `NULL`).
    big_int: i64 = BigInt / BigInt, "a 64-bit integer";
    /// Column `i` of `row` as a boolean (`None` for `NULL`).
    boolean: bool = Bool / Bool, "a boolean";
}

fn mismatch(i: usize, wanted: &str, got: &Value) -> DbErr {
    DbErr::Custom(format!("column {i} holds {got:?}, not {wanted}"))
}

/// How many columns [`model_at`] reads for `E`.
pub fn width<E: EntityTrait>() -> usize {
    E::Column::iter().count()
}

fn is_null(v: &Value) -> bool {
    matches!(
        v,
        Value::Int(None)
            | Value::BigInt(None)
            | Value::Bool(None)
            | Value::String(None)
            | Value::Bytes(None)
            | Value::Double(None)
    )
}

/// The closure [`EachRow::each_row`] hands each row to.
pub type RowSink<'a> = dyn FnMut(&dyn Cells) -> Result<(), DbErr> + Send + 'a;

/// A connection that runs a statement and hands its rows, by position, to a closure.
#[async_trait::async_trait]
pub trait EachRow: ConnectionTrait {
    /// Runs `stmt` and calls `each` with each of its rows, in order.
    async fn each_row(&self, stmt: Statement, each: &mut RowSink<'_>) -> Result<(), DbErr> {
        for row in self.query_all_raw(stmt).await? {
            each(&row)?;
        }
        Ok(())
    }

    /// Runs each of `statements` in order as [`Self::each_row`] does. On PostgreSQL, as a
    /// transaction's first statements, they go in one message with the transaction's opening
    /// (`pg::PgTx::each_opening`).
    async fn each_row_opening(&self, statements: Vec<Opening<'_, '_>>) -> Result<(), DbErr> {
        for Opening { stmt, each, .. } in statements {
            self.each_row(stmt, each).await?;
        }
        Ok(())
    }
}

/// A statement of [`EachRow::each_row_opening`], and where its rows go. On PostgreSQL it is
/// kept prepared on each connection under `name`, a name for this statement's text alone.
pub struct Opening<'a, 'b> {
    pub name: &'static str,
    pub stmt: Statement,
    pub each: &'a mut RowSink<'b>,
}

#[async_trait::async_trait]
impl EachRow for DatabaseConnection {}

#[async_trait::async_trait]
impl EachRow for DatabaseTransaction {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::entities::participants;

    fn read(sql: &str, at: usize) -> Result<Option<participants::Model>, DbErr> {
        let conn =
            rusqlite::Connection::open_in_memory().map_err(|e| DbErr::Custom(e.to_string()))?;
        conn.query_row(sql, [], |row| Ok(model_at::<participants::Entity>(row, at)))
            .map_err(|e| DbErr::Custom(e.to_string()))?
    }

    /// A model is read from its columns in the entity's order, from the position given.
    #[test]
    fn a_model_is_read_by_position() {
        let m = read(
            "SELECT 'skipped', 'conv', 'bob', 'acme', 1, 2, 3, 'alice', 10, NULL, NULL, 4, NULL, NULL",
            1,
        )
        .expect("decodes")
        .expect("a row");
        assert_eq!(width::<participants::Entity>(), 13);
        assert_eq!(
            (m.conversation_id.as_str(), m.user_id.as_str()),
            ("conv", "bob")
        );
        assert_eq!(
            (m.tenant_id.as_str(), m.added_by.as_str()),
            ("acme", "alice")
        );
        assert_eq!((m.kind, m.role, m.state), (1, 2, 3));
        assert_eq!((m.join_time, m.history_from), (10, 4));
        assert_eq!(
            (m.removed_by, m.remove_time, m.removed_seq),
            (None, None, None)
        );
    }

    /// The columns of a left join that found nothing are no model; a nullable column's `NULL`
    /// is that field's `None`.
    #[test]
    fn a_required_column_null_is_no_model() {
        let none = read(&format!("SELECT {}", vec!["NULL"; 13].join(", ")), 0).expect("decodes");
        assert_eq!(none, None);
        let part = read(
            "SELECT 'conv', NULL, 'acme', 1, 2, 3, 'alice', 10, NULL, NULL, 4, NULL, NULL",
            0,
        )
        .expect("decodes");
        assert_eq!(part, None);
    }

    /// The typed readers give a column's value, `None` for `NULL`, and refuse a value of
    /// another type instead of converting it.
    #[test]
    fn typed_cells_read_their_type_or_refuse() {
        let conn = rusqlite::Connection::open_in_memory().expect("memory");
        conn.query_row("SELECT 'ann', NULL, 7, 4294967296, 'x'", [], |row| {
            assert_eq!(text(row, 0).expect("text").as_deref(), Some("ann"));
            assert_eq!(text(row, 1).expect("null text"), None);
            assert_eq!(int(row, 1).expect("null int"), None);
            assert_eq!(int(row, 2).expect("int"), Some(7));
            assert_eq!(big_int(row, 3).expect("big"), Some(4_294_967_296));
            assert!(int(row, 3).is_err(), "past 32 bits");
            assert!(text(row, 2).is_err(), "a number is no text");
            assert!(big_int(row, 4).is_err(), "text is no number");
            Ok(())
        })
        .expect("one row");
    }

    /// A value that does not fit its field is an error, not a wrapped number.
    #[test]
    fn a_value_past_its_field_is_an_error() {
        let err = read(
            "SELECT 'conv', 'bob', 'acme', 4294967296, 2, 3, 'alice', 10, NULL, NULL, 4, NULL, NULL",
            0,
        );
        assert!(err.is_err(), "{err:?}");
    }
}
