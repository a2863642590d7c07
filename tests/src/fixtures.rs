//! Requests, invitees, policies and directory fixtures.

use tonic::Request;

use crate::{Kind, OTHER_TENANT, TENANT, TestApp, pb};
use pb::add_participants_result::Outcome;

/// The email the fixtures give user `id` of `tenant`.
pub fn email_of(tenant: &str, id: &str) -> String {
    format!("{id}@{tenant}.example")
}

/// `msg` with `authorization: Bearer <token>`.
pub fn req<T>(msg: T, token: &str) -> Request<T> {
    let mut request = Request::new(msg);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii metadata"),
    );
    request
}

/// `msg` with `authorization: Bearer <token>` and `x-parley-act-as: <user>`.
pub fn req_act_as<T>(msg: T, token: &str, user: &str) -> Request<T> {
    let mut request = req(msg, token);
    request
        .metadata_mut()
        .insert("x-parley-act-as", user.parse().expect("ascii metadata"));
    request
}

/// A fresh request id.
pub fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn user_invitee(id: &str) -> pb::Invitee {
    pb::Invitee {
        invitee: Some(pb::invitee::Invitee::UserId(id.to_owned())),
    }
}

pub fn group_invitee(id: &str) -> pb::Invitee {
    pb::Invitee {
        invitee: Some(pb::invitee::Invitee::GroupId(id.to_owned())),
    }
}

pub fn email_invitee(email: &str) -> pb::Invitee {
    pb::Invitee {
        invitee: Some(pb::invitee::Invitee::Email(email.to_owned())),
    }
}

/// The user id a result is about, if its invitee is a user id.
pub fn result_user(result: &pb::AddParticipantsResult) -> Option<&str> {
    match result.invitee.as_ref()?.invitee.as_ref()? {
        pb::invitee::Invitee::UserId(id) => Some(id),
        _ => None,
    }
}

/// A policy with every field at its server default except `max_participants`.
pub fn policy_with_max(max_participants: i32) -> pb::Policy {
    pb::Policy {
        max_participants,
        ..Default::default()
    }
}

/// `(user id, outcome)` of every result, sorted.
pub fn outcomes(response: &pb::AddParticipantsResponse) -> Vec<(String, Outcome)> {
    let mut out: Vec<(String, Outcome)> = response
        .results
        .iter()
        .map(|r| (result_user(r).unwrap_or("?").to_owned(), r.outcome()))
        .collect();
    out.sort();
    out
}

/// `ids`, sorted.
pub fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// Upserts users `(id, kind)` of `tenant` through DirectoryService (display name = id with an
/// upper-case first letter, email = [`email_of`]).
pub async fn seed_users(app: &TestApp, tenant: &str, users: &[(&str, Kind)]) -> Vec<pb::User> {
    let service = app.service(tenant);
    let mut out = Vec::with_capacity(users.len());
    for (id, kind) in users {
        out.push(
            service
                .upsert_user(id, *kind)
                .await
                .unwrap_or_else(|e| panic!("upsert user {id}: {e:?}")),
        );
    }
    out
}

/// Upserts group `id` of `tenant` with `members`.
pub async fn seed_group(app: &TestApp, tenant: &str, id: &str, members: &[&str]) -> pb::Group {
    let service = app.service(tenant);
    service
        .dir()
        .upsert_group(service.req(pb::UpsertGroupRequest {
            group: Some(pb::Group {
                id: id.to_owned(),
                name: format!("Group {id}"),
                member_ids: members.iter().map(|m| (*m).to_owned()).collect(),
                update_time: None,
            }),
            request_id: request_id(),
        }))
        .await
        .unwrap_or_else(|e| panic!("upsert group {id}: {e:?}"))
        .into_inner()
}

/// The roster most tests start from: in [`TENANT`] the internal users alice, bob, carol, dave,
/// frank and erin (deactivated) and the external users ext1 and ext2; in [`OTHER_TENANT`] the
/// internal user mallory.
pub async fn seed_standard(app: &TestApp) {
    use Kind::{External, Internal};
    seed_users(
        app,
        TENANT,
        &[
            ("alice", Internal),
            ("bob", Internal),
            ("carol", Internal),
            ("dave", Internal),
            ("frank", Internal),
            ("erin", Internal),
            ("ext1", External),
            ("ext2", External),
        ],
    )
    .await;
    app.service(TENANT)
        .deactivate_user("erin")
        .await
        .expect("deactivate erin");
    seed_users(app, OTHER_TENANT, &[("mallory", Internal)]).await;
}

/// Seeds `n` internal users `<prefix>0000`, `<prefix>0001`, … of [`TENANT`] and returns their ids.
pub async fn seed_many(app: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let service = app.service(TENANT);
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i:04}")).collect();
    for chunk in ids.chunks(10) {
        let calls = chunk
            .iter()
            .map(|id| service.upsert_user(id, Kind::Internal));
        for (id, result) in chunk.iter().zip(futures::future::join_all(calls).await) {
            result.unwrap_or_else(|e| panic!("upsert user {id}: {e:?}"));
        }
    }
    ids
}

/// A display name for `id`.
pub fn display_name(id: &str) -> String {
    let mut chars = id.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
