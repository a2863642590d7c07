//! ParticipantService: the roster and its events.

use std::sync::Arc;

use parley::pb::{
    self, ErrorReason, add_participants_result::Outcome as PbOutcome,
    invitee::Invitee as PbInvitee, participant_service_server::ParticipantService,
};
use tonic::{Request, Response, Status};

use super::conversation::{TimelineQuery, timeline_page};
use super::{State, actor, begin_mutation, convert};
use crate::config::Limits;
use crate::domain::model::{ParticipantKind, ParticipantState, Role};
use crate::domain::principal::Principal;
use crate::domain::roster::{AddRequest, Invitee, Outcome};
use crate::domain::validate::{self, Violations};
use crate::domain::visibility::RosterScope;
use crate::error::Error;
use crate::store::{
    self, acceptance,
    participants::{self as parts, ParticipantFilter},
    timeline::Only,
};

pub struct Participants(pub Arc<State>);

const LIST_PARTICIPANTS: &str = "ListParticipants";

const LIST_INVITATIONS: &str = "ListInvitations";

/// An invitation token as a request carries it.
fn token_field(token: &str) -> Result<&str, Error> {
    // Bytes, not characters: a token is ASCII, and anything longer than the bound is no token.
    if token.is_empty() || token.len() > validate::MAX_INVITATION_TOKEN_LEN {
        return Err(Error::field("token", "is not an invitation token"));
    }
    Ok(token)
}

/// AddParticipants' bounds, checked before the request is copied or looked into: the request
/// id, then the number of invitees (rule 3), before one is looked at (SPEC §4).
fn add_bounds(limits: &Limits, req: &pb::AddParticipantsRequest) -> Result<(), Error> {
    validate::request_id(&req.request_id)?;
    let max = limits.max_invitees;
    if req.invitees.len() > max {
        return Err(Error::TooManyInvitees { max });
    }
    Ok(())
}

impl Participants {
    /// Who answers an invitation and with which email: a user principal's `email` claim, or
    /// the directory email of the user a service acts for.
    async fn invitee(&self, p: &Principal) -> Result<(String, Option<String>), Error> {
        match actor(p) {
            crate::domain::principal::Actor::User(u) if u == p.id => Ok((u, p.email.clone())),
            crate::domain::principal::Actor::User(u) => {
                let user = store::directory::get_user(&self.0.db, &p.tenant_id, &u)
                    .await?
                    .ok_or_else(|| Error::UserNotFound(u.clone()))?;
                Ok((u, Some(user.email).filter(|e| !e.is_empty())))
            }
            crate::domain::principal::Actor::Admin(_) => Err(Error::NoPermission(
                "a service must act for the invitee (x-parley-act-as) to answer an invitation",
            )),
        }
    }

    async fn list_invitations(
        &self,
        p: Principal,
        req: pb::ListInvitationsRequest,
    ) -> Result<pb::ListInvitationsResponse, Error> {
        let mut v = Violations::default();
        let id = v.check(validate::conversation_id(
            "conversation_id",
            &req.conversation_id,
        ));
        let size = v.check(validate::page_size(req.page_size));
        v.finish()?;
        let (Some(id), Some(size)) = (id, size) else {
            return Err(Error::Internal("validated fields missing".into()));
        };
        let scope = format!("{}/{id}", p.tenant_id);
        let after = self
            .0
            .pager
            .open(&req.page_token, LIST_INVITATIONS, &scope)?;
        let tx = store::begin_read(&self.0.db).await?;
        let (c, viewer) = self.0.read_access(&tx, &p, &id).await?;
        viewer.require_current(&c.id)?;
        let now = crate::domain::model::now_micros();
        let mut list = store::invitations::list(&tx, &id, after.as_deref(), size + 1).await?;
        tx.commit().await?;
        let next_page_token = super::next_page(
            &self.0.pager,
            LIST_INVITATIONS,
            &scope,
            &mut list,
            size,
            |x| x.id.clone(),
        );
        Ok(pb::ListInvitationsResponse {
            invitations: list.iter().map(|i| convert::invitation(i, now)).collect(),
            next_page_token,
        })
    }

    async fn add(
        &self,
        p: Principal,
        req: pb::AddParticipantsRequest,
    ) -> Result<pb::AddParticipantsResponse, Error> {
        let now = crate::domain::model::now_micros();
        let mut v = Violations::default();
        let id = v.check(validate::conversation_id(
            "conversation_id",
            &req.conversation_id,
        ));
        if req.invitees.is_empty() {
            v.check::<()>(Err(Error::field("invitees", "name at least one invitee")));
        }
        // A field's name is written out only for an invitee that fails its check.
        let at = |i: usize, what: &str| format!("invitees[{i}]{what}");
        let mut invitees = Vec::with_capacity(req.invitees.len());
        for (i, invitee) in req.invitees.iter().enumerate() {
            match &invitee.invitee {
                Some(PbInvitee::UserId(u)) => {
                    v.check(
                        validate::external_id(u).map_err(|d| Error::field(at(i, ".user_id"), d)),
                    );
                    invitees.push(Invitee::User(u.clone()));
                }
                Some(PbInvitee::GroupId(g)) => {
                    v.check(
                        validate::external_id(g).map_err(|d| Error::field(at(i, ".group_id"), d)),
                    );
                    invitees.push(Invitee::Group(g.clone()));
                }
                Some(PbInvitee::Email(e)) => {
                    v.check(
                        validate::email_address(e).map_err(|d| Error::field(at(i, ".email"), d)),
                    );
                    invitees.push(Invitee::Email(e.to_lowercase()));
                }
                None => {
                    v.check::<()>(Err(Error::field(
                        at(i, ""),
                        "set one of user_id, group_id or email",
                    )));
                }
            }
        }
        v.finish()?;
        let id = id.unwrap_or_default();
        let m = begin_mutation!(self.0, &p, "AddParticipants", req, on = &id);
        let request = AddRequest {
            invitees,
            partial_success: req.partial_success,
            invitation_ttl_micros: self.0.config.limits.invitation_ttl.as_micros() as i64,
            max_group_reach: self.0.config.limits.max_group_reach,
        };
        let links = &self.0.invitation_links;
        let results = parts::add(m.tx(), &p, &id, request, links).await?;
        let reply = pb::AddParticipantsResponse {
            results: results
                .into_iter()
                .map(|r| {
                    let invitee = Some(pb::Invitee {
                        invitee: Some(match r.invitee {
                            Invitee::User(u) => PbInvitee::UserId(u),
                            Invitee::Group(g) => PbInvitee::GroupId(g),
                            Invitee::Email(e) => PbInvitee::Email(e),
                        }),
                    });
                    let (outcome, reason, participant, invitation) = match r.outcome {
                        Outcome::Added(p) => (
                            PbOutcome::Added,
                            ErrorReason::Unspecified,
                            Some(convert::participant(&p)),
                            None,
                        ),
                        Outcome::AlreadyParticipant(p) => (
                            PbOutcome::AlreadyParticipant,
                            ErrorReason::AlreadyParticipant,
                            Some(convert::participant(&p)),
                            None,
                        ),
                        Outcome::Invited(i) => (
                            PbOutcome::Invited,
                            ErrorReason::Unspecified,
                            None,
                            Some(convert::invitation(&i, now)),
                        ),
                        Outcome::AlreadyInvited(i) => (
                            PbOutcome::AlreadyInvited,
                            ErrorReason::AlreadyInvited,
                            None,
                            Some(convert::invitation(&i, now)),
                        ),
                        Outcome::Failed(reason) => (PbOutcome::Failed, reason, None, None),
                    };
                    pb::AddParticipantsResult {
                        invitee,
                        outcome: outcome as i32,
                        reason: reason as i32,
                        participant,
                        invitation,
                        via_group_id: r.via_group.unwrap_or_default(),
                    }
                })
                .collect(),
        };
        m.finish(reply).await
    }

    async fn list(
        &self,
        p: Principal,
        req: pb::ListParticipantsRequest,
    ) -> Result<pb::ListParticipantsResponse, Error> {
        let mut v = Violations::default();
        let id = v.check(validate::conversation_id(
            "conversation_id",
            &req.conversation_id,
        ));
        let size = v.check(validate::page_size(req.page_size));
        let state = v
            .check(validate::enum_field::<ParticipantState>("state", req.state))
            .flatten();
        let kind = v
            .check(validate::enum_field::<ParticipantKind>("kind", req.kind))
            .flatten();
        v.finish()?;
        let (Some(id), Some(size)) = (id, size) else {
            return Err(Error::Internal("validated fields missing".into()));
        };
        let scope = format!("{}/{id}/{}/{}", p.tenant_id, req.state, req.kind);
        let after = self
            .0
            .pager
            .open(&req.page_token, LIST_PARTICIPANTS, &scope)?;
        let filter = ParticipantFilter { state, kind };
        // The page and who the caller is, in one statement; the rules then judge the caller.
        let (read, page) = parts::page_with_caller(
            &self.0.db,
            &p.tenant_id,
            &id,
            actor(&p).user_id(),
            filter,
            after.as_deref(),
            size + 1,
        )
        .await?;
        let viewer = super::judge_seat(&p, &id, read)?;
        viewer.require_current(&id)?;
        let mut list = match viewer.roster() {
            // The page read is the page everyone sees: this viewer's.
            RosterScope::Everyone => page,
            // A viewer who sees less reads its own page, judged again on the same snapshot.
            RosterScope::ExternalAndOwner => {
                let tx = store::begin_read(&self.0.db).await?;
                let (c, viewer) = self.0.read_access(&tx, &p, &id).await?;
                viewer.require_current(&c.id)?;
                let list =
                    parts::list(&tx, &c, viewer.roster(), filter, after.as_deref(), size + 1)
                        .await?;
                tx.commit().await?;
                list
            }
        };
        let next_page_token = super::next_page(
            &self.0.pager,
            LIST_PARTICIPANTS,
            &scope,
            &mut list,
            size,
            |x| x.user_id.clone(),
        );
        Ok(pb::ListParticipantsResponse {
            participants: list.into_iter().map(convert::participant_into).collect(),
            next_page_token,
        })
    }

    async fn get(
        &self,
        p: Principal,
        req: pb::GetParticipantRequest,
    ) -> Result<pb::Participant, Error> {
        let mut v = Violations::default();
        let id = v.check(validate::conversation_id(
            "conversation_id",
            &req.conversation_id,
        ));
        v.check(validate::id_field("user_id", &req.user_id));
        v.finish()?;
        let id = id.unwrap_or_default();
        let tx = store::begin_read(&self.0.db).await?;
        let (c, viewer) = self.0.read_access(&tx, &p, &id).await?;
        if actor(&p).user_id() != Some(req.user_id.as_str()) {
            viewer.require_current(&c.id)?;
        }
        let target = store::get_participant(&tx, &id, &req.user_id).await?;
        tx.commit().await?;
        // Someone the viewer may not see is, to them, not there (rule 18).
        let target = target
            .filter(|t| viewer.may_see(t))
            .ok_or(Error::ParticipantNotFound {
                conversation_id: id,
                user_id: req.user_id,
            })?;
        Ok(convert::participant(&target))
    }
}

#[tonic::async_trait]
impl ParticipantService for Participants {
    async fn add_participants(
        &self,
        request: Request<pb::AddParticipantsRequest>,
    ) -> Result<Response<pb::AddParticipantsResponse>, Status> {
        self.0
            .handle_conversation_bounded("AddParticipants", request, add_bounds, |p, req| {
                self.add(p, req)
            })
            .await
    }

    async fn remove_participant(
        &self,
        request: Request<pb::RemoveParticipantRequest>,
    ) -> Result<Response<pb::Participant>, Status> {
        self.0
            .handle_conversation("RemoveParticipant", request, |p, req| async move {
                validate::request_id(&req.request_id)?;
                let mut v = Violations::default();
                let id = v.check(validate::conversation_id(
                    "conversation_id",
                    &req.conversation_id,
                ));
                v.check(validate::id_field("user_id", &req.user_id));
                v.finish()?;
                let id = id.unwrap_or_default();
                let m = begin_mutation!(self.0, &p, "RemoveParticipant", req, on = &id);
                let removed = parts::remove(m.tx(), &p, &id, &req.user_id).await?;
                m.finish(convert::participant(&removed)).await
            })
            .await
    }

    async fn get_participant(
        &self,
        request: Request<pb::GetParticipantRequest>,
    ) -> Result<Response<pb::Participant>, Status> {
        self.0
            .handle_conversation("GetParticipant", request, |p, req| self.get(p, req))
            .await
    }

    async fn list_participants(
        &self,
        request: Request<pb::ListParticipantsRequest>,
    ) -> Result<Response<pb::ListParticipantsResponse>, Status> {
        self.0
            .handle_conversation(LIST_PARTICIPANTS, request, |p, req| self.list(p, req))
            .await
    }

    async fn set_participant_role(
        &self,
        request: Request<pb::SetParticipantRoleRequest>,
    ) -> Result<Response<pb::Participant>, Status> {
        self.0
            .handle_conversation("SetParticipantRole", request, |p, req| async move {
                validate::request_id(&req.request_id)?;
                let mut v = Violations::default();
                let id = v.check(validate::conversation_id(
                    "conversation_id",
                    &req.conversation_id,
                ));
                v.check(validate::id_field("user_id", &req.user_id));
                let role = v
                    .check(validate::enum_field::<Role>("role", req.role))
                    .flatten();
                if !matches!(role, Some(Role::Admin | Role::Member)) {
                    v.check::<()>(Err(Error::field("role", "must be ADMIN or MEMBER")));
                }
                v.finish()?;
                let (id, role) = (id.unwrap_or_default(), role.unwrap_or(Role::Member));
                let m = begin_mutation!(self.0, &p, "SetParticipantRole", req, on = &id);
                let changed = parts::set_role(m.tx(), &p, &id, &req.user_id, role).await?;
                m.finish(convert::participant(&changed)).await
            })
            .await
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        self.0
            .handle_conversation("ListEvents", request, |p, req| async move {
                let (items, next_page_token) = timeline_page(
                    &self.0,
                    &p,
                    TimelineQuery {
                        list: "ListEvents",
                        conversation_id: &req.conversation_id,
                        order: req.order,
                        page_size: req.page_size,
                        page_token: &req.page_token,
                        only: Only::Events,
                    },
                )
                .await?;
                Ok(pb::ListEventsResponse {
                    events: items.iter().filter_map(convert::event).collect(),
                    next_page_token,
                })
            })
            .await
    }

    async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Result<Response<pb::ListInvitationsResponse>, Status> {
        self.0
            .handle_conversation(LIST_INVITATIONS, request, |p, req| {
                self.list_invitations(p, req)
            })
            .await
    }

    async fn accept_invitation(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Result<Response<pb::Participant>, Status> {
        self.0
            .handle("AcceptInvitation", request, |p, req| async move {
                validate::request_id(&req.request_id)?;
                let token = token_field(&req.token)?;
                let (user_id, email) = self.invitee(&p).await?;
                let m = begin_mutation!(self.0, &p, "AcceptInvitation", req);
                let participant =
                    acceptance::accept(m.tx(), &p.tenant_id, &user_id, email.as_deref(), token)
                        .await?;
                m.finish(convert::participant(&participant)).await
            })
            .await
    }

    async fn decline_invitation(
        &self,
        request: Request<pb::DeclineInvitationRequest>,
    ) -> Result<Response<pb::Invitation>, Status> {
        self.0
            .handle("DeclineInvitation", request, |p, req| async move {
                validate::request_id(&req.request_id)?;
                let token = token_field(&req.token)?;
                let (user_id, email) = self.invitee(&p).await?;
                let m = begin_mutation!(self.0, &p, "DeclineInvitation", req);
                let invitation =
                    acceptance::decline(m.tx(), &p.tenant_id, &user_id, email.as_deref(), token)
                        .await?;
                m.finish(convert::invitation(
                    &invitation,
                    crate::domain::model::now_micros(),
                ))
                .await
            })
            .await
    }

    async fn revoke_invitation(
        &self,
        request: Request<pb::RevokeInvitationRequest>,
    ) -> Result<Response<pb::Invitation>, Status> {
        self.0
            .handle("RevokeInvitation", request, |p, req| async move {
                validate::request_id(&req.request_id)?;
                let id = validate::conversation_id("invitation_id", &req.invitation_id)?;
                let m = begin_mutation!(self.0, &p, "RevokeInvitation", req);
                let invitation = acceptance::revoke(m.tx(), &p, &id).await?;
                m.finish(convert::invitation(
                    &invitation,
                    crate::domain::model::now_micros(),
                ))
                .await
            })
            .await
    }
}
