//! The SDK's TimelineWatch: it resumes by itself, with no gap and no repeat, when its replica
//! stops and another takes over (or the same comes back), and surfaces the caller's removal as
//! `Error::ParticipantRemoved`.

use std::time::Duration;

use futures::TryStreamExt;
use parley_sdk::{Client, Error, TimelineWatch};
use parley_tests::*;

/// Far above any wait the watch has reason for (backoff is at most 5 s): reaching it is a hang.
const STUCK: Duration = Duration::from_secs(30);

fn client(app: &TestApp, endpoints: &[std::net::SocketAddr], user: &str) -> Client {
    Client::builder_with_endpoints(endpoints.iter().map(|a| format!("http://{a}")))
        .bearer_token(app.token(TENANT, user, Kind::Internal, None))
        .connect_lazy()
        .expect("a client")
}

/// The watch's items up to seq `until`, each above the one before.
async fn items_until(watch: &mut TimelineWatch, until: i64) -> Vec<i64> {
    let mut seqs: Vec<i64> = Vec::new();
    while seqs.last().is_none_or(|s| *s < until) {
        let item = tokio::time::timeout(STUCK, watch.try_next())
            .await
            .expect("an item in time")
            .expect("no error")
            .expect("the watch goes on");
        if let Some(last) = seqs.last() {
            assert!(item.seq > *last, "seq {} after {last}", item.seq);
        }
        seqs.push(item.seq);
    }
    seqs
}

/// The watch's replica stops (its streams end UNAVAILABLE); while it is down, items are
/// written elsewhere; when a replica is back at its address the watch goes on from the last
/// seq it had: every item once.
async fn the_watch_resumes_when_its_replica_comes_back(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("sdk", &["bob"]).await.expect("create");
    let replica = app.replica().await;
    let addr = replica.addr;
    let bob = client(&app, &[addr], "bob");
    let mut watch = bob.conversations().watch_timeline(&c.id);
    let top = alice.last_seq(&c.id).await;
    let before = items_until(&mut watch, top).await;
    assert_eq!(before, (1..=top).collect::<Vec<_>>());
    drop(replica);
    for m in 0..3 {
        alice
            .send(&c.id, &format!("while down {m}"))
            .await
            .expect("send");
    }
    let back = app.replica_at(addr).await;
    let after = items_until(&mut watch, top + 3).await;
    assert_eq!(after, vec![top + 1, top + 2, top + 3]);
    assert_eq!(watch.last_seq(), top + 3);
    drop(back);
}

/// With two endpoints, stopping one replica leaves the watch on the other, wherever it was:
/// the items written before, during and after come once each, in order.
async fn the_watch_goes_on_with_another_endpoint(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("sdk", &["bob"]).await.expect("create");
    let replica = app.replica().await;
    let bob = client(&app, &[replica.addr, app.addr], "bob");
    let mut watch = bob.conversations().watch_timeline(&c.id).after_seq(1);
    alice.send(&c.id, "one").await.expect("send");
    let top = alice.last_seq(&c.id).await;
    assert_eq!(
        items_until(&mut watch, top).await,
        (2..=top).collect::<Vec<_>>()
    );
    drop(replica);
    alice.send(&c.id, "two").await.expect("send");
    alice.send(&c.id, "three").await.expect("send");
    assert_eq!(
        items_until(&mut watch, top + 2).await,
        vec![top + 1, top + 2]
    );
}

/// The caller's removal ends the watch with Error::ParticipantRemoved after the last item
/// they may read, and the stream then ends.
async fn removal_is_an_error_of_its_own(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("sdk", &["bob"]).await.expect("create");
    let bob = client(&app, &[app.addr], "bob");
    let top = alice.last_seq(&c.id).await;
    let mut watch = bob.conversations().watch_timeline(&c.id).after_seq(top);
    let kept = alice.send(&c.id, "for bob").await.expect("send");
    alice.remove(&c.id, "bob").await.expect("remove");
    let item = tokio::time::timeout(STUCK, watch.try_next())
        .await
        .expect("in time")
        .expect("an item")
        .expect("not the end");
    assert_eq!(item.seq, kept.seq);
    let end = tokio::time::timeout(STUCK, watch.try_next())
        .await
        .expect("in time");
    assert!(
        matches!(end, Err(Error::ParticipantRemoved { .. })),
        "{end:?}"
    );
    assert!(watch.try_next().await.expect("no more errors").is_none());
    // A watch of a conversation the caller is not in ends at once, not after retries.
    let carol = client(&app, &[app.addr], "carol");
    let refused = carol.conversations().watch_timeline(&c.id).try_next().await;
    assert!(
        matches!(refused, Err(Error::NotAParticipant { .. })),
        "{refused:?}"
    );
}

both_dbs!(
    the_watch_resumes_when_its_replica_comes_back,
    the_watch_goes_on_with_another_endpoint,
    removal_is_an_error_of_its_own,
);

/// The watch's replica is killed (every task dropped at once: its connections close without a
/// status) while items are being written elsewhere; a replica comes up at its address; the
/// SDK's watch goes on from its last seq: every item once, in order.
async fn the_watch_survives_a_killed_replica(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("sdk", &["bob"]).await.expect("create");
    let mut killable = app.killable_replica().await;
    let addr = killable.addr;
    let bob = client(&app, &[addr], "bob");
    let mut watch = bob.conversations().watch_timeline(&c.id);
    let top = alice.last_seq(&c.id).await;
    assert_eq!(
        items_until(&mut watch, top).await,
        (1..=top).collect::<Vec<_>>()
    );
    // Writes go on through the app while the watch's replica dies and another starts.
    let writer = {
        let (alice, id) = (alice.clone(), c.id.clone());
        tokio::spawn(async move {
            for m in 0..20 {
                alice.send(&id, &format!("m{m}")).await.expect("send");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let first = items_until(&mut watch, top + 3).await;
    killable.kill();
    // Dead: its port refuses connections (so the watch lost its own).
    let deadline = std::time::Instant::now() + STUCK;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed replica still listens"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let back = app.replica_at(addr).await;
    writer.await.expect("the writer");
    let rest = items_until(&mut watch, top + 20).await;
    let mut all = first;
    all.extend(rest);
    assert_eq!(
        all,
        (top + 1..=top + 20).collect::<Vec<_>>(),
        "no gap, no repeat"
    );
    drop(back);
}

both_dbs!(the_watch_survives_a_killed_replica);
