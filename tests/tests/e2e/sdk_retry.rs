//! parley-sdk retries: what is retried and what is not, one request id per logical call, a
//! mutation whose reply was lost applied exactly once, deadlines, and per-attempt metadata.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::sdk_support::{
    LossyProxy, ScriptedServer, closed_port, fast_retries, silent_server, unwrap_err, user,
};
use futures::TryStreamExt;
use parley_sdk::{
    AddParticipants, BoxError, Client, Error, EventType, ListEvents, ListMessages,
    ListParticipants, NewConversation, Outcome, RetryPolicy, UpsertUser,
};
use parley_tests::*;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

fn with_reason(code: Code, reason: ErrorReason, retry_after: Option<Duration>) -> Status {
    let mut details =
        ErrorDetails::with_error_info(reason.as_str_name(), "parley.v1", HashMap::new());
    if let Some(delay) = retry_after {
        details.set_retry_info(Some(delay));
    }
    Status::with_error_details(code, "scripted", details)
}

async fn scripted_client(server: &ScriptedServer, policy: RetryPolicy) -> Client {
    Client::builder(server.endpoint())
        .bearer_token("t")
        .retry_policy(policy)
        .connect()
        .await
        .expect("connect")
}

#[tokio::test]
async fn unavailable_twice_then_success_is_retried() {
    let server = ScriptedServer::start().await;
    server.script.fail_next([
        Status::unavailable("restarting"),
        Status::unavailable("restarting"),
    ]);
    let client = scripted_client(&server, fast_retries()).await;
    let p = client
        .participants()
        .get("c1", "bob")
        .await
        .expect("the third attempt succeeds");
    assert_eq!(p.user_id, "bob");
    assert_eq!(server.script.calls(), 3);
}

#[tokio::test]
async fn a_mutation_keeps_one_request_id_across_attempts() {
    let server = ScriptedServer::start().await;
    server.script.fail_next([
        Status::unavailable("down"),
        Status::deadline_exceeded("slow"),
    ]);
    let participants = scripted_client(&server, fast_retries())
        .await
        .participants();
    participants
        .add(AddParticipants::new("c1").user("dave"))
        .await
        .expect("retried");
    participants
        .add(AddParticipants::new("c1").user("dave"))
        .await
        .expect("a second call");
    let ids: Vec<String> = server
        .script
        .seen()
        .into_iter()
        .map(|s| s.request_id)
        .collect();
    assert_eq!(ids.len(), 4);
    assert!(!ids[0].is_empty());
    assert!(uuid::Uuid::parse_str(&ids[0]).is_ok(), "a UUID: {}", ids[0]);
    assert_eq!((&ids[0], &ids[1]), (&ids[2], &ids[2]), "{ids:?}");
    assert_ne!(ids[3], ids[0], "a new logical call has a new id");

    let chosen = participants
        .add(AddParticipants::new("c1").user("dave").request_id("mine"))
        .await;
    chosen.expect("ok");
    assert_eq!(server.script.seen()[4].request_id, "mine");
}

#[tokio::test]
async fn internal_and_unknown_are_never_retried() {
    let server = ScriptedServer::start().await;
    let client = scripted_client(&server, fast_retries()).await;
    server.script.fail_next([Status::internal("bug")]);
    let error = unwrap_err(client.participants().get("c1", "bob").await);
    assert!(matches!(error, Error::Internal { .. }), "{error:?}");
    assert_eq!(server.script.calls(), 1);

    server
        .script
        .fail_next([with_reason(Code::Internal, ErrorReason::Internal, None)]);
    let error = unwrap_err(
        client
            .participants()
            .add(AddParticipants::new("c1").user("dave"))
            .await,
    );
    assert!(matches!(error, Error::Internal { .. }), "{error:?}");
    assert_eq!(server.script.calls(), 2);

    server.script.fail_next([Status::unknown("?")]);
    let error = unwrap_err(client.participants().get("c1", "bob").await);
    assert!(matches!(error, Error::Other { .. }), "{error:?}");
    assert_eq!(server.script.calls(), 3);
}

#[tokio::test]
async fn aborted_is_retried_only_for_serialization_conflicts() {
    let server = ScriptedServer::start().await;
    let client = scripted_client(&server, fast_retries()).await;
    server
        .script
        .fail_next([with_reason(Code::Aborted, ErrorReason::EtagMismatch, None)]);
    let error = unwrap_err(
        client
            .participants()
            .add(AddParticipants::new("c1").user("dave"))
            .await,
    );
    assert!(matches!(error, Error::EtagMismatch { .. }), "{error:?}");
    assert_eq!(server.script.calls(), 1);

    server
        .script
        .fail_next([Status::aborted("could not serialize access")]);
    client
        .participants()
        .add(AddParticipants::new("c1").user("dave"))
        .await
        .expect("retried after the conflict");
    assert_eq!(server.script.calls(), 3);
}

#[tokio::test]
async fn rate_limits_wait_for_the_servers_delay() {
    let server = ScriptedServer::start().await;
    let client = scripted_client(&server, fast_retries()).await;
    server.script.fail_next([with_reason(
        Code::ResourceExhausted,
        ErrorReason::RateLimited,
        Some(Duration::from_millis(400)),
    )]);
    let started = Instant::now();
    client
        .participants()
        .get("c1", "bob")
        .await
        .expect("retried");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(server.script.calls(), 2);

    // A delay past the time budget is not waited for.
    let impatient = fast_retries().max_elapsed(Duration::from_millis(200));
    server.script.fail_next([with_reason(
        Code::ResourceExhausted,
        ErrorReason::RateLimited,
        Some(Duration::from_secs(5)),
    )]);
    let error = unwrap_err(
        client
            .participants()
            .with_retry_policy(impatient)
            .get("c1", "bob")
            .await,
    );
    assert_eq!(error.retry_after(), Some(Duration::from_secs(5)));
    assert!(error.is_retryable());
    assert_eq!(server.script.calls(), 3);
}

#[tokio::test]
async fn attempts_are_bounded_and_retries_can_be_disabled() {
    let server = ScriptedServer::start().await;
    let client = scripted_client(&server, fast_retries().max_attempts(3)).await;
    server
        .script
        .fail_next((0..10).map(|_| Status::unavailable("down")));
    let error = unwrap_err(client.participants().get("c1", "bob").await);
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    assert_eq!(server.script.calls(), 3);

    let error = unwrap_err(
        client
            .participants()
            .with_retry_policy(RetryPolicy::disabled())
            .get("c1", "bob")
            .await,
    );
    assert!(error.is_retryable());
    assert_eq!(server.script.calls(), 4);
}

#[tokio::test]
async fn every_attempt_asks_the_token_provider_and_carries_the_metadata() {
    let server = ScriptedServer::start().await;
    let minted = Arc::new(AtomicUsize::new(0));
    let counter = minted.clone();
    let client = Client::builder(server.endpoint())
        .token_provider(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok::<_, BoxError>(format!("token-{n}")) }
        })
        .act_as("alice")
        .user_agent("sdk-tests/1")
        .timeout(Duration::from_secs(5))
        .retry_policy(fast_retries())
        .connect_lazy()
        .expect("client");
    server.script.fail_next([Status::unavailable("down")]);
    client
        .participants()
        .get("c1", "bob")
        .await
        .expect("retried");
    let seen = server.script.seen();
    let tokens: Vec<_> = seen.iter().map(|s| s.authorization.clone()).collect();
    assert_eq!(
        tokens,
        vec![Some("Bearer token-1".into()), Some("Bearer token-2".into())]
    );
    assert!(seen.iter().all(|s| s.act_as.as_deref() == Some("alice")));
    let agent = seen[0].user_agent.clone().unwrap_or_default();
    assert!(agent.starts_with("sdk-tests/1 parley-sdk/"), "{agent}");
    assert!(seen[0].grpc_timeout.is_some(), "the deadline is sent");

    // A failing provider fails the call without calling the server.
    let failing = Client::builder(server.endpoint())
        .token_provider(|| async { Err::<String, BoxError>("the vault is sealed".into()) })
        .connect_lazy()
        .expect("client");
    let error = unwrap_err(failing.participants().get("c1", "bob").await);
    assert!(matches!(error, Error::TokenProvider { .. }), "{error:?}");
    assert_eq!(server.script.calls(), 2);
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let addr = silent_server().await;
    let client = Client::builder(format!("http://{addr}"))
        .bearer_token("t")
        .timeout(Duration::from_millis(300))
        .no_retries()
        .connect_lazy()
        .expect("client");
    let started = Instant::now();
    let error = unwrap_err(client.conversations().get("c1").await);
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    assert!(error.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Retried reads stop at the policy's time budget.
    let budget = fast_retries()
        .max_attempts(100)
        .max_elapsed(Duration::from_millis(1000));
    let started = Instant::now();
    let error = unwrap_err(
        client
            .conversations()
            .with_retry_policy(budget)
            .get("c1")
            .await,
    );
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_millis(2000),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn connecting_to_nothing_fails_with_a_transport_error() {
    let addr = closed_port().await;
    let error = unwrap_err(
        Client::builder(format!("http://{addr}"))
            .bearer_token("t")
            .connect()
            .await,
    );
    assert!(matches!(error, Error::Transport { .. }), "{error:?}");

    let lazy = Client::builder(format!("http://{addr}"))
        .no_retries()
        .connect_lazy()
        .expect("client");
    let error = unwrap_err(lazy.conversations().get("c1").await);
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    assert!(error.is_retryable());

    let error = unwrap_err(Client::builder("not a uri").connect_lazy());
    assert!(
        matches!(error, Error::InvalidConfiguration { .. }),
        "{error:?}"
    );
    let error = unwrap_err(
        Client::builder("http://127.0.0.1:1")
            .bearer_token("line\nbreak")
            .connect_lazy(),
    );
    assert!(
        matches!(error, Error::InvalidConfiguration { .. }),
        "{error:?}"
    );
}

/// A mutation whose reply is lost after the server applied it is retried with the same
/// request id, and the server applies it once.
async fn a_lost_reply_is_retried_and_applied_once(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let proxy = LossyProxy::start(app.addr).await;
    let token = app.token(
        TENANT,
        "alice",
        Kind::Internal,
        Some(&email_of(TENANT, "alice")),
    );
    let through_proxy = Client::builder(proxy.endpoint())
        .bearer_token(token)
        .retry_policy(fast_retries())
        .connect()
        .await
        .expect("connect through the proxy");
    let alice = user(&app, "alice");
    let c = alice
        .conversations()
        .create(NewConversation::group(["bob"]))
        .await
        .expect("create");

    proxy.lose_next_reply();
    let response = through_proxy
        .participants()
        .add(AddParticipants::new(&c.id).user("dave"))
        .await
        .expect("the retry gets the recorded reply");
    assert_eq!(proxy.lost_replies(), 1);
    assert!(proxy.connections() >= 2, "the retry reconnected");
    // The first attempt's reply, replayed: with another request id the retry would have
    // found dave already there.
    assert_eq!(response.results.len(), 1);
    assert_eq!(response.results[0].outcome(), Outcome::Added);

    let rows: Vec<_> = alice
        .participants()
        .list_stream(ListParticipants::new(&c.id))
        .try_collect()
        .await
        .expect("participants");
    assert_eq!(rows.iter().filter(|p| p.user_id == "dave").count(), 1);
    let added: Vec<_> = alice
        .participants()
        .list_events_stream(ListEvents::new(&c.id))
        .try_filter(|e| {
            futures::future::ready(
                e.r#type() == EventType::ParticipantAdded
                    && e.subject_ids.contains(&"dave".to_owned()),
            )
        })
        .try_collect()
        .await
        .expect("events");
    assert_eq!(added.len(), 1, "one PARTICIPANT_ADDED event: {added:?}");

    // A message is stored once too.
    proxy.lose_next_reply();
    let sent = through_proxy
        .conversations()
        .send_message(&c.id, "exactly once")
        .await
        .expect("sent");
    assert_eq!(proxy.lost_replies(), 2);
    let messages: Vec<_> = alice
        .conversations()
        .list_messages_stream(ListMessages::new(&c.id))
        .try_collect()
        .await
        .expect("messages");
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].id, sent.id);

    // A group deleted once, though its reply was lost: the retry gets the first reply, not
    // GROUP_NOT_FOUND.
    let service_token = app.token(TENANT, "svc-sdk", Kind::Service, None);
    let service_through_proxy = Client::builder(proxy.endpoint())
        .bearer_token(service_token)
        .retry_policy(fast_retries())
        .connect()
        .await
        .expect("connect through the proxy");
    seed_group(&app, TENANT, "doomed", &["bob"]).await;
    proxy.lose_next_reply();
    service_through_proxy
        .directory()
        .delete_group("doomed")
        .await
        .expect("the retried delete reports success");
    assert_eq!(proxy.lost_replies(), 3);
    let gone = unwrap_err(
        crate::sdk_support::service(&app)
            .directory()
            .get_group("doomed")
            .await,
    );
    assert!(matches!(gone, Error::GroupNotFound { .. }), "{gone:?}");

    // Without retries the lost reply surfaces as a transport failure the caller can retry.
    proxy.lose_next_reply();
    let error = unwrap_err(
        through_proxy
            .conversations()
            .with_retry_policy(RetryPolicy::disabled())
            .send_message(&c.id, "maybe")
            .await,
    );
    assert!(matches!(error, Error::Transport { .. }), "{error:?}");
    assert!(error.is_retryable(), "{error:?}");
}

/// The server's per-principal rate limit: RATE_LIMITED with a RetryInfo delay, which the
/// retry policy waits out.
async fn a_real_rate_limit_is_waited_out(db: Db) {
    let app = spawn_app_with(db, |c| c.limits.rate_limit_per_second = 1).await;
    // Seeding through the SDK waits out the limit too (the harness's raw calls would not).
    let directory = crate::sdk_support::service(&app).directory();
    for id in ["alice", "bob", "carol"] {
        directory
            .upsert_user(UpsertUser::internal(id))
            .await
            .expect("upsert, retried while rate limited");
    }
    let alice = user(&app, "alice");
    let c = alice
        .conversations()
        .create(NewConversation::group(["bob"]))
        .await
        .expect("create");

    let impatient = alice
        .conversations()
        .with_retry_policy(RetryPolicy::disabled());
    let mut limited = None;
    for _ in 0..10 {
        if let Err(error) = impatient.get(&c.id).await {
            limited = Some(error);
            break;
        }
    }
    let error = limited.expect("rate limited within ten calls");
    assert!(matches!(error, Error::RateLimited { .. }), "{error:?}");
    assert_eq!(error.reason(), Some(ErrorReason::RateLimited));
    let delay = error.retry_after().expect("a RetryInfo delay");
    assert!(delay <= Duration::from_secs(1), "{delay:?}");
    assert!(error.is_retryable());

    // With the default policy every call gets through, each waiting its turn.
    let patient = alice.conversations();
    let started = Instant::now();
    for _ in 0..3 {
        patient.get(&c.id).await.expect("waited for the rate limit");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

both_dbs!(
    a_lost_reply_is_retried_and_applied_once,
    a_real_rate_limit_is_waited_out
);
