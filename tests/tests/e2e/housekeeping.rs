//! Housekeeping: every replica forgets request ids past their retention (24 h by default) and
//! deletes notifications acknowledged longer ago than theirs (7 days), so neither table grows
//! for ever; unacknowledged notifications stay however old. Here both retentions are a second
//! and the sweep runs every 100 ms; the tables are read directly to see the rows go.

use std::time::{Duration, Instant};

use parley_tests::*;
use sea_orm::{ConnectionTrait, Statement};

async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("count")
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("a count")
}

async fn expired_request_ids_and_old_acks_are_swept(db: Db) {
    let app = spawn_app_with(db, |config| {
        config.limits.request_id_retention = Duration::from_secs(1);
        config.limits.acked_notification_retention = Duration::from_secs(1);
        config.limits.sweep_interval = Duration::from_millis(100);
    })
    .await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let service = app.service(TENANT);
    let c = alice
        .create_group("t", &["bob", "carol"])
        .await
        .expect("create: two notifications");
    let send = pb::SendMessageRequest {
        conversation_id: c.id.clone(),
        body: "once".into(),
        request_id: request_id(),
    };
    let first = alice
        .conv()
        .send_message(alice.req(send.clone()))
        .await
        .expect("send")
        .into_inner();
    let again = alice
        .conv()
        .send_message(alice.req(send.clone()))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(again, first, "within the retention, a retry is a replay");

    let notes = service
        .notif()
        .list_notifications(service.req(pb::ListNotificationsRequest {
            page_size: 100,
            ..Default::default()
        }))
        .await
        .expect("list")
        .into_inner()
        .notifications;
    assert_eq!(notes.len(), 2);
    service
        .notif()
        .ack_notifications(service.req(pb::AckNotificationsRequest {
            ids: vec![notes[0].id.clone()],
            request_id: String::new(),
        }))
        .await
        .expect("ack one");

    let tables = sea_orm::Database::connect(app.database_url())
        .await
        .expect("connect to the server's database");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let requests = count(&tables, "SELECT COUNT(*) FROM request_records").await;
        let acked = count(&tables, "SELECT COUNT(*) FROM notifications_acked").await;
        if requests == 0 && acked == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {requests} request records and {acked} acknowledged notifications"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count(&tables, "SELECT COUNT(*) FROM notifications").await,
        1,
        "the unacknowledged notification stays"
    );

    // Past the retention the id is forgotten: the same request is a new message.
    let later = alice
        .conv()
        .send_message(alice.req(send))
        .await
        .expect("send again")
        .into_inner();
    assert_ne!(later.id, first.id);
    assert_eq!(alice.messages(&c.id).await.expect("messages").len(), 2);
}

both_dbs!(expired_request_ids_and_old_acks_are_swept);
