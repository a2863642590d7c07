//! `parley-sdk`: the Rust client of Parley, the gRPC service that owns conversations and who
//! is in them.
//!
//! - [`Client::builder`] connects with a bearer token or a [`TokenProvider`], optional
//!   act-as for service principals, timeouts, a [`RetryPolicy`], TLS (feature `tls`) and a
//!   user agent. A [`Client`] is cheap to clone.
//! - One handle per service: [`Client::conversations`], [`Client::participants`],
//!   [`Client::directory`], [`Client::notifications`], with Rust-typed arguments and request
//!   builders ([`NewConversation`], [`UpdateConversation`], [`AddParticipants`],
//!   [`ListParticipants`], …).
//! - A typed [`Error`] with one variant per [`ErrorReason`] (with its metadata, e.g. the
//!   conversation id, or the per-invitee failures of a batch), plus transport variants and
//!   [`Error::is_retryable`].
//! - Safe retries: reads, and mutations that carry a `request_id` — the SDK gives each logical
//!   call one and sends it on every attempt, so the server applies the call once.
//! - Every List method also as a stream of items across all pages (`list_*_stream`).
//! - A conversation's timeline as a live stream that reconnects and resumes by itself
//!   ([`Conversations::watch_timeline`], [`TimelineWatch`]), on one endpoint or several
//!   ([`Client::builder_with_endpoints`]).
//!
//! ```no_run
//! use futures::TryStreamExt;
//! use parley_sdk::{AddParticipants, Client, Error, ListEvents, NewConversation};
//!
//! # async fn demo() -> Result<(), Error> {
//! let client = Client::builder("http://127.0.0.1:50051")
//!     .bearer_token(std::env::var("PARLEY_TOKEN").unwrap_or_default())
//!     .connect()
//!     .await?;
//!
//! let conversation = client
//!     .conversations()
//!     .create(NewConversation::group(["bob"]).title("Launch"))
//!     .await?;
//!
//! match client
//!     .participants()
//!     .add(AddParticipants::new(&conversation.id).users(["carol", "ghost"]))
//!     .await
//! {
//!     Ok(response) => println!("{} added", response.results.len()),
//!     Err(Error::UserNotFound { invitees, .. }) => {
//!         for failure in invitees {
//!             println!("invitee #{} is not in the directory", failure.index);
//!         }
//!     }
//!     Err(other) => return Err(other),
//! }
//!
//! let mut events = client.participants().list_events_stream(ListEvents::new(&conversation.id));
//! while let Some(event) = events.try_next().await? {
//!     println!("#{} {:?}", event.seq, event.r#type());
//! }
//! # Ok(()) }
//! ```
//!
//! The replies are the generated protobuf messages ([`pb::Conversation`], [`pb::Participant`],
//! …), whose enum fields have typed getters (`conversation.state()`, `participant.role()`).
//!
//! Features: `tls` (TLS through rustls, for `https://` endpoints), `dev-tokens` (the `dev`
//! module, to mint development tokens from a server's key file).

#![warn(missing_docs)]

mod client;
mod conversations;
#[cfg(feature = "dev-tokens")]
pub mod dev;
mod directory;
mod error;
mod notifications;
mod paging;
mod participants;
mod retry;
mod streams;
mod watch;

/// The generated protobuf messages and gRPC stubs of `parley.v1`.
pub use parley::pb;

/// The machine-readable cause of a Parley error (`google.rpc.ErrorInfo.reason`).
pub use parley::pb::ErrorReason;

pub use client::{
    ACT_AS_HEADER, Client, ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, TokenFuture,
    TokenProvider,
};
pub use conversations::{
    ConversationKind, ConversationState, Conversations, History, ListConversations, ListMessages,
    ListTimeline, NewConversation, Order, Permission, PolicyBuilder, UpdateConversation,
};
pub use directory::{Directory, ListUsers, UpsertUser, UserKind, UserStatus};
pub use error::{BoxError, Error, FieldViolation, InviteeFailure, Result};
pub use notifications::{ListNotifications, NotificationKind, Notifications, Recipient};
pub use paging::{ItemStream, Page};
pub use participants::{
    AddParticipants, EventType, InvitationState, Invitee, ListEvents, ListInvitations,
    ListParticipants, Outcome, ParticipantKind, ParticipantState, Participants, Role,
};
pub use retry::RetryPolicy;
pub use streams::{Acker, Delivery, InboxEntry, InboxWatch, NotificationStream};
pub use watch::TimelineWatch;
