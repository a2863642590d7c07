//! A request id's record past its retention but not yet swept: the id is applied afresh and its
//! record replaced in place (one upsert, no delete first), by exactly one of several concurrent
//! duplicates; a live record is never replaced. The retention here is three seconds and the sweep
//! never runs after the start, so the expired rows stay in the table.

use std::time::Duration;

use parley_tests::*;
use sea_orm::{ConnectionTrait, Statement};

const RETENTION: Duration = Duration::from_secs(3);

async fn records_of(app: &TestApp, request_id: &str) -> i64 {
    let db = sea_orm::Database::connect(app.database_url())
        .await
        .expect("connect to the server's database");
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            match backend {
                sea_orm::DatabaseBackend::Postgres => {
                    "SELECT COUNT(*) FROM request_records WHERE request_id = $1"
                }
                _ => "SELECT COUNT(*) FROM request_records WHERE request_id = ?",
            },
            [request_id.into()],
        ))
        .await
        .expect("count")
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("a count")
}

async fn send(caller: &Caller, request: &pb::SendMessageRequest) -> pb::Message {
    caller
        .conv()
        .send_message(caller.req(request.clone()))
        .await
        .expect("send")
        .into_inner()
}

async fn an_expired_record_is_replaced_in_place(db: Db) {
    let app = spawn_app_with(db, |config| {
        config.limits.request_id_retention = RETENTION;
        config.limits.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let request = pb::SendMessageRequest {
        conversation_id: c.id.clone(),
        body: "first".into(),
        request_id: request_id(),
    };
    let first = send(&alice, &request).await;
    assert_eq!(send(&alice, &request).await, first, "a live record replays");

    tokio::time::sleep(RETENTION + Duration::from_millis(200)).await;
    let second = send(&alice, &request).await;
    assert_ne!(second.id, first.id, "past the retention the id is new");
    assert_eq!(
        send(&alice, &request).await,
        second,
        "the replaced record replays the second reply"
    );
    assert_eq!(records_of(&app, &request.request_id).await, 1);

    // Past the retention another body under the id is a new call, not a reuse.
    tokio::time::sleep(RETENTION + Duration::from_millis(200)).await;
    let other = pb::SendMessageRequest {
        body: "another body".into(),
        ..request.clone()
    };
    let third = send(&alice, &other).await;
    assert_eq!(third.body, "another body");
    expect_err(
        alice.conv().send_message(alice.req(request.clone())).await,
        tonic::Code::InvalidArgument,
        ErrorReason::RequestIdReused,
    );
    assert_eq!(records_of(&app, &request.request_id).await, 1);
    let bodies: Vec<String> = alice
        .messages(&c.id)
        .await
        .expect("messages")
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies, ["first", "first", "another body"]);
}

async fn concurrent_duplicates_of_an_expired_id_apply_once(db: Db) {
    let app = spawn_app_with(db, |config| {
        config.limits.request_id_retention = RETENTION;
        config.limits.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let request = pb::SendMessageRequest {
        conversation_id: c.id.clone(),
        body: "again".into(),
        request_id: request_id(),
    };
    let first = send(&alice, &request).await;
    tokio::time::sleep(RETENTION + Duration::from_millis(200)).await;

    // Every duplicate finds the record expired; one replaces it, the others get its reply.
    let calls = (0..8)
        .map(|_| {
            let (alice, request) = (alice.clone(), request.clone());
            async move {
                alice
                    .conv()
                    .send_message(alice.req(request))
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .collect();
    let replies: Vec<pb::Message> = all_at_once(calls)
        .await
        .into_iter()
        .map(|r| r.expect("every duplicate gets the reply"))
        .collect();
    assert!(replies.iter().all(|r| *r == replies[0]), "{replies:?}");
    assert_ne!(replies[0].id, first.id);
    assert_eq!(
        alice.messages(&c.id).await.expect("messages"),
        vec![first, replies[0].clone()]
    );
    assert_eq!(records_of(&app, &request.request_id).await, 1);
}

both_dbs!(
    an_expired_record_is_replaced_in_place,
    concurrent_duplicates_of_an_expired_id_apply_once,
);
