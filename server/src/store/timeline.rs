//! Reading a conversation's timeline within a viewer's window, paged by `seq`.

use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::entities::timeline;
use super::{ITEM_EVENT, ITEM_MESSAGE, item_from};
use crate::domain::model::TimelineItem;
use crate::domain::visibility::ReadWindow;
use crate::error::Error;

/// Which entries a list wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Only {
    All,
    Messages,
    Events,
}

/// Up to `limit` items of the window, after (in list order) the seq `after`.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    conversation_id: &str,
    window: ReadWindow,
    only: Only,
    newest_first: bool,
    after: Option<i64>,
    limit: u64,
) -> Result<Vec<TimelineItem>, Error> {
    use timeline::Column as T;
    let mut cond = Condition::all()
        .add(T::ConversationId.eq(conversation_id))
        .add(T::Seq.gte(window.from));
    if let Some(until) = window.until {
        cond = cond.add(T::Seq.lt(until));
    }
    match only {
        Only::Messages => cond = cond.add(T::ItemType.eq(ITEM_MESSAGE)),
        Only::Events => cond = cond.add(T::ItemType.eq(ITEM_EVENT)),
        Only::All => {}
    }
    if window.hide_internal_events {
        cond = cond.add(T::InternalOnly.eq(false));
    }
    if let Some(after) = after {
        cond = cond.add(if newest_first {
            T::Seq.lt(after)
        } else {
            T::Seq.gt(after)
        });
    }
    let q = timeline::Entity::find().filter(cond);
    let q = if newest_first {
        q.order_by_desc(T::Seq)
    } else {
        q.order_by_asc(T::Seq)
    };
    q.limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(item_from)
        .collect()
}
