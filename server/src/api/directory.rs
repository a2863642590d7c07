//! DirectoryService: the tenant's users and groups, written by the identity system.

use std::sync::Arc;

use parley::pb::{self, directory_service_server::DirectoryService};
use tonic::{Request, Response, Status};

use super::{State, begin_mutation, convert, require_service};
use crate::config::Limits;
use crate::domain::model::{Group, User, UserKind, UserStatus, now_micros};
use crate::domain::validate::{self, Violations};
use crate::error::Error;
use crate::store::directory as dir;

pub struct Directory(pub Arc<State>);

const LIST_USERS: &str = "ListUsers";

/// UpsertGroup's bounds, checked before the request is copied or looked into: the request id,
/// then the member list's length, before any member is looked at (SPEC §4).
fn group_bounds(limits: &Limits, req: &pb::UpsertGroupRequest) -> Result<(), Error> {
    validate::request_id(&req.request_id)?;
    let members = req.group.as_ref().map_or(&[][..], |g| &g.member_ids[..]);
    validate::max_items("group.member_ids", members, limits.max_group_members)
}

#[tonic::async_trait]
impl DirectoryService for Directory {
    async fn upsert_user(
        &self,
        request: Request<pb::UpsertUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        self.0
            .handle("UpsertUser", request, |p, req| async move {
                require_service(&p)?;
                validate::request_id(&req.request_id)?;
                let u = req
                    .user
                    .as_ref()
                    .ok_or_else(|| Error::field("user", "is required"))?;
                let mut v = Violations::default();
                v.check(validate::id_field("user.id", &u.id));
                v.check(validate::max_chars(
                    "user.display_name",
                    &u.display_name,
                    validate::MAX_NAME_LEN,
                ));
                if !u.email.is_empty() {
                    v.check(validate::email("user.email", &u.email));
                }
                let kind = v
                    .check(validate::enum_field::<UserKind>("user.kind", u.kind))
                    .flatten();
                if u.kind == 0 {
                    v.check::<()>(Err(Error::field(
                        "user.kind",
                        "must be INTERNAL or EXTERNAL",
                    )));
                }
                let status = v
                    .check(validate::enum_field::<UserStatus>("user.status", u.status))
                    .flatten();
                v.finish()?;
                let m = begin_mutation!(self.0, &p, "UpsertUser", req);
                let now = now_micros();
                let user = dir::upsert_user(
                    m.tx(),
                    User {
                        tenant_id: p.tenant_id.clone(),
                        display_name: if u.display_name.is_empty() {
                            u.id.clone()
                        } else {
                            u.display_name.clone()
                        },
                        id: u.id.clone(),
                        email: u.email.clone(),
                        kind: kind.unwrap_or(UserKind::Internal),
                        status: status.unwrap_or(UserStatus::Active),
                        create_time: now,
                        update_time: now,
                    },
                )
                .await?;
                m.finish(convert::user(&user)).await
            })
            .await
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        self.0
            .handle("GetUser", request, |p, req| async move {
                require_service(&p)?;
                validate::id_field("id", &req.id)?;
                let user = dir::get_user(&self.0.db, &p.tenant_id, &req.id)
                    .await?
                    .ok_or(Error::UserNotFound(req.id))?;
                Ok(convert::user(&user))
            })
            .await
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.0
            .handle(LIST_USERS, request, |p, req| async move {
                require_service(&p)?;
                let size = validate::page_size(req.page_size)?;
                let after = self
                    .0
                    .pager
                    .open(&req.page_token, LIST_USERS, &p.tenant_id)?;
                let mut users =
                    dir::list_users(&self.0.db, &p.tenant_id, after.as_deref(), size + 1).await?;
                let next_page_token = super::next_page(
                    &self.0.pager,
                    LIST_USERS,
                    &p.tenant_id,
                    &mut users,
                    size,
                    |u| u.id.clone(),
                );
                Ok(pb::ListUsersResponse {
                    users: users.iter().map(convert::user).collect(),
                    next_page_token,
                })
            })
            .await
    }

    async fn search_users(
        &self,
        request: Request<pb::SearchUsersRequest>,
    ) -> Result<Response<pb::SearchUsersResponse>, Status> {
        self.0
            .handle("SearchUsers", request, |p, req| async move {
                require_service(&p)?;
                // Bounded before it is trimmed: trimming scans it.
                validate::max_chars("query", &req.query, validate::MAX_QUERY_LEN)?;
                let query = req.query.trim();
                if query.is_empty() {
                    return Err(Error::field("query", "must not be empty"));
                }
                let size = validate::page_size(req.page_size)?;
                let users = dir::search_users(&self.0.db, &p.tenant_id, query, size).await?;
                Ok(pb::SearchUsersResponse {
                    users: users.iter().map(convert::user).collect(),
                })
            })
            .await
    }

    async fn deactivate_user(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        self.0
            .handle("DeactivateUser", request, |p, req| async move {
                require_service(&p)?;
                validate::request_id(&req.request_id)?;
                validate::id_field("id", &req.id)?;
                let m = begin_mutation!(self.0, &p, "DeactivateUser", req);
                let user = dir::deactivate_user(m.tx(), &p.tenant_id, &req.id).await?;
                m.finish(convert::user(&user)).await
            })
            .await
    }

    async fn upsert_group(
        &self,
        request: Request<pb::UpsertGroupRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        self.0
            .handle_bounded("UpsertGroup", request, group_bounds, |p, req| async move {
                require_service(&p)?;
                let g = req
                    .group
                    .as_ref()
                    .ok_or_else(|| Error::field("group", "is required"))?;
                let mut v = Violations::default();
                v.check(validate::id_field("group.id", &g.id));
                v.check(validate::max_chars(
                    "group.name",
                    &g.name,
                    validate::MAX_NAME_LEN,
                ));
                for (i, m) in g.member_ids.iter().enumerate() {
                    v.check(validate::id_field(&format!("group.member_ids[{i}]"), m));
                }
                v.finish()?;
                let m = begin_mutation!(self.0, &p, "UpsertGroup", req);
                let mut members = g.member_ids.clone();
                members.sort();
                members.dedup();
                let group = dir::upsert_group(
                    m.tx(),
                    &p.tenant_id,
                    Group {
                        name: if g.name.is_empty() {
                            g.id.clone()
                        } else {
                            g.name.clone()
                        },
                        id: g.id.clone(),
                        member_ids: members,
                        update_time: now_micros(),
                    },
                )
                .await?;
                m.finish(convert::group(&group)).await
            })
            .await
    }

    async fn get_group(
        &self,
        request: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        self.0
            .handle("GetGroup", request, |p, req| async move {
                require_service(&p)?;
                validate::id_field("id", &req.id)?;
                Ok(convert::group(
                    &dir::get_group(&self.0.db, &p.tenant_id, &req.id).await?,
                ))
            })
            .await
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<()>, Status> {
        self.0
            .handle("DeleteGroup", request, |p, req| async move {
                require_service(&p)?;
                validate::request_id(&req.request_id)?;
                validate::id_field("id", &req.id)?;
                let m = begin_mutation!(self.0, &p, "DeleteGroup", req);
                dir::delete_group(m.tx(), &p.tenant_id, &req.id).await?;
                m.finish(()).await
            })
            .await
    }
}
