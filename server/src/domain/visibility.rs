//! What a viewer may see (rules 15, 18, 19). Every read and every stream asks this module: who
//! the viewer is ([`viewer`]), which part of the timeline they read ([`Viewer::window`]), what
//! they see of the conversation record ([`Viewer::conversation`]) and of its roster
//! ([`Viewer::roster`], [`Viewer::may_see`]). Writes ask it which changes external viewers can
//! see ([`touch`]) and what a removed participant keeps ([`freeze`]).

use super::model::{
    Conversation, FrozenView, Micros, Participant, ParticipantKind, ParticipantState, Role,
    TimelineItem, UserKind,
};
use super::principal::{Actor, Principal, PrincipalKind};
use crate::error::Error;

/// The part of a timeline a viewer may read (rules 15, 18, 19).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadWindow {
    /// First readable seq.
    pub from: i64,
    /// First seq no longer readable (the removal event), if removed.
    pub until: Option<i64>,
    /// External viewers never see events about internal participants.
    pub hide_internal_events: bool,
}

impl ReadWindow {
    /// Whether the viewer may read `item`.
    pub fn admits(&self, item: &TimelineItem) -> bool {
        let internal_only = matches!(
            item.entry,
            super::model::Entry::Event {
                internal_only: true,
                ..
            }
        );
        item.seq >= self.from
            && self.until.is_none_or(|until| item.seq < until)
            && !(self.hide_internal_events && internal_only)
    }
}

/// Who reads a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Viewer {
    /// A service principal acting as its tenant's administrator: sees everything.
    Admin,
    /// A participant, active or removed.
    Participant {
        row: Box<Participant>,
        /// Judged as external: their participant row, their directory entry or their token
        /// says EXTERNAL (rule 18: "at once", whichever changed last).
        external: bool,
    },
}

/// Which participants a viewer is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RosterScope {
    Everyone,
    /// External participants and the owner (rule 18).
    ExternalAndOwner,
}

/// The conversation record as one viewer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationView {
    /// The record, its changing fields as this viewer sees them.
    pub conversation: Conversation,
    pub etag: String,
    /// The viewer's own standing, for participants.
    pub viewer_state: Option<ParticipantState>,
}

/// Whether a principal (its token, or its directory entry) says EXTERNAL.
pub fn principal_is_external(p: &Principal) -> bool {
    match p.acting_for {
        // A service acting for a user is judged by that user's directory entry.
        Some(_) => p.directory_kind == Some(UserKind::External),
        None => p.kind == PrincipalKind::External || p.directory_kind == Some(UserKind::External),
    }
}

/// Who the caller is to this conversation: any participant, active or removed, or a service
/// acting as administrator; anyone else is `NOT_A_PARTICIPANT` (rules 1, 15).
pub fn viewer(
    conversation: &Conversation,
    principal: &Principal,
    caller: Option<Participant>,
) -> Result<Viewer, Error> {
    match (principal.actor(), caller) {
        (Actor::Admin(_), _) => Ok(Viewer::Admin),
        (Actor::User(_), Some(row)) => {
            let external =
                row.kind == ParticipantKind::External || principal_is_external(principal);
            Ok(Viewer::Participant {
                row: Box::new(row),
                external,
            })
        }
        (Actor::User(_), None) => Err(Error::NotAParticipant(conversation.id.clone())),
    }
}

impl Viewer {
    /// The participant row of a participant viewer.
    pub fn row(&self) -> Option<&Participant> {
        match self {
            Viewer::Admin => None,
            Viewer::Participant { row, .. } => Some(row),
        }
    }

    fn is_external(&self) -> bool {
        matches!(self, Viewer::Participant { external: true, .. })
    }

    fn is_removed(&self) -> bool {
        self.row().is_some_and(|r| !r.is_active())
    }

    /// The timeline the viewer reads: from their `history_from` (rule 19), below their removal
    /// (rule 15), without internal roster events if external (rule 18).
    pub fn window(&self) -> ReadWindow {
        match self {
            Viewer::Admin => ReadWindow {
                from: 1,
                until: None,
                hide_internal_events: false,
            },
            Viewer::Participant { row, external } => ReadWindow {
                from: row.history_from.max(1),
                until: if row.is_active() {
                    None
                } else {
                    row.removed_seq
                },
                hide_internal_events: *external,
            },
        }
    }

    /// The roster and the invitations are the conversation as it is now, which a removed
    /// participant may not see (rule 15: the history they were part of, nothing after). They
    /// still read the conversation as it was, its timeline up to their removal, and their own
    /// participant row.
    pub fn require_current(&self, conversation: &Conversation) -> Result<(), Error> {
        if self.is_removed() {
            return Err(Error::ParticipantRemoved(conversation.id.clone()));
        }
        Ok(())
    }

    /// Which participants the viewer is shown (rule 18).
    pub fn roster(&self) -> RosterScope {
        if self.is_external() {
            RosterScope::ExternalAndOwner
        } else {
            RosterScope::Everyone
        }
    }

    /// Whether the viewer may see `target`'s participant row: their own always; others as
    /// [`Viewer::roster`] says, and not at all once removed (rule 15).
    pub fn may_see(&self, target: &Participant) -> bool {
        if self.row().is_some_and(|r| r.user_id == target.user_id) {
            return true;
        }
        if self.is_removed() {
            return false;
        }
        match self.roster() {
            RosterScope::Everyone => true,
            RosterScope::ExternalAndOwner => {
                target.kind == ParticipantKind::External || target.role == Role::Owner
            }
        }
    }

    /// The conversation record as the viewer sees it: a removed participant sees it as it was
    /// just after their removal (rule 15); an external viewer sees the count of the people they
    /// are shown and a version and update time that internal-only roster changes do not move
    /// (rule 18).
    pub fn conversation(&self, c: &Conversation) -> ConversationView {
        let viewer_state = self.row().map(|r| r.state);
        if let Some(frozen) = self.row().and_then(|r| r.removed_view.as_ref())
            && self.is_removed()
        {
            let mut conversation = c.clone();
            conversation.title = frozen.title.clone();
            conversation.state = frozen.state;
            conversation.policy = frozen.policy;
            conversation.first_message_time = frozen.first_message_time;
            let etag = if self.is_external() {
                conversation.participant_count = frozen.external_participant_count;
                conversation.update_time = frozen.shared_update_time;
                frozen.shared_etag.clone()
            } else {
                conversation.participant_count = frozen.participant_count;
                conversation.update_time = frozen.update_time;
                frozen.etag.clone()
            };
            return ConversationView {
                conversation,
                etag,
                viewer_state,
            };
        }
        if self.is_external() {
            return ConversationView {
                conversation: external_record(c),
                etag: c.shared_etag(),
                viewer_state,
            };
        }
        ConversationView {
            conversation: c.clone(),
            etag: c.etag(),
            viewer_state,
        }
    }
}

fn external_record(c: &Conversation) -> Conversation {
    let mut shown = c.clone();
    shown.participant_count = c.external_view_count;
    shown.update_time = c.shared_update_time;
    shown
}

/// What a participant removed just now keeps of the conversation: the record as it was just
/// after the removal (rule 15), as internal and as external viewers saw it, so that it is read
/// as the participant is judged when they read it (rule 18).
pub fn freeze(after_removal: &Conversation) -> FrozenView {
    let c = after_removal;
    FrozenView {
        title: c.title.clone(),
        state: c.state,
        policy: c.policy,
        first_message_time: c.first_message_time,
        participant_count: c.participant_count,
        update_time: c.update_time,
        etag: c.etag(),
        external_participant_count: c.external_view_count,
        shared_update_time: c.shared_update_time,
        shared_etag: c.shared_etag(),
    }
}

/// Records a change of the conversation made at `now` that appended `items`: the version and
/// update time move; those external viewers see move only if one of the items is visible to
/// them (rule 18: an internal-only roster change leaves every field they read as it was).
pub fn touch(c: &mut Conversation, now: Micros, items: &[TimelineItem]) {
    c.version += 1;
    c.update_time = now;
    let external_sees = items.iter().any(|item| {
        !matches!(
            item.entry,
            super::model::Entry::Event {
                internal_only: true,
                ..
            }
        )
    });
    if external_sees {
        c.shared_version += 1;
        c.shared_update_time = now;
    }
}

/// How many of `participants` an external viewer is shown (external ones and the owner).
pub fn external_view_count<'a>(participants: impl IntoIterator<Item = &'a Participant>) -> i32 {
    participants
        .into_iter()
        .filter(|p| p.is_active() && (p.kind == ParticipantKind::External || p.role == Role::Owner))
        .count() as i32
}
