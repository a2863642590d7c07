//! The notifications a change owes people (rules 21-23), as the rules decide them. The outbox
//! (`store::outbox`) writes them in the transaction of the change.

use super::model::Micros;
pub use parley::pb::notification::Kind;

/// Who a notification is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    User(String),
    Email(String),
}

/// One notification owed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub id: String,
    pub kind: Kind,
    pub recipient: Recipient,
    pub conversation_id: String,
    pub actor_id: String,
    pub subject_ids: Vec<String>,
    /// Only on INVITATION notifications: the invitation whose link it carries. The link token
    /// itself is never stored (rule 23); it is derived again when the notification is read.
    pub invitation_id: Option<String>,
    pub create_time: Micros,
    pub ack_time: Option<Micros>,
}

impl Notification {
    /// A notification with the id and time the caller drew: the rules neither read a clock nor
    /// make ids.
    pub fn at(
        id: String,
        now: Micros,
        kind: Kind,
        recipient: Recipient,
        conversation_id: &str,
        actor_id: &str,
        subject_ids: Vec<String>,
    ) -> Self {
        Self {
            id,
            kind,
            recipient,
            conversation_id: conversation_id.to_owned(),
            actor_id: actor_id.to_owned(),
            subject_ids,
            invitation_id: None,
            create_time: now,
            ack_time: None,
        }
    }
}
