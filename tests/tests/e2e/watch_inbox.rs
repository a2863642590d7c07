//! WatchInbox (SPEC §7): the caller's inbox on one stream, first the state of every
//! conversation, then each change (a new item they may read, being added, being removed),
//! on one replica and across two; what each viewer may read decides the seq (rules 15, 18).
//! The oracle for every seq is ListTimeline as the same viewer reads it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parley_tests::*;
use pb::participant::State;
use tonic::{Code, Status, Streaming};

/// How long a test waits for one message before calling the stream stuck: far above the
/// poll interval (100 ms here).
const STUCK: Duration = Duration::from_secs(20);

/// How long a test watches an inbox to see that nothing comes: several poll intervals.
const QUIET: Duration = Duration::from_millis(700);

async fn inbox(
    caller: &Caller,
    include_removed: bool,
) -> Result<Streaming<pb::WatchInboxResponse>, Status> {
    Ok(caller
        .conv()
        .watch_inbox(caller.req(pb::WatchInboxRequest { include_removed }))
        .await?
        .into_inner())
}

/// `(conversation_id, seq, viewer_state)` of the next message of `stream`.
async fn next(stream: &mut Streaming<pb::WatchInboxResponse>) -> (String, i64, State) {
    match tokio::time::timeout(STUCK, stream.message()).await {
        Err(_) => panic!("no message within {STUCK:?}"),
        Ok(Ok(Some(m))) => {
            let state = m.viewer_state();
            (m.conversation_id, m.seq, state)
        }
        Ok(other) => panic!("the stream ended: {other:?}"),
    }
}

/// The next `n` messages, by conversation (each conversation once).
async fn state_of(
    stream: &mut Streaming<pb::WatchInboxResponse>,
    n: usize,
) -> HashMap<String, (i64, State)> {
    let mut out = HashMap::new();
    for _ in 0..n {
        let (id, seq, state) = next(stream).await;
        assert!(
            out.insert(id.clone(), (seq, state)).is_none(),
            "{id} twice in the first messages"
        );
    }
    out
}

async fn quiet(stream: &mut Streaming<pb::WatchInboxResponse>, what: &str) {
    if let Ok(got) = tokio::time::timeout(QUIET, stream.message()).await {
        panic!("{what}: expected nothing, got {got:?}");
    }
}

/// First the state: each conversation with the newest seq the caller may read there (what
/// ListTimeline shows them last), removed ones only when asked for. Then a message, being
/// added and being removed each move the inbox once; after a removal the conversation moves
/// it no more.
async fn the_inbox_is_the_state_then_each_change(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let mine = alice.create_group("mine", &["bob"]).await.expect("create");
    alice.send(&mine.id, "hello").await.expect("send");
    let theirs = bob
        .create_group("theirs", &["alice"])
        .await
        .expect("create");
    let left = bob.create_group("left", &["alice"]).await.expect("create");
    bob.remove(&left.id, "alice").await.expect("remove");
    bob.send(&left.id, "after alice").await.expect("send");

    let mut active = inbox(&alice, false).await.expect("inbox");
    let first = state_of(&mut active, 2).await;
    let expected: HashMap<String, (i64, State)> = HashMap::from([
        (
            mine.id.clone(),
            (alice.last_seq(&mine.id).await, State::Active),
        ),
        (
            theirs.id.clone(),
            (alice.last_seq(&theirs.id).await, State::Active),
        ),
    ]);
    assert_eq!(first, expected);
    let mut all = inbox(&alice, true).await.expect("inbox with removed");
    let with_removed = state_of(&mut all, 3).await;
    let removed_at = alice.last_seq(&left.id).await;
    assert!(removed_at < bob.last_seq(&left.id).await);
    assert_eq!(with_removed[&left.id], (removed_at, State::Removed));
    quiet(&mut active, "nothing changed").await;

    // A message.
    let m = bob.send(&theirs.id, "news").await.expect("send");
    assert_eq!(
        next(&mut active).await,
        (theirs.id.clone(), m.seq, State::Active)
    );
    assert_eq!(
        next(&mut all).await,
        (theirs.id.clone(), m.seq, State::Active)
    );
    // Being added to a conversation.
    let new = bob.create_group("new", &["carol"]).await.expect("create");
    bob.add_users(&new.id, &["alice"]).await.expect("add");
    let added = (new.id.clone(), alice.last_seq(&new.id).await, State::Active);
    assert_eq!(next(&mut active).await, added);
    assert_eq!(next(&mut all).await, added);
    // Being removed: told once, with the last seq before the removal.
    bob.remove(&theirs.id, "alice").await.expect("remove");
    let gone = (
        theirs.id.clone(),
        alice.last_seq(&theirs.id).await,
        State::Removed,
    );
    assert_eq!(gone.1, m.seq, "the last item before the removal");
    assert_eq!(next(&mut active).await, gone);
    assert_eq!(next(&mut all).await, gone);
    bob.send(&theirs.id, "without alice").await.expect("send");
    quiet(&mut active, "a conversation alice left").await;
    quiet(&mut all, "a conversation alice left").await;
    // Added again: shown again.
    bob.add_users(&theirs.id, &["alice"])
        .await
        .expect("add again");
    let back = (
        theirs.id.clone(),
        alice.last_seq(&theirs.id).await,
        State::Active,
    );
    assert_eq!(next(&mut active).await, back);
    assert_eq!(next(&mut all).await, back);
}

/// Rule 18: an external user's inbox does not move for an internal participant's roster
/// event, which an internal user's does; it moves for a message.
async fn an_external_inbox_skips_internal_roster_events(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let ext1 = app.external(TENANT, "ext1");
    let c = alice
        .create_group("mixed", &["ext1", "bob"])
        .await
        .expect("create");
    let mut outside = inbox(&ext1, false).await.expect("external inbox");
    let mut inside = inbox(&bob, false).await.expect("internal inbox");
    let shown = ext1.last_seq(&c.id).await;
    assert_eq!(
        next(&mut outside).await,
        (c.id.clone(), shown, State::Active)
    );
    next(&mut inside).await;
    alice
        .add_users(&c.id, &["carol"])
        .await
        .expect("add internal");
    let top = alice.last_seq(&c.id).await;
    assert_eq!(next(&mut inside).await, (c.id.clone(), top, State::Active));
    quiet(&mut outside, "an internal roster event").await;
    let m = alice.send(&c.id, "hello").await.expect("send");
    assert_eq!(
        next(&mut outside).await,
        (c.id.clone(), m.seq, State::Active)
    );
    assert_eq!(ext1.last_seq(&c.id).await, m.seq);
}

/// Additions, messages and removals in 20 conversations written on another replica reach an
/// inbox each as the right (conversation, seq, viewer_state), within a second of the write.
async fn changes_on_another_replica_arrive_within_a_second(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let b = app.replica().await;
    let dave = app.user(TENANT, "dave");
    let alice = b.serve(&app.user(TENANT, "alice"));
    let mut stream = inbox(&dave, true).await.expect("inbox");
    quiet(&mut stream, "dave is in no conversation yet").await;
    let mut lags = Vec::new();
    let mut expect = |started: Instant, got: (String, i64, State), want: (String, i64, State)| {
        assert_eq!(got, want);
        lags.push(started.elapsed());
    };
    for i in 0..20 {
        let started = Instant::now();
        let c = alice
            .create_group(&format!("c{i}"), &["dave"])
            .await
            .expect("create");
        let got = next(&mut stream).await;
        let want = (c.id.clone(), dave.last_seq(&c.id).await, State::Active);
        expect(started, got, want);

        let started = Instant::now();
        let m = alice.send(&c.id, "hello").await.expect("send");
        let got = next(&mut stream).await;
        expect(started, got, (c.id.clone(), m.seq, State::Active));

        if i % 2 == 0 {
            let started = Instant::now();
            alice.remove(&c.id, "dave").await.expect("remove");
            let got = next(&mut stream).await;
            expect(started, got, (c.id.clone(), m.seq, State::Removed));
        }
    }
    lags.sort();
    eprintln!(
        "{db:?}: inbox lag from the write's start to receipt across replicas: median {:?}, max {:?}",
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );
    // The poll runs every 100 ms here: a second is ten polls' margin.
    assert!(
        lags[lags.len() / 2] < Duration::from_secs(1),
        "median lag {:?}",
        lags[lags.len() / 2]
    );
    quiet(&mut stream, "every change was told once").await;
}

/// An inbox is a user's: a service must act for one, and then gets that user's.
async fn an_inbox_is_refused_clearly(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    expect_err(
        inbox(&app.service(TENANT), false).await,
        Code::PermissionDenied,
        ErrorReason::NoPermission,
    );
    let mut as_bob = inbox(&app.service_as(TENANT, "bob"), false)
        .await
        .expect("a service acting for bob");
    assert_eq!(
        next(&mut as_bob).await,
        (c.id.clone(), alice.last_seq(&c.id).await, State::Active)
    );
    quiet(&mut as_bob, "bob is in one conversation").await;
}

/// Rule 18 at once: a user the directory makes external is judged so at the inbox's next
/// read; their inbox then stops at the last item an external viewer is shown.
async fn a_change_of_kind_applies_at_the_next_read(db: Db) {
    let app = spawn_app_with(db, quick_watches).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice
        .create_group("kinds", &["bob", "ext1"])
        .await
        .expect("create");
    let m = alice.send(&c.id, "hello").await.expect("send");
    let mut stream = inbox(&bob, false).await.expect("inbox");
    assert_eq!(
        next(&mut stream).await,
        (c.id.clone(), m.seq, State::Active)
    );
    let mut bob_entry = app.service(TENANT).get_user("bob").await.expect("bob");
    bob_entry.kind = pb::user::Kind::External as i32;
    app.service(TENANT)
        .upsert(bob_entry)
        .await
        .expect("bob is external now");
    alice
        .add_users(&c.id, &["carol"])
        .await
        .expect("add internal");
    let shown = bob.last_seq(&c.id).await;
    assert_eq!(
        shown, m.seq,
        "an external viewer is not shown carol's addition"
    );
    assert!(shown < alice.last_seq(&c.id).await);
    // Bob was shown nothing new: his inbox does not move.
    quiet(&mut stream, "an internal roster event, bob judged external").await;
    let n = alice.send(&c.id, "again").await.expect("send");
    assert_eq!(
        next(&mut stream).await,
        (c.id.clone(), n.seq, State::Active)
    );
}

both_dbs!(
    the_inbox_is_the_state_then_each_change,
    an_external_inbox_skips_internal_roster_events,
    changes_on_another_replica_arrive_within_a_second,
    an_inbox_is_refused_clearly,
    a_change_of_kind_applies_at_the_next_read,
);
