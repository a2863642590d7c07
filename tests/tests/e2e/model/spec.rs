//! SPEC §3 in miniature: one group conversation, its roster, its invitations and its timeline,
//! and what each person of a scenario may read of it (rules 1-11, 13-19, 24, 25). It is written
//! from the spec, not from the server: where the spec is silent (which check comes first when two
//! apply, what a repeated archive does) the choice is named in a comment.

use std::collections::{BTreeMap, BTreeSet};

use parley_tests::{ErrorReason, pb};
use pb::{
    add_participants_result::Outcome,
    conversation::State as CState,
    event::Type as EventType,
    participant::{Kind as PKind, Role, State as PState},
};
use tonic::Code;

/// The people of a scenario. The owner, `I1`-`I3` and the stranger `S1` are internal directory
/// users; `X1` and `X2` external ones; the guests `G1` and `G2` are only an email address until
/// their first call puts them in the directory (as external: their tokens say so); `Service` is
/// a service principal acting as the tenant's administrator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Who {
    Owner,
    I1,
    I2,
    I3,
    X1,
    X2,
    S1,
    G1,
    G2,
    Service,
}

impl Who {
    /// Everyone who may call as a user.
    pub const USERS: [Who; 9] = [
        Who::Owner,
        Who::I1,
        Who::I2,
        Who::I3,
        Who::X1,
        Who::X2,
        Who::S1,
        Who::G1,
        Who::G2,
    ];

    /// The short name the scenario's user ids are made of.
    pub fn name(self) -> &'static str {
        match self {
            Who::Owner => "owner",
            Who::I1 => "i1",
            Who::I2 => "i2",
            Who::I3 => "i3",
            Who::X1 => "x1",
            Who::X2 => "x2",
            Who::S1 => "s1",
            Who::G1 => "g1",
            Who::G2 => "g2",
            Who::Service => "service",
        }
    }

    /// The directory kind a seeded user starts with (`None`: not in the directory at first).
    pub fn seeded_external(self) -> Option<bool> {
        match self {
            Who::Owner | Who::I1 | Who::I2 | Who::I3 | Who::S1 => Some(false),
            Who::X1 | Who::X2 => Some(true),
            Who::G1 | Who::G2 | Who::Service => None,
        }
    }

    /// Whether this person's token says `kind: external`.
    pub fn external_token(self) -> bool {
        matches!(self, Who::X1 | Who::X2 | Who::G1 | Who::G2)
    }

    fn is_guest(self) -> bool {
        matches!(self, Who::G1 | Who::G2)
    }
}

/// A policy permission (SPEC §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    Owner,
    Admins,
    Participants,
}

/// The conversation's policy, fixed for a scenario.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub add_internal: Perm,
    pub add_external: Perm,
    pub remove: Perm,
    pub lock_external_roster_on_first_message: bool,
    pub since_join: bool,
    /// 0: the server's default (10,000).
    pub max_participants: i32,
}

/// One invitee of an AddParticipants call.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// By user id.
    User(Who),
    /// By this person's email address.
    Email(Who),
    /// A user id nobody has.
    Unknown,
}

/// One call of a scenario.
#[derive(Clone, Debug)]
pub enum Step {
    Add {
        by: Who,
        targets: Vec<Target>,
        partial: bool,
    },
    Remove {
        by: Who,
        target: Who,
    },
    /// `by` accepts the latest invitation link sent to `invitation_of`'s email.
    Accept {
        by: Who,
        invitation_of: Who,
    },
    Message {
        by: Who,
    },
    Archive {
        by: Who,
    },
    Unarchive {
        by: Who,
    },
    SetRole {
        by: Who,
        target: Who,
        admin: bool,
    },
    /// The identity system turns `user`'s directory entry EXTERNAL.
    MakeExternal {
        user: Who,
    },
}

/// What a call returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Done,
    /// AddParticipants' results, in request order: outcome and reason.
    Added(Vec<(Outcome, ErrorReason)>),
    Failed {
        code: Code,
        reason: ErrorReason,
        /// The per-invitee failures of an atomic AddParticipants: (index, reason).
        invitees: Vec<(usize, ErrorReason)>,
    },
}

/// The gRPC code of a reason (SPEC §4's table).
pub fn code_of(reason: ErrorReason) -> Code {
    use ErrorReason as R;
    match reason {
        R::CantInviteSelf | R::CantRemoveSelf => Code::InvalidArgument,
        R::NoPermission
        | R::NotAParticipant
        | R::NoInvitePermission
        | R::NoExternalInvitePermission
        | R::NoRemovePermission
        | R::ParticipantRemoved
        | R::CantRemoveOwner
        | R::InvitationEmailMismatch => Code::PermissionDenied,
        R::ParticipantNotFound | R::UserNotFound | R::InvitationNotFound => Code::NotFound,
        R::ConversationArchived
        | R::ExternalRosterLocked
        | R::ParticipantLimitExceeded
        | R::InvitationNotPending => Code::FailedPrecondition,
        _ => Code::Internal,
    }
}

fn failed(reason: ErrorReason) -> Reply {
    Reply::Failed {
        code: code_of(reason),
        reason,
        invitees: Vec::new(),
    }
}

/// The conversation record as one viewer reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationView {
    pub title: String,
    pub state: CState,
    pub participant_count: i32,
    pub viewer_state: PState,
    pub has_first_message: bool,
}

/// One participant row as a viewer reads it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParticipantView {
    pub user_id: String,
    pub state: PState,
    pub kind: PKind,
    pub role: Role,
    pub history_from: i64,
}

/// A failed read: its code and reason, as text.
pub type ReadError = String;

/// A failed read as the model and the server both print it.
pub fn read_error(code: Code, reason: &str) -> ReadError {
    format!("{code:?} {reason}")
}

/// Everything one viewer reads about the conversation after a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub conversation: Result<ConversationView, ReadError>,
    /// ListParticipants (any state), sorted by user id.
    pub participants: Result<Vec<ParticipantView>, ReadError>,
    /// ListTimeline, oldest first: (seq, what).
    pub timeline: Result<Vec<(i64, String)>, ReadError>,
    /// This conversation's entries in ListConversations {include_removed: true}.
    pub listed: Vec<ConversationView>,
}

/// The title every scenario's conversation has.
pub const TITLE: &str = "model";

/// The server's default `max_participants` (SPEC §2).
const DEFAULT_MAX_PARTICIPANTS: i32 = 10_000;

#[derive(Clone, Debug)]
struct Row {
    external: bool,
    role: Role,
    active: bool,
    history_from: i64,
    /// The seq of the event that removed them.
    removed_seq: Option<i64>,
    /// The conversation as it was just after their latest removal (rule 15).
    frozen: Option<Frozen>,
}

/// The record's changing fields at one moment, with both counts: an internal viewer's and an
/// external viewer's (rule 18).
#[derive(Clone, Copy, Debug)]
struct Frozen {
    state: CState,
    has_first_message: bool,
    count: i32,
    external_count: i32,
}

#[derive(Clone, Debug)]
struct Item {
    seq: i64,
    what: String,
    /// An event about internal participants only: external viewers never read it (rule 18).
    internal_only: bool,
}

/// Who a caller is to the conversation.
#[derive(Clone, Copy, Debug)]
enum Standing {
    /// A service principal, the tenant's administrator.
    Admin,
    Member(Who, Role),
}

impl Standing {
    fn satisfies(self, perm: Perm) -> bool {
        match (self, perm) {
            (Standing::Admin, _) | (Standing::Member(..), Perm::Participants) => true,
            (Standing::Member(_, role), Perm::Owner) => role == Role::Owner,
            (Standing::Member(_, role), Perm::Admins) => matches!(role, Role::Owner | Role::Admin),
        }
    }

    fn who(self) -> Option<Who> {
        match self {
            Standing::Admin => None,
            Standing::Member(who, _) => Some(who),
        }
    }
}

/// A person an AddParticipants call names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Person {
    User(Who),
    /// An email no directory user has: an invitation.
    Invitee(Who),
    Nobody,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Add,
    AlreadyParticipant,
    Invite,
    AlreadyInvited,
    Fail(ErrorReason),
}

/// The conversation, its directory and its timeline.
#[derive(Clone, Debug)]
pub struct Model {
    prefix: String,
    policy: Policy,
    archived: bool,
    has_first_message: bool,
    timeline: Vec<Item>,
    rows: BTreeMap<Who, Row>,
    /// The directory: who is in it, and whether their entry says EXTERNAL.
    directory: BTreeMap<Who, bool>,
    /// Email invitations by guest: `true` while pending.
    invitations: BTreeMap<Who, bool>,
}

impl Model {
    /// The conversation just created by the owner with `others` (rule 12).
    pub fn new(prefix: &str, policy: Policy, others: &[Who]) -> Model {
        let directory: BTreeMap<Who, bool> = Who::USERS
            .iter()
            .filter_map(|w| w.seeded_external().map(|e| (*w, e)))
            .collect();
        let mut m = Model {
            prefix: prefix.to_owned(),
            policy,
            archived: false,
            has_first_message: false,
            timeline: Vec::new(),
            rows: BTreeMap::new(),
            directory,
            invitations: BTreeMap::new(),
        };
        m.rows.insert(Who::Owner, m.new_row(false, Role::Owner, 1));
        for who in others {
            let external = m.directory.get(who).copied().unwrap_or(false);
            m.rows.insert(*who, m.new_row(external, Role::Member, 1));
        }
        m.event(EventType::ConversationCreated, &[], false);
        m.added_events(others);
        m
    }

    /// The user id of `who` in this scenario.
    pub fn id(&self, who: Who) -> String {
        format!("{}-{}", self.prefix, who.name())
    }

    /// A user id no directory entry has.
    pub fn unknown_id(&self) -> String {
        format!("{}-nobody", self.prefix)
    }

    /// The email address of `who` (the fixtures' `<id>@<tenant>.example`).
    pub fn email(&self, who: Who) -> String {
        parley_tests::email_of(parley_tests::TENANT, &self.id(who))
    }

    /// Everyone whose reads are compared after a step: every directory user and the service.
    /// A guest not yet in the directory is left out, since their first call would add them.
    pub fn observers(&self) -> Vec<Who> {
        let mut out: Vec<Who> = self.directory.keys().copied().collect();
        out.push(Who::Service);
        out
    }

    fn new_row(&self, external: bool, role: Role, history_from: i64) -> Row {
        Row {
            external,
            role,
            active: true,
            history_from,
            removed_seq: None,
            frozen: None,
        }
    }

    fn last_seq(&self) -> i64 {
        self.timeline.len() as i64
    }

    fn event(&mut self, kind: EventType, subjects: &[String], internal_only: bool) -> i64 {
        let seq = self.last_seq() + 1;
        let mut subjects = subjects.to_vec();
        subjects.sort();
        self.timeline.push(Item {
            seq,
            what: format!("{} [{}]", kind.as_str_name(), subjects.join(",")),
            internal_only,
        });
        seq
    }

    /// PARTICIPANT_ADDED for `added`: one event for the internal ones (which external viewers
    /// never read, rule 18), then one for the external ones. The spec fixes no order between
    /// the two; the model names internal first.
    fn added_events(&mut self, added: &[Who]) {
        for external in [false, true] {
            let subjects: Vec<String> = added
                .iter()
                .filter(|w| self.rows.get(w).is_some_and(|r| r.external == external))
                .map(|w| self.id(*w))
                .collect();
            if !subjects.is_empty() {
                self.event(EventType::ParticipantAdded, &subjects, !external);
            }
        }
    }

    fn locked(&self) -> bool {
        self.policy.lock_external_roster_on_first_message && self.has_first_message
    }

    fn max_participants(&self) -> i32 {
        match self.policy.max_participants {
            0 => DEFAULT_MAX_PARTICIPANTS,
            n => n,
        }
    }

    fn active_count(&self) -> i32 {
        self.rows.values().filter(|r| r.active).count() as i32
    }

    /// Active participants an external viewer is shown: external ones and the owner (rule 18).
    fn external_count(&self) -> i32 {
        self.rows
            .values()
            .filter(|r| r.active && (r.external || r.role == Role::Owner))
            .count() as i32
    }

    fn history_from(&self) -> i64 {
        if self.policy.since_join {
            self.last_seq() + 1
        } else {
            1
        }
    }

    fn known(&self, who: Who) -> bool {
        self.directory.contains_key(&who)
    }

    /// Rule 1 and rule 15: the caller must be an active participant, or a service.
    fn standing(&self, by: Who) -> Result<Standing, ErrorReason> {
        if by == Who::Service {
            return Ok(Standing::Admin);
        }
        match self.rows.get(&by) {
            Some(r) if r.active => Ok(Standing::Member(by, r.role)),
            Some(_) => Err(ErrorReason::ParticipantRemoved),
            None => Err(ErrorReason::NotAParticipant),
        }
    }

    /// Applies `step` and says what the call returns. A failed call changes nothing, except
    /// that any call a guest makes puts them in the directory (SPEC §2: a user principal's first
    /// call upserts its entry from its token, whose kind is external).
    pub fn apply(&mut self, step: &Step) -> Reply {
        if let Some(by) = caller_of(step)
            && by.is_guest()
        {
            self.directory.entry(by).or_insert(true);
        }
        let outcome = match step {
            Step::Add {
                by,
                targets,
                partial,
            } => return self.add(*by, targets, *partial),
            Step::Remove { by, target } => self.remove(*by, *target),
            Step::Accept { by, invitation_of } => self.accept(*by, *invitation_of),
            Step::Message { by } => self.message(*by),
            Step::Archive { by } => self.set_archived(*by, true),
            Step::Unarchive { by } => self.set_archived(*by, false),
            Step::SetRole { by, target, admin } => self.set_role(*by, *target, *admin),
            Step::MakeExternal { user } => {
                self.directory.insert(*user, true);
                Ok(())
            }
        };
        match outcome {
            Ok(()) => Reply::Done,
            Err(reason) => failed(reason),
        }
    }

    /// AddParticipants (rules 1-11).
    fn add(&mut self, by: Who, targets: &[Target], partial: bool) -> Reply {
        let standing = match self.standing(by) {
            Ok(s) => s,
            Err(reason) => return failed(reason),
        };
        // Rule 6, checked once the caller is known to be a participant (rule 1 first).
        if self.archived {
            return failed(ErrorReason::ConversationArchived);
        }
        // Judge each person once; a person named again (by id or by email) gets the same
        // verdict, and one added by the first mention is already a participant (rule 5).
        let mut first: BTreeMap<Person, Verdict> = BTreeMap::new();
        let mut verdicts = Vec::with_capacity(targets.len());
        for target in targets {
            let person = match *target {
                Target::User(w) if self.known(w) => Person::User(w),
                Target::Email(w) if self.known(w) => Person::User(w),
                Target::Email(w) => Person::Invitee(w),
                Target::User(_) | Target::Unknown => Person::Nobody,
            };
            let verdict = if let Person::User(w) = person
                && standing.who() == Some(w)
            {
                // Rule 4: naming yourself, by id or by email.
                Verdict::Fail(ErrorReason::CantInviteSelf)
            } else {
                match first.get(&person) {
                    Some(Verdict::Add) => Verdict::AlreadyParticipant,
                    Some(Verdict::Invite) => Verdict::AlreadyInvited,
                    Some(v) => *v,
                    None => {
                        let v = self.judge(standing, person);
                        first.insert(person, v);
                        v
                    }
                }
            };
            verdicts.push(verdict);
        }
        let failures: Vec<(usize, ErrorReason)> = verdicts
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                Verdict::Fail(r) => Some((i, *r)),
                _ => None,
            })
            .collect();
        // Rule 5: atomic by default, the first failure (in request order) heads the error.
        if let Some((_, reason)) = failures.first()
            && !partial
        {
            return Reply::Failed {
                code: code_of(*reason),
                reason: *reason,
                invitees: failures,
            };
        }
        let added: Vec<Who> = first
            .iter()
            .filter_map(|(p, v)| match (p, v) {
                (Person::User(w), Verdict::Add) => Some(*w),
                _ => None,
            })
            .collect();
        let invited: Vec<Who> = first
            .iter()
            .filter_map(|(p, v)| match (p, v) {
                (Person::Invitee(w), Verdict::Invite) => Some(*w),
                _ => None,
            })
            .collect();
        // Rule 9: active participants only; even a partial call fails whole past the cap.
        if !added.is_empty() && self.active_count() + added.len() as i32 > self.max_participants() {
            return failed(ErrorReason::ParticipantLimitExceeded);
        }
        // Rules 10, 11: new or re-activated rows, history from the add on under SINCE_JOIN.
        let history_from = self.history_from();
        for w in &added {
            let external = self.directory.get(w).copied().unwrap_or(false);
            let row = self.new_row(external, Role::Member, history_from);
            self.rows.insert(*w, row);
        }
        self.added_events(&added);
        if !invited.is_empty() {
            let emails: Vec<String> = invited.iter().map(|w| self.email(*w)).collect();
            for w in &invited {
                self.invitations.insert(*w, true);
            }
            self.event(EventType::InvitationSent, &emails, false);
        }
        Reply::Added(
            verdicts
                .into_iter()
                .map(|v| match v {
                    Verdict::Add => (Outcome::Added, ErrorReason::Unspecified),
                    Verdict::AlreadyParticipant => {
                        (Outcome::AlreadyParticipant, ErrorReason::AlreadyParticipant)
                    }
                    Verdict::Invite => (Outcome::Invited, ErrorReason::Unspecified),
                    Verdict::AlreadyInvited => {
                        (Outcome::AlreadyInvited, ErrorReason::AlreadyInvited)
                    }
                    Verdict::Fail(r) => (Outcome::Failed, r),
                })
                .collect(),
        )
    }

    /// One person's verdict (rules 2, 4, 8). The spec orders none of these checks; the model
    /// asks permission first (a caller who may not add someone learns nothing about them), then
    /// whether they are already in, then the lock.
    fn judge(&self, standing: Standing, person: Person) -> Verdict {
        match person {
            Person::Nobody => Verdict::Fail(ErrorReason::UserNotFound),
            Person::User(w) => {
                let external = self.directory.get(&w).copied().unwrap_or(false);
                if external && !standing.satisfies(self.policy.add_external) {
                    return Verdict::Fail(ErrorReason::NoExternalInvitePermission);
                }
                if !external && !standing.satisfies(self.policy.add_internal) {
                    return Verdict::Fail(ErrorReason::NoInvitePermission);
                }
                if self.rows.get(&w).is_some_and(|r| r.active) {
                    return Verdict::AlreadyParticipant;
                }
                if external && self.locked() {
                    return Verdict::Fail(ErrorReason::ExternalRosterLocked);
                }
                Verdict::Add
            }
            Person::Invitee(w) => {
                if !standing.satisfies(self.policy.add_external) {
                    return Verdict::Fail(ErrorReason::NoExternalInvitePermission);
                }
                // Rule 4: a pending invitation is re-sent, whatever the lock (rule 8: those
                // people were on the list).
                if self.invitations.get(&w) == Some(&true) {
                    return Verdict::AlreadyInvited;
                }
                if self.locked() {
                    return Verdict::Fail(ErrorReason::ExternalRosterLocked);
                }
                Verdict::Invite
            }
        }
    }

    /// RemoveParticipant (rules 13, 14, 8, 15).
    fn remove(&mut self, by: Who, target: Who) -> Result<(), ErrorReason> {
        let standing = self.standing(by)?;
        if self.archived {
            return Err(ErrorReason::ConversationArchived);
        }
        // Rule 14 before rule 13: nobody removes themselves, whatever the policy says.
        if standing.who() == Some(target) {
            return Err(ErrorReason::CantRemoveSelf);
        }
        if !standing.satisfies(self.policy.remove) {
            return Err(ErrorReason::NoRemovePermission);
        }
        let row = match self.rows.get(&target) {
            Some(r) if r.active => r.clone(),
            _ => return Err(ErrorReason::ParticipantNotFound),
        };
        if row.role == Role::Owner {
            return Err(ErrorReason::CantRemoveOwner);
        }
        if row.external && self.locked() {
            return Err(ErrorReason::ExternalRosterLocked);
        }
        let subject = self.id(target);
        let seq = self.event(EventType::ParticipantRemoved, &[subject], !row.external);
        if let Some(r) = self.rows.get_mut(&target) {
            r.active = false;
            r.removed_seq = Some(seq);
        }
        let frozen = Frozen {
            state: CState::Active,
            has_first_message: self.has_first_message,
            count: self.active_count(),
            external_count: self.external_count(),
        };
        if let Some(r) = self.rows.get_mut(&target) {
            r.frozen = Some(frozen);
        }
        Ok(())
    }

    /// AcceptInvitation (rule 16). The invitation's own state is judged first (a used link says
    /// so to anyone), then the email, then the conversation. Invitations are only ever made
    /// before the lock (the policy is fixed), so rule 8 never refuses one here.
    fn accept(&mut self, by: Who, invitation_of: Who) -> Result<(), ErrorReason> {
        match self.invitations.get(&invitation_of) {
            None => return Err(ErrorReason::InvitationNotFound),
            Some(false) => return Err(ErrorReason::InvitationNotPending),
            Some(true) => {}
        }
        if by != invitation_of {
            return Err(ErrorReason::InvitationEmailMismatch);
        }
        if self.archived {
            return Err(ErrorReason::ConversationArchived);
        }
        let already_in = self.rows.get(&by).is_some_and(|r| r.active);
        if !already_in {
            if self.active_count() + 1 > self.max_participants() {
                return Err(ErrorReason::ParticipantLimitExceeded);
            }
            let row = self.new_row(true, Role::Member, self.history_from());
            self.rows.insert(by, row);
            let subject = self.id(by);
            self.event(EventType::ParticipantAdded, &[subject], false);
        }
        self.invitations.insert(invitation_of, false);
        let subject = self.id(by);
        self.event(EventType::InvitationAccepted, &[subject], false);
        Ok(())
    }

    /// SendMessage (rule 25): only an active participant posts; a service without an act-as
    /// user has no seat to post from.
    fn message(&mut self, by: Who) -> Result<(), ErrorReason> {
        if by == Who::Service {
            return Err(ErrorReason::NotAParticipant);
        }
        self.standing(by)?;
        if self.archived {
            return Err(ErrorReason::ConversationArchived);
        }
        let seq = self.last_seq() + 1;
        let what = format!("MESSAGE from {}", self.id(by));
        self.timeline.push(Item {
            seq,
            what,
            internal_only: false,
        });
        self.has_first_message = true;
        Ok(())
    }

    /// Archive / unarchive (rule 24). Asking for the state the conversation is already in
    /// succeeds and changes nothing (the spec is silent; AIP's idempotent state changes).
    fn set_archived(&mut self, by: Who, archived: bool) -> Result<(), ErrorReason> {
        let standing = self.standing(by)?;
        if !standing.satisfies(Perm::Admins) {
            return Err(ErrorReason::NoPermission);
        }
        if self.archived != archived {
            self.archived = archived;
            let kind = if archived {
                EventType::ConversationArchived
            } else {
                EventType::ConversationUnarchived
            };
            self.event(kind, &[], false);
        }
        Ok(())
    }

    /// SetParticipantRole: the owner (or a service) makes an active participant ADMIN or
    /// MEMBER; the owner's own role is fixed. The spec names the roles and what ADMINS means,
    /// not who grants them; the model follows the API's documentation.
    fn set_role(&mut self, by: Who, target: Who, admin: bool) -> Result<(), ErrorReason> {
        let standing = self.standing(by)?;
        if !standing.satisfies(Perm::Owner) {
            return Err(ErrorReason::NoPermission);
        }
        if self.archived {
            return Err(ErrorReason::ConversationArchived);
        }
        let row = match self.rows.get(&target) {
            Some(r) if r.active => r.clone(),
            _ => return Err(ErrorReason::ParticipantNotFound),
        };
        if row.role == Role::Owner {
            return Err(ErrorReason::NoPermission);
        }
        let role = if admin { Role::Admin } else { Role::Member };
        if row.role != role {
            if let Some(r) = self.rows.get_mut(&target) {
                r.role = role;
            }
            let subject = self.id(target);
            self.event(EventType::RoleChanged, &[subject], !row.external);
        }
        Ok(())
    }

    /// What `who` reads (rules 15, 18, 19).
    pub fn view(&self, who: Who) -> View {
        if who == Who::Service {
            let conversation = self.live_view(false, PState::Unspecified);
            return View {
                conversation: Ok(conversation.clone()),
                participants: Ok(self.roster(false)),
                timeline: Ok(self.items(1, None, false)),
                listed: vec![conversation],
            };
        }
        let Some(row) = self.rows.get(&who) else {
            let denied = read_error(Code::PermissionDenied, "NOT_A_PARTICIPANT");
            return View {
                conversation: Err(denied.clone()),
                participants: Err(denied.clone()),
                timeline: Err(denied),
                listed: Vec::new(),
            };
        };
        // Rule 18: external if their row, their directory entry or their token says so.
        let external = row.external
            || self.directory.get(&who).copied().unwrap_or(false)
            || who.external_token();
        let conversation = match (row.active, row.frozen) {
            (false, Some(f)) => ConversationView {
                title: TITLE.to_owned(),
                state: f.state,
                participant_count: if external { f.external_count } else { f.count },
                viewer_state: PState::Removed,
                has_first_message: f.has_first_message,
            },
            _ => self.live_view(external, PState::Active),
        };
        let participants = if row.active {
            Ok(self.roster(external))
        } else {
            Err(read_error(Code::PermissionDenied, "PARTICIPANT_REMOVED"))
        };
        let until = if row.active { None } else { row.removed_seq };
        View {
            conversation: Ok(conversation.clone()),
            participants,
            timeline: Ok(self.items(row.history_from, until, external)),
            listed: vec![conversation],
        }
    }

    fn live_view(&self, external: bool, viewer_state: PState) -> ConversationView {
        ConversationView {
            title: TITLE.to_owned(),
            state: if self.archived {
                CState::Archived
            } else {
                CState::Active
            },
            participant_count: if external {
                self.external_count()
            } else {
                self.active_count()
            },
            viewer_state,
            has_first_message: self.has_first_message,
        }
    }

    /// The rows a viewer is shown: everyone, or for an external viewer the external
    /// participants and the owner (rule 18), any state.
    fn roster(&self, external: bool) -> Vec<ParticipantView> {
        let shown: BTreeSet<ParticipantView> = self
            .rows
            .iter()
            .filter(|(_, r)| !external || r.external || r.role == Role::Owner)
            .map(|(w, r)| ParticipantView {
                user_id: self.id(*w),
                state: if r.active {
                    PState::Active
                } else {
                    PState::Removed
                },
                kind: if r.external {
                    PKind::External
                } else {
                    PKind::Internal
                },
                role: r.role,
                history_from: r.history_from,
            })
            .collect();
        let mut out: Vec<ParticipantView> = shown.into_iter().collect();
        out.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        out
    }

    /// The timeline from `from`, below `until`, without internal-only events for an external
    /// viewer (rules 15, 18, 19).
    fn items(&self, from: i64, until: Option<i64>, external: bool) -> Vec<(i64, String)> {
        self.timeline
            .iter()
            .filter(|i| i.seq >= from && until.is_none_or(|u| i.seq < u))
            .filter(|i| !(external && i.internal_only))
            .map(|i| (i.seq, i.what.clone()))
            .collect()
    }
}

/// Who makes the call of `step` as a user (none for the identity system's directory change).
fn caller_of(step: &Step) -> Option<Who> {
    match step {
        Step::Add { by, .. }
        | Step::Remove { by, .. }
        | Step::Accept { by, .. }
        | Step::Message { by }
        | Step::Archive { by }
        | Step::Unarchive { by }
        | Step::SetRole { by, .. } => Some(*by),
        Step::MakeExternal { .. } => None,
    }
}
