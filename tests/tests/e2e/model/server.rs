//! Runs a scenario against a real server and against the model side by side: after every
//! call, its reply and every observer's reads must be the model's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parley_tests::*;
use pb::{
    notification::{Kind as NKind, Recipient},
    participant::Role,
    policy::{History, Permission},
};
use tonic::Status;
use tonic_types::StatusExt;

use super::spec::{
    ConversationView, Model, ParticipantView, Perm, Policy, Reply, Step, TITLE, Target, View, Who,
    read_error,
};

/// One generated case: the conversation's policy, who is in it at creation besides the owner,
/// and the calls made.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub policy: Policy,
    pub others: Vec<Who>,
    pub steps: Vec<Step>,
}

/// Numbers the scenarios run on one server, so each has its own people.
static SCENARIOS: AtomicU64 = AtomicU64::new(0);

/// A token no invitation has (AcceptInvitation of an invitation never sent).
const NO_SUCH_TOKEN: &str = "no-such-invitation-token";

/// The scenario's people as callers, the conversation, and the invitation links sent so far.
struct World<'a> {
    app: &'a TestApp,
    model: Model,
    callers: HashMap<Who, Caller>,
    conversation_id: String,
    /// The latest invitation link sent to each guest.
    tokens: HashMap<Who, String>,
}

fn permission(p: Perm) -> Permission {
    match p {
        Perm::Owner => Permission::Owner,
        Perm::Admins => Permission::Admins,
        Perm::Participants => Permission::Participants,
    }
}

fn policy_pb(p: &Policy) -> pb::Policy {
    pb::Policy {
        add_internal: permission(p.add_internal) as i32,
        add_external: permission(p.add_external) as i32,
        remove: permission(p.remove) as i32,
        lock_external_roster_on_first_message: Some(p.lock_external_roster_on_first_message),
        new_participant_history: if p.since_join {
            History::SinceJoin
        } else {
            History::Full
        } as i32,
        max_participants: p.max_participants,
    }
}

/// Runs `scenario` on `app` in a conversation and with people of its own; `Err` describes the
/// first difference between the server and the model.
pub async fn run(app: &TestApp, scenario: &Scenario) -> Result<(), String> {
    let prefix = format!("m{}", SCENARIOS.fetch_add(1, Ordering::SeqCst));
    let probe = Model::new(&prefix, scenario.policy, &[]);
    let service = app.service(TENANT);
    let mut callers = HashMap::new();
    for who in Who::USERS {
        let id = probe.id(who);
        let caller = if who.external_token() {
            app.external(TENANT, &id)
        } else {
            app.user(TENANT, &id)
        };
        callers.insert(who, caller);
    }
    callers.insert(Who::Service, service.clone());
    let seeded = Who::USERS.iter().filter_map(|w| {
        let kind = if w.seeded_external()? {
            Kind::External
        } else {
            Kind::Internal
        };
        Some((probe.id(*w), kind))
    });
    for (id, kind) in seeded {
        service
            .upsert_user(&id, kind)
            .await
            .map_err(|e| format!("seeding {id}: {e:?}"))?;
    }
    let other_ids: Vec<String> = scenario.others.iter().map(|w| probe.id(*w)).collect();
    let others: Vec<&str> = other_ids.iter().map(String::as_str).collect();
    let created = callers[&Who::Owner]
        .create_group_with(TITLE, &others, Some(policy_pb(&scenario.policy)))
        .await
        .map_err(|e| format!("CreateConversation: {e:?}"))?;
    let mut world = World {
        app,
        model: Model::new(&prefix, scenario.policy, &scenario.others),
        callers,
        conversation_id: created.id,
        tokens: HashMap::new(),
    };
    world.compare_views("the creation").await?;
    for (i, step) in scenario.steps.iter().enumerate() {
        let expected = world.model.apply(step);
        let got = world.call(step).await;
        if got != expected {
            return Err(format!(
                "step {i} {step:?}: the server replied {got:?}, the model says {expected:?}"
            ));
        }
        world.compare_views(&format!("step {i} {step:?}")).await?;
    }
    Ok(())
}

impl World<'_> {
    fn caller(&self, who: Who) -> &Caller {
        &self.callers[&who]
    }

    /// Makes `step`'s call on the server.
    async fn call(&mut self, step: &Step) -> Reply {
        let id = self.conversation_id.clone();
        let result: Result<Reply, Status> = match step {
            Step::Add {
                by,
                targets,
                partial,
            } => {
                let invitees = targets
                    .iter()
                    .map(|t| match *t {
                        Target::User(w) => user_invitee(&self.model.id(w)),
                        Target::Email(w) => email_invitee(&self.model.email(w)),
                        Target::Unknown => user_invitee(&self.model.unknown_id()),
                    })
                    .collect();
                match self.caller(*by).add(&id, invitees, *partial).await {
                    Ok(reply) => {
                        self.collect_tokens(targets).await;
                        Ok(Reply::Added(
                            reply
                                .results
                                .iter()
                                .map(|r| (r.outcome(), r.reason()))
                                .collect(),
                        ))
                    }
                    Err(status) => {
                        return failure(&status, true);
                    }
                }
            }
            Step::Remove { by, target } => self
                .caller(*by)
                .remove(&id, &self.model.id(*target))
                .await
                .map(|_| Reply::Done),
            Step::Accept { by, invitation_of } => {
                let token = self
                    .tokens
                    .get(invitation_of)
                    .cloned()
                    .unwrap_or_else(|| NO_SUCH_TOKEN.to_owned());
                let caller = self.caller(*by);
                let msg = pb::AcceptInvitationRequest {
                    token,
                    request_id: request_id(),
                };
                caller
                    .part()
                    .accept_invitation(caller.req(msg))
                    .await
                    .map(|_| Reply::Done)
            }
            Step::Message { by } => self
                .caller(*by)
                .send(&id, "hello")
                .await
                .map(|_| Reply::Done),
            Step::Archive { by } => self.caller(*by).archive(&id).await.map(|_| Reply::Done),
            Step::Unarchive { by } => self.caller(*by).unarchive(&id).await.map(|_| Reply::Done),
            Step::SetRole { by, target, admin } => {
                let role = if *admin { Role::Admin } else { Role::Member };
                self.caller(*by)
                    .set_role(&id, &self.model.id(*target), role)
                    .await
                    .map(|_| Reply::Done)
            }
            Step::MakeExternal { user } => {
                let user_id = self.model.id(*user);
                let entry = pb::User {
                    id: user_id.clone(),
                    display_name: display_name(&user_id),
                    email: self.model.email(*user),
                    kind: pb::user::Kind::External as i32,
                    status: pb::user::Status::Active as i32,
                    create_time: None,
                    update_time: None,
                };
                self.caller(Who::Service)
                    .upsert(entry)
                    .await
                    .map(|_| Reply::Done)
            }
        };
        result.unwrap_or_else(|status| failure(&status, false))
    }

    /// Keeps the latest invitation link sent to each guest an Add named by email.
    async fn collect_tokens(&mut self, targets: &[Target]) {
        let guests: Vec<Who> = targets
            .iter()
            .filter_map(|t| match t {
                Target::Email(w @ (Who::G1 | Who::G2)) => Some(*w),
                _ => None,
            })
            .collect();
        if guests.is_empty() {
            return;
        }
        let notes = self.app.unacked_notifications(TENANT).await;
        for guest in guests {
            let email = self.model.email(guest);
            let latest = notes
                .iter()
                .filter(|n| n.kind() == NKind::Invitation)
                .filter(
                    |n| matches!(&n.recipient, Some(Recipient::RecipientEmail(e)) if *e == email),
                )
                .map(|n| n.invitation_token.clone())
                .next_back();
            if let Some(token) = latest {
                self.tokens.insert(guest, token);
            }
        }
    }

    /// Compares every observer's reads with the model's.
    async fn compare_views(&self, after: &str) -> Result<(), String> {
        let observers = self.model.observers();
        let reads = observers.iter().map(|w| self.read(*w));
        let views = futures::future::join_all(reads).await;
        for (who, got) in observers.iter().zip(views) {
            let want = self.model.view(*who);
            if got != want {
                return Err(describe(after, *who, &self.model.id(*who), &got, &want));
            }
        }
        Ok(())
    }

    /// What `who` reads on the server.
    async fn read(&self, who: Who) -> View {
        let caller = self.caller(who);
        let id = &self.conversation_id;
        let conversation = caller.get(id).await.map(|c| conversation_view(&c));
        let participants = caller.participants(id).await.map(|list| {
            let mut out: Vec<ParticipantView> = list
                .iter()
                .map(|p| ParticipantView {
                    user_id: p.user_id.clone(),
                    state: p.state(),
                    kind: p.kind(),
                    role: p.role(),
                    history_from: p.history_from,
                })
                .collect();
            out.sort_by(|a, b| a.user_id.cmp(&b.user_id));
            out
        });
        let timeline = caller
            .timeline(id)
            .await
            .map(|items| items.iter().map(item).collect());
        let listed = match caller.list_conversations_with(true, 0).await {
            Ok(list) => list
                .iter()
                .filter(|c| c.id == *id)
                .map(conversation_view)
                .collect(),
            Err(status) => vec![ConversationView {
                title: format!("ListConversations failed: {status:?}"),
                state: Default::default(),
                participant_count: -1,
                viewer_state: Default::default(),
                has_first_message: false,
            }],
        };
        View {
            conversation: conversation.map_err(|s| status_text(&s)),
            participants: participants.map_err(|s| status_text(&s)),
            timeline: timeline.map_err(|s| status_text(&s)),
            listed,
        }
    }
}

fn conversation_view(c: &pb::Conversation) -> ConversationView {
    ConversationView {
        title: c.title.clone(),
        state: c.state(),
        participant_count: c.participant_count,
        viewer_state: c.viewer_state(),
        has_first_message: c.first_message_time.is_some(),
    }
}

/// A timeline item as the model names it.
fn item(i: &pb::TimelineItem) -> (i64, String) {
    let what = match &i.item {
        Some(pb::timeline_item::Item::Message(m)) => format!("MESSAGE from {}", m.sender_id),
        Some(pb::timeline_item::Item::Event(e)) => {
            let mut subjects = e.subject_ids.clone();
            subjects.sort();
            format!("{} [{}]", e.r#type().as_str_name(), subjects.join(","))
        }
        None => "EMPTY ITEM".to_owned(),
    };
    (i.seq, what)
}

fn status_text(status: &Status) -> String {
    let reason = status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_else(|| "no ErrorInfo".to_owned());
    read_error(status.code(), &reason)
}

/// A failed call as a [`Reply`]; the per-invitee failures of an AddParticipants (`invitees`).
fn failure(status: &Status, invitees: bool) -> Reply {
    let reason = status
        .get_details_error_info()
        .and_then(|i| ErrorReason::from_str_name(&i.reason))
        .unwrap_or(ErrorReason::Unspecified);
    let violations = if invitees {
        field_violations(status)
            .into_iter()
            .filter_map(|v| {
                let index = v
                    .field
                    .strip_prefix("invitees[")?
                    .split(']')
                    .next()?
                    .parse()
                    .ok()?;
                Some((index, ErrorReason::from_str_name(&v.reason)?))
            })
            .collect()
    } else {
        Vec::new()
    };
    Reply::Failed {
        code: status.code(),
        reason,
        invitees: violations,
    }
}

/// The first read of `who` that differs, both ways.
fn describe(after: &str, who: Who, id: &str, got: &View, want: &View) -> String {
    let field = if got.conversation != want.conversation {
        format!(
            "GetConversation:\n  server {:?}\n  model  {:?}",
            got.conversation, want.conversation
        )
    } else if got.participants != want.participants {
        format!(
            "ListParticipants:\n  server {:?}\n  model  {:?}",
            got.participants, want.participants
        )
    } else if got.timeline != want.timeline {
        format!(
            "ListTimeline:\n  server {:?}\n  model  {:?}",
            got.timeline, want.timeline
        )
    } else {
        format!(
            "ListConversations(include_removed):\n  server {:?}\n  model  {:?}",
            got.listed, want.listed
        )
    };
    format!("after {after}, {who:?} ({id}) reads differently: {field}")
}
