//! StreamNotifications (SPEC §7): the outbox delivered to competing streams, each
//! notification leased to one stream at a time; what a stream holds is bounded; a lease that
//! ends or a stream that ends gives its notifications back; at least once, none lost.

use std::collections::{HashMap, HashSet};
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicI32, Ordering},
};
use std::time::Duration;

use parley_tests::*;
use tonic::{Code, Status, Streaming};

/// How long a test waits for one notification before calling the stream stuck: far above the
/// poll interval (100 ms) and the leases the tests set (1 s).
const STUCK: Duration = Duration::from_secs(20);

/// How long a test watches a stream to see that nothing comes: several poll intervals.
const QUIET: Duration = Duration::from_millis(600);

async fn stream(
    caller: &Caller,
    max_in_flight: i32,
    lease_seconds: i32,
) -> Result<Streaming<pb::Notification>, Status> {
    let msg = pb::StreamNotificationsRequest {
        max_in_flight,
        lease_seconds,
    };
    Ok(caller
        .notif()
        .stream_notifications(caller.req(msg))
        .await?
        .into_inner())
}

/// The next notification of `stream`.
async fn next(stream: &mut Streaming<pb::Notification>) -> pb::Notification {
    match tokio::time::timeout(STUCK, stream.message()).await {
        Err(_) => panic!("no notification within {STUCK:?}"),
        Ok(Ok(Some(n))) => n,
        Ok(other) => panic!("the stream ended: {other:?}"),
    }
}

/// The next `n` notifications of `stream`.
async fn take(stream: &mut Streaming<pb::Notification>, n: usize) -> Vec<pb::Notification> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next(stream).await);
    }
    out
}

/// Asserts that `stream` sends nothing for [`QUIET`].
async fn quiet(stream: &mut Streaming<pb::Notification>, what: &str) {
    if let Ok(got) = tokio::time::timeout(QUIET, stream.message()).await {
        panic!("{what}: expected nothing, got {got:?}");
    }
}

async fn ack(caller: &Caller, ids: &[String]) -> i32 {
    let msg = pb::AckNotificationsRequest {
        ids: ids.to_vec(),
        request_id: request_id(),
    };
    caller
        .notif()
        .ack_notifications(caller.req(msg))
        .await
        .expect("AckNotifications")
        .into_inner()
        .acked
}

fn ids(notes: &[pb::Notification]) -> Vec<String> {
    notes.iter().map(|n| n.id.clone()).collect()
}

/// A group of alice's inviting `n` email addresses `<prefix>-<i>@example.com`: `n` invitation
/// notifications.
async fn invite(alice: &Caller, prefix: &str, n: usize) {
    let c = alice.create_group(prefix, &[]).await.expect("create");
    let invitees = (0..n)
        .map(|i| email_invitee(&format!("{prefix}-{i}@example.com")))
        .collect();
    alice.add(&c.id, invitees, false).await.expect("invite");
}

/// A stream gets the backlog oldest first, each notification as ListNotifications shows it;
/// while it holds them another stream gets none; what it acknowledged is gone, and what it
/// held when it ended goes to the other stream at once.
async fn a_notification_is_one_streams_at_a_time(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    alice
        .create_group("t", &["bob", "carol"])
        .await
        .expect("create");
    invite(&alice, "inv", 2).await;
    let service = app.service(TENANT);
    let listed = app.unacked_notifications(TENANT).await;
    assert_eq!(listed.len(), 4, "{listed:?}");

    let mut first = stream(&service, 10, 30).await.expect("first stream");
    let got = take(&mut first, 4).await;
    assert_eq!(
        got, listed,
        "the backlog, oldest first, as listed (tokens included)"
    );
    assert!(got.iter().any(|n| !n.invitation_token.is_empty()));
    let mut second = stream(&service, 10, 30).await.expect("second stream");
    quiet(&mut second, "all are the first stream's").await;

    assert_eq!(ack(&service, &ids(&got[..2])).await, 2);
    quiet(&mut second, "acknowledged ones are nobody's").await;
    drop(first);
    let again = take(&mut second, 2).await;
    assert_eq!(
        ids(&again),
        ids(&got[2..]),
        "given back when its stream ended"
    );
    assert_eq!(ack(&service, &ids(&again)).await, 2);
    assert!(app.unacked_notifications(TENANT).await.is_empty());
    quiet(&mut second, "nothing is left").await;

    // A new notification reaches an open stream.
    alice.create_group("u", &["dave"]).await.expect("create");
    let live = next(&mut second).await;
    assert_eq!(
        ids(&app.unacked_notifications(TENANT).await),
        vec![live.id.clone()]
    );
}

/// A stream holds at most `max_in_flight` unacknowledged notifications; an acknowledgement
/// makes room for the next, oldest first.
async fn a_stream_holds_at_most_max_in_flight(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    invite(&alice, "bounded", 5).await;
    let service = app.service(TENANT);
    let listed = app.unacked_notifications(TENANT).await;
    assert_eq!(listed.len(), 5);
    let mut s = stream(&service, 2, 30).await.expect("stream");
    let got = take(&mut s, 2).await;
    assert_eq!(ids(&got), ids(&listed[..2]));
    quiet(&mut s, "two in flight").await;
    assert_eq!(ack(&service, &ids(&got[..1])).await, 1);
    let third = next(&mut s).await;
    assert_eq!(third.id, listed[2].id);
    quiet(&mut s, "two in flight again").await;
}

/// A notification not acknowledged within its lease is delivered again, while the stream
/// that held it stays open.
async fn an_ended_lease_is_delivered_again(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    invite(&alice, "lease", 1).await;
    let service = app.service(TENANT);
    let mut holder = stream(&service, 1, 1).await.expect("stream");
    let n = next(&mut holder).await;
    let mut other = stream(&service, 1, 30).await.expect("another stream");
    // After the second, the lease is over: one of the two streams gets it again.
    let again = tokio::select! {
        n = next(&mut holder) => n,
        n = next(&mut other) => n,
    };
    assert_eq!(again.id, n.id);
    assert_eq!(ack(&service, std::slice::from_ref(&n.id)).await, 1);
    assert!(app.unacked_notifications(TENANT).await.is_empty());
}

/// Only services stream the outbox; bad settings are refused field by field, and a refused
/// stream holds nothing.
async fn a_stream_is_refused_clearly(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    invite(&alice, "refused", 3).await;
    for user in [alice.clone(), app.external(TENANT, "ext1")] {
        expect_err(
            stream(&user, 0, 0).await,
            Code::PermissionDenied,
            ErrorReason::NoPermission,
        );
    }
    let service = app.service(TENANT);
    let status = stream(&service, 1001, -1).await.expect_err("out of bounds");
    assert_error(&status, Code::InvalidArgument, ErrorReason::InvalidField);
    let mut fields: Vec<String> = field_violations(&status)
        .into_iter()
        .map(|v| v.field)
        .collect();
    fields.sort();
    assert_eq!(fields, vec!["lease_seconds", "max_in_flight"]);
    expect_invalid(stream(&service, -1, 3601).await, "lease_seconds");
    // Nothing was leased: one stream takes all three at once.
    let mut s = stream(&service, 0, 0).await.expect("defaults");
    assert_eq!(take(&mut s, 3).await.len(), 3);
    // Another tenant's service sees none of them.
    let mut other = stream(&app.service(OTHER_TENANT), 0, 0)
        .await
        .expect("other tenant");
    quiet(&mut other, "another tenant's outbox").await;
}

/// Notifications drained by each consumer, and when.
#[derive(Default)]
struct Drained {
    /// (consumer, notification id), in the order received.
    received: Vec<(usize, String)>,
    /// What each consumer received and had not acknowledged when it was killed.
    abandoned: HashSet<String>,
}

/// Three consumers, two on one replica and one on another, drain 5,000 notifications made on
/// both replicas while they run; the third is killed midway without acknowledging what it
/// holds, which the others then get. Every notification is acknowledged exactly once, and
/// none is received twice except those the killed consumer abandoned.
async fn three_consumers_over_two_replicas_drain_the_outbox(db: Db) {
    const CONVERSATIONS: usize = 10;
    const PER: usize = 500;
    const TOTAL: i32 = (CONVERSATIONS * PER) as i32;
    const KILL_AFTER: usize = 300;
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let b = app.replica().await;
    let service = app.service(TENANT);
    let acked = Arc::new(AtomicI32::new(0));
    let drained = Arc::new(Mutex::new(Drained::default()));
    let mut consumers = Vec::new();
    for k in 0..3usize {
        let caller = if k == 2 {
            b.serve(&service)
        } else {
            service.clone()
        };
        let mut s = stream(&caller, 100, 30).await.expect("stream");
        let (acked, drained) = (acked.clone(), drained.clone());
        consumers.push(tokio::spawn(async move {
            let mut pending: Vec<String> = Vec::new();
            let mut received = 0usize;
            loop {
                if acked.load(Ordering::SeqCst) >= TOTAL {
                    return;
                }
                match tokio::time::timeout(Duration::from_millis(50), s.message()).await {
                    Ok(Ok(Some(n))) => {
                        received += 1;
                        drained
                            .lock()
                            .expect("drained")
                            .received
                            .push((k, n.id.clone()));
                        pending.push(n.id);
                        if k == 2 && received == KILL_AFTER {
                            // Killed: its stream dropped, what it holds never acknowledged.
                            drained.lock().expect("drained").abandoned.extend(pending);
                            return;
                        }
                        if pending.len() >= 25 {
                            let n = ack(&caller, &std::mem::take(&mut pending)).await;
                            acked.fetch_add(n, Ordering::SeqCst);
                        }
                    }
                    Ok(other) => panic!("consumer {k}'s stream ended: {other:?}"),
                    Err(_) if !pending.is_empty() => {
                        let n = ack(&caller, &std::mem::take(&mut pending)).await;
                        acked.fetch_add(n, Ordering::SeqCst);
                    }
                    Err(_) => {}
                }
            }
        }));
    }
    // The notifications are made while the consumers run, half on each replica.
    let alice = app.user(TENANT, "alice");
    let alice_b = b.serve(&alice);
    for i in 0..CONVERSATIONS {
        let writer = if i % 2 == 0 { &alice } else { &alice_b };
        invite(writer, &format!("drain{i}"), PER).await;
    }
    let all = futures::future::join_all(consumers);
    tokio::time::timeout(Duration::from_secs(180), all)
        .await
        .expect("the outbox drains")
        .into_iter()
        .for_each(|r| r.expect("a consumer"));
    assert_eq!(
        acked.load(Ordering::SeqCst),
        TOTAL,
        "each acknowledged once"
    );
    assert!(app.unacked_notifications(TENANT).await.is_empty());
    let drained = drained.lock().expect("drained");
    let mut times: HashMap<&str, Vec<usize>> = HashMap::new();
    for (k, id) in &drained.received {
        times.entry(id).or_default().push(*k);
    }
    assert_eq!(times.len(), TOTAL as usize, "every notification delivered");
    assert!(!drained.abandoned.is_empty());
    for (id, by) in &times {
        if drained.abandoned.contains(*id) {
            assert_eq!(
                by.len(),
                2,
                "{id}: abandoned, then delivered again once: {by:?}"
            );
            assert_eq!(by[0], 2, "{id}");
            assert_ne!(by[1], 2, "{id}: to a consumer still running");
        } else {
            assert_eq!(by.len(), 1, "{id} delivered more than once: {by:?}");
        }
    }
    let by_consumer = |k: usize| drained.received.iter().filter(|(c, _)| *c == k).count();
    assert!(
        by_consumer(0) > 0 && by_consumer(1) > 0,
        "both others drained some"
    );
}

/// On shutdown a stream ends with UNAVAILABLE and gives back what it held.
async fn shutdown_ends_streams_and_gives_back(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    invite(&alice, "shutdown", 2).await;
    let service = app.service(TENANT);
    let b = app.replica().await;
    let mut on_b = stream(&b.serve(&service), 10, 30).await.expect("stream");
    let held = take(&mut on_b, 2).await;
    drop(b);
    let end = tokio::time::timeout(STUCK, on_b.message())
        .await
        .expect("the stream ends");
    match end {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(other) => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    let mut s = stream(&service, 10, 30).await.expect("stream");
    assert_eq!(
        ids(&take(&mut s, 2).await),
        ids(&held),
        "given back at once"
    );
}

both_dbs!(
    a_notification_is_one_streams_at_a_time,
    a_stream_holds_at_most_max_in_flight,
    an_ended_lease_is_delivered_again,
    a_stream_is_refused_clearly,
    three_consumers_over_two_replicas_drain_the_outbox,
    shutdown_ends_streams_and_gives_back,
);
