//! NotificationService (service principals only): the outbox of notifications that roster
//! changes owe people, drained by a sibling notification service. Delivery is at least once:
//! list, deliver, then acknowledge; acknowledging is idempotent and retried safely.

use parley::pb::{self, notification_service_client::NotificationServiceClient as Stub};

use crate::{
    Client,
    client::{CallOptions, call_options, rpc},
    error::Result,
    paging::{self, ItemStream, Page, paged},
    retry::Method,
    streams::NotificationStream,
};

/// A notification's kind: `ParticipantAddedByOther`, `AddedToConversation` or `Invitation`.
pub use pb::notification::Kind as NotificationKind;
/// Whom a notification is for: a directory user or an email address.
pub use pb::notification::Recipient;

/// A ListNotifications request: the unacknowledged notifications, oldest first.
///
/// ```no_run
/// # async fn demo(service: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
/// use parley_sdk::{ListNotifications, Recipient};
///
/// let notifications = service.notifications();
/// let page = notifications.list(ListNotifications::new().page_size(100)).await?;
/// for n in &page.items {
///     match &n.recipient {
///         Some(Recipient::RecipientEmail(email)) => println!("mail {email}: {:?}", n.kind()),
///         Some(Recipient::RecipientUserId(user)) => println!("notify {user}: {:?}", n.kind()),
///         None => {}
///     }
/// }
/// notifications.ack(page.items.iter().map(|n| n.id.clone())).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[must_use]
pub struct ListNotifications {
    page_size: i32,
    page_token: Option<String>,
    include_acked: bool,
}
paged!(ListNotifications);

impl ListNotifications {
    /// The first page of unacknowledged notifications.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lists acknowledged notifications too.
    pub fn include_acked(mut self, include: bool) -> Self {
        self.include_acked = include;
        self
    }
}

const LIST: Method = Method::read("ListNotifications");
const ACK: Method = Method::keyed("AckNotifications");

/// NotificationService, from [`Client::notifications`].
#[derive(Clone, Debug)]
pub struct Notifications {
    client: Client,
    options: CallOptions,
}
call_options!(Notifications);

impl Notifications {
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The tenant's notifications as they come, each leased to this stream until
    /// acknowledged (StreamNotifications): see [`NotificationStream`].
    pub fn stream(&self) -> NotificationStream {
        NotificationStream::new(self.clone())
    }

    /// One page of the tenant's notifications.
    pub async fn list(&self, request: ListNotifications) -> Result<Page<pb::Notification>> {
        let message = pb::ListNotificationsRequest {
            page_size: request.page_size,
            page_token: request.page_token.unwrap_or_default(),
            include_acked: request.include_acked,
        };
        let call = rpc!(Stub::list_notifications);
        let page = self
            .client
            .unary(&self.options, LIST, message, call)
            .await?;
        Ok(Page::new(page.notifications, page.next_page_token))
    }

    /// Every notification the request selects, fetching pages as the stream is read.
    pub fn list_stream(&self, request: ListNotifications) -> ItemStream<pb::Notification> {
        let this = self.clone();
        paging::items(request.page_token.clone(), move |token| {
            let (this, request) = (this.clone(), request.clone().page_token(token));
            async move { this.list(request).await }
        })
    }

    /// Acknowledges delivered notifications; returns how many were newly acknowledged.
    pub async fn ack<I, S>(&self, ids: I) -> Result<u32>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let message = pb::AckNotificationsRequest {
            ids: ids.into_iter().map(Into::into).collect(),
            request_id: self.options.request_id(None),
        };
        let call = rpc!(Stub::ack_notifications);
        let response = self.client.unary(&self.options, ACK, message, call).await?;
        Ok(u32::try_from(response.acked).unwrap_or_default())
    }
}
