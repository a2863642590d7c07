//! [`Caller`]: one principal talking to a test server, with helpers for the RPCs tests use most.

use tonic::{Request, Status, transport::Channel};

use crate::{Kind, display_name, email_of, pb, request_id, user_invitee};
use pb::{
    conversation_service_client::ConversationServiceClient,
    directory_service_client::DirectoryServiceClient,
    notification_service_client::NotificationServiceClient,
    participant_service_client::ParticipantServiceClient,
};

/// Pages listed before a helper gives up (a server that never ends a listing is a bug).
const MAX_PAGES: usize = 1_000;

/// A principal: the shared channel, its bearer token (if any) and an optional act-as user.
#[derive(Clone, Debug)]
pub struct Caller {
    pub(crate) channel: Channel,
    pub(crate) token: Option<String>,
    pub(crate) act_as: Option<String>,
    /// The tenant the token names (for fixture emails).
    pub(crate) tenant: String,
    /// A service token of that tenant, for reading the notification outbox in snapshots.
    pub(crate) outbox_reader: Option<String>,
}

/// Everything a failing call must leave unchanged, read by one participant.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub conversation: pb::Conversation,
    /// Every participant, any state, sorted by user id.
    pub participants: Vec<pb::Participant>,
    /// The whole timeline, oldest first.
    pub timeline: Vec<pb::TimelineItem>,
    /// Every invitation to the conversation, any state.
    pub invitations: Vec<pb::Invitation>,
    /// Every outbox row about the conversation, acknowledged or not, oldest first (read with a
    /// service token of the caller's tenant).
    pub notifications: Vec<pb::Notification>,
}

impl Caller {
    /// `msg` with this caller's metadata.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        match (&self.token, &self.act_as) {
            (Some(token), Some(user)) => crate::req_act_as(msg, token, user),
            (Some(token), None) => crate::req(msg, token),
            (None, Some(user)) => {
                let mut request = Request::new(msg);
                request
                    .metadata_mut()
                    .insert("x-parley-act-as", user.parse().expect("ascii metadata"));
                request
            }
            (None, None) => Request::new(msg),
        }
    }

    /// The same principal over another channel (another replica of the server).
    pub fn via(&self, channel: Channel) -> Caller {
        Caller {
            channel,
            ..self.clone()
        }
    }

    /// The same principal acting as `user` (meaningful for service principals).
    pub fn acting_as(&self, user: &str) -> Caller {
        Caller {
            act_as: Some(user.to_owned()),
            ..self.clone()
        }
    }

    pub fn conv(&self) -> ConversationServiceClient<Channel> {
        ConversationServiceClient::new(self.channel.clone())
    }

    pub fn part(&self) -> ParticipantServiceClient<Channel> {
        ParticipantServiceClient::new(self.channel.clone())
    }

    pub fn dir(&self) -> DirectoryServiceClient<Channel> {
        DirectoryServiceClient::new(self.channel.clone())
    }

    pub fn notif(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.channel.clone())
    }

    // ----- directory -----------------------------------------------------------------------

    /// Upserts user `id` of `kind` (active), named and addressed as the fixtures do.
    pub async fn upsert_user(&self, id: &str, kind: Kind) -> Result<pb::User, Status> {
        let user = pb::User {
            id: id.to_owned(),
            display_name: display_name(id),
            email: email_of(&self.tenant, id),
            kind: kind.user_kind() as i32,
            status: pb::user::Status::Active as i32,
            create_time: None,
            update_time: None,
        };
        self.upsert(user).await
    }

    /// Upserts `user` as given.
    pub async fn upsert(&self, user: pb::User) -> Result<pb::User, Status> {
        Ok(self
            .dir()
            .upsert_user(self.req(pb::UpsertUserRequest {
                user: Some(user),
                request_id: request_id(),
            }))
            .await?
            .into_inner())
    }

    pub async fn get_user(&self, id: &str) -> Result<pb::User, Status> {
        Ok(self
            .dir()
            .get_user(self.req(pb::GetUserRequest { id: id.to_owned() }))
            .await?
            .into_inner())
    }

    pub async fn deactivate_user(&self, id: &str) -> Result<pb::User, Status> {
        Ok(self
            .dir()
            .deactivate_user(self.req(pb::DeactivateUserRequest {
                id: id.to_owned(),
                request_id: request_id(),
            }))
            .await?
            .into_inner())
    }

    // ----- conversations -------------------------------------------------------------------

    /// Creates a GROUP conversation with the server's default policy.
    pub async fn create_group(
        &self,
        title: &str,
        others: &[&str],
    ) -> Result<pb::Conversation, Status> {
        self.create_group_with(title, others, None).await
    }

    /// Creates a GROUP conversation with `policy`.
    pub async fn create_group_with(
        &self,
        title: &str,
        others: &[&str],
        policy: Option<pb::Policy>,
    ) -> Result<pb::Conversation, Status> {
        let request = pb::CreateConversationRequest {
            request_id: request_id(),
            kind: pb::conversation::Kind::Group as i32,
            title: title.to_owned(),
            participant_ids: others.iter().map(|s| (*s).to_owned()).collect(),
            policy,
        };
        self.create(request).await
    }

    /// Creates (or finds) the DIRECT conversation with `other`.
    pub async fn create_direct(&self, other: &str) -> Result<pb::Conversation, Status> {
        let request = pb::CreateConversationRequest {
            request_id: request_id(),
            kind: pb::conversation::Kind::Direct as i32,
            title: String::new(),
            participant_ids: vec![other.to_owned()],
            policy: None,
        };
        self.create(request).await
    }

    pub async fn create(
        &self,
        request: pb::CreateConversationRequest,
    ) -> Result<pb::Conversation, Status> {
        Ok(self
            .conv()
            .create_conversation(self.req(request))
            .await?
            .into_inner())
    }

    pub async fn get(&self, id: &str) -> Result<pb::Conversation, Status> {
        Ok(self
            .conv()
            .get_conversation(self.req(pb::GetConversationRequest { id: id.to_owned() }))
            .await?
            .into_inner())
    }

    pub async fn archive(&self, id: &str) -> Result<pb::Conversation, Status> {
        let msg = pb::ArchiveConversationRequest {
            id: id.to_owned(),
            request_id: request_id(),
        };
        Ok(self
            .conv()
            .archive_conversation(self.req(msg))
            .await?
            .into_inner())
    }

    pub async fn unarchive(&self, id: &str) -> Result<pb::Conversation, Status> {
        let msg = pb::UnarchiveConversationRequest {
            id: id.to_owned(),
            request_id: request_id(),
        };
        Ok(self
            .conv()
            .unarchive_conversation(self.req(msg))
            .await?
            .into_inner())
    }

    pub async fn close(&self, id: &str) -> Result<pb::Conversation, Status> {
        let msg = pb::CloseConversationRequest {
            id: id.to_owned(),
            request_id: request_id(),
        };
        Ok(self
            .conv()
            .close_conversation(self.req(msg))
            .await?
            .into_inner())
    }

    pub async fn send(&self, conversation_id: &str, body: &str) -> Result<pb::Message, Status> {
        let msg = pb::SendMessageRequest {
            conversation_id: conversation_id.to_owned(),
            body: body.to_owned(),
            request_id: request_id(),
        };
        Ok(self.conv().send_message(self.req(msg)).await?.into_inner())
    }

    /// Every conversation the caller is an active participant of, over all pages.
    pub async fn list_conversations(&self) -> Result<Vec<pb::Conversation>, Status> {
        self.list_conversations_with(false, 0).await
    }

    /// Every conversation the caller is in (and, with `include_removed`, was removed from),
    /// over all pages of `page_size`.
    pub async fn list_conversations_with(
        &self,
        include_removed: bool,
        page_size: i32,
    ) -> Result<Vec<pb::Conversation>, Status> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        for _ in 0..MAX_PAGES {
            let msg = pb::ListConversationsRequest {
                page_size,
                page_token,
                include_removed,
            };
            let page = self
                .conv()
                .list_conversations(self.req(msg))
                .await?
                .into_inner();
            out.extend(page.conversations);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
        panic!("ListConversations did not end after {MAX_PAGES} pages");
    }

    /// The whole timeline, oldest first, over all pages.
    pub async fn timeline(&self, conversation_id: &str) -> Result<Vec<pb::TimelineItem>, Status> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        for _ in 0..MAX_PAGES {
            let msg = pb::ListTimelineRequest {
                conversation_id: conversation_id.to_owned(),
                order: pb::Order::OldestFirst as i32,
                page_size: 0,
                page_token,
            };
            let page = self.conv().list_timeline(self.req(msg)).await?.into_inner();
            out.extend(page.items);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
        panic!("ListTimeline did not end after {MAX_PAGES} pages");
    }

    /// The seq of the newest item the caller may read (0 for none).
    pub async fn last_seq(&self, conversation_id: &str) -> i64 {
        self.timeline(conversation_id)
            .await
            .expect("timeline")
            .last()
            .map_or(0, |i| i.seq)
    }

    /// Every message, oldest first, over all pages.
    pub async fn messages(&self, conversation_id: &str) -> Result<Vec<pb::Message>, Status> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        for _ in 0..MAX_PAGES {
            let msg = pb::ListMessagesRequest {
                conversation_id: conversation_id.to_owned(),
                order: pb::Order::OldestFirst as i32,
                page_size: 0,
                page_token,
            };
            let page = self.conv().list_messages(self.req(msg)).await?.into_inner();
            out.extend(page.messages);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
        panic!("ListMessages did not end after {MAX_PAGES} pages");
    }

    // ----- participants --------------------------------------------------------------------

    /// AddParticipants with `invitees`.
    pub async fn add(
        &self,
        conversation_id: &str,
        invitees: Vec<pb::Invitee>,
        partial_success: bool,
    ) -> Result<pb::AddParticipantsResponse, Status> {
        let msg = pb::AddParticipantsRequest {
            conversation_id: conversation_id.to_owned(),
            invitees,
            partial_success,
            request_id: request_id(),
        };
        Ok(self
            .part()
            .add_participants(self.req(msg))
            .await?
            .into_inner())
    }

    /// Atomic AddParticipants of user ids.
    pub async fn add_users(
        &self,
        conversation_id: &str,
        users: &[&str],
    ) -> Result<pb::AddParticipantsResponse, Status> {
        self.add(
            conversation_id,
            users.iter().map(|u| user_invitee(u)).collect(),
            false,
        )
        .await
    }

    /// SetParticipantRole with a fresh request id.
    pub async fn set_role(
        &self,
        conversation_id: &str,
        user_id: &str,
        role: pb::participant::Role,
    ) -> Result<pb::Participant, Status> {
        let msg = pb::SetParticipantRoleRequest {
            conversation_id: conversation_id.to_owned(),
            user_id: user_id.to_owned(),
            role: role as i32,
            request_id: request_id(),
        };
        Ok(self
            .part()
            .set_participant_role(self.req(msg))
            .await?
            .into_inner())
    }

    pub async fn remove(
        &self,
        conversation_id: &str,
        user_id: &str,
    ) -> Result<pb::Participant, Status> {
        let msg = pb::RemoveParticipantRequest {
            conversation_id: conversation_id.to_owned(),
            user_id: user_id.to_owned(),
            request_id: request_id(),
        };
        Ok(self
            .part()
            .remove_participant(self.req(msg))
            .await?
            .into_inner())
    }

    pub async fn participant(
        &self,
        conversation_id: &str,
        user_id: &str,
    ) -> Result<pb::Participant, Status> {
        let msg = pb::GetParticipantRequest {
            conversation_id: conversation_id.to_owned(),
            user_id: user_id.to_owned(),
        };
        Ok(self
            .part()
            .get_participant(self.req(msg))
            .await?
            .into_inner())
    }

    /// Every participant in `state` (UNSPECIFIED: any), over all pages, in server order.
    pub async fn participants_in(
        &self,
        conversation_id: &str,
        state: pb::participant::State,
    ) -> Result<Vec<pb::Participant>, Status> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        for _ in 0..MAX_PAGES {
            let msg = pb::ListParticipantsRequest {
                conversation_id: conversation_id.to_owned(),
                page_size: 1000,
                page_token,
                state: state as i32,
                kind: 0,
            };
            let page = self
                .part()
                .list_participants(self.req(msg))
                .await?
                .into_inner();
            out.extend(page.participants);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
        panic!("ListParticipants did not end after {MAX_PAGES} pages");
    }

    /// Every participant, any state.
    pub async fn participants(
        &self,
        conversation_id: &str,
    ) -> Result<Vec<pb::Participant>, Status> {
        self.participants_in(conversation_id, pb::participant::State::Unspecified)
            .await
    }

    /// The sorted user ids of the ACTIVE participants.
    pub async fn active_ids(&self, conversation_id: &str) -> Result<Vec<String>, Status> {
        let mut ids: Vec<String> = self
            .participants_in(conversation_id, pb::participant::State::Active)
            .await?
            .into_iter()
            .map(|p| p.user_id)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Every event this caller may see, oldest first, over all pages.
    pub async fn events(&self, conversation_id: &str) -> Result<Vec<pb::Event>, Status> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        for _ in 0..MAX_PAGES {
            let msg = pb::ListEventsRequest {
                conversation_id: conversation_id.to_owned(),
                order: pb::Order::OldestFirst as i32,
                page_size: 0,
                page_token,
            };
            let page = self.part().list_events(self.req(msg)).await?.into_inner();
            out.extend(page.events);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
        panic!("ListEvents did not end after {MAX_PAGES} pages");
    }

    /// The events of `kind`, oldest first.
    pub async fn events_of(
        &self,
        conversation_id: &str,
        kind: pb::event::Type,
    ) -> Result<Vec<pb::Event>, Status> {
        Ok(self
            .events(conversation_id)
            .await?
            .into_iter()
            .filter(|e| e.r#type() == kind)
            .collect())
    }

    /// The conversation, its roster and its timeline as this caller sees them; panics if any
    /// read fails.
    pub async fn snapshot(&self, conversation_id: &str) -> Snapshot {
        let conversation = self
            .get(conversation_id)
            .await
            .expect("snapshot: GetConversation");
        let mut participants = self
            .participants(conversation_id)
            .await
            .expect("snapshot: ListParticipants");
        participants.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        let timeline = self
            .timeline(conversation_id)
            .await
            .expect("snapshot: ListTimeline");
        let invitations = self
            .invitations(conversation_id)
            .await
            .expect("snapshot: ListInvitations");
        let notifications = self.outbox_of(conversation_id).await;
        Snapshot {
            conversation,
            participants,
            timeline,
            invitations,
            notifications,
        }
    }

    /// AcceptInvitation with a fresh request id.
    pub async fn accept_invitation(&self, token: &str) -> Result<pb::Participant, Status> {
        let msg = pb::AcceptInvitationRequest {
            token: token.to_owned(),
            request_id: request_id(),
        };
        Ok(self
            .part()
            .accept_invitation(self.req(msg))
            .await?
            .into_inner())
    }

    /// DeclineInvitation with a fresh request id.
    pub async fn decline_invitation(&self, token: &str) -> Result<pb::Invitation, Status> {
        let msg = pb::DeclineInvitationRequest {
            token: token.to_owned(),
            request_id: request_id(),
        };
        Ok(self
            .part()
            .decline_invitation(self.req(msg))
            .await?
            .into_inner())
    }

    /// Every invitation to a conversation, any state, over all pages.
    pub async fn invitations(&self, conversation_id: &str) -> Result<Vec<pb::Invitation>, Status> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        for _ in 0..MAX_PAGES {
            let msg = pb::ListInvitationsRequest {
                conversation_id: conversation_id.to_owned(),
                page_size: 0,
                page_token,
            };
            let page = self
                .part()
                .list_invitations(self.req(msg))
                .await?
                .into_inner();
            out.extend(page.invitations);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
        panic!("ListInvitations did not end after {MAX_PAGES} pages");
    }

    /// The tenant's outbox rows about `conversation_id`, acknowledged or not; empty for a caller
    /// without a tenant (an anonymous one).
    async fn outbox_of(&self, conversation_id: &str) -> Vec<pb::Notification> {
        let Some(token) = &self.outbox_reader else {
            return Vec::new();
        };
        let reader = Caller {
            token: Some(token.clone()),
            act_as: None,
            ..self.clone()
        };
        let mut out = Vec::new();
        let mut page_token = String::new();
        for _ in 0..MAX_PAGES {
            let msg = pb::ListNotificationsRequest {
                page_size: 1_000,
                page_token,
                include_acked: true,
            };
            let page = reader
                .notif()
                .list_notifications(reader.req(msg))
                .await
                .expect("snapshot: ListNotifications")
                .into_inner();
            out.extend(
                page.notifications
                    .into_iter()
                    .filter(|n| n.conversation_id == conversation_id),
            );
            if page.next_page_token.is_empty() {
                return out;
            }
            page_token = page.next_page_token;
        }
        panic!("ListNotifications did not end after {MAX_PAGES} pages");
    }
}
