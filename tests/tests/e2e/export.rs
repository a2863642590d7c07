//! The export to NATS JetStream (SPEC §7, Export), against a real `nats-server -js` each test
//! starts: every item of every conversation reaches the stream, once, in seq order per
//! conversation, with Parley's headers; across two replicas, a killed replica, NATS stopped
//! under writes; and with export off, nothing connects to NATS.

use std::{collections::HashSet, time::Duration};

use parley_tests::nats::{Exported, NatsServer, by_subject, exported, metric};
use parley_tests::*;

/// Far above the time any export here takes (a lease ran out, NATS back): reaching it is a
/// hang or a loss.
const STUCK: Duration = Duration::from_secs(60);

/// Export to `nats` with leases and sweeps short enough for a test, metrics on.
fn exporting(nats: &NatsServer) -> impl FnOnce(&mut parley_server::Config) + '_ {
    move |config| {
        config.metrics_listen = Some(([127, 0, 0, 1], 0).into());
        config.export = Some(parley_server::export::ExportConfig {
            lease: Duration::from_secs(6),
            sweep_interval: Duration::from_millis(500),
            ..parley_server::export::ExportConfig::new(nats.url.clone())
        })
    }
}

/// Checks the stream against the database: for each conversation, its subject holds every
/// item 1..=last exactly once, in seq order, equal to what an administrator reads, with
/// Parley's headers; no `Nats-Msg-Id` twice in the whole stream.
async fn assert_exported_once_in_order(app: &TestApp, nats: &NatsServer, conversations: &[String]) {
    let admin = app.service(TENANT);
    let mut timelines = Vec::new();
    for id in conversations {
        timelines.push((id.clone(), admin.timeline(id).await.expect("timeline")));
    }
    let total: usize = timelines.iter().map(|(_, t)| t.len()).sum();
    let messages = exported(nats, total as u64, STUCK).await;
    let mut ids = HashSet::new();
    for m in &messages {
        assert!(ids.insert(m.msg_id.clone()), "{} stored twice", m.msg_id);
    }
    assert_eq!(messages.len(), total, "one message per item, none more");
    let subjects = by_subject(&messages);
    for (id, timeline) in &timelines {
        let subject = format!("parley.{TENANT}.{id}");
        let got: &[Exported] = subjects.get(&subject).map_or(&[], Vec::as_slice);
        let seqs: Vec<i64> = got.iter().map(|m| m.item.seq).collect();
        let want: Vec<i64> = (1..=timeline.len() as i64).collect();
        assert_eq!(seqs, want, "{subject}: every seq once, in order");
        for (m, item) in got.iter().zip(timeline) {
            assert_eq!(&m.item, item, "{subject}: the item as Parley reads it");
            assert_eq!(m.msg_id, format!("{TENANT}/{id}/{}", item.seq));
            let kind = match item.item {
                Some(pb::timeline_item::Item::Message(_)) => "message",
                _ => "event",
            };
            assert_eq!(m.kind, kind);
            assert!(
                m.visibility == "all" || (kind == "event" && m.visibility == "internal"),
                "{}: visibility {}",
                m.msg_id,
                m.visibility
            );
        }
    }
}

/// 1,000 messages over 50 conversations from concurrent writers on two replicas: the stream
/// gets every item of every conversation (its creation's events too), once, in order.
async fn every_item_reaches_the_stream_once_in_order(db: Db) {
    let nats = NatsServer::start().await;
    let app = spawn_app_with(db, exporting(&nats)).await;
    seed_standard(&app).await;
    let replica = app.replica().await;
    let alice = app.user(TENANT, "alice");
    let bob = replica.serve(&app.user(TENANT, "bob"));
    let mut conversations = Vec::new();
    for n in 0..50 {
        let c = alice
            .create_group(&format!("export {n}"), &["bob", "ext1"])
            .await
            .expect("create");
        conversations.push(c.id);
    }
    let writers: Vec<_> = (0..10)
        .map(|w| {
            let (caller, ids) = (
                if w % 2 == 0 {
                    alice.clone()
                } else {
                    bob.clone()
                },
                conversations.clone(),
            );
            async move {
                for n in 0..100 {
                    let id = &ids[(w * 7 + n) % ids.len()];
                    caller.send(id, &format!("w{w} m{n}")).await.expect("send");
                }
            }
        })
        .collect();
    all_at_once(writers).await;
    assert_exported_once_in_order(&app, &nats, &conversations).await;
    drop(replica);
}

/// A replica killed while it exports the conversations made through it (every task dropped
/// mid-flight, leases held): the other replica takes them over once their leases end; every
/// item still arrives, none twice, and none is even sent twice.
async fn a_killed_replica_loses_nothing(db: Db) {
    let nats = NatsServer::start().await;
    let app = spawn_app_with(db, exporting(&nats)).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let mut doomed = app.killable_replica().await;
    let doomed_alice = alice.via(
        tonic::transport::Channel::from_shared(format!("http://{}", doomed.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the replica"),
    );
    // Made through the replica, so that it is the one exporting them.
    let mut conversations = Vec::new();
    for n in 0..10 {
        let c = doomed_alice
            .create_group(&format!("kill {n}"), &["bob"])
            .await
            .expect("create");
        conversations.push(c.id);
    }
    for n in 0..200 {
        let id = &conversations[n % conversations.len()];
        doomed_alice
            .send(id, &format!("before {n}"))
            .await
            .expect("send");
    }
    doomed.kill();
    for n in 0..100 {
        let id = &conversations[n % conversations.len()];
        alice.send(id, &format!("after {n}")).await.expect("send");
    }
    assert_exported_once_in_order(&app, &nats, &conversations).await;
    assert_nothing_published_twice(&app).await;
}

/// The server took conversations over from a killed holder without publishing again anything
/// the stream held: it read the stream's last message of each first (its progress in the
/// database trailed what it had published by up to a second). The duplicate window would have
/// dropped such copies; this checks they were never sent.
async fn assert_nothing_published_twice(app: &TestApp) {
    let addr = app.metrics_addr.expect("metrics are on");
    assert!(
        metric(addr, "parley_export_published_items_total").await > 0.0,
        "the survivor exported"
    );
    assert_eq!(
        metric(addr, "parley_export_duplicates_total").await,
        0.0,
        "nothing the stream held was sent again"
    );
}

/// A replica run as a process of its own (this test binary started again on this test
/// alone, told what to serve by its environment), so that a test can `kill -9` it: it serves,
/// exporting, until killed. Not a test by itself, hence ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the server process of a_killed_process_loses_nothing"]
async fn replica_process() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("PARLEY_PROCESS_DB").is_empty() {
        return;
    }
    let mut config =
        parley_server::Config::new(var("PARLEY_PROCESS_DB"), var("PARLEY_PROCESS_KEY"));
    config.export = Some(parley_server::export::ExportConfig {
        lease: Duration::from_secs(6),
        sweep_interval: Duration::from_millis(500),
        ..parley_server::export::ExportConfig::new(var("PARLEY_PROCESS_NATS"))
    });
    let app = parley_server::App::prepare(config).await.expect("prepare");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("its address");
    std::fs::write(var("PARLEY_PROCESS_ADDR"), addr.to_string()).expect("tell the test");
    app.serve(listener, std::future::pending())
        .await
        .expect("serve");
}

/// `kill -9` of a replica process while it takes writes and exports them: the other replica
/// takes its conversations over once their leases end; every item arrives, none twice.
async fn a_killed_process_loses_nothing(db: Db) {
    let nats = NatsServer::start().await;
    let app = spawn_app_with(db, exporting(&nats)).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let told = app.dir().join("process.addr");
    let mut process = tokio::process::Command::new(std::env::current_exe().expect("this binary"))
        .args([
            "--exact",
            "export::replica_process",
            "--ignored",
            "--test-threads=1",
        ])
        .env("PARLEY_PROCESS_DB", app.database_url())
        .env("PARLEY_PROCESS_KEY", app.dir().join("parley.key"))
        .env("PARLEY_PROCESS_NATS", &nats.url)
        .env("PARLEY_PROCESS_ADDR", &told)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the replica process");
    let deadline = tokio::time::Instant::now() + STUCK;
    let addr = loop {
        if let Ok(addr) = std::fs::read_to_string(&told)
            && !addr.is_empty()
        {
            break addr;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the process did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect to the process");
    let doomed = alice.via(channel);
    // The conversations are made through the process, so that it is the one exporting them.
    let mut conversations = Vec::new();
    for n in 0..10 {
        let c = doomed
            .create_group(&format!("kill -9 {n}"), &["bob"])
            .await
            .expect("create");
        conversations.push(c.id);
    }
    // Writes go on through the process until it is killed under them.
    let writing = {
        let (doomed, ids) = (doomed.clone(), conversations.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while doomed
                .send(&ids[n % ids.len()], &format!("to the process {n}"))
                .await
                .is_ok()
            {
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    process.kill().await.expect("kill -9 the process");
    let written = writing.await.expect("the writer");
    assert!(written > 20, "the process took writes: {written}");
    for n in 0..100 {
        let id = &conversations[n % conversations.len()];
        alice.send(id, &format!("after {n}")).await.expect("send");
    }
    assert_exported_once_in_order(&app, &nats, &conversations).await;
    assert_nothing_published_twice(&app).await;
}

/// NATS stopped for 10 s under writes and started again: no write fails, health stays
/// SERVING, and every item reaches the stream, once, in order.
async fn nats_stopped_under_writes_loses_nothing(db: Db) {
    let mut nats = NatsServer::start().await;
    let app = spawn_app_with(db, exporting(&nats)).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let mut conversations = Vec::new();
    for n in 0..5 {
        let c = alice
            .create_group(&format!("outage {n}"), &["bob"])
            .await
            .expect("create");
        conversations.push(c.id);
    }
    let writing = {
        let (alice, ids) = (alice.clone(), conversations.clone());
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut n = 0;
            while started.elapsed() < Duration::from_secs(13) {
                alice
                    .send(&ids[n % ids.len()], &format!("m{n}"))
                    .await
                    .expect("a write while NATS is down");
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.stop().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let health = app
        .health()
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
        "export is not part of serving"
    );
    nats.resume().await;
    let written = writing.await.expect("the writer");
    assert!(written > 100, "writes went on: {written}");
    assert_exported_once_in_order(&app, &nats, &conversations).await;
}

/// Items written while export was off are exported once it is turned on: the history not yet
/// exported, found by the sweep.
async fn turning_export_on_exports_the_history(db: Db) {
    let nats = NatsServer::start().await;
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let mut conversations = Vec::new();
    for n in 0..5 {
        let c = alice
            .create_group(&format!("history {n}"), &["bob", "ext1"])
            .await
            .expect("create");
        for m in 0..20 {
            alice.send(&c.id, &format!("old {m}")).await.expect("send");
        }
        conversations.push(c.id);
    }
    let exporting_replica = app.replica_with(exporting(&nats)).await;
    assert_exported_once_in_order(&app, &nats, &conversations).await;
    // And what is written after, on the replica that does not export, follows.
    for id in &conversations {
        alice.send(id, "new").await.expect("send");
    }
    let total: usize = {
        let admin = app.service(TENANT);
        let mut n = 0;
        for id in &conversations {
            n += admin.timeline(id).await.expect("timeline").len();
        }
        n
    };
    exported(&nats, total as u64, STUCK).await;
    assert_exported_once_in_order(&app, &nats, &conversations).await;
    drop(exporting_replica);
}

/// The stream deleted under a running export (an operator's mistake, or NATS started again
/// without its store): Parley makes it again and goes on with the items not yet exported.
async fn a_deleted_stream_is_made_again(db: Db) {
    let nats = NatsServer::start().await;
    let app = spawn_app_with(db, exporting(&nats)).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("again", &["bob"]).await.expect("create");
    let first = alice.last_seq(&c.id).await;
    exported(&nats, first as u64, STUCK).await;
    nats.jetstream()
        .await
        .delete_stream("PARLEY")
        .await
        .expect("delete the stream");
    for m in 0..3 {
        alice
            .send(&c.id, &format!("after {m}"))
            .await
            .expect("send");
    }
    let seqs: Vec<i64> = exported(&nats, 3, STUCK)
        .await
        .iter()
        .map(|m| m.item.seq)
        .collect();
    assert_eq!(
        seqs,
        vec![first + 1, first + 2, first + 3],
        "what was not exported yet"
    );
}

/// Export off: Parley opens no connection to NATS, whatever it writes.
async fn export_off_connects_nothing(db: Db) {
    let nats = NatsServer::start().await;
    let before = nats.connections_ever().await;
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("quiet", &["bob"]).await.expect("create");
    alice.send(&c.id, "not exported").await.expect("send");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(nats.connections_ever().await, before, "nothing connected");
}

/// Who may see an item travels with it: an internal participant's arrival is `internal`
/// (rule 18), an external one's and a message `all`.
async fn items_carry_who_may_see_them(db: Db) {
    let nats = NatsServer::start().await;
    let app = spawn_app_with(db, exporting(&nats)).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group("labels", &["ext1"])
        .await
        .expect("create");
    let before = alice.last_seq(&c.id).await;
    alice.add_users(&c.id, &["bob"]).await.expect("add bob");
    alice.add_users(&c.id, &["ext2"]).await.expect("add ext2");
    alice.send(&c.id, "hello").await.expect("send");
    let last = alice.last_seq(&c.id).await;
    let all = exported(&nats, last as u64, STUCK).await;
    let labels: Vec<(i64, &str, &str)> = all
        .iter()
        .filter(|m| m.item.seq > before)
        .map(|m| (m.item.seq, m.kind.as_str(), m.visibility.as_str()))
        .collect();
    assert_eq!(
        labels,
        vec![
            (before + 1, "event", "internal"),
            (before + 2, "event", "all"),
            (before + 3, "message", "all"),
        ]
    );
}

/// A `PARLEY` stream that does not take `parley.>` refuses the start, saying why.
async fn a_stream_that_does_not_fit_refuses_the_start(db: Db) {
    let nats = NatsServer::start().await;
    nats.jetstream()
        .await
        .create_stream(async_nats::jetstream::stream::Config {
            name: "PARLEY".into(),
            subjects: vec!["elsewhere.>".into()],
            ..Default::default()
        })
        .await
        .expect("a stream of another shape");
    let app = spawn_app(db).await;
    let mut config = parley_server::Config::new(app.database_url(), app.dir().join("parley.key"));
    exporting(&nats)(&mut config);
    let refused = parley_server::App::prepare(config)
        .await
        .err()
        .expect("the start is refused");
    let text = refused.to_string();
    assert!(
        text.contains("PARLEY") && text.contains("parley.>") && text.contains("elsewhere.>"),
        "{text}"
    );
}

both_dbs!(
    every_item_reaches_the_stream_once_in_order,
    a_killed_replica_loses_nothing,
    a_killed_process_loses_nothing,
    nats_stopped_under_writes_loses_nothing,
    turning_export_on_exports_the_history,
    a_deleted_stream_is_made_again,
    export_off_connects_nothing,
    items_carry_who_may_see_them,
    a_stream_that_does_not_fit_refuses_the_start,
);
