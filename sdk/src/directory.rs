//! DirectoryService (service principals only): the tenant's users and groups, kept in sync by
//! the identity system. Upserts and deactivation are idempotent, so they are retried safely
//! without a request id.

use parley::pb::{self, directory_service_client::DirectoryServiceClient as Stub};

use crate::{
    Client,
    client::{CallOptions, call_options, rpc},
    error::Result,
    paging::{self, ItemStream, Page, paged},
    retry::Method,
};

/// A directory user's kind: `Internal` (a team member) or `External` (a customer, supplier or
/// guest).
pub use pb::user::Kind as UserKind;
/// A directory user's status: `Active` or `Deactivated`.
pub use pb::user::Status as UserStatus;

/// An UpsertUser request: creates the user or replaces its fields.
///
/// ```no_run
/// # async fn demo(service: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
/// use parley_sdk::UpsertUser;
///
/// let directory = service.directory();
/// directory
///     .upsert_user(UpsertUser::internal("alice").display_name("Alice").email("alice@acme.example"))
///     .await?;
/// directory
///     .upsert_user(UpsertUser::external("guest-7").email("sam@supplier.example"))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct UpsertUser {
    user: pb::User,
}

impl UpsertUser {
    /// User `id` (1..128 characters, chosen by the identity system) of `kind`, active.
    pub fn new(id: impl Into<String>, kind: UserKind) -> Self {
        Self {
            user: pb::User {
                id: id.into(),
                kind: kind.into(),
                status: UserStatus::Active.into(),
                ..Default::default()
            },
        }
    }

    /// An internal user (a team member).
    pub fn internal(id: impl Into<String>) -> Self {
        Self::new(id, UserKind::Internal)
    }

    /// An external user (a customer, supplier or guest).
    pub fn external(id: impl Into<String>) -> Self {
        Self::new(id, UserKind::External)
    }

    /// The name shown in pickers (default: the id).
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.user.display_name = name.into();
        self
    }

    /// The email address (email invitations to it reach this user).
    pub fn email(mut self, email: impl Into<String>) -> Self {
        self.user.email = email.into();
        self
    }

    /// The status (default `Active`).
    pub fn status(mut self, status: UserStatus) -> Self {
        self.user.status = status.into();
        self
    }
}

/// A ListUsers request.
#[derive(Clone, Debug, Default, PartialEq)]
#[must_use]
pub struct ListUsers {
    page_size: i32,
    page_token: Option<String>,
}
paged!(ListUsers);

impl ListUsers {
    /// The first page, at the server's default size.
    pub fn new() -> Self {
        Self::default()
    }
}

const UPSERT_USER: Method = Method::keyed("UpsertUser");
const GET_USER: Method = Method::read("GetUser");
const LIST_USERS: Method = Method::read("ListUsers");
const SEARCH_USERS: Method = Method::read("SearchUsers");
const DEACTIVATE_USER: Method = Method::keyed("DeactivateUser");
const UPSERT_GROUP: Method = Method::keyed("UpsertGroup");
const GET_GROUP: Method = Method::read("GetGroup");
const DELETE_GROUP: Method = Method::keyed("DeleteGroup");

/// DirectoryService, from [`Client::directory`].
#[derive(Clone, Debug)]
pub struct Directory {
    client: Client,
    options: CallOptions,
}
call_options!(Directory);

impl Directory {
    /// Creates or replaces a user (see [`UpsertUser`]).
    pub async fn upsert_user(&self, request: UpsertUser) -> Result<pb::User> {
        let message = pb::UpsertUserRequest {
            user: Some(request.user),
            request_id: self.options.request_id(None),
        };
        let call = rpc!(Stub::upsert_user);
        self.client
            .unary(&self.options, UPSERT_USER, message, call)
            .await
    }

    /// Reads a user.
    pub async fn get_user(&self, id: impl Into<String>) -> Result<pb::User> {
        let message = pb::GetUserRequest { id: id.into() };
        let call = rpc!(Stub::get_user);
        self.client
            .unary(&self.options, GET_USER, message, call)
            .await
    }

    /// One page of the tenant's users.
    pub async fn list_users(&self, request: ListUsers) -> Result<Page<pb::User>> {
        let message = pb::ListUsersRequest {
            page_size: request.page_size,
            page_token: request.page_token.unwrap_or_default(),
        };
        let call = rpc!(Stub::list_users);
        let page = self
            .client
            .unary(&self.options, LIST_USERS, message, call)
            .await?;
        Ok(Page::new(page.users, page.next_page_token))
    }

    /// Every user of the tenant, fetching pages as the stream is read.
    ///
    /// ```no_run
    /// # async fn demo(service: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
    /// use futures::TryStreamExt;
    /// use parley_sdk::ListUsers;
    ///
    /// let mut users = service.directory().list_users_stream(ListUsers::new().page_size(500));
    /// while let Some(user) = users.try_next().await? {
    ///     println!("{} <{}>", user.display_name, user.email);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn list_users_stream(&self, request: ListUsers) -> ItemStream<pb::User> {
        let this = self.clone();
        paging::items(request.page_token.clone(), move |token| {
            let (this, request) = (this.clone(), request.clone().page_token(token));
            async move { this.list_users(request).await }
        })
    }

    /// Up to `limit` users whose display name or email starts with `query` (case-insensitive),
    /// for an "invite" picker.
    pub async fn search_users(
        &self,
        query: impl Into<String>,
        limit: u32,
    ) -> Result<Vec<pb::User>> {
        let message = pb::SearchUsersRequest {
            query: query.into(),
            page_size: i32::try_from(limit).unwrap_or(i32::MAX),
        };
        let call = rpc!(Stub::search_users);
        let response = self
            .client
            .unary(&self.options, SEARCH_USERS, message, call)
            .await?;
        Ok(response.users)
    }

    /// Deactivates a user: they can no longer call, be added or be acted as.
    pub async fn deactivate_user(&self, id: impl Into<String>) -> Result<pb::User> {
        let message = pb::DeactivateUserRequest {
            id: id.into(),
            request_id: self.options.request_id(None),
        };
        let call = rpc!(Stub::deactivate_user);
        self.client
            .unary(&self.options, DEACTIVATE_USER, message, call)
            .await
    }

    /// Creates or replaces a group and its member list.
    ///
    /// ```no_run
    /// # async fn demo(service: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
    /// service.directory().upsert_group("design", "Design team", ["alice", "bob"]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn upsert_group<I, S>(
        &self,
        id: impl Into<String>,
        name: impl Into<String>,
        member_ids: I,
    ) -> Result<pb::Group>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let message = pb::UpsertGroupRequest {
            group: Some(pb::Group {
                id: id.into(),
                name: name.into(),
                member_ids: member_ids.into_iter().map(Into::into).collect(),
                update_time: None,
            }),
            request_id: self.options.request_id(None),
        };
        let call = rpc!(Stub::upsert_group);
        self.client
            .unary(&self.options, UPSERT_GROUP, message, call)
            .await
    }

    /// Reads a group.
    pub async fn get_group(&self, id: impl Into<String>) -> Result<pb::Group> {
        let message = pb::GetGroupRequest { id: id.into() };
        let call = rpc!(Stub::get_group);
        self.client
            .unary(&self.options, GET_GROUP, message, call)
            .await
    }

    /// Deletes a group. Safe to retry: the call carries one `request_id` over all its
    /// attempts, so a repeat after a lost reply gets the first reply, not
    /// [`Error::GroupNotFound`](crate::Error::GroupNotFound).
    pub async fn delete_group(&self, id: impl Into<String>) -> Result<()> {
        let message = pb::DeleteGroupRequest {
            id: id.into(),
            request_id: self.options.request_id(None),
        };
        let call = rpc!(Stub::delete_group);
        self.client
            .unary(&self.options, DELETE_GROUP, message, call)
            .await?;
        Ok(())
    }
}
