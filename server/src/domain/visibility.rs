//! What a viewer may see (rules 15, 18, 19). Every read and every stream asks this module: who
//! the viewer is ([`viewer`]), which part of the timeline they read ([`Viewer::window`]), what
//! they see of the conversation record ([`Viewer::conversation`]) and of its roster
//! ([`Viewer::roster`], [`Viewer::may_see`]). Writes ask it which changes external viewers can
//! see ([`touch`]) and what a removed participant keeps ([`freeze`]); the export asks it how
//! to label an item for the services that index it ([`audience`]).

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

impl ReadWindow {
    /// The highest seq of a conversation whose last seq is `last_seq` that the window may
    /// hold: below the removal, if any; `None` when the window holds nothing (it starts above
    /// it). Which items in it the viewer may read is [`ReadWindow::readable_top`]'s question.
    pub fn top(&self, last_seq: i64) -> Option<i64> {
        let top = match self.until {
            Some(until) => last_seq.min(until - 1),
            None => last_seq,
        };
        (top >= self.from && top > 0).then_some(top)
    }

    /// The highest seq the viewer may read (WatchInbox, SPEC §7), 0 when none: the window's
    /// [`top`](ReadWindow::top), or, for a viewer who is not shown internal-only events (rule
    /// 18), `shown_top`, the highest seq in `from..=top` that is not one (which the caller
    /// looked up for such a window only).
    pub fn readable_top(&self, last_seq: i64, shown_top: Option<i64>) -> i64 {
        let Some(top) = self.top(last_seq) else {
            return 0;
        };
        if !self.hide_internal_events {
            return top;
        }
        shown_top
            .filter(|seq| (self.from..=top).contains(seq))
            .unwrap_or(0)
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
    viewer_by_id(&conversation.id, principal, caller)
}

/// [`viewer`] where only the conversation's id is known (of a conversation of the caller's
/// tenant): who the caller is depends on nothing else of it.
pub fn viewer_by_id(
    conversation_id: &str,
    principal: &Principal,
    caller: Option<Participant>,
) -> Result<Viewer, Error> {
    match (principal.actor(), caller) {
        (Actor::Admin(_), _) => Ok(Viewer::Admin),
        // Judging a user needs their directory entry (rule 18): a call that has not read it
        // is a server defect, never a guess.
        (Actor::User(_), _) if !principal.directory_read => Err(Error::Internal(
            "the caller's directory entry was not read".into(),
        )),
        (Actor::User(_), Some(row)) => {
            let external =
                row.kind == ParticipantKind::External || principal_is_external(principal);
            Ok(Viewer::Participant {
                row: Box::new(row),
                external,
            })
        }
        (Actor::User(_), None) => Err(Error::NotAParticipant(conversation_id.to_owned())),
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
    pub fn require_current(&self, conversation_id: &str) -> Result<(), Error> {
        if self.is_removed() {
            return Err(Error::ParticipantRemoved(conversation_id.to_owned()));
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

/// Who may see a timeline item, as the export labels it (`Parley-Visibility`, SPEC §7) so
/// that an indexer outside Parley can apply rule 18.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Every participant whose window holds it: messages, and events external viewers see.
    All,
    /// Internal viewers only: an event about internal participants alone (rule 18).
    Internal,
}

impl Audience {
    /// The header's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Internal => "internal",
        }
    }
}

/// Who may see `item` (rule 18): what an external viewer's window ([`ReadWindow::admits`])
/// hides is for internal viewers only.
pub fn audience(item: &TimelineItem) -> Audience {
    let external = ReadWindow {
        from: i64::MIN,
        until: None,
        hide_internal_events: true,
    };
    if external.admits(item) {
        Audience::All
    } else {
        Audience::Internal
    }
}

/// How many of `participants` an external viewer is shown (external ones and the owner).
pub fn external_view_count<'a>(participants: impl IntoIterator<Item = &'a Participant>) -> i32 {
    participants
        .into_iter()
        .filter(|p| p.is_active() && (p.kind == ParticipantKind::External || p.role == Role::Owner))
        .count() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The highest readable seq (WatchInbox): the last seq for a window open at the top,
    /// the one before the removal for a removed viewer, 0 below the window's start, and for a
    /// viewer not shown internal-only events the last shown item, if it is in the window.
    #[test]
    fn the_readable_top_is_the_last_seq_the_window_admits() {
        let open = ReadWindow {
            from: 1,
            until: None,
            hide_internal_events: false,
        };
        assert_eq!(open.readable_top(9, None), 9);
        assert_eq!(open.readable_top(0, None), 0, "an empty timeline");
        let removed = ReadWindow {
            until: Some(5),
            ..open
        };
        assert_eq!(removed.top(9), Some(4));
        assert_eq!(removed.readable_top(9, None), 4);
        assert_eq!(removed.readable_top(3, None), 3, "not yet at the removal");
        let since_join = ReadWindow { from: 7, ..open };
        assert_eq!(since_join.readable_top(9, None), 9);
        let late = ReadWindow {
            from: 7,
            until: Some(7),
            ..open
        };
        assert_eq!(late.top(9), None, "removed where the window starts");
        assert_eq!(late.readable_top(9, Some(6)), 0);
        let external = ReadWindow {
            from: 3,
            hide_internal_events: true,
            until: Some(8),
        };
        assert_eq!(external.readable_top(9, Some(6)), 6);
        assert_eq!(external.readable_top(9, None), 0, "nothing shown");
        assert_eq!(external.readable_top(9, Some(2)), 0, "below the window");
        assert_eq!(external.readable_top(9, Some(8)), 0, "at the removal");
    }

    /// A user whose directory entry this call has not read is never judged: rule 18 needs it.
    #[test]
    fn a_caller_whose_directory_was_not_read_is_not_judged() {
        let mut p = Principal {
            tenant_id: "t".into(),
            id: "u".into(),
            kind: PrincipalKind::Internal,
            email: None,
            name: None,
            acting_for: None,
            directory_kind: None,
            directory_read: false,
        };
        let c = conversation();
        assert!(matches!(viewer(&c, &p, None), Err(Error::Internal(_))));
        p.directory_read = true;
        assert!(matches!(
            viewer(&c, &p, None),
            Err(Error::NotAParticipant(_))
        ));
        // A service acting as administrator needs no directory entry.
        p.kind = PrincipalKind::Service;
        p.directory_read = false;
        assert!(matches!(viewer(&c, &p, None), Ok(Viewer::Admin)));
    }
    use crate::domain::model::{
        ConversationKind, ConversationState, Entry, EventType, History, Permission, Policy,
    };

    fn conversation() -> Conversation {
        Conversation {
            id: "c".into(),
            tenant_id: "t".into(),
            kind: ConversationKind::Group,
            title: "title".into(),
            owner_id: "owner".into(),
            state: ConversationState::Active,
            policy: Policy {
                add_internal: Permission::Participants,
                add_external: Permission::Owner,
                remove: Permission::Owner,
                lock_external_roster_on_first_message: true,
                new_participant_history: History::Full,
                max_participants: 100,
            },
            participant_count: 5,
            last_seq: 10,
            first_message_time: None,
            version: 7,
            create_time: 1,
            update_time: 70,
            shared_version: 3,
            shared_update_time: 30,
            external_view_count: 2,
        }
    }

    fn row(user: &str, kind: ParticipantKind, role: Role) -> Participant {
        Participant {
            conversation_id: "c".into(),
            user_id: user.into(),
            kind,
            role,
            state: ParticipantState::Active,
            added_by: "owner".into(),
            join_time: 1,
            removed_by: None,
            remove_time: None,
            history_from: 1,
            removed_seq: None,
            removed_view: None,
        }
    }

    fn viewer_of(row: Participant, external: bool) -> Viewer {
        Viewer::Participant {
            row: Box::new(row),
            external,
        }
    }

    fn event(seq: i64, internal_only: bool) -> TimelineItem {
        TimelineItem {
            conversation_id: "c".into(),
            seq,
            create_time: 0,
            entry: Entry::Event {
                event_type: EventType::ParticipantAdded,
                actor_id: "owner".into(),
                subject_ids: vec![],
                internal_only,
            },
        }
    }

    #[test]
    fn an_external_viewer_reads_the_shared_record() {
        let c = conversation();
        let view =
            viewer_of(row("x", ParticipantKind::External, Role::Member), true).conversation(&c);
        assert_eq!(view.conversation.participant_count, 2);
        assert_eq!(view.conversation.update_time, 30);
        assert_eq!(view.etag, c.shared_etag());
        let internal =
            viewer_of(row("i", ParticipantKind::Internal, Role::Member), false).conversation(&c);
        assert_eq!(internal.conversation.participant_count, 5);
        assert_eq!(internal.etag, c.etag());
        assert_ne!(view.etag, internal.etag, "the two etags never coincide");
    }

    /// An exported item is for internal viewers alone exactly when external viewers do not see
    /// it.
    #[test]
    fn exported_items_are_labelled_with_who_may_see_them() {
        assert_eq!(audience(&event(3, true)), Audience::Internal);
        assert_eq!(audience(&event(4, false)), Audience::All);
        let message = TimelineItem {
            conversation_id: "c".into(),
            seq: 5,
            create_time: 0,
            entry: super::super::model::Entry::Message {
                id: "m".into(),
                sender_id: "u".into(),
                body: "hi".into(),
            },
        };
        assert_eq!(audience(&message), Audience::All);
        assert_eq!(Audience::Internal.as_str(), "internal");
    }

    #[test]
    fn internal_only_changes_leave_the_shared_record_alone() {
        let mut c = conversation();
        touch(&mut c, 100, &[event(11, true)]);
        assert_eq!((c.version, c.update_time), (8, 100));
        assert_eq!((c.shared_version, c.shared_update_time), (3, 30));
        touch(&mut c, 200, &[event(12, true), event(13, false)]);
        assert_eq!((c.version, c.update_time), (9, 200));
        assert_eq!((c.shared_version, c.shared_update_time), (4, 200));
    }

    #[test]
    fn external_viewers_see_external_people_and_the_owner() {
        let v = viewer_of(row("x", ParticipantKind::External, Role::Member), true);
        assert_eq!(v.roster(), RosterScope::ExternalAndOwner);
        assert!(v.may_see(&row("owner", ParticipantKind::Internal, Role::Owner)));
        assert!(v.may_see(&row("y", ParticipantKind::External, Role::Member)));
        assert!(!v.may_see(&row("i", ParticipantKind::Internal, Role::Admin)));
        // Their own row, whatever it says.
        let judged = viewer_of(row("me", ParticipantKind::Internal, Role::Member), true);
        assert!(judged.may_see(&row("me", ParticipantKind::Internal, Role::Member)));
        assert!(judged.window().hide_internal_events);
        assert!(!judged.window().admits(&event(4, true)));
        assert!(judged.window().admits(&event(4, false)));
    }

    #[test]
    fn a_removed_viewer_reads_the_frozen_record_as_they_are_judged_now() {
        let mut c = conversation();
        let frozen = freeze(&c);
        let mut gone = row("r", ParticipantKind::Internal, Role::Member);
        gone.state = ParticipantState::Removed;
        gone.removed_seq = Some(8);
        gone.removed_view = Some(frozen);
        c.title = "later".into();
        c.state = ConversationState::Archived;
        c.participant_count = 9;
        c.version = 20;
        let as_internal = viewer_of(gone.clone(), false).conversation(&c);
        assert_eq!(as_internal.conversation.title, "title");
        assert_eq!(as_internal.conversation.state, ConversationState::Active);
        assert_eq!(as_internal.conversation.participant_count, 5);
        assert_eq!(as_internal.etag, "\"7\"");
        assert_eq!(as_internal.viewer_state, Some(ParticipantState::Removed));
        let as_external = viewer_of(gone.clone(), true).conversation(&c);
        assert_eq!(as_external.conversation.participant_count, 2);
        assert_eq!(as_external.etag, "\"s3\"");
        let window = viewer_of(gone.clone(), false).window();
        assert!(window.admits(&event(7, false)) && !window.admits(&event(8, false)));
        assert!(
            viewer_of(gone.clone(), false)
                .require_current(&c.id)
                .is_err()
        );
        assert!(!viewer_of(gone, false).may_see(&row(
            "owner",
            ParticipantKind::Internal,
            Role::Owner
        )));
    }
}
