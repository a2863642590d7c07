//! The things Parley keeps, as the rules see them. Enumerations are the API's own
//! (`parley::pb`), so a value means the same on the wire, in the rules and in the database.

pub use parley::pb::{
    conversation::{Kind as ConversationKind, State as ConversationState},
    event::Type as EventType,
    participant::{Kind as ParticipantKind, Role, State as ParticipantState},
    policy::{History, Permission},
    user::{Kind as UserKind, Status as UserStatus},
};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// `d` in microseconds (the longest a `Micros` holds, past it).
pub fn micros(d: std::time::Duration) -> Micros {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

pub fn now_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub tenant_id: String,
    pub id: String,
    pub display_name: String,
    pub email: String,
    pub kind: UserKind,
    pub status: UserStatus,
    pub create_time: Micros,
    pub update_time: Micros,
}

impl User {
    pub fn participant_kind(&self) -> ParticipantKind {
        participant_kind(self.kind)
    }
}

/// What the rules judge a person they are asked to add by: their directory entry's id, kind
/// and status. Not their name nor their email, which no rule reads (AddParticipants loads
/// only these for up to 1,000 people a call).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub kind: UserKind,
    pub status: UserStatus,
}

impl Candidate {
    pub fn participant_kind(&self) -> ParticipantKind {
        participant_kind(self.kind)
    }
}

impl From<&User> for Candidate {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.clone(),
            kind: u.kind,
            status: u.status,
        }
    }
}

/// Rule 18: a directory user takes part as external only when the directory says so.
fn participant_kind(kind: UserKind) -> ParticipantKind {
    match kind {
        UserKind::External => ParticipantKind::External,
        _ => ParticipantKind::Internal,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub member_ids: Vec<String>,
    pub update_time: Micros,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub add_internal: Permission,
    pub add_external: Permission,
    pub remove: Permission,
    pub lock_external_roster_on_first_message: bool,
    pub new_participant_history: History,
    pub max_participants: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    pub id: String,
    pub tenant_id: String,
    pub kind: ConversationKind,
    pub title: String,
    pub owner_id: String,
    pub state: ConversationState,
    pub policy: Policy,
    pub participant_count: i32,
    pub last_seq: i64,
    pub first_message_time: Option<Micros>,
    pub version: i64,
    pub create_time: Micros,
    pub update_time: Micros,
    /// The version as external viewers see it: internal-only roster changes do not move it
    /// (rule 18).
    pub shared_version: i64,
    /// The update time as external viewers see it (rule 18).
    pub shared_update_time: Micros,
    /// Active participants an external viewer is shown: external participants and the owner.
    pub external_view_count: i32,
}

impl Conversation {
    /// Whether external participants are fixed (rule 8).
    pub fn external_roster_locked(&self) -> bool {
        self.policy.lock_external_roster_on_first_message && self.first_message_time.is_some()
    }

    /// An opaque version tag for optimistic concurrency, as internal viewers see it.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }

    /// The version tag as external viewers see it: it moves with every change they can see and
    /// with no other (rule 18).
    pub fn shared_etag(&self) -> String {
        format!("\"s{}\"", self.shared_version)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    pub conversation_id: String,
    pub user_id: String,
    pub kind: ParticipantKind,
    pub role: Role,
    pub state: ParticipantState,
    pub added_by: String,
    pub join_time: Micros,
    pub removed_by: Option<String>,
    pub remove_time: Option<Micros>,
    /// First seq this participant may read.
    pub history_from: i64,
    /// The seq of the event that removed them: they read below it.
    pub removed_seq: Option<i64>,
    /// The conversation as they saw it just after their latest removal (rule 15); `None`
    /// while active.
    pub removed_view: Option<FrozenView>,
}

/// The changing fields of a conversation at one moment: what a removed participant reads of
/// the conversation from their removal on (rule 15). It keeps both what an internal and what an
/// external viewer saw, because how the participant is judged (rule 18) can change after the
/// removal (their directory entry), and it applies at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrozenView {
    pub title: String,
    pub state: ConversationState,
    pub policy: Policy,
    pub first_message_time: Option<Micros>,
    /// As internal viewers saw it.
    pub participant_count: i32,
    pub update_time: Micros,
    pub etag: String,
    /// As external viewers saw it.
    pub external_participant_count: i32,
    pub shared_update_time: Micros,
    pub shared_etag: String,
}

impl Participant {
    pub fn is_active(&self) -> bool {
        self.state == ParticipantState::Active
    }
}

/// One entry of a conversation's timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineItem {
    pub conversation_id: String,
    pub seq: i64,
    pub create_time: Micros,
    pub entry: Entry,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Message {
        id: String,
        sender_id: String,
        body: String,
    },
    Event {
        event_type: EventType,
        actor_id: String,
        subject_ids: Vec<String>,
        /// Only about internal participants: hidden from external viewers (rule 18).
        internal_only: bool,
    },
}

pub use parley::pb::invitation::State as InvitationState;

/// An invitation by email for someone not (yet) in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    pub id: String,
    pub conversation_id: String,
    /// Lower-cased.
    pub email: String,
    pub invited_by: String,
    pub state: InvitationState,
    pub accepted_by: Option<String>,
    pub create_time: Micros,
    pub expire_time: Micros,
}

impl Invitation {
    /// PENDING past its expiry reads as EXPIRED.
    pub fn effective_state(&self, now: Micros) -> InvitationState {
        if self.state == InvitationState::Pending && now >= self.expire_time {
            InvitationState::Expired
        } else {
            self.state
        }
    }
}
