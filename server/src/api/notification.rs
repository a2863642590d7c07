//! NotificationService: the outbox a sibling notification service drains (service principals).

use std::sync::Arc;

use parley::pb::{self, notification_service_server::NotificationService};
use tonic::{Request, Response, Status};

use super::{State, begin_mutation, require_service};
use crate::config::Limits;
use crate::domain::validate;
use crate::error::Error;
use crate::store::outbox;

pub struct Notifications(pub Arc<State>);

const LIST_NOTIFICATIONS: &str = "ListNotifications";

/// AckNotifications' bounds, checked before the request is copied or looked into: the request
/// id, then the number of ids, before any id is looked at (SPEC §4).
fn ack_bounds(_: &Limits, req: &pb::AckNotificationsRequest) -> Result<(), Error> {
    validate::request_id(&req.request_id)?;
    validate::max_items("ids", &req.ids, validate::MAX_ACK_IDS)
}

#[tonic::async_trait]
impl NotificationService for Notifications {
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        self.0
            .handle(LIST_NOTIFICATIONS, request, |p, req| async move {
                require_service(&p)?;
                let size = validate::page_size(req.page_size)?;
                let scope = format!("{}/{}", p.tenant_id, req.include_acked);
                let after = self
                    .0
                    .pager
                    .open(&req.page_token, LIST_NOTIFICATIONS, &scope)?;
                let mut list = outbox::list(
                    &self.0.db,
                    &p.tenant_id,
                    req.include_acked,
                    after.as_deref(),
                    size + 1,
                )
                .await?;
                let next_page_token = super::next_page(
                    &self.0.pager,
                    LIST_NOTIFICATIONS,
                    &scope,
                    &mut list,
                    size,
                    |n| n.id.clone(),
                );
                let links = &self.0.invitation_links;
                let notifications = list
                    .into_iter()
                    .map(|n| super::notification_stream::to_wire(links, &p.tenant_id, n))
                    .collect::<Result<_, Error>>()?;
                Ok(pb::ListNotificationsResponse {
                    notifications,
                    next_page_token,
                })
            })
            .await
    }

    type StreamNotificationsStream = super::notification_stream::NotificationStream;

    async fn stream_notifications(
        &self,
        request: Request<pb::StreamNotificationsRequest>,
    ) -> Result<Response<Self::StreamNotificationsStream>, Status> {
        self.0
            .handle("StreamNotifications", request, |p, req| {
                super::notification_stream::open(self.0.clone(), p, req)
            })
            .await
    }

    async fn ack_notifications(
        &self,
        request: Request<pb::AckNotificationsRequest>,
    ) -> Result<Response<pb::AckNotificationsResponse>, Status> {
        self.0
            .handle_bounded(
                "AckNotifications",
                request,
                ack_bounds,
                |p, req| async move {
                    require_service(&p)?;
                    if req.ids.is_empty() {
                        return Err(Error::field("ids", "name at least one notification"));
                    }
                    let mut v = validate::Violations::default();
                    for (i, id) in req.ids.iter().enumerate() {
                        v.check(validate::conversation_id(&format!("ids[{i}]"), id));
                    }
                    v.finish()?;
                    let m = begin_mutation!(self.0, &p, "AckNotifications", req);
                    let acked = outbox::ack(m.tx(), &p.tenant_id, &req.ids).await?;
                    if acked > 0 {
                        // Open streams learn that what they held was acknowledged.
                        m.tx().touch_outbox();
                    }
                    m.finish(pb::AckNotificationsResponse {
                        acked: acked as i32,
                    })
                    .await
                },
            )
            .await
    }
}
