//! The tenant directory: users and groups.

use super::WriteTx;
use std::collections::HashMap;

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, EntityTrait, FromQueryResult,
    IdenStatic, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Select,
    prelude::Expr,
    sea_query::{ExprTrait, OnConflict, Order},
};

use super::entities::{group_members, groups, users};
use super::user_from;
use crate::domain::model::{Group, User, UserStatus, now_micros};
use crate::error::Error;

fn user_row(u: &User) -> users::ActiveModel {
    users::ActiveModel {
        tenant_id: Set(u.tenant_id.clone()),
        id: Set(u.id.clone()),
        display_name: Set(u.display_name.clone()),
        name_lower: Set(u.display_name.to_lowercase()),
        email: Set(u.email.clone()),
        email_lower: Set(u.email.to_lowercase()),
        kind: Set(u.kind as i32),
        status: Set(u.status as i32),
        create_time: Set(u.create_time),
        update_time: Set(u.update_time),
    }
}

/// Creates or replaces a user (its `create_time` is kept), in one statement that returns the
/// row as stored: `INSERT … ON CONFLICT … DO UPDATE … RETURNING` (PostgreSQL, SQLite 3.35+).
pub async fn upsert_user<C: ConnectionTrait>(db: &C, user: User) -> Result<User, Error> {
    use users::Column as C;
    let mut upsert = users::Entity::insert(user_row(&user))
        .on_conflict(
            OnConflict::columns([C::TenantId, C::Id])
                .update_columns([
                    C::DisplayName,
                    C::NameLower,
                    C::Email,
                    C::EmailLower,
                    C::Kind,
                    C::Status,
                    C::UpdateTime,
                ])
                .to_owned(),
        )
        .into_query();
    // Built by hand rather than with `exec_with_returning`, which falls back to an insert and a
    // read on SQLite unless sea-orm is built with its `sqlite-use-returning-for-3_35` feature.
    upsert.returning_all();
    let row = db
        .query_one(&upsert)
        .await?
        .ok_or_else(|| Error::Internal("an upsert returned no user".into()))?;
    user_from(users::Model::from_query_result(&row, "")?)
}

/// Adds a user if the directory does not know it yet (a principal's first call).
pub async fn insert_user_if_missing<C: ConnectionTrait>(db: &C, user: User) -> Result<(), Error> {
    users::Entity::insert(user_row(&user))
        .on_conflict(
            OnConflict::columns([users::Column::TenantId, users::Column::Id])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn get_user<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    id: &str,
) -> Result<Option<User>, Error> {
    users::Entity::find_by_id((tenant_id.to_owned(), id.to_owned()))
        .one(db)
        .await?
        .map(user_from)
        .transpose()
}

/// The users among `ids`, in one query.
pub async fn users_by_id<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    ids: &[String],
) -> Result<HashMap<String, User>, Error> {
    let mut found = HashMap::new();
    for batch in super::distinct(ids).chunks(super::IDS_PER_LOOKUP) {
        for m in users::Entity::find()
            .filter(users::Column::TenantId.eq(tenant_id))
            .filter(users::Column::Id.is_in(batch.iter().map(|s| s.as_str())))
            .all(db)
            .await?
        {
            let u = user_from(m)?;
            found.insert(u.id.clone(), u);
        }
    }
    Ok(found)
}

/// The users whose email is among `emails_lower`, in one query, keyed by lower-case email.
/// When several users share an email, the one with the smallest id wins.
pub async fn users_by_email<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    emails_lower: &[String],
) -> Result<HashMap<String, User>, Error> {
    if emails_lower.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = users::Entity::find()
        .filter(users::Column::TenantId.eq(tenant_id))
        .filter(users::Column::EmailLower.is_in(emails_lower.iter().cloned()))
        .order_by_desc(users::Column::Id)
        .all(db)
        .await?;
    rows.into_iter()
        .map(|m| user_from(m).map(|u| (u.email.to_lowercase(), u)))
        .collect()
}

/// Users by id, after `after`, at most `limit`.
pub async fn list_users(
    db: &super::Conn,
    tenant_id: &str,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<User>, Error> {
    let mut q = users::Entity::find().filter(users::Column::TenantId.eq(tenant_id));
    if let Some(after) = after {
        q = q.filter(users::Column::Id.gt(after));
    }
    q.order_by_asc(users::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(user_from)
        .collect()
}

/// Users whose display name or email starts with `prefix` (case-insensitive), by name then id.
pub async fn search_users(
    db: &super::Conn,
    tenant_id: &str,
    prefix: &str,
    limit: u64,
) -> Result<Vec<User>, Error> {
    search_users_query(db.get_database_backend(), tenant_id, prefix, limit)
        .all(db)
        .await?
        .into_iter()
        .map(user_from)
        .collect()
}

/// The statement behind [`search_users`] (public so that a test can ask the engine for its
/// plan). A prefix is a range of the lower-cased columns, `[prefix, next)`, which a b-tree
/// index on `(tenant_id, name_lower)` or `(tenant_id, email_lower)` serves on both engines;
/// `LIKE 'prefix%'` is served by neither (SQLite's LIKE ignores ASCII case, PostgreSQL's needs
/// a byte-ordered index).
///
/// The range holds exactly the strings starting with the prefix only in code point order:
/// SQLite's BINARY collation (UTF-8 bytes compare in code point order), and PostgreSQL's "C"
/// collation, named here whatever the database's default, with indexes of that collation
/// (`users_name_prefix`, `users_email_prefix`). The order of the results is unchanged.
pub fn search_users_query(
    backend: DatabaseBackend,
    tenant_id: &str,
    prefix: &str,
    limit: u64,
) -> Select<users::Entity> {
    let lower = prefix.to_lowercase();
    let next = prefix_successor(&lower);
    let column = |c: users::Column| match backend {
        DatabaseBackend::Postgres => Expr::cust(format!(r#""users"."{}" COLLATE "C""#, c.as_str())),
        _ => Expr::col((users::Entity, c)),
    };
    let starts_with = |c: users::Column| {
        let mut range = Condition::all().add(column(c).gte(lower.clone()));
        if let Some(next) = &next {
            range = range.add(column(c).lt(next.clone()));
        }
        range
    };
    let q = users::Entity::find()
        .filter(users::Column::TenantId.eq(tenant_id))
        .filter(
            Condition::any()
                .add(starts_with(users::Column::NameLower))
                .add(starts_with(users::Column::EmailLower)),
        );
    let q = match backend {
        // `+name_lower` is the same value, but no index supplies its order. Without it SQLite,
        // which has no statistics unless someone runs ANALYZE, reckons a tenant holds ten users
        // and walks all of them on `users_name` to save sorting the matches.
        DatabaseBackend::Sqlite => q.order_by(Expr::cust(r#"+"users"."name_lower""#), Order::Asc),
        _ => q.order_by_asc(users::Column::NameLower),
    };
    q.order_by_asc(users::Column::Id).limit(limit)
}

/// The least string greater than every string that starts with `prefix`, in code point order:
/// the prefix with its last character moved one code point on (past the surrogates, which no
/// `char` is), dropping trailing `char::MAX`, which has no successor. `None` when nothing is
/// greater (an empty prefix, or one of `char::MAX` only): the range has no upper end.
fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

pub async fn deactivate_user<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    id: &str,
) -> Result<User, Error> {
    let result = users::Entity::update_many()
        .col_expr(
            users::Column::Status,
            sea_orm::prelude::Expr::value(UserStatus::Deactivated as i32),
        )
        .col_expr(
            users::Column::UpdateTime,
            sea_orm::prelude::Expr::value(now_micros()),
        )
        .filter(users::Column::TenantId.eq(tenant_id))
        .filter(users::Column::Id.eq(id))
        .exec(db)
        .await?;
    if result.rows_affected == 0 {
        return Err(Error::UserNotFound(id.to_owned()));
    }
    get_user(db, tenant_id, id)
        .await?
        .ok_or_else(|| Error::UserNotFound(id.to_owned()))
}

/// Creates or replaces a group and its member list, inside the caller's write transaction;
/// every member must be a known user.
pub async fn upsert_group(tx: &WriteTx, tenant_id: &str, group: Group) -> Result<Group, Error> {
    let known = users_by_id(tx, tenant_id, &group.member_ids).await?;
    if let Some(missing) = group.member_ids.iter().find(|id| !known.contains_key(*id)) {
        return Err(Error::UserNotFound(missing.clone()));
    }
    groups::Entity::insert(groups::ActiveModel {
        tenant_id: Set(tenant_id.to_owned()),
        id: Set(group.id.clone()),
        name: Set(group.name.clone()),
        update_time: Set(group.update_time),
    })
    .on_conflict(
        OnConflict::columns([groups::Column::TenantId, groups::Column::Id])
            .update_columns([groups::Column::Name, groups::Column::UpdateTime])
            .to_owned(),
    )
    .exec_without_returning(tx)
    .await?;
    group_members::Entity::delete_many()
        .filter(group_members::Column::TenantId.eq(tenant_id))
        .filter(group_members::Column::GroupId.eq(group.id.clone()))
        .exec(tx)
        .await?;
    for batch in group.member_ids.chunks(super::ROWS_PER_INSERT) {
        group_members::Entity::insert_many(batch.iter().map(|u| group_members::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            group_id: Set(group.id.clone()),
            user_id: Set(u.clone()),
        }))
        .exec_without_returning(tx)
        .await?;
    }
    Ok(group)
}

/// Groups among `ids` with their members, in two queries.
pub async fn groups_by_id<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    ids: &[String],
) -> Result<HashMap<String, Group>, Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut found: HashMap<String, Group> = groups::Entity::find()
        .filter(groups::Column::TenantId.eq(tenant_id))
        .filter(groups::Column::Id.is_in(ids.iter().cloned()))
        .all(db)
        .await?
        .into_iter()
        .map(|g| {
            (
                g.id.clone(),
                Group {
                    id: g.id,
                    name: g.name,
                    member_ids: vec![],
                    update_time: g.update_time,
                },
            )
        })
        .collect();
    let members = group_members::Entity::find()
        .filter(group_members::Column::TenantId.eq(tenant_id))
        .filter(group_members::Column::GroupId.is_in(ids.iter().cloned()))
        .order_by_asc(group_members::Column::GroupId)
        .order_by_asc(group_members::Column::UserId)
        .all(db)
        .await?;
    for m in members {
        if let Some(g) = found.get_mut(&m.group_id) {
            g.member_ids.push(m.user_id);
        }
    }
    Ok(found)
}

/// How many memberships the groups among `ids` hold together, in one query (none for no ids).
pub async fn memberships<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    ids: &[String],
) -> Result<u64, Error> {
    use sea_orm::PaginatorTrait;
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(group_members::Entity::find()
        .filter(group_members::Column::TenantId.eq(tenant_id))
        .filter(group_members::Column::GroupId.is_in(ids.iter().cloned()))
        .count(db)
        .await?)
}

pub async fn get_group(db: &super::Conn, tenant_id: &str, id: &str) -> Result<Group, Error> {
    groups_by_id(db, tenant_id, &[id.to_owned()])
        .await?
        .remove(id)
        .ok_or_else(|| Error::GroupNotFound(id.to_owned()))
}

/// Deletes a group and its member list, inside the caller's write transaction.
pub async fn delete_group(tx: &WriteTx, tenant_id: &str, id: &str) -> Result<(), Error> {
    group_members::Entity::delete_many()
        .filter(group_members::Column::TenantId.eq(tenant_id))
        .filter(group_members::Column::GroupId.eq(id))
        .exec(tx)
        .await?;
    let deleted = groups::Entity::delete_many()
        .filter(groups::Column::TenantId.eq(tenant_id))
        .filter(groups::Column::Id.eq(id))
        .exec(tx)
        .await?;
    if deleted.rows_affected == 0 {
        return Err(Error::GroupNotFound(id.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::prefix_successor;

    /// Whether `s` lies in the range the prefix becomes.
    fn in_range(s: &str, prefix: &str) -> bool {
        s >= prefix && prefix_successor(prefix).is_none_or(|next| s < next.as_str())
    }

    #[test]
    fn the_successor_bounds_exactly_the_strings_with_the_prefix() {
        assert_eq!(prefix_successor("ali").as_deref(), Some("alj"));
        assert_eq!(prefix_successor("a%").as_deref(), Some("a&"));
        assert_eq!(prefix_successor("zé").as_deref(), Some("zê"));
        assert_eq!(prefix_successor("x\u{D7FF}").as_deref(), Some("x\u{E000}"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(
            prefix_successor("a\u{10FFFF}\u{10FFFF}").as_deref(),
            Some("b")
        );
        assert_eq!(prefix_successor("\u{10FFFF}"), None);
        assert_eq!(prefix_successor(""), None);

        // Rust's `str` order is code point order, as the engines' byte-wise collations are.
        let prefixes = [
            "ali",
            "a",
            "z.top",
            "a_b",
            "100%",
            "\u{D7FF}",
            "é",
            "a\u{10FFFF}",
            "\u{10FFFF}",
        ];
        let names = [
            "ali",
            "alice",
            "alj",
            "alh\u{10FFFF}",
            "ali\u{10FFFF}",
            "a",
            "b",
            "a_bc",
            "a%bc",
            "100% sure",
            "100",
            "\u{D7FF}x",
            "\u{E000}",
            "éa",
            "ê",
            "a\u{10FFFF}b",
            "b",
            "\u{10FFFF}\u{10FFFF}",
            "",
        ];
        for prefix in prefixes {
            for name in names {
                assert_eq!(
                    in_range(name, prefix),
                    name.starts_with(prefix),
                    "{name:?} against {prefix:?}"
                );
            }
        }
    }
}
