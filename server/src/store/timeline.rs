//! Reading a conversation's timeline within a viewer's window, paged by `seq`.
//!
//! The page is one statement whose text is made once per engine and variant (order, a filter
//! on the entry's type, the external viewer's filter) and whose rows are read by position
//! ([`super::cells`]): `conversation_id = ? AND seq >= ? AND seq < ?` over the primary key,
//! the two bounds the viewer's window and the page token together, so the engine reads
//! `limit` entries of the key from the page's start whatever the timeline's depth.

use sea_orm::{DatabaseBackend, DbErr, Statement, Value};

use super::cells::{Cells, EachRow, big_int, boolean, int, text};
use super::{ITEM_EVENT, ITEM_MESSAGE};
use crate::domain::model::{Entry, EventType, TimelineItem};
use crate::domain::visibility::ReadWindow;
use crate::error::Error;

/// Which entries a list wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Only {
    All,
    Messages,
    Events,
}

/// The columns a page reads, in the order [`item_at`] reads them (not the conversation's id,
/// which the call knows).
pub(crate) const COLUMNS: &str = "seq, item_type, message_id, sender_id, body, event_type, actor_id, \
                       subject_ids, internal_only, create_time";

/// Up to `limit` items of the window, after (in list order) the seq `after`.
pub async fn list<C: EachRow>(
    db: &C,
    conversation_id: &str,
    window: ReadWindow,
    only: Only,
    newest_first: bool,
    after: Option<i64>,
    limit: u64,
) -> Result<Vec<TimelineItem>, Error> {
    let page = Page {
        window,
        only,
        newest_first,
        after,
        limit,
    };
    let Some(statement) = page.statement(db.get_database_backend(), conversation_id) else {
        return Ok(Vec::new());
    };
    let mut items = Vec::new();
    db.each_row(statement, &mut |row: &dyn Cells| {
        items.push(item_at(row, conversation_id)?);
        Ok(())
    })
    .await?;
    Ok(items)
}

/// A page of a timeline as [`list`] reads it.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub window: ReadWindow,
    pub only: Only,
    pub newest_first: bool,
    pub after: Option<i64>,
    pub limit: u64,
}

impl Page {
    /// The statement that reads this page of `conversation_id` on `backend`, `None` where the
    /// page is empty whatever is stored (the token is past the window, or the limit 0).
    pub fn statement(&self, backend: DatabaseBackend, conversation_id: &str) -> Option<Statement> {
        // The seqs the page may hold: from `low` up to, not including, `high`.
        let (mut low, mut high) = (self.window.from, self.window.until.unwrap_or(i64::MAX));
        match self.after {
            Some(after) if self.newest_first => high = high.min(after),
            Some(after) => low = low.max(after.saturating_add(1)),
            None => {}
        }
        if low >= high || self.limit == 0 {
            return None;
        }
        let values: Vec<Value> = vec![
            conversation_id.into(),
            low.into(),
            high.into(),
            i64::try_from(self.limit).unwrap_or(i64::MAX).into(),
        ];
        let sql = list_sql(
            backend == DatabaseBackend::Postgres,
            self.newest_first,
            self.only,
            self.window.hide_internal_events,
        );
        Some(Statement::from_sql_and_values(backend, sql, values))
    }
}

/// The text of [`list`]'s statement. Placeholders: the conversation, the lowest seq, the seq
/// past the highest, the limit.
///
/// A page of one kind of entry names its kind as a constant, so that PostgreSQL plans it, even
/// generically, by how common that kind is (its statistics), and reads the rare kind through
/// `timeline_by_type`; SQLite, which keeps no statistics and would read the key past every
/// entry of the other kind, is told to use that index.
fn list_sql(postgres: bool, newest_first: bool, only: Only, hide_internal: bool) -> &'static str {
    const ONLY: [Only; 3] = [Only::All, Only::Messages, Only::Events];
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        let mut all = Vec::with_capacity(24);
        for postgres in [false, true] {
            for only in ONLY {
                for hide_internal in [false, true] {
                    for newest_first in [false, true] {
                        let mark = |n: usize| super::mark(postgres, n);
                        let (index, kind) = match only {
                            Only::All => ("", None),
                            Only::Messages => (" INDEXED BY timeline_by_type", Some(ITEM_MESSAGE)),
                            Only::Events => (" INDEXED BY timeline_by_type", Some(ITEM_EVENT)),
                        };
                        let index = if postgres { "" } else { index };
                        let mut sql = format!(
                            "SELECT {COLUMNS} FROM timeline{index} WHERE conversation_id = {} \
                             AND seq >= {} AND seq < {}",
                            mark(1),
                            mark(2),
                            mark(3)
                        );
                        if let Some(kind) = kind {
                            sql.push_str(&format!(" AND item_type = {kind}"));
                        }
                        if hide_internal {
                            sql.push_str(" AND internal_only = FALSE");
                        }
                        let order = if newest_first { "DESC" } else { "ASC" };
                        sql.push_str(&format!(" ORDER BY seq {order} LIMIT {}", mark(4)));
                        all.push(sql);
                    }
                }
            }
        }
        all
    });
    let only = ONLY.iter().position(|o| *o == only).unwrap_or(0);
    let variant = ((usize::from(postgres) * 3 + only) * 2 + usize::from(hide_internal)) * 2
        + usize::from(newest_first);
    &all[variant]
}

/// The item of conversation `conversation_id` held by `row`, in the order of [`COLUMNS`].
pub(crate) fn item_at(row: &dyn Cells, conversation_id: &str) -> Result<TimelineItem, DbErr> {
    let missing =
        |i: usize| move || DbErr::Custom(format!("a timeline entry's column {i} is NULL"));
    let seq = big_int(row, 0)?.ok_or_else(missing(0))?;
    let item_type = int(row, 1)?.ok_or_else(missing(1))?;
    let entry = if item_type == ITEM_MESSAGE {
        Entry::Message {
            id: text(row, 2)?.unwrap_or_default(),
            sender_id: text(row, 3)?.unwrap_or_default(),
            body: text(row, 4)?.unwrap_or_default(),
        }
    } else {
        let raw = int(row, 5)?.unwrap_or_default();
        Entry::Event {
            event_type: EventType::try_from(raw)
                .map_err(|_| DbErr::Custom(format!("stored event type {raw} is unknown")))?,
            actor_id: text(row, 6)?.unwrap_or_default(),
            subject_ids: text(row, 7)?
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| DbErr::Custom(format!("stored subject ids: {e}")))?
                .unwrap_or_default(),
            internal_only: boolean(row, 8)?.ok_or_else(missing(8))?,
        }
    };
    Ok(TimelineItem {
        conversation_id: conversation_id.to_owned(),
        seq,
        create_time: big_int(row, 9)?.ok_or_else(missing(9))?,
        entry,
    })
}

/// Conversations whose [`shown_tops`] one statement looks up.
pub const TOPS_PER_STATEMENT: usize = 100;

/// For each `(conversation_id, from, top)`, the highest seq in `from..=top` that is not an
/// internal-only event (what an external viewer is shown last, rule 18), if any. One statement
/// per [`TOPS_PER_STATEMENT`] conversations, each a walk down its key from `top` past the
/// internal-only events there.
pub async fn shown_tops<C: EachRow>(
    db: &C,
    windows: &[(String, i64, i64)],
) -> Result<std::collections::HashMap<String, i64>, Error> {
    let backend = db.get_database_backend();
    let postgres = backend == DatabaseBackend::Postgres;
    let mut tops = std::collections::HashMap::with_capacity(windows.len());
    for chunk in windows.chunks(TOPS_PER_STATEMENT) {
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * 3);
        let parts: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(i, (id, from, top))| {
                values.extend([id.clone().into(), (*from).into(), (*top).into()]);
                let (c, f, t) = (
                    super::mark(postgres, 3 * i + 1),
                    super::mark(postgres, 3 * i + 2),
                    super::mark(postgres, 3 * i + 3),
                );
                format!(
                    "SELECT * FROM (SELECT conversation_id, seq FROM timeline \
                     WHERE conversation_id = {c} AND seq >= {f} AND seq <= {t} \
                     AND internal_only = FALSE ORDER BY seq DESC LIMIT 1) AS top{i}"
                )
            })
            .collect();
        let sql = parts.join(" UNION ALL ");
        db.each_row(
            Statement::from_sql_and_values(backend, sql, values),
            &mut |row: &dyn Cells| {
                if let (Some(id), Some(seq)) = (text(row, 0)?, big_int(row, 1)?) {
                    tops.insert(id, seq);
                }
                Ok(())
            },
        )
        .await?;
    }
    Ok(tops)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored message and a stored event are read back as the items they were written from.
    #[test]
    fn items_are_read_by_position() {
        let conn = rusqlite::Connection::open_in_memory().expect("memory");
        let message = conn
            .query_row(
                "SELECT 7, 1, 'm1', 'ann', 'hi', NULL, NULL, NULL, 0, 99",
                [],
                |row| Ok(item_at(row, "c1")),
            )
            .expect("a row")
            .expect("an item");
        assert_eq!(
            message,
            TimelineItem {
                conversation_id: "c1".into(),
                seq: 7,
                create_time: 99,
                entry: Entry::Message {
                    id: "m1".into(),
                    sender_id: "ann".into(),
                    body: "hi".into()
                },
            }
        );
        let event = conn
            .query_row(
                &format!(
                    "SELECT 8, 2, NULL, NULL, NULL, {}, 'ann', '[\"bob\",\"cy\"]', 1, 100",
                    EventType::ParticipantAdded as i32
                ),
                [],
                |row| Ok(item_at(row, "c1")),
            )
            .expect("a row")
            .expect("an item");
        assert_eq!(
            event.entry,
            Entry::Event {
                event_type: EventType::ParticipantAdded,
                actor_id: "ann".into(),
                subject_ids: vec!["bob".into(), "cy".into()],
                internal_only: true,
            }
        );
        assert_eq!((event.seq, event.create_time), (8, 100));
    }

    /// A stored value the model cannot hold is an error, not a default.
    #[test]
    fn unreadable_items_are_errors() {
        let conn = rusqlite::Connection::open_in_memory().expect("memory");
        for sql in [
            "SELECT NULL, 1, 'm1', 'ann', 'hi', NULL, NULL, NULL, 0, 99",
            "SELECT 8, 2, NULL, NULL, NULL, 999, 'ann', '[]', 0, 100",
            "SELECT 8, 2, NULL, NULL, NULL, 1, 'ann', 'not json', 0, 100",
        ] {
            let read = conn
                .query_row(sql, [], |row| Ok(item_at(row, "c1")))
                .expect("a row");
            assert!(read.is_err(), "{sql}: {read:?}");
        }
    }

    /// Each variant's text reads what it is asked for, with the placeholders its values fill.
    #[test]
    fn statements_are_the_variants_asked_for() {
        for postgres in [false, true] {
            for only in [Only::All, Only::Messages, Only::Events] {
                for (desc, hide) in [(false, false), (false, true), (true, false), (true, true)] {
                    let sql = list_sql(postgres, desc, only, hide);
                    let mark = super::super::mark(postgres, 4);
                    assert!(sql.ends_with(&format!("LIMIT {mark}")), "{sql}");
                    let kind = match only {
                        Only::All => None,
                        Only::Messages => Some(ITEM_MESSAGE),
                        Only::Events => Some(ITEM_EVENT),
                    };
                    assert_eq!(sql.contains("item_type ="), kind.is_some(), "{sql}");
                    if let Some(kind) = kind {
                        assert!(sql.contains(&format!("item_type = {kind} ")), "{sql}");
                    }
                    assert_eq!(
                        sql.contains("INDEXED BY timeline_by_type"),
                        kind.is_some() && !postgres,
                        "{sql}"
                    );
                    assert_eq!(sql.contains("internal_only = FALSE"), hide, "{sql}");
                    assert_eq!(sql.contains("DESC"), desc, "{sql}");
                    assert_eq!(sql.contains("$1"), postgres, "{sql}");
                }
            }
        }
    }
}
