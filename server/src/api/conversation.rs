//! ConversationService: conversations, their lifecycle, messages and the timeline.

use std::{collections::HashSet, sync::Arc};

use parley::pb::{self, conversation_service_server::ConversationService};
use tonic::{Request, Response, Status};

use super::{Begun, State, actor, begin_mutation, convert};
use crate::config::Limits;
use crate::domain::conversation_ops::{ConversationPatch, NewConversation, Transition};
use crate::domain::model::{ConversationKind, History, Permission, TimelineItem};
use crate::domain::principal::{Actor, Principal};
use crate::domain::rules::{self, RequestedPolicy};
use crate::domain::validate::{self, Violations};
use crate::domain::visibility::{self, ConversationView, Viewer};
use crate::error::Error;
use crate::store::{self, conversations as convs, directory as dir, timeline::Only};

pub struct Conversations(pub Arc<State>);

const LIST_CONVERSATIONS: &str = "ListConversations";

/// What ListTimeline, ListMessages and ListEvents ask for.
pub(crate) struct TimelineQuery<'a> {
    /// The List method, which page tokens are bound to.
    pub list: &'static str,
    pub conversation_id: &'a str,
    pub order: i32,
    pub page_size: i32,
    pub page_token: &'a str,
    pub only: Only,
}

/// A page of a conversation's timeline as the caller may read it.
pub(crate) async fn timeline_page(
    state: &State,
    p: &Principal,
    query: TimelineQuery<'_>,
) -> Result<(Vec<TimelineItem>, String), Error> {
    let TimelineQuery {
        list,
        conversation_id,
        order,
        page_size,
        page_token,
        only,
    } = query;
    let mut v = Violations::default();
    let id = v.check(validate::conversation_id(
        "conversation_id",
        conversation_id,
    ));
    let order = v
        .check(validate::enum_field::<pb::Order>("order", order))
        .flatten();
    let size = v.check(validate::page_size(page_size));
    v.finish()?;
    let (Some(id), Some(size)) = (id, size) else {
        return Err(Error::Internal("validated fields missing".into()));
    };
    let newest_first = order == Some(pb::Order::NewestFirst);
    let scope = format!(
        "{}/{id}/{}",
        p.tenant_id,
        if newest_first { "desc" } else { "asc" }
    );
    let after = match state.pager.open(page_token, list, &scope)? {
        Some(k) => Some(
            k.parse::<i64>()
                .map_err(|_| Error::field("page_token", "is not a page token of this list"))?,
        ),
        None => None,
    };
    let tx = store::begin_read(&state.db).await?;
    let (_, viewer) = state.read_access(&tx, p, &id).await?;
    let mut items = store::timeline::list(
        &tx,
        &id,
        viewer.window(),
        only,
        newest_first,
        after,
        size + 1,
    )
    .await?;
    tx.commit().await?;
    let next = super::next_page(&state.pager, list, &scope, &mut items, size, |i| {
        i.seq.to_string()
    });
    Ok((items, next))
}

fn policy_request(p: Option<pb::Policy>, v: &mut Violations) -> Option<RequestedPolicy> {
    let p = p?;
    Some(RequestedPolicy {
        add_internal: v
            .check(validate::enum_field::<Permission>(
                "policy.add_internal",
                p.add_internal,
            ))
            .flatten(),
        add_external: v
            .check(validate::enum_field::<Permission>(
                "policy.add_external",
                p.add_external,
            ))
            .flatten(),
        remove: v
            .check(validate::enum_field::<Permission>(
                "policy.remove",
                p.remove,
            ))
            .flatten(),
        lock_external_roster_on_first_message: p.lock_external_roster_on_first_message,
        new_participant_history: v
            .check(validate::enum_field::<History>(
                "policy.new_participant_history",
                p.new_participant_history,
            ))
            .flatten(),
        max_participants: p.max_participants,
    })
}

/// CreateConversation's bounds, checked before the request is copied or looked into: the
/// request id, then the raw `participant_ids` list's length (duplicates and the creator
/// counted), so a huge list is refused without looking at a single id (SPEC §4, rule 12).
fn create_bounds(limits: &Limits, req: &pb::CreateConversationRequest) -> Result<(), Error> {
    validate::request_id(&req.request_id)?;
    let max = limits.max_initial_participants;
    if req.participant_ids.len() > max {
        return Err(Error::TooManyInitialParticipants { max });
    }
    Ok(())
}

/// UpdateConversation's bounds on its repeated field, checked like [`create_bounds`].
fn update_bounds(_: &Limits, req: &pb::UpdateConversationRequest) -> Result<(), Error> {
    validate::request_id(&req.request_id)?;
    if let Some(mask) = &req.update_mask {
        validate::max_items(
            "update_mask.paths",
            &mask.paths,
            validate::MAX_UPDATE_MASK_PATHS,
        )?;
    }
    Ok(())
}

impl Conversations {
    /// Runs after [`create_bounds`]: then the per-id checks, then linear de-duplication.
    async fn create(
        &self,
        p: Principal,
        req: pb::CreateConversationRequest,
    ) -> Result<pb::Conversation, Error> {
        let state = &self.0;
        let req_for_key = req.clone();
        let mut v = Violations::default();
        let kind = v
            .check(validate::enum_field::<ConversationKind>("kind", req.kind))
            .flatten();
        if req.kind == 0 {
            v.check::<()>(Err(Error::field("kind", "must be GROUP or DIRECT")));
        }
        v.check(validate::max_chars(
            "title",
            &req.title,
            validate::MAX_TITLE_LEN,
        ));
        for (i, id) in req.participant_ids.iter().enumerate() {
            v.check(validate::id_field(&format!("participant_ids[{i}]"), id));
        }
        let requested = policy_request(req.policy, &mut v);
        v.finish()?;
        let kind = kind.unwrap_or(ConversationKind::Group);
        let Actor::User(owner_id) = actor(&p) else {
            return Err(Error::NoPermission(
                "a service must act for a user (x-parley-act-as) to create a conversation",
            ));
        };
        // Linear de-duplication, first mention kept.
        let mut seen = HashSet::with_capacity(req.participant_ids.len());
        let others: Vec<String> = req
            .participant_ids
            .iter()
            .filter(|id| **id != owner_id && seen.insert(id.as_str()))
            .cloned()
            .collect();
        let max_initial = state.config.limits.max_initial_participants;
        if others.len() + 1 > max_initial {
            return Err(Error::TooManyInitialParticipants { max: max_initial });
        }
        if kind == ConversationKind::Direct {
            if others.len() != 1 {
                return Err(Error::field(
                    "participant_ids",
                    "a DIRECT conversation takes exactly one other user",
                ));
            }
            if !req.title.is_empty() {
                return Err(Error::field("title", "a DIRECT conversation has no title"));
            }
        }
        let policy = rules::resolve_policy(requested, state.config.limits.max_participants)?;
        if others.len() as i64 + 1 > i64::from(policy.max_participants) {
            return Err(Error::field(
                "policy.max_participants",
                "is below the number of participants at creation",
            ));
        }
        let m = begin_mutation!(state, &p, "CreateConversation", req_for_key);
        let view = convs::create(
            m.tx(),
            &p,
            NewConversation {
                kind,
                title: req.title,
                policy,
                owner_id,
                other_ids: others,
            },
        )
        .await?;
        m.finish(convert::conversation(&view)).await
    }

    async fn update(
        &self,
        p: Principal,
        req: pb::UpdateConversationRequest,
    ) -> Result<pb::Conversation, Error> {
        let server_max = self.0.config.limits.max_participants;
        // After [`update_bounds`]: every string's length, before a path is interpreted (or
        // echoed in an error).
        let mask_paths = req.update_mask.as_ref().map_or(&[][..], |m| &m.paths[..]);
        let conv = req
            .conversation
            .as_ref()
            .ok_or_else(|| Error::field("conversation", "is required"))?;
        let mut v = Violations::default();
        v.check(validate::max_chars(
            "conversation.etag",
            &conv.etag,
            validate::MAX_ETAG_LEN,
        ));
        v.check(validate::max_chars(
            "conversation.title",
            &conv.title,
            validate::MAX_TITLE_LEN,
        ));
        // Output only, so ignored, but bounded like every string of a request.
        v.check(validate::max_chars(
            "conversation.owner_id",
            &conv.owner_id,
            validate::MAX_ID_LEN,
        ));
        for (i, path) in mask_paths.iter().enumerate() {
            v.check(validate::max_chars(
                &format!("update_mask.paths[{i}]"),
                path,
                validate::MAX_FIELD_PATH_LEN,
            ));
        }
        v.finish()?;
        let mut v = Violations::default();
        let id = v.check(validate::conversation_id("conversation.id", &conv.id));
        let paths: Vec<String> = match &req.update_mask {
            Some(mask) if !mask.paths.is_empty() => mask.paths.clone(),
            _ => {
                let mut implied = Vec::new();
                if !conv.title.is_empty() {
                    implied.push("title".to_owned());
                }
                if conv.policy.is_some() {
                    implied.push("policy".to_owned());
                }
                implied
            }
        };
        if paths.is_empty() {
            v.check::<()>(Err(Error::field("update_mask", "names no field to update")));
        }
        let policy = conv.policy.unwrap_or_default();
        let mut patch = ConversationPatch::default();
        for path in &paths {
            let whole = path == "policy";
            match path.as_str() {
                "title" => {
                    patch.title = Some(conv.title.clone());
                }
                "policy"
                | "policy.add_internal"
                | "policy.add_external"
                | "policy.remove"
                | "policy.lock_external_roster_on_first_message"
                | "policy.new_participant_history"
                | "policy.max_participants" => {
                    let named = |field: &str| whole || path == &format!("policy.{field}");
                    let mut permission = |field: &str, raw: i32| -> Option<Permission> {
                        if !named(field) {
                            return None;
                        }
                        let name = format!("conversation.policy.{field}");
                        let value = v
                            .check(validate::enum_field::<Permission>(&name, raw))
                            .flatten();
                        if value.is_none() && !whole {
                            v.check::<()>(Err(Error::field(name, "must name a value")));
                        }
                        value
                    };
                    if let Some(x) = permission("add_internal", policy.add_internal) {
                        patch.add_internal = Some(x);
                    }
                    if let Some(x) = permission("add_external", policy.add_external) {
                        patch.add_external = Some(x);
                    }
                    if let Some(x) = permission("remove", policy.remove) {
                        if x == Permission::Participants {
                            v.check::<()>(Err(Error::field(
                                "conversation.policy.remove",
                                "must be OWNER or ADMINS",
                            )));
                        }
                        patch.remove = Some(x);
                    }
                    if named("lock_external_roster_on_first_message") {
                        patch.lock_external_roster_on_first_message = policy
                            .lock_external_roster_on_first_message
                            .or((!whole).then_some(false));
                    }
                    if named("new_participant_history") {
                        let value = v
                            .check(validate::enum_field::<History>(
                                "conversation.policy.new_participant_history",
                                policy.new_participant_history,
                            ))
                            .flatten();
                        if value.is_none() && !whole {
                            v.check::<()>(Err(Error::field(
                                "conversation.policy.new_participant_history",
                                "must name a value",
                            )));
                        }
                        patch.new_participant_history = value;
                    }
                    if named("max_participants") && (policy.max_participants != 0 || !whole) {
                        if (2..=server_max).contains(&policy.max_participants) {
                            patch.max_participants = Some(policy.max_participants);
                        } else {
                            v.check::<()>(Err(Error::field(
                                "conversation.policy.max_participants",
                                format!("{} is outside 2..{server_max}", policy.max_participants),
                            )));
                        }
                    }
                }
                other => {
                    v.check::<()>(Err(Error::field(
                        "update_mask",
                        format!("{other} cannot be updated"),
                    )));
                }
            }
        }
        v.finish()?;
        let id = id.unwrap_or_default();
        let m = begin_mutation!(self.0, &p, "UpdateConversation", req, on = &id);
        let view = convs::update(m.tx(), &p, &id, &conv.etag, patch).await?;
        m.finish(convert::conversation(&view)).await
    }

    async fn check_access(
        &self,
        p: Principal,
        req: pb::CheckAccessRequest,
    ) -> Result<pb::CheckAccessResponse, Error> {
        let mut v = Violations::default();
        let id = v.check(validate::conversation_id(
            "conversation_id",
            &req.conversation_id,
        ));
        v.check(validate::id_field("user_id", &req.user_id));
        v.finish()?;
        let id = id.unwrap_or_default();
        if !p.is_service() && p.id != req.user_id {
            return Err(Error::NoPermission(
                "only services may ask about another user's access",
            ));
        }
        let c = store::get_conversation(&self.0.db, &p.tenant_id, &id).await?;
        let participant = store::get_participant(&self.0.db, &id, &req.user_id).await?;
        let user = dir::get_user(&self.0.db, &p.tenant_id, &req.user_id).await?;
        Ok(rules::access(&c, user.as_ref(), participant.as_ref()))
    }

    async fn get(&self, p: Principal, id: &str) -> Result<pb::Conversation, Error> {
        let id = validate::conversation_id("id", id)?;
        let (c, viewer) = self.0.read_access(&self.0.db, &p, &id).await?;
        Ok(convert::conversation(&viewer.conversation(&c)))
    }

    async fn transition<Req: prost::Message>(
        &self,
        p: Principal,
        method: &'static str,
        id: &str,
        request_id: &str,
        req: &Req,
        to: Transition,
    ) -> Result<pb::Conversation, Error> {
        validate::request_id(request_id)?;
        let id = validate::conversation_id("id", id)?;
        let m = match self.0.begin(&p, method, request_id, req, Some(&id)).await? {
            Begun::Replayed(reply) => return Ok(reply),
            Begun::Fresh(m) => *m,
        };
        let view = convs::transition(m.tx(), &p, &id, to).await?;
        m.finish(convert::conversation(&view)).await
    }
}

#[tonic::async_trait]
impl ConversationService for Conversations {
    type WatchTimelineStream = super::watch::TimelineStream;

    async fn watch_timeline(
        &self,
        request: Request<pb::WatchTimelineRequest>,
    ) -> Result<Response<Self::WatchTimelineStream>, Status> {
        self.0
            .handle_conversation("WatchTimeline", request, |p, req| {
                super::watch::open(self.0.clone(), p, req)
            })
            .await
    }

    type WatchInboxStream = super::inbox::InboxStream;

    async fn watch_inbox(
        &self,
        request: Request<pb::WatchInboxRequest>,
    ) -> Result<Response<Self::WatchInboxStream>, Status> {
        self.0
            .handle("WatchInbox", request, |p, req| {
                super::inbox::open(self.0.clone(), p, req)
            })
            .await
    }

    async fn create_conversation(
        &self,
        request: Request<pb::CreateConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        self.0
            .handle_bounded("CreateConversation", request, create_bounds, |p, req| {
                self.create(p, req)
            })
            .await
    }

    async fn get_conversation(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        self.0
            .handle_conversation("GetConversation", request, |p, req| async move {
                self.get(p, &req.id).await
            })
            .await
    }

    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        self.0
            .handle(LIST_CONVERSATIONS, request, |p, req| async move {
                let size = validate::page_size(req.page_size)?;
                let a = actor(&p);
                let scope = format!("{}/{}/{}", p.tenant_id, a.id(), req.include_removed);
                let before = self
                    .0
                    .pager
                    .open(&req.page_token, LIST_CONVERSATIONS, &scope)?;
                let mut list: Vec<ConversationView> = match &a {
                    Actor::User(u) => convs::list_for_user(
                        &self.0.db,
                        &p.tenant_id,
                        u,
                        req.include_removed,
                        before.as_deref(),
                        size + 1,
                    )
                    .await?
                    .into_iter()
                    .map(|(c, row)| {
                        visibility::viewer(&c, &p, Some(row)).map(|v| v.conversation(&c))
                    })
                    .collect::<Result<_, _>>()?,
                    Actor::Admin(_) => convs::list_for_tenant(
                        &self.0.db,
                        &p.tenant_id,
                        before.as_deref(),
                        size + 1,
                    )
                    .await?
                    .iter()
                    .map(|c| Viewer::Admin.conversation(c))
                    .collect(),
                };
                let next_page_token = super::next_page(
                    &self.0.pager,
                    LIST_CONVERSATIONS,
                    &scope,
                    &mut list,
                    size,
                    |v| v.conversation.id.clone(),
                );
                Ok(pb::ListConversationsResponse {
                    conversations: list.iter().map(convert::conversation).collect(),
                    next_page_token,
                })
            })
            .await
    }

    async fn update_conversation(
        &self,
        request: Request<pb::UpdateConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        self.0
            .handle_conversation_bounded("UpdateConversation", request, update_bounds, |p, req| {
                self.update(p, req)
            })
            .await
    }

    async fn archive_conversation(
        &self,
        request: Request<pb::ArchiveConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        self.0
            .handle_conversation("ArchiveConversation", request, |p, req| async move {
                self.transition(
                    p,
                    "ArchiveConversation",
                    &req.id,
                    &req.request_id,
                    &req,
                    Transition::Archive,
                )
                .await
            })
            .await
    }

    async fn unarchive_conversation(
        &self,
        request: Request<pb::UnarchiveConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        self.0
            .handle_conversation("UnarchiveConversation", request, |p, req| async move {
                self.transition(
                    p,
                    "UnarchiveConversation",
                    &req.id,
                    &req.request_id,
                    &req,
                    Transition::Unarchive,
                )
                .await
            })
            .await
    }

    async fn close_conversation(
        &self,
        request: Request<pb::CloseConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        self.0
            .handle_conversation("CloseConversation", request, |p, req| async move {
                self.transition(
                    p,
                    "CloseConversation",
                    &req.id,
                    &req.request_id,
                    &req,
                    Transition::Close,
                )
                .await
            })
            .await
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::Message>, Status> {
        self.0
            .handle_conversation("SendMessage", request, |p, req| async move {
                validate::request_id(&req.request_id)?;
                let mut v = Violations::default();
                let id = v.check(validate::conversation_id(
                    "conversation_id",
                    &req.conversation_id,
                ));
                if req.body.is_empty() {
                    v.check::<()>(Err(Error::field("body", "must not be empty")));
                }
                v.check(validate::max_chars(
                    "body",
                    &req.body,
                    validate::MAX_BODY_LEN,
                ));
                v.finish()?;
                let id = id.unwrap_or_default();
                let m = begin_mutation!(self.0, &p, "SendMessage", req, on = &id);
                let item = convs::send_message(m.tx(), &p, &id, req.body.clone()).await?;
                let message = convert::message(&item)
                    .ok_or_else(|| Error::Internal("a sent message is not a message".into()))?;
                m.finish(message).await
            })
            .await
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        self.0
            .handle_conversation("ListMessages", request, |p, req| async move {
                let (items, next_page_token) = timeline_page(
                    &self.0,
                    &p,
                    TimelineQuery {
                        list: "ListMessages",
                        conversation_id: &req.conversation_id,
                        order: req.order,
                        page_size: req.page_size,
                        page_token: &req.page_token,
                        only: Only::Messages,
                    },
                )
                .await?;
                Ok(pb::ListMessagesResponse {
                    messages: items.iter().filter_map(convert::message).collect(),
                    next_page_token,
                })
            })
            .await
    }

    async fn list_timeline(
        &self,
        request: Request<pb::ListTimelineRequest>,
    ) -> Result<Response<pb::ListTimelineResponse>, Status> {
        self.0
            .handle_conversation("ListTimeline", request, |p, req| async move {
                let (items, next_page_token) = timeline_page(
                    &self.0,
                    &p,
                    TimelineQuery {
                        list: "ListTimeline",
                        conversation_id: &req.conversation_id,
                        order: req.order,
                        page_size: req.page_size,
                        page_token: &req.page_token,
                        only: Only::All,
                    },
                )
                .await?;
                Ok(pb::ListTimelineResponse {
                    items: items.iter().map(convert::timeline_item).collect(),
                    next_page_token,
                })
            })
            .await
    }

    async fn check_access(
        &self,
        request: Request<pb::CheckAccessRequest>,
    ) -> Result<Response<pb::CheckAccessResponse>, Status> {
        self.0
            .handle("CheckAccess", request, |p, req| self.check_access(p, req))
            .await
    }
}
