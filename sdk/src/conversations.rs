//! ConversationService: creating, reading, updating, archiving and closing conversations,
//! sending and listing messages, the timeline, and access checks.

use parley::pb::{self, conversation_service_client::ConversationServiceClient as Stub};

use crate::{
    Client, InboxWatch, TimelineWatch,
    client::{CallOptions, call_options, rpc},
    error::Result,
    paging::{self, ItemStream, Page, paged},
    retry::Method,
};

/// The order of a listing: `OldestFirst` (the default) or `NewestFirst`.
pub use pb::Order;
/// The conversation kind: `Direct` (exactly two people, roster fixed) or `Group`.
pub use pb::conversation::Kind as ConversationKind;
/// The conversation state: `Active`, `Archived` (read-only, reversible) or `Closed` (final).
pub use pb::conversation::State as ConversationState;
/// What new participants may read: `Full` history or only `SinceJoin`.
pub use pb::policy::History;
/// Who may add or remove participants: `Owner`, `Admins` (owner and ADMIN participants) or
/// `Participants` (any active participant; not accepted for `remove`).
pub use pb::policy::Permission;

/// A conversation's policy, for [`NewConversation::policy`]. Unset fields take the server's
/// defaults: `add_internal` PARTICIPANTS, `add_external` OWNER, `remove` OWNER, the external
/// roster locked on the first message, FULL history, the server's `max_participants`.
///
/// ```
/// use parley_sdk::{History, Permission, PolicyBuilder};
///
/// let policy = PolicyBuilder::new()
///     .add_external(Permission::Admins)
///     .new_participant_history(History::SinceJoin)
///     .max_participants(50)
///     .build();
/// assert_eq!(policy.max_participants, 50);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[must_use]
pub struct PolicyBuilder {
    policy: pb::Policy,
}

impl PolicyBuilder {
    /// Every field at the server's default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Who may add internal participants.
    pub fn add_internal(mut self, permission: Permission) -> Self {
        self.policy.add_internal = permission.into();
        self
    }

    /// Who may add external participants and invite by email.
    pub fn add_external(mut self, permission: Permission) -> Self {
        self.policy.add_external = permission.into();
        self
    }

    /// Who may remove participants (`Owner` or `Admins`).
    pub fn remove(mut self, permission: Permission) -> Self {
        self.policy.remove = permission.into();
        self
    }

    /// Whether external participants are fixed once the first message is sent.
    pub fn lock_external_roster_on_first_message(mut self, lock: bool) -> Self {
        self.policy.lock_external_roster_on_first_message = Some(lock);
        self
    }

    /// What participants added later may read.
    pub fn new_participant_history(mut self, history: History) -> Self {
        self.policy.new_participant_history = history.into();
        self
    }

    /// The most active participants the conversation may have (2 .. the server's maximum).
    pub fn max_participants(mut self, max: u32) -> Self {
        self.policy.max_participants = i32::try_from(max).unwrap_or(i32::MAX);
        self
    }

    /// The policy message.
    pub fn build(self) -> pb::Policy {
        self.policy
    }
}

impl From<PolicyBuilder> for pb::Policy {
    fn from(builder: PolicyBuilder) -> Self {
        builder.policy
    }
}

/// A CreateConversation request. The caller becomes the OWNER.
///
/// ```no_run
/// # async fn demo(client: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
/// use parley_sdk::{NewConversation, Permission, PolicyBuilder};
///
/// let group = client
///     .conversations()
///     .create(
///         NewConversation::group(["bob", "carol"])
///             .title("Launch plan")
///             .policy(PolicyBuilder::new().add_external(Permission::Admins)),
///     )
///     .await?;
/// // Returns the existing DIRECT conversation between the two if there is one.
/// let direct = client.conversations().create(NewConversation::direct("bob")).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct NewConversation {
    kind: ConversationKind,
    title: String,
    participant_ids: Vec<String>,
    policy: Option<pb::Policy>,
    request_id: Option<String>,
}

impl NewConversation {
    /// A GROUP conversation with these other participants (at most the server's
    /// `max_initial_participants` people, the creator included; default 10).
    pub fn group<I, S>(participant_ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            kind: ConversationKind::Group,
            title: String::new(),
            participant_ids: participant_ids.into_iter().map(Into::into).collect(),
            policy: None,
            request_id: None,
        }
    }

    /// The DIRECT conversation between the caller and `other_user_id`.
    pub fn direct(other_user_id: impl Into<String>) -> Self {
        Self {
            kind: ConversationKind::Direct,
            participant_ids: vec![other_user_id.into()],
            ..Self::group(Vec::<String>::new())
        }
    }

    /// The title (at most 200 characters; not for DIRECT conversations).
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// One more participant.
    pub fn participant(mut self, user_id: impl Into<String>) -> Self {
        self.participant_ids.push(user_id.into());
        self
    }

    /// The policy (a [`PolicyBuilder`] or a [`pb::Policy`]).
    pub fn policy(mut self, policy: impl Into<pb::Policy>) -> Self {
        self.policy = Some(policy.into());
        self
    }

    /// The request id (default: a new UUIDv7 for this call, reused by its retries).
    pub fn request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }
}

/// An UpdateConversation request: the fields set here are named in the update mask; the
/// others stay as they are. With an etag (from [`UpdateConversation::of`] or
/// [`UpdateConversation::etag`]) the update fails with
/// [`Error::EtagMismatch`](crate::Error::EtagMismatch) if the conversation changed since.
///
/// ```no_run
/// # async fn demo(client: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
/// use parley_sdk::{Permission, UpdateConversation};
///
/// let conversations = client.conversations();
/// let current = conversations.get("0190c7e2-…").await?;
/// let updated = conversations
///     .update(
///         UpdateConversation::of(&current)
///             .title("Launch plan (final)")
///             .remove(Permission::Admins),
///     )
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct UpdateConversation {
    id: String,
    etag: String,
    title: String,
    policy: pb::Policy,
    paths: Vec<&'static str>,
    request_id: Option<String>,
}

impl UpdateConversation {
    /// Updates conversation `id` whatever its current etag.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            etag: String::new(),
            title: String::new(),
            policy: pb::Policy::default(),
            paths: Vec::new(),
            request_id: None,
        }
    }

    /// Updates `conversation` if it is still as read (its id and etag).
    pub fn of(conversation: &pb::Conversation) -> Self {
        Self::new(conversation.id.clone()).etag(conversation.etag.clone())
    }

    /// Updates only if the conversation's etag is still `etag`.
    pub fn etag(mut self, etag: impl Into<String>) -> Self {
        self.etag = etag.into();
        self
    }

    fn path(mut self, path: &'static str) -> Self {
        if !self.paths.contains(&path) {
            self.paths.push(path);
        }
        self
    }

    /// A new title (empty clears it).
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self.path("title")
    }

    /// A new `add_internal` permission.
    pub fn add_internal(mut self, permission: Permission) -> Self {
        self.policy.add_internal = permission.into();
        self.path("policy.add_internal")
    }

    /// A new `add_external` permission.
    pub fn add_external(mut self, permission: Permission) -> Self {
        self.policy.add_external = permission.into();
        self.path("policy.add_external")
    }

    /// A new `remove` permission (`Owner` or `Admins`).
    pub fn remove(mut self, permission: Permission) -> Self {
        self.policy.remove = permission.into();
        self.path("policy.remove")
    }

    /// Whether the external roster locks on the first message.
    pub fn lock_external_roster_on_first_message(mut self, lock: bool) -> Self {
        self.policy.lock_external_roster_on_first_message = Some(lock);
        self.path("policy.lock_external_roster_on_first_message")
    }

    /// What participants added from now on may read.
    pub fn new_participant_history(mut self, history: History) -> Self {
        self.policy.new_participant_history = history.into();
        self.path("policy.new_participant_history")
    }

    /// A new participant limit.
    pub fn max_participants(mut self, max: u32) -> Self {
        self.policy.max_participants = i32::try_from(max).unwrap_or(i32::MAX);
        self.path("policy.max_participants")
    }

    /// The request id (default: a new UUIDv7 for this call, reused by its retries).
    pub fn request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }
}

/// A ListConversations request: the conversations the caller is an active participant of,
/// newest first.
#[derive(Clone, Debug, Default, PartialEq)]
#[must_use]
pub struct ListConversations {
    page_size: i32,
    page_token: Option<String>,
    include_removed: bool,
}
paged!(ListConversations);

impl ListConversations {
    /// The first page, at the server's default size.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also list the conversations the caller was removed from, each with `viewer_state`
    /// REMOVED: they still read them as they were at the removal.
    pub fn include_removed(mut self, include: bool) -> Self {
        self.include_removed = include;
        self
    }
}

/// A ListMessages request.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct ListMessages {
    conversation_id: String,
    order: Order,
    page_size: i32,
    page_token: Option<String>,
}
paged!(ListMessages);

/// A ListTimeline request: messages and events in one gapless sequence.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct ListTimeline {
    conversation_id: String,
    order: Order,
    page_size: i32,
    page_token: Option<String>,
}
paged!(ListTimeline);

macro_rules! ordered {
    ($builder:ident) => {
        impl $builder {
            /// The first page of `conversation_id`, oldest first.
            pub fn new(conversation_id: impl Into<String>) -> Self {
                Self {
                    conversation_id: conversation_id.into(),
                    order: Order::OldestFirst,
                    page_size: 0,
                    page_token: None,
                }
            }

            /// The order (default `OldestFirst`).
            pub fn order(mut self, order: Order) -> Self {
                self.order = order;
                self
            }
        }
    };
}
ordered!(ListMessages);
ordered!(ListTimeline);

const CREATE: Method = Method::keyed("CreateConversation");
const GET: Method = Method::read("GetConversation");
const LIST: Method = Method::read("ListConversations");
const UPDATE: Method = Method::keyed("UpdateConversation");
const ARCHIVE: Method = Method::keyed("ArchiveConversation");
const UNARCHIVE: Method = Method::keyed("UnarchiveConversation");
const CLOSE: Method = Method::keyed("CloseConversation");
const SEND: Method = Method::keyed("SendMessage");
const LIST_MESSAGES: Method = Method::read("ListMessages");
const LIST_TIMELINE: Method = Method::read("ListTimeline");
const CHECK_ACCESS: Method = Method::read("CheckAccess");

/// ConversationService, from [`Client::conversations`].
#[derive(Clone, Debug)]
pub struct Conversations {
    client: Client,
    options: CallOptions,
}
call_options!(Conversations);

impl Conversations {
    /// Creates a conversation (see [`NewConversation`]).
    pub async fn create(&self, request: NewConversation) -> Result<pb::Conversation> {
        let message = pb::CreateConversationRequest {
            request_id: self.options.request_id(request.request_id),
            kind: request.kind.into(),
            title: request.title,
            participant_ids: request.participant_ids,
            policy: request.policy,
        };
        let call = rpc!(Stub::create_conversation);
        self.client
            .unary(&self.options, CREATE, message, call)
            .await
    }

    /// Reads a conversation the caller participates in (or once did).
    ///
    /// ```no_run
    /// # async fn demo(client: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
    /// let c = client.conversations().get("0190c7e2-…").await?;
    /// println!("{} has {} participants", c.title, c.participant_count);
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, id: impl Into<String>) -> Result<pb::Conversation> {
        let message = pb::GetConversationRequest { id: id.into() };
        let call = rpc!(Stub::get_conversation);
        self.client.unary(&self.options, GET, message, call).await
    }

    /// One page of the caller's conversations, newest first.
    pub async fn list(&self, request: ListConversations) -> Result<Page<pb::Conversation>> {
        let message = pb::ListConversationsRequest {
            page_size: request.page_size,
            page_token: request.page_token.unwrap_or_default(),
            include_removed: request.include_removed,
        };
        let call = rpc!(Stub::list_conversations);
        let page = self
            .client
            .unary(&self.options, LIST, message, call)
            .await?;
        Ok(Page::new(page.conversations, page.next_page_token))
    }

    /// Every conversation of the caller, fetching pages as the stream is read.
    pub fn list_stream(&self, request: ListConversations) -> ItemStream<pb::Conversation> {
        let this = self.clone();
        paging::items(request.page_token.clone(), move |token| {
            let (this, request) = (this.clone(), request.clone().page_token(token));
            async move { this.list(request).await }
        })
    }

    /// Changes the title or the policy (owner only; see [`UpdateConversation`]).
    pub async fn update(&self, request: UpdateConversation) -> Result<pb::Conversation> {
        let message = pb::UpdateConversationRequest {
            conversation: Some(pb::Conversation {
                id: request.id,
                etag: request.etag,
                title: request.title,
                policy: Some(request.policy),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: request.paths.into_iter().map(str::to_owned).collect(),
            }),
            request_id: self.options.request_id(request.request_id),
        };
        let call = rpc!(Stub::update_conversation);
        self.client
            .unary(&self.options, UPDATE, message, call)
            .await
    }

    /// Makes the conversation read-only until unarchived (owner or admin).
    pub async fn archive(&self, id: impl Into<String>) -> Result<pb::Conversation> {
        let message = pb::ArchiveConversationRequest {
            id: id.into(),
            request_id: self.options.request_id(None),
        };
        let call = rpc!(Stub::archive_conversation);
        self.client
            .unary(&self.options, ARCHIVE, message, call)
            .await
    }

    /// Makes an archived conversation active again (owner or admin).
    pub async fn unarchive(&self, id: impl Into<String>) -> Result<pb::Conversation> {
        let message = pb::UnarchiveConversationRequest {
            id: id.into(),
            request_id: self.options.request_id(None),
        };
        let call = rpc!(Stub::unarchive_conversation);
        self.client
            .unary(&self.options, UNARCHIVE, message, call)
            .await
    }

    /// Makes the conversation read-only for good (owner or admin).
    pub async fn close(&self, id: impl Into<String>) -> Result<pb::Conversation> {
        let message = pb::CloseConversationRequest {
            id: id.into(),
            request_id: self.options.request_id(None),
        };
        let call = rpc!(Stub::close_conversation);
        self.client.unary(&self.options, CLOSE, message, call).await
    }

    /// Posts a message (1..4,000 characters) as an active participant. Retried safely: the
    /// message is stored once.
    ///
    /// ```no_run
    /// # async fn demo(client: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
    /// let m = client.conversations().send_message("0190c7e2-…", "Hello!").await?;
    /// println!("message {} at seq {}", m.id, m.seq);
    /// # Ok(()) }
    /// ```
    pub async fn send_message(
        &self,
        conversation_id: impl Into<String>,
        body: impl Into<String>,
    ) -> Result<pb::Message> {
        let message = pb::SendMessageRequest {
            conversation_id: conversation_id.into(),
            body: body.into(),
            request_id: self.options.request_id(None),
        };
        let call = rpc!(Stub::send_message);
        self.client.unary(&self.options, SEND, message, call).await
    }

    /// One page of the messages the caller may read.
    pub async fn list_messages(&self, request: ListMessages) -> Result<Page<pb::Message>> {
        let message = pb::ListMessagesRequest {
            conversation_id: request.conversation_id,
            order: request.order.into(),
            page_size: request.page_size,
            page_token: request.page_token.unwrap_or_default(),
        };
        let call = rpc!(Stub::list_messages);
        let page = self
            .client
            .unary(&self.options, LIST_MESSAGES, message, call)
            .await?;
        Ok(Page::new(page.messages, page.next_page_token))
    }

    /// Every message the caller may read, fetching pages as the stream is read.
    pub fn list_messages_stream(&self, request: ListMessages) -> ItemStream<pb::Message> {
        let this = self.clone();
        paging::items(request.page_token.clone(), move |token| {
            let (this, request) = (this.clone(), request.clone().page_token(token));
            async move { this.list_messages(request).await }
        })
    }

    /// Tails the conversation's timeline: the items the caller may read, oldest first, then
    /// each new one as it is committed, reconnecting by itself (see [`TimelineWatch`]).
    ///
    /// ```no_run
    /// # async fn demo(client: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
    /// use futures::TryStreamExt;
    /// use parley_sdk::Error;
    ///
    /// let mut watch = client.conversations().watch_timeline("0190b6c2-…").after_seq(41);
    /// loop {
    ///     match watch.try_next().await {
    ///         Ok(Some(item)) => println!("#{}", item.seq),
    ///         Ok(None) => break,
    ///         Err(Error::ParticipantRemoved { .. }) => {
    ///             println!("removed; read up to #{}", watch.last_seq());
    ///             break;
    ///         }
    ///         Err(other) => return Err(other),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn watch_timeline(&self, conversation_id: impl Into<String>) -> TimelineWatch {
        TimelineWatch::new(self.client.clone(), conversation_id.into())
    }

    /// The caller's inbox as a stream (WatchInbox): see [`InboxWatch`].
    ///
    /// ```no_run
    /// # async fn demo(client: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
    /// use futures::TryStreamExt;
    ///
    /// let mut inbox = client.conversations().watch_inbox().include_removed(true);
    /// while let Some(entry) = inbox.try_next().await? {
    ///     println!("{} up to #{} ({:?})", entry.conversation_id, entry.seq, entry.viewer_state());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn watch_inbox(&self) -> InboxWatch {
        InboxWatch::new(self.client.clone())
    }

    /// One page of the timeline (messages and events) the caller may read.
    pub async fn list_timeline(&self, request: ListTimeline) -> Result<Page<pb::TimelineItem>> {
        let message = pb::ListTimelineRequest {
            conversation_id: request.conversation_id,
            order: request.order.into(),
            page_size: request.page_size,
            page_token: request.page_token.unwrap_or_default(),
        };
        let call = rpc!(Stub::list_timeline);
        let page = self
            .client
            .unary(&self.options, LIST_TIMELINE, message, call)
            .await?;
        Ok(Page::new(page.items, page.next_page_token))
    }

    /// The whole timeline the caller may read, fetching pages as the stream is read.
    pub fn list_timeline_stream(&self, request: ListTimeline) -> ItemStream<pb::TimelineItem> {
        let this = self.clone();
        paging::items(request.page_token.clone(), move |token| {
            let (this, request) = (this.clone(), request.clone().page_token(token));
            async move { this.list_timeline(request).await }
        })
    }

    /// What `user_id` may do in the conversation, for services that keep their own messages.
    ///
    /// ```no_run
    /// # async fn demo(client: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
    /// let access = client.conversations().check_access("0190c7e2-…", "bob").await?;
    /// if access.can_post {
    ///     // store bob's message
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn check_access(
        &self,
        conversation_id: impl Into<String>,
        user_id: impl Into<String>,
    ) -> Result<pb::CheckAccessResponse> {
        let message = pb::CheckAccessRequest {
            conversation_id: conversation_id.into(),
            user_id: user_id.into(),
        };
        let call = rpc!(Stub::check_access);
        self.client
            .unary(&self.options, CHECK_ACCESS, message, call)
            .await
    }
}
