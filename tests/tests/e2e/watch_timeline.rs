//! WatchTimeline (SPEC §7): the backlog then live items, in seq order, never a gap nor a
//! repeat, on one replica and across two; what each viewer may see (rules 15, 18, 19); the
//! stream's ends (removal, a slow reader, shutdown) and bounds.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};
use std::time::{Duration, Instant};

use parley::pb::watch_timeline_response::Kind as Msg;
use parley_tests::*;
use tonic::{Code, Status, Streaming};

/// How long a test waits for one message before calling the stream stuck. Far above the poll
/// interval and any heartbeat the tests set: reaching it means a missed wake-up or a hang.
const STUCK: Duration = Duration::from_secs(20);

async fn watch(
    caller: &Caller,
    conversation_id: &str,
    after_seq: i64,
) -> Result<Streaming<pb::WatchTimelineResponse>, Status> {
    Ok(caller
        .conv()
        .watch_timeline(caller.req(pb::WatchTimelineRequest {
            conversation_id: conversation_id.to_owned(),
            after_seq,
        }))
        .await?
        .into_inner())
}

/// The next message of `stream`: an item, a heartbeat, the status it ended with, or `None`
/// at its end.
async fn next(stream: &mut Streaming<pb::WatchTimelineResponse>) -> Option<Result<Msg, Status>> {
    match tokio::time::timeout(STUCK, stream.message()).await {
        Err(_) => panic!("no message within {STUCK:?}"),
        Ok(Ok(Some(message))) => Some(Ok(message.kind.expect("a message has a kind"))),
        Ok(Ok(None)) => None,
        Ok(Err(status)) => Some(Err(status)),
    }
}

/// Items from `stream` until one with `seq >= until` (heartbeats skipped), asserting each
/// seq is above the one before.
async fn items_until(
    stream: &mut Streaming<pb::WatchTimelineResponse>,
    until: i64,
) -> Vec<pb::TimelineItem> {
    let mut items: Vec<pb::TimelineItem> = Vec::new();
    let mut passed = 0;
    while passed < until {
        match next(stream).await {
            Some(Ok(Msg::Item(item))) => {
                if let Some(last) = items.last() {
                    assert!(item.seq > last.seq, "seq {} after {}", item.seq, last.seq);
                }
                passed = item.seq;
                items.push(item);
            }
            Some(Ok(Msg::Heartbeat(h))) => passed = passed.max(h.seq),
            other => panic!("the stream ended early: {other:?}"),
        }
    }
    items
}

/// Everything `stream` sends until it ends: its items (in increasing seq order), the highest
/// seq it passed (items or heartbeats), and the status it ended with.
async fn until_end(
    stream: &mut Streaming<pb::WatchTimelineResponse>,
) -> (Vec<pb::TimelineItem>, i64, Status) {
    let (mut items, mut passed) = (Vec::<pb::TimelineItem>::new(), 0);
    loop {
        match next(stream).await {
            Some(Ok(Msg::Item(item))) => {
                assert!(item.seq > passed, "seq {} after {passed}", item.seq);
                passed = item.seq;
                items.push(item);
            }
            Some(Ok(Msg::Heartbeat(h))) => passed = passed.max(h.seq),
            Some(Err(status)) => return (items, passed, status),
            None => panic!("the stream ended without a status"),
        }
    }
}

fn seqs(items: &[pb::TimelineItem]) -> Vec<i64> {
    items.iter().map(|i| i.seq).collect()
}

async fn backlog_then_live_items_in_order(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice
        .create_group("watched", &["bob"])
        .await
        .expect("create");
    for body in ["one", "two", "three"] {
        alice.send(&c.id, body).await.expect("send");
    }
    let before = bob.timeline(&c.id).await.expect("timeline");
    let top = before.last().expect("items").seq;
    let mut stream = watch(&bob, &c.id, 0).await.expect("watch");
    let backlog = items_until(&mut stream, top).await;
    assert_eq!(backlog, before, "the backlog is the timeline");
    // Live: a message and a roster change, each once, in order.
    alice.send(&c.id, "four").await.expect("send");
    alice.add_users(&c.id, &["carol"]).await.expect("add");
    let top = alice.last_seq(&c.id).await;
    let live = items_until(&mut stream, top).await;
    let timeline = bob.timeline(&c.id).await.expect("timeline");
    assert_eq!(live, timeline[before.len()..].to_vec());
    // Resuming after a seq continues exactly there.
    let middle = before[1].seq;
    let mut resumed = watch(&bob, &c.id, middle).await.expect("resume");
    let rest = items_until(&mut resumed, top).await;
    assert_eq!(
        seqs(&rest),
        seqs(&timeline[2..]),
        "resumed after seq {middle}"
    );
    // Quiet: a heartbeat says how far the stream got.
    match next(&mut resumed).await {
        Some(Ok(Msg::Heartbeat(h))) => assert_eq!(h.seq, top),
        other => panic!("expected a heartbeat, got {other:?}"),
    }
}

/// Items written on one replica reach a watch on the other, every one once and in order,
/// from eight writers at once; a second watch reconnects at random points with its last seq
/// and ends with the same items.
async fn writes_on_another_replica_arrive_once_in_order(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let replica = app.replica().await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group("busy", &["bob", "carol", "dave"])
        .await
        .expect("create");
    let mut stream = watch(&alice, &c.id, 0).await.expect("watch");
    let start = alice.last_seq(&c.id).await;
    let watched = items_until(&mut stream, start).await;
    assert_eq!(watched.last().map(|i| i.seq), Some(start));
    const WRITERS: usize = 8;
    const MESSAGES: usize = 25;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let writer = replica.serve(&app.user(TENANT, ["alice", "bob", "carol", "dave"][w % 4]));
            let alice = replica.serve(&alice);
            let id = c.id.clone();
            tokio::spawn(async move {
                for m in 0..MESSAGES {
                    writer.send(&id, &format!("w{w} m{m}")).await.expect("send");
                    // Roster changes too: frank in and out.
                    if w == 0 && m % 5 == 0 {
                        alice.add_users(&id, &["frank"]).await.expect("add frank");
                        alice.remove(&id, "frank").await.expect("remove frank");
                    }
                }
            })
        })
        .collect();
    // Set to the last seq once the writers are done.
    let done = Arc::new(AtomicI64::new(i64::MAX));
    let reconnecting = {
        let (alice, id, done) = (alice.clone(), c.id.clone(), done.clone());
        tokio::spawn(async move {
            let mut got: Vec<pb::TimelineItem> = Vec::new();
            let mut after = 0;
            let mut connections = 0usize;
            while after < done.load(Ordering::SeqCst) {
                let mut stream = watch(&alice, &id, after).await.expect("watch again");
                // A few messages per connection, a different number each time.
                let take = 3 + (connections * 7) % 11;
                connections += 1;
                for _ in 0..take {
                    if after >= done.load(Ordering::SeqCst) {
                        break;
                    }
                    match next(&mut stream).await {
                        Some(Ok(Msg::Item(item))) => {
                            assert!(item.seq > after, "{} after {after}", item.seq);
                            after = item.seq;
                            got.push(item);
                        }
                        Some(Ok(Msg::Heartbeat(_))) => {}
                        other => panic!("the stream ended: {other:?}"),
                    }
                }
            }
            got
        })
    };
    let started = Instant::now();
    for w in writers {
        w.await.expect("writer");
    }
    let top = alice.last_seq(&c.id).await;
    done.store(top, Ordering::SeqCst);
    let live = items_until(&mut stream, top).await;
    let timeline = alice.timeline(&c.id).await.expect("timeline");
    let expected = &timeline[watched.len()..];
    assert_eq!(seqs(&live), seqs(expected), "every item once, in order");
    assert_eq!(live, expected.to_vec());
    // Each arrived soon after its commit: the last one, read once the writers were done, is
    // the measure a missed wake-up would spoil (it would wait for a heartbeat or a poll).
    eprintln!("{db:?}: {} items over {:?}", live.len(), started.elapsed());
    let got = reconnecting.await.expect("reconnecting watch");
    assert_eq!(seqs(&got), seqs(&timeline), "resumed at random points");
}

/// Each item reaches a watch on the other replica within a second of its commit (its
/// create_time, on the same machine's clock); measured one write at a time.
async fn items_arrive_within_a_second_across_replicas(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let replica = app.replica().await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("fast", &["bob"]).await.expect("create");
    let top = alice.last_seq(&c.id).await;
    let mut stream = watch(&alice, &c.id, top).await.expect("watch");
    let bob = replica.serve(&app.user(TENANT, "bob"));
    let mut lags = Vec::new();
    for m in 0..20 {
        let sent = bob.send(&c.id, &format!("m{m}")).await.expect("send");
        let item = loop {
            match next(&mut stream).await {
                Some(Ok(Msg::Item(item))) => break item,
                Some(Ok(Msg::Heartbeat(_))) => {}
                other => panic!("the stream ended: {other:?}"),
            }
        };
        let received = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_micros() as i64;
        assert_eq!(item.seq, sent.seq);
        let committed = sent
            .create_time
            .as_ref()
            .map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000)
            .expect("a create time");
        lags.push(Duration::from_micros((received - committed).max(0) as u64));
    }
    lags.sort();
    eprintln!(
        "{db:?}: lag from commit to receipt across replicas: median {:?}, max {:?}",
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );
    // The poll runs every 100 ms here: a second is ten polls' margin.
    assert!(
        lags[lags.len() / 2] < Duration::from_secs(1),
        "median lag {:?}",
        lags[lags.len() / 2]
    );
}

/// Rule 18: an external watcher gets messages and the events about external participants,
/// never an internal participant's change; the seq it skips shows only in a heartbeat.
async fn an_external_watcher_sees_no_internal_roster_event(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let ext1 = app.external(TENANT, "ext1");
    let c = alice
        .create_group("mixed", &["ext1"])
        .await
        .expect("create");
    let top = alice.last_seq(&c.id).await;
    let mut stream = watch(&ext1, &c.id, top).await.expect("watch");
    alice
        .add_users(&c.id, &["carol"])
        .await
        .expect("add internal");
    let hidden = alice.last_seq(&c.id).await;
    // Only heartbeats pass over it.
    loop {
        match next(&mut stream).await {
            Some(Ok(Msg::Heartbeat(h))) if h.seq == hidden => break,
            Some(Ok(Msg::Heartbeat(h))) => assert_eq!(h.seq, top),
            other => panic!("expected a heartbeat past the internal event, got {other:?}"),
        }
    }
    // (External people first: the first message locks their roster.)
    alice
        .add_users(&c.id, &["ext2"])
        .await
        .expect("add external");
    alice.send(&c.id, "hello").await.expect("send");
    let end = alice.last_seq(&c.id).await;
    let items = items_until(&mut stream, end).await;
    assert_eq!(seqs(&items), vec![hidden + 1, hidden + 2]);
    let visible: Vec<_> = ext1
        .timeline(&c.id)
        .await
        .expect("timeline")
        .into_iter()
        .filter(|i| i.seq > top)
        .collect();
    assert_eq!(items, visible);
}

/// Rule 19: a SINCE_JOIN participant's watch from 0 starts at their history_from.
async fn a_since_join_watcher_gets_nothing_before_joining(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let policy = pb::Policy {
        new_participant_history: pb::policy::History::SinceJoin as i32,
        ..Default::default()
    };
    let c = alice
        .create_group_with("since", &["bob"], Some(policy))
        .await
        .expect("create");
    alice.send(&c.id, "before carol").await.expect("send");
    alice.add_users(&c.id, &["carol"]).await.expect("add");
    let carol = app.user(TENANT, "carol");
    let from = carol
        .participant(&c.id, "carol")
        .await
        .expect("carol's seat")
        .history_from;
    alice.send(&c.id, "after carol").await.expect("send");
    let end = alice.last_seq(&c.id).await;
    let mut stream = watch(&carol, &c.id, 0).await.expect("watch");
    let items = items_until(&mut stream, end).await;
    assert!(items.iter().all(|i| i.seq >= from), "{items:?} from {from}");
    assert_eq!(items, carol.timeline(&c.id).await.expect("timeline"));
    assert!(!items.is_empty());
}

/// Rule 15: a watcher removed mid-stream gets what came before the removal, then
/// PARTICIPANT_REMOVED, and nothing after; a removed participant's new watch does the same.
async fn a_removed_watcher_gets_what_came_before_then_the_end(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice
        .create_group("leaving", &["bob"])
        .await
        .expect("create");
    let top = alice.last_seq(&c.id).await;
    let mut stream = watch(&bob, &c.id, top).await.expect("watch");
    let kept = alice.send(&c.id, "bob reads this").await.expect("send");
    alice.remove(&c.id, "bob").await.expect("remove");
    alice
        .send(&c.id, "bob never reads this")
        .await
        .expect("send");
    let (got, _, status) = until_end(&mut stream).await;
    assert_error(
        &status,
        Code::PermissionDenied,
        ErrorReason::ParticipantRemoved,
    );
    assert_eq!(seqs(&got), vec![kept.seq]);
    assert!(next(&mut stream).await.is_none(), "nothing after the end");
    // A new watch from the start: the readable history, then the same end.
    let mut again = watch(&bob, &c.id, 0).await.expect("watch");
    let (seen, _, status) = until_end(&mut again).await;
    assert_error(
        &status,
        Code::PermissionDenied,
        ErrorReason::ParticipantRemoved,
    );
    assert_eq!(seen, bob.timeline(&c.id).await.expect("bob's timeline"));
}

/// The call's own errors: a malformed request, someone else's conversation, too many watches.
async fn a_watch_is_refused_clearly(db: Db) {
    let app = spawn_app_with(db, |config| {
        quick_watches(config);
        config.watch.max_per_caller = 2;
    })
    .await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let carol = app.user(TENANT, "carol");
    let c = alice.create_group("mine", &["bob"]).await.expect("create");
    expect_invalid(watch(&alice, "not-a-uuid", 0).await, "conversation_id");
    expect_invalid(watch(&alice, &c.id, -1).await, "after_seq");
    expect_err(
        watch(&carol, &c.id, 0).await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    let mallory = app.user(OTHER_TENANT, "mallory");
    expect_err(
        watch(&mallory, &c.id, 0).await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );
    expect_err(
        watch(&app.anonymous(), &c.id, 0).await,
        Code::Unauthenticated,
        ErrorReason::TokenMissing,
    );
    let first = watch(&alice, &c.id, 0).await.expect("first");
    let second = watch(&alice, &c.id, 0).await.expect("second");
    expect_err(
        watch(&alice, &c.id, 0).await,
        Code::ResourceExhausted,
        ErrorReason::TooManyWatches,
    );
    // Another caller has places of their own; a closed stream frees one.
    watch(&app.user(TENANT, "bob"), &c.id, 0)
        .await
        .expect("bob's watch");
    drop(first);
    let deadline = Instant::now() + STUCK;
    loop {
        match watch(&alice, &c.id, 0).await {
            Ok(_) => break,
            Err(status) if Instant::now() < deadline => {
                assert_error(
                    &status,
                    Code::ResourceExhausted,
                    ErrorReason::TooManyWatches,
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("the closed watch's place was never freed: {status:?}"),
        }
    }
    drop(second);
}

/// A reader that stops taking messages is ended with WATCH_TOO_SLOW once what the stream may
/// hold is full; what it was sent before is whole, so it resumes from its last seq.
async fn a_slow_reader_is_ended(db: Db) {
    let app = spawn_app_with(db, |config| {
        quick_watches(config);
        config.watch.buffer = 4;
        config.watch.send_timeout = Duration::from_millis(500);
    })
    .await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("flood", &["bob"]).await.expect("create");
    // A client whose connection takes little before the server must wait.
    let small = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .expect("endpoint")
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024))
        .connect()
        .await
        .expect("connect");
    let bob = app.user(TENANT, "bob").via(small);
    let mut stream = watch(&bob, &c.id, 0).await.expect("watch");
    let body = "x".repeat(4_000);
    for _ in 0..200 {
        alice.send(&c.id, &body).await.expect("send");
    }
    // Let the watch fill what it may hold and give up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, last, status) = until_end(&mut stream).await;
    assert_error(&status, Code::ResourceExhausted, ErrorReason::WatchTooSlow);
    let top = alice.last_seq(&c.id).await;
    assert!(
        last < top,
        "the slow reader got everything ({last} of {top})"
    );
    // It resumes where it stopped.
    let mut resumed = watch(&bob, &c.id, last).await.expect("resume");
    let rest = items_until(&mut resumed, top).await;
    assert_eq!(rest.first().map(|i| i.seq), Some(last + 1));
}

/// When a replica shuts down, its watches end with UNAVAILABLE at once, and the watch resumes
/// on another replica from its last seq.
async fn shutdown_ends_watches_with_unavailable(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group("moving", &["bob"])
        .await
        .expect("create");
    let replica = app.replica().await;
    let bob = app.user(TENANT, "bob");
    let mut stream = watch(&replica.serve(&bob), &c.id, 0).await.expect("watch");
    let top = alice.last_seq(&c.id).await;
    let got = items_until(&mut stream, top).await;
    let stopped = Instant::now();
    drop(replica);
    let (_, _, status) = until_end(&mut stream).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(stopped.elapsed() < STUCK);
    alice.send(&c.id, "after the move").await.expect("send");
    let last = got.last().map_or(0, |i| i.seq);
    let mut resumed = watch(&bob, &c.id, last).await.expect("resume");
    let rest = items_until(&mut resumed, last + 1).await;
    assert_eq!(seqs(&rest), vec![last + 1]);
}

/// Watches of one conversation by different viewers read together (one read per commit for
/// all of them) and each gets what it may read: the owner, an external participant (no
/// internal roster event), a SINCE_JOIN newcomer (nothing before joining), a service acting
/// as administrator (everything), and a participant removed midway (up to the removal, then
/// PARTICIPANT_REMOVED). Each ends with exactly its ListTimeline.
async fn watches_read_together_each_get_their_own(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let policy = pb::Policy {
        new_participant_history: pb::policy::History::SinceJoin as i32,
        ..Default::default()
    };
    let c = alice
        .create_group_with("together", &["bob", "ext1"], Some(policy))
        .await
        .expect("create");
    alice.send(&c.id, "before carol").await.expect("send");
    alice.add_users(&c.id, &["carol"]).await.expect("add carol");
    let (bob, ext1, carol) = (
        app.user(TENANT, "bob"),
        app.external(TENANT, "ext1"),
        app.user(TENANT, "carol"),
    );
    let admin = app.service(TENANT);
    let viewers = [
        ("alice", &alice),
        ("bob", &bob),
        ("ext1", &ext1),
        ("carol", &carol),
        ("admin", &admin),
    ];
    let mut streams = Vec::new();
    for (_, viewer) in viewers {
        streams.push(watch(viewer, &c.id, 0).await.expect("watch"));
    }
    for i in 0..5 {
        alice.send(&c.id, &format!("m{i}")).await.expect("send");
        if i == 2 {
            alice.remove(&c.id, "bob").await.expect("remove bob");
        }
    }
    alice.add_users(&c.id, &["dave"]).await.expect("add dave");
    alice.send(&c.id, "last").await.expect("send");
    let end = alice.last_seq(&c.id).await;
    for ((name, viewer), mut stream) in viewers.into_iter().zip(streams) {
        let expected = viewer.timeline(&c.id).await.expect("timeline");
        if name == "bob" {
            let (got, _, status) = until_end(&mut stream).await;
            assert_error(
                &status,
                Code::PermissionDenied,
                ErrorReason::ParticipantRemoved,
            );
            assert_eq!(got, expected, "bob, up to his removal");
        } else {
            let got = items_until(&mut stream, expected.last().map_or(0, |i| i.seq)).await;
            assert_eq!(got, expected, "{name}");
        }
    }
    let ext_seqs = seqs(&ext1.timeline(&c.id).await.expect("timeline"));
    assert!(ext_seqs.len() < seqs(&admin.timeline(&c.id).await.expect("all")).len());
    assert!(end > 0);
}

/// A commit costs the database the same few statements whether one watch of the
/// conversation is open or twenty (each a different user): the watches read together.
async fn twenty_watches_cost_one_read(db: Db) {
    const WATCHERS: usize = 20;
    let app = spawn_app_with(db, |config| {
        quick_watches(config);
        // No heartbeat reads during the measurement.
        config.watch.heartbeat = Duration::from_secs(600);
    })
    .await;
    seed_standard(&app).await;
    let users = seed_many(&app, "w", WATCHERS).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("many", &[]).await.expect("create");
    let ids: Vec<&str> = users.iter().map(String::as_str).collect();
    alice
        .add_users(&c.id, &ids)
        .await
        .expect("add the watchers");
    // The statements one message costs, the watches' reads included, with `n` watches open.
    let cost = |n: usize| {
        let (app, alice, users, c) = (&app, &alice, &users, &c);
        async move {
            let mut streams = Vec::new();
            for user in &users[..n] {
                let viewer = app.user(TENANT, user);
                let top = alice.last_seq(&c.id).await;
                streams.push(watch(&viewer, &c.id, top).await.expect("watch"));
            }
            // Let the watches settle (their first reads, the poll's first look).
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = app.statement_count();
            let m = alice.send(&c.id, "news").await.expect("send");
            for stream in &mut streams {
                let got = items_until(stream, m.seq).await;
                assert_eq!(seqs(&got), vec![m.seq]);
            }
            app.statement_count() - before
        }
    };
    let one = cost(1).await;
    let twenty = cost(WATCHERS).await;
    eprintln!("{db:?}: statements for one message: 1 watch {one}, {WATCHERS} watches {twenty}");
    // Reading alone, each watch would run its own read (3 or more statements each); the
    // margin leaves room for the replica's poll, which may fall inside the measurement.
    assert!(
        twenty <= one + 6,
        "{WATCHERS} watches cost {twenty} statements, one cost {one}"
    );
}

both_dbs!(
    backlog_then_live_items_in_order,
    writes_on_another_replica_arrive_once_in_order,
    items_arrive_within_a_second_across_replicas,
    an_external_watcher_sees_no_internal_roster_event,
    a_since_join_watcher_gets_nothing_before_joining,
    a_removed_watcher_gets_what_came_before_then_the_end,
    a_watch_is_refused_clearly,
    a_slow_reader_is_ended,
    shutdown_ends_watches_with_unavailable,
    watches_read_together_each_get_their_own,
    twenty_watches_cost_one_read,
);
