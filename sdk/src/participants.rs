//! ParticipantService: adding (users, groups, emails), removing, reading and listing
//! participants, roles, the event timeline, and email invitations.

use parley::pb::{self, participant_service_client::ParticipantServiceClient as Stub};

use crate::{
    Client,
    client::{CallOptions, call_options, rpc},
    conversations::Order,
    error::Result,
    paging::{self, ItemStream, Page, paged},
    retry::Method,
};

/// The outcome of one person in an AddParticipants call: `Added`, `AlreadyParticipant`,
/// `Invited`, `AlreadyInvited` or `Failed`.
pub use pb::add_participants_result::Outcome;
/// The kind of a timeline event (`ParticipantAdded`, `ConversationArchived`, …).
pub use pb::event::Type as EventType;
/// An invitation's state: `Pending`, `Accepted`, `Declined`, `Revoked` or `Expired`.
pub use pb::invitation::State as InvitationState;
/// A participant's kind, from the directory: `Internal` or `External`.
pub use pb::participant::Kind as ParticipantKind;
/// A participant's role: `Owner`, `Admin` or `Member`.
pub use pb::participant::Role;
/// A participant's state: `Active` or `Removed`.
pub use pb::participant::State as ParticipantState;

/// One person (or group) to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invitee {
    /// A directory user.
    User(String),
    /// Every active member of a directory group.
    Group(String),
    /// An email address: the directory user with it, or else a pending invitation.
    Email(String),
}

impl From<Invitee> for pb::Invitee {
    fn from(invitee: Invitee) -> Self {
        use pb::invitee::Invitee as I;
        let inner = match invitee {
            Invitee::User(id) => I::UserId(id),
            Invitee::Group(id) => I::GroupId(id),
            Invitee::Email(email) => I::Email(email),
        };
        pb::Invitee {
            invitee: Some(inner),
        }
    }
}

/// An AddParticipants request: 1..1,000 invitees. Atomic by default: if any invitee fails,
/// nothing is applied and the error lists every failure
/// ([`Error::invitee_failures`](crate::Error::invitee_failures)); with
/// [`partial_success`](AddParticipants::partial_success) the valid ones are applied and the
/// response reports every person's outcome.
///
/// ```no_run
/// # async fn demo(client: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
/// use parley_sdk::{AddParticipants, Outcome};
///
/// let response = client
///     .participants()
///     .add(
///         AddParticipants::new("0190c7e2-…")
///             .users(["dave", "erin"])
///             .group("design")
///             .email("guest@example.com"),
///     )
///     .await?;
/// for result in &response.results {
///     if result.outcome() == Outcome::Invited {
///         println!("invitation sent");
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct AddParticipants {
    conversation_id: String,
    invitees: Vec<Invitee>,
    partial_success: bool,
    request_id: Option<String>,
}

impl AddParticipants {
    /// Adds to `conversation_id`; name the invitees next.
    pub fn new(conversation_id: impl Into<String>) -> Self {
        Self {
            conversation_id: conversation_id.into(),
            invitees: Vec::new(),
            partial_success: false,
            request_id: None,
        }
    }

    /// One invitee.
    pub fn invitee(mut self, invitee: Invitee) -> Self {
        self.invitees.push(invitee);
        self
    }

    /// A directory user.
    pub fn user(self, user_id: impl Into<String>) -> Self {
        self.invitee(Invitee::User(user_id.into()))
    }

    /// Several directory users.
    pub fn users<I, S>(mut self, user_ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.invitees
            .extend(user_ids.into_iter().map(|id| Invitee::User(id.into())));
        self
    }

    /// Every active member of a group (each gets a result of their own).
    pub fn group(self, group_id: impl Into<String>) -> Self {
        self.invitee(Invitee::Group(group_id.into()))
    }

    /// An email address.
    pub fn email(self, email: impl Into<String>) -> Self {
        self.invitee(Invitee::Email(email.into()))
    }

    /// Applies the valid invitees even when others fail.
    pub fn partial_success(mut self, partial: bool) -> Self {
        self.partial_success = partial;
        self
    }

    /// The request id (default: a new UUIDv7 for this call, reused by its retries).
    pub fn request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }
}

/// A ListParticipants request.
///
/// ```no_run
/// # async fn demo(client: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
/// use parley_sdk::{ListParticipants, ParticipantKind, ParticipantState};
///
/// let externals = client
///     .participants()
///     .list(
///         ListParticipants::new("0190c7e2-…")
///             .state(ParticipantState::Active)
///             .kind(ParticipantKind::External),
///     )
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct ListParticipants {
    conversation_id: String,
    page_size: i32,
    page_token: Option<String>,
    state: Option<ParticipantState>,
    kind: Option<ParticipantKind>,
}
paged!(ListParticipants);

impl ListParticipants {
    /// Every participant of `conversation_id`, any state or kind.
    pub fn new(conversation_id: impl Into<String>) -> Self {
        Self {
            conversation_id: conversation_id.into(),
            page_size: 0,
            page_token: None,
            state: None,
            kind: None,
        }
    }

    /// Only participants in `state`.
    pub fn state(mut self, state: ParticipantState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only participants of `kind`.
    pub fn kind(mut self, kind: ParticipantKind) -> Self {
        self.kind = Some(kind);
        self
    }
}

/// A ListEvents request: the roster changes and other events the caller may see.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct ListEvents {
    conversation_id: String,
    order: Order,
    page_size: i32,
    page_token: Option<String>,
}
paged!(ListEvents);

impl ListEvents {
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

/// A ListInvitations request.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct ListInvitations {
    conversation_id: String,
    page_size: i32,
    page_token: Option<String>,
}
paged!(ListInvitations);

impl ListInvitations {
    /// The first page of `conversation_id`'s invitations.
    pub fn new(conversation_id: impl Into<String>) -> Self {
        Self {
            conversation_id: conversation_id.into(),
            page_size: 0,
            page_token: None,
        }
    }
}

const ADD: Method = Method::keyed("AddParticipants");
const REMOVE: Method = Method::keyed("RemoveParticipant");
const GET: Method = Method::read("GetParticipant");
const LIST: Method = Method::read("ListParticipants");
const SET_ROLE: Method = Method::keyed("SetParticipantRole");
const LIST_EVENTS: Method = Method::read("ListEvents");
const LIST_INVITATIONS: Method = Method::read("ListInvitations");
const ACCEPT: Method = Method::keyed("AcceptInvitation");
const DECLINE: Method = Method::keyed("DeclineInvitation");
const REVOKE: Method = Method::keyed("RevokeInvitation");

/// ParticipantService, from [`Client::participants`].
#[derive(Clone, Debug)]
pub struct Participants {
    client: Client,
    options: CallOptions,
}
call_options!(Participants);

impl Participants {
    /// Adds users, groups' members and email invitees (see [`AddParticipants`]).
    pub async fn add(&self, request: AddParticipants) -> Result<pb::AddParticipantsResponse> {
        let message = pb::AddParticipantsRequest {
            conversation_id: request.conversation_id,
            invitees: request.invitees.into_iter().map(Into::into).collect(),
            partial_success: request.partial_success,
            request_id: self.options.request_id(request.request_id),
        };
        let call = rpc!(Stub::add_participants);
        self.client.unary(&self.options, ADD, message, call).await
    }

    /// Removes a participant (as the policy's `remove` allows; never oneself or the owner).
    ///
    /// ```no_run
    /// # async fn demo(client: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
    /// let removed = client.participants().remove("0190c7e2-…", "dave").await?;
    /// assert_eq!(removed.state(), parley_sdk::ParticipantState::Removed);
    /// # Ok(()) }
    /// ```
    pub async fn remove(
        &self,
        conversation_id: impl Into<String>,
        user_id: impl Into<String>,
    ) -> Result<pb::Participant> {
        let message = pb::RemoveParticipantRequest {
            conversation_id: conversation_id.into(),
            user_id: user_id.into(),
            request_id: self.options.request_id(None),
        };
        let call = rpc!(Stub::remove_participant);
        self.client
            .unary(&self.options, REMOVE, message, call)
            .await
    }

    /// Reads one participant (active or removed).
    pub async fn get(
        &self,
        conversation_id: impl Into<String>,
        user_id: impl Into<String>,
    ) -> Result<pb::Participant> {
        let message = pb::GetParticipantRequest {
            conversation_id: conversation_id.into(),
            user_id: user_id.into(),
        };
        let call = rpc!(Stub::get_participant);
        self.client.unary(&self.options, GET, message, call).await
    }

    /// One page of participants.
    pub async fn list(&self, request: ListParticipants) -> Result<Page<pb::Participant>> {
        let message = pb::ListParticipantsRequest {
            conversation_id: request.conversation_id,
            page_size: request.page_size,
            page_token: request.page_token.unwrap_or_default(),
            state: request.state.map_or(0, Into::into),
            kind: request.kind.map_or(0, Into::into),
        };
        let call = rpc!(Stub::list_participants);
        let page = self
            .client
            .unary(&self.options, LIST, message, call)
            .await?;
        Ok(Page::new(page.participants, page.next_page_token))
    }

    /// Every participant the request selects, fetching pages as the stream is read.
    pub fn list_stream(&self, request: ListParticipants) -> ItemStream<pb::Participant> {
        let this = self.clone();
        paging::items(request.page_token.clone(), move |token| {
            let (this, request) = (this.clone(), request.clone().page_token(token));
            async move { this.list(request).await }
        })
    }

    /// Makes a participant an `Admin` or a `Member` (owner only).
    pub async fn set_role(
        &self,
        conversation_id: impl Into<String>,
        user_id: impl Into<String>,
        role: Role,
    ) -> Result<pb::Participant> {
        let message = pb::SetParticipantRoleRequest {
            conversation_id: conversation_id.into(),
            user_id: user_id.into(),
            role: role.into(),
            request_id: self.options.request_id(None),
        };
        let call = rpc!(Stub::set_participant_role);
        self.client
            .unary(&self.options, SET_ROLE, message, call)
            .await
    }

    /// One page of the events the caller may see.
    pub async fn list_events(&self, request: ListEvents) -> Result<Page<pb::Event>> {
        let message = pb::ListEventsRequest {
            conversation_id: request.conversation_id,
            order: request.order.into(),
            page_size: request.page_size,
            page_token: request.page_token.unwrap_or_default(),
        };
        let call = rpc!(Stub::list_events);
        let page = self
            .client
            .unary(&self.options, LIST_EVENTS, message, call)
            .await?;
        Ok(Page::new(page.events, page.next_page_token))
    }

    /// Every event the caller may see, fetching pages as the stream is read.
    ///
    /// ```no_run
    /// # async fn demo(client: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
    /// use futures::TryStreamExt;
    /// use parley_sdk::ListEvents;
    ///
    /// let events: Vec<_> = client
    ///     .participants()
    ///     .list_events_stream(ListEvents::new("0190c7e2-…"))
    ///     .try_collect()
    ///     .await?;
    /// for e in events {
    ///     println!("#{} {:?} by {}", e.seq, e.r#type(), e.actor_id);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn list_events_stream(&self, request: ListEvents) -> ItemStream<pb::Event> {
        let this = self.clone();
        paging::items(request.page_token.clone(), move |token| {
            let (this, request) = (this.clone(), request.clone().page_token(token));
            async move { this.list_events(request).await }
        })
    }

    /// One page of a conversation's email invitations.
    pub async fn list_invitations(&self, request: ListInvitations) -> Result<Page<pb::Invitation>> {
        let message = pb::ListInvitationsRequest {
            conversation_id: request.conversation_id,
            page_size: request.page_size,
            page_token: request.page_token.unwrap_or_default(),
        };
        let call = rpc!(Stub::list_invitations);
        let page = self
            .client
            .unary(&self.options, LIST_INVITATIONS, message, call)
            .await?;
        Ok(Page::new(page.invitations, page.next_page_token))
    }

    /// Every invitation of a conversation, fetching pages as the stream is read.
    pub fn list_invitations_stream(&self, request: ListInvitations) -> ItemStream<pb::Invitation> {
        let this = self.clone();
        paging::items(request.page_token.clone(), move |token| {
            let (this, request) = (this.clone(), request.clone().page_token(token));
            async move { this.list_invitations(request).await }
        })
    }

    /// Accepts an invitation with the token from its link; the caller (whose token's `email`
    /// claim must match the invitation's) becomes an external participant.
    pub async fn accept_invitation(&self, token: impl Into<String>) -> Result<pb::Participant> {
        let message = pb::AcceptInvitationRequest {
            token: token.into(),
            request_id: self.options.request_id(None),
        };
        let call = rpc!(Stub::accept_invitation);
        self.client
            .unary(&self.options, ACCEPT, message, call)
            .await
    }

    /// Declines an invitation with the token from its link.
    pub async fn decline_invitation(&self, token: impl Into<String>) -> Result<pb::Invitation> {
        let message = pb::DeclineInvitationRequest {
            token: token.into(),
            request_id: self.options.request_id(None),
        };
        let call = rpc!(Stub::decline_invitation);
        self.client
            .unary(&self.options, DECLINE, message, call)
            .await
    }

    /// Revokes a pending invitation (its inviter or the owner).
    pub async fn revoke_invitation(
        &self,
        invitation_id: impl Into<String>,
    ) -> Result<pb::Invitation> {
        let message = pb::RevokeInvitationRequest {
            invitation_id: invitation_id.into(),
            request_id: self.options.request_id(None),
        };
        let call = rpc!(Stub::revoke_invitation);
        self.client
            .unary(&self.options, REVOKE, message, call)
            .await
    }
}
