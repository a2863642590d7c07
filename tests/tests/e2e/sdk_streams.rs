//! The SDK's InboxWatch and NotificationStream: they reconnect by themselves when their
//! replica stops; the inbox then yields only what changed while it was away, and the
//! notification stream gets again what it held; deliveries are acknowledged one by one or in
//! batches.

use std::time::Duration;

use futures::TryStreamExt;
use parley_sdk::{Client, Delivery, InboxEntry, InboxWatch, NotificationStream};
use parley_tests::*;
use pb::participant::State;

/// Far above any wait the streams have reason for (backoff is at most 5 s): a hang.
const STUCK: Duration = Duration::from_secs(30);
/// How long a test watches a stream to see that nothing comes.
const QUIET: Duration = Duration::from_millis(700);

fn client(app: &TestApp, addr: std::net::SocketAddr, sub: &str, kind: Kind) -> Client {
    Client::builder(format!("http://{addr}"))
        .bearer_token(app.token(TENANT, sub, kind, None))
        .connect_lazy()
        .expect("a client")
}

async fn next_entry(inbox: &mut InboxWatch) -> (String, i64, State) {
    let entry: InboxEntry = tokio::time::timeout(STUCK, inbox.try_next())
        .await
        .expect("an entry in time")
        .expect("no error")
        .expect("the inbox goes on");
    let state = entry.viewer_state();
    (entry.conversation_id, entry.seq, state)
}

/// A gateway (a service acting for bob) watches bob's inbox through a replica that stops and
/// comes back: after the reconnection the inbox yields the two conversations that changed
/// meanwhile, not the one that did not.
async fn the_inbox_resumes_with_only_the_news(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let quiet_one = alice.create_group("quiet", &["bob"]).await.expect("create");
    let busy = alice.create_group("busy", &["bob"]).await.expect("create");
    let replica = app.replica().await;
    let addr = replica.addr;
    let gateway = client(&app, addr, "gateway", Kind::Service)
        .act_as("bob")
        .expect("act as bob");
    let mut inbox = gateway.conversations().watch_inbox();
    let mut first = vec![next_entry(&mut inbox).await, next_entry(&mut inbox).await];
    first.sort();
    let mut expected = vec![
        (
            quiet_one.id.clone(),
            alice.last_seq(&quiet_one.id).await,
            State::Active,
        ),
        (
            busy.id.clone(),
            alice.last_seq(&busy.id).await,
            State::Active,
        ),
    ];
    expected.sort();
    assert_eq!(first, expected);
    drop(replica);
    let m = alice.send(&busy.id, "while away").await.expect("send");
    let new = alice.create_group("new", &["bob"]).await.expect("create");
    let _back = app.replica_at(addr).await;
    let mut news = vec![next_entry(&mut inbox).await, next_entry(&mut inbox).await];
    news.sort();
    let mut expected = vec![
        (busy.id.clone(), m.seq, State::Active),
        (new.id.clone(), alice.last_seq(&new.id).await, State::Active),
    ];
    expected.sort();
    assert_eq!(news, expected);
    assert!(
        tokio::time::timeout(QUIET, inbox.try_next()).await.is_err(),
        "the unchanged conversation is not yielded again"
    );
}

/// Deliveries are acknowledged one by one or in batches, at most `max_in_flight` at once;
/// when the stream's replica stops, the stream reconnects and gets again what it held.
async fn the_notification_stream_acks_and_resumes(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    alice
        .create_group("t", &["bob", "carol", "dave"])
        .await
        .expect("create");
    let replica = app.replica().await;
    let addr = replica.addr;
    let service = client(&app, addr, "notifier", Kind::Service);
    let mut stream: NotificationStream = service
        .notifications()
        .stream()
        .max_in_flight(2)
        .lease_seconds(30);
    let acker = stream.acker();
    let one = next(&mut stream).await;
    let two = next(&mut stream).await;
    assert!(
        tokio::time::timeout(QUIET, stream.try_next())
            .await
            .is_err(),
        "two in flight"
    );
    assert!(one.ack().await.expect("ack"), "newly acknowledged");
    let three = next(&mut stream).await;
    // The replica stops: what the stream held (two and three) is given back, and the stream,
    // reconnected to the replica that comes back, gets them again.
    drop(replica);
    let _back = app.replica_at(addr).await;
    let mut again = vec![
        next(&mut stream).await.notification.id,
        next(&mut stream).await.notification.id,
    ];
    again.sort();
    let mut held = vec![two.notification.id.clone(), three.notification.id.clone()];
    held.sort();
    assert_eq!(again, held);
    assert_eq!(acker.ack(held).await.expect("ack"), 2);
    let left = service
        .notifications()
        .list(Default::default())
        .await
        .expect("list");
    assert!(left.items.is_empty(), "{:?}", left.items);
}

async fn next(stream: &mut NotificationStream) -> Delivery {
    tokio::time::timeout(STUCK, stream.try_next())
        .await
        .expect("a delivery in time")
        .expect("no error")
        .expect("the stream goes on")
}

both_dbs!(
    the_inbox_resumes_with_only_the_news,
    the_notification_stream_acks_and_resumes,
);
