//! The timeline: one gapless seq over messages and events, order and paging, what external and
//! removed participants may see.

use parley_tests::*;
use pb::{Order, event::Type as EventType, timeline_item::Item};
use tonic::Code;

fn seqs(items: &[pb::TimelineItem]) -> Vec<i64> {
    items.iter().map(|i| i.seq).collect()
}

/// Lists a timeline in `order`, `page_size` at a time, over all pages.
async fn timeline_in(
    caller: &Caller,
    id: &str,
    order: Order,
    page_size: i32,
) -> Vec<pb::TimelineItem> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..1000 {
        let msg = pb::ListTimelineRequest {
            conversation_id: id.to_owned(),
            order: order as i32,
            page_size,
            page_token: token,
        };
        let page = caller
            .conv()
            .list_timeline(caller.req(msg))
            .await
            .expect("ListTimeline")
            .into_inner();
        assert!(page_size <= 0 || page.items.len() <= page_size as usize);
        out.extend(page.items);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
    panic!("ListTimeline does not end");
}

async fn events_in(caller: &Caller, id: &str, order: Order, page_size: i32) -> Vec<pb::Event> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..1000 {
        let msg = pb::ListEventsRequest {
            conversation_id: id.to_owned(),
            order: order as i32,
            page_size,
            page_token: token,
        };
        let page = caller
            .part()
            .list_events(caller.req(msg))
            .await
            .expect("ListEvents")
            .into_inner();
        out.extend(page.events);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
    panic!("ListEvents does not end");
}

async fn messages_in(caller: &Caller, id: &str, order: Order, page_size: i32) -> Vec<pb::Message> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..1000 {
        let msg = pb::ListMessagesRequest {
            conversation_id: id.to_owned(),
            order: order as i32,
            page_size,
            page_token: token,
        };
        let page = caller
            .conv()
            .list_messages(caller.req(msg))
            .await
            .expect("ListMessages")
            .into_inner();
        out.extend(page.messages);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
    panic!("ListMessages does not end");
}

fn reversed<T: Clone>(items: &[T]) -> Vec<T> {
    items.iter().rev().cloned().collect()
}

/// Builds a conversation with a mix of messages and events; returns its id.
async fn busy_conversation(app: &TestApp) -> String {
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice
        .create_group("busy", &["bob", "carol"])
        .await
        .expect("create");
    alice.send(&c.id, "m1").await.expect("send");
    alice.add_users(&c.id, &["dave"]).await.expect("add dave");
    bob.send(&c.id, "m2").await.expect("send");
    alice.remove(&c.id, "dave").await.expect("remove dave");
    alice.archive(&c.id).await.expect("archive");
    alice.unarchive(&c.id).await.expect("unarchive");
    bob.send(&c.id, "m3").await.expect("send");
    alice.add_users(&c.id, &["frank"]).await.expect("add frank");
    alice.send(&c.id, "m4").await.expect("send");
    c.id
}

async fn seq_is_gapless_across_messages_and_events(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let id = busy_conversation(&app).await;
    let alice = app.user(TENANT, "alice");

    let timeline = alice.timeline(&id).await.expect("timeline");
    let n = timeline.len() as i64;
    assert_eq!(
        seqs(&timeline),
        (1..=n).collect::<Vec<_>>(),
        "gapless from 1"
    );
    let mut from_items_messages = Vec::new();
    let mut from_items_events = Vec::new();
    for item in &timeline {
        match item
            .item
            .as_ref()
            .expect("an item holds a message or an event")
        {
            Item::Message(m) => {
                assert_eq!(m.seq, item.seq);
                assert_eq!(m.conversation_id, id);
                from_items_messages.push(m.clone());
            }
            Item::Event(e) => {
                assert_eq!(e.seq, item.seq);
                assert_eq!(e.conversation_id, id);
                assert!(e.create_time.is_some());
                from_items_events.push(e.clone());
            }
        }
    }
    assert_eq!(from_items_messages.len(), 4);
    assert_eq!(
        alice.messages(&id).await.expect("messages"),
        from_items_messages
    );
    let events = alice.events(&id).await.expect("events");
    assert_eq!(events, from_items_events);
    let types: Vec<EventType> = events.iter().map(|e| e.r#type()).collect();
    assert_eq!(types[0], EventType::ConversationCreated);
    for expected in [
        EventType::ParticipantAdded,
        EventType::ParticipantRemoved,
        EventType::ConversationArchived,
        EventType::ConversationUnarchived,
    ] {
        assert!(
            types.contains(&expected),
            "{expected:?} missing from {types:?}"
        );
    }
    let bodies: Vec<&str> = from_items_messages
        .iter()
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(bodies, vec!["m1", "m2", "m3", "m4"]);
    // Everyone active reads the same timeline.
    assert_eq!(
        app.user(TENANT, "frank")
            .timeline(&id)
            .await
            .expect("frank"),
        timeline
    );
}

async fn order_and_paging(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let id = busy_conversation(&app).await;
    let bob = app.user(TENANT, "bob");

    let oldest = timeline_in(&bob, &id, Order::OldestFirst, 0).await;
    assert!(oldest.len() >= 10);
    assert_eq!(
        timeline_in(&bob, &id, Order::Unspecified, 0).await,
        oldest,
        "the default is oldest first"
    );
    assert_eq!(
        timeline_in(&bob, &id, Order::NewestFirst, 0).await,
        reversed(&oldest)
    );
    for size in [1, 2, 3, 1000] {
        assert_eq!(
            timeline_in(&bob, &id, Order::OldestFirst, size).await,
            oldest,
            "page_size {size}"
        );
        assert_eq!(
            timeline_in(&bob, &id, Order::NewestFirst, size).await,
            reversed(&oldest),
            "page_size {size}"
        );
    }

    let events = events_in(&bob, &id, Order::OldestFirst, 0).await;
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        events_in(&bob, &id, Order::NewestFirst, 0).await,
        reversed(&events)
    );
    assert_eq!(events_in(&bob, &id, Order::OldestFirst, 2).await, events);
    assert_eq!(
        events_in(&bob, &id, Order::NewestFirst, 2).await,
        reversed(&events)
    );

    let messages = messages_in(&bob, &id, Order::OldestFirst, 0).await;
    assert_eq!(messages.len(), 4);
    assert_eq!(
        messages_in(&bob, &id, Order::NewestFirst, 0).await,
        reversed(&messages)
    );
    assert_eq!(
        messages_in(&bob, &id, Order::OldestFirst, 1).await,
        messages
    );
    assert_eq!(
        messages_in(&bob, &id, Order::NewestFirst, 3).await,
        reversed(&messages)
    );

    // A page of the newest first is the newest.
    let msg = pb::ListTimelineRequest {
        conversation_id: id.clone(),
        order: Order::NewestFirst as i32,
        page_size: 1,
        page_token: String::new(),
    };
    let first = bob
        .conv()
        .list_timeline(bob.req(msg))
        .await
        .expect("page")
        .into_inner();
    assert_eq!(seqs(&first.items), vec![oldest.len() as i64]);
    assert!(!first.next_page_token.is_empty());

    // New items show up at once, on the next read.
    let message = bob.send(&id, "fresh").await.expect("send");
    assert_eq!(message.seq, oldest.len() as i64 + 1);
    let again = timeline_in(&bob, &id, Order::OldestFirst, 0).await;
    assert_eq!(again.len(), oldest.len() + 1);
}

async fn external_viewers_do_not_see_internal_roster_events(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let ext1 = app.external(TENANT, "ext1");
    let c = alice
        .create_group("mixed", &["bob", "ext1"])
        .await
        .expect("create");
    alice
        .add_users(&c.id, &["dave"])
        .await
        .expect("add an internal");
    alice
        .add_users(&c.id, &["ext2"])
        .await
        .expect("add an external");
    alice
        .remove(&c.id, "dave")
        .await
        .expect("remove an internal");
    alice
        .remove(&c.id, "ext2")
        .await
        .expect("remove an external");
    alice.send(&c.id, "hello everyone").await.expect("send");
    app.external(TENANT, "ext1")
        .send(&c.id, "hi")
        .await
        .expect("ext1 sends");

    let internal = ["alice", "bob", "carol", "dave", "frank"];
    let about_internal = |e: &pb::Event| {
        matches!(
            e.r#type(),
            EventType::ParticipantAdded | EventType::ParticipantRemoved
        ) && e.subject_ids.iter().any(|s| internal.contains(&s.as_str()))
    };
    let all = alice.events(&c.id).await.expect("alice's events");
    assert!(
        all.iter().any(about_internal),
        "the internal view includes internal roster events"
    );
    assert_eq!(
        app.user(TENANT, "bob")
            .events(&c.id)
            .await
            .expect("bob's events"),
        all
    );

    let expected: Vec<pb::Event> = all.iter().filter(|e| !about_internal(e)).cloned().collect();
    let seen = ext1.events(&c.id).await.expect("ext1's events");
    assert_eq!(
        seen, expected,
        "an external sees every event except those about internal participants"
    );
    let subjects: Vec<Vec<String>> = seen.iter().map(|e| e.subject_ids.clone()).collect();
    assert!(
        subjects.contains(&vec!["ext2".to_owned()]),
        "external roster events stay visible: {subjects:?}"
    );
    assert_eq!(seen[0].r#type(), EventType::ConversationCreated);

    let timeline = ext1.timeline(&c.id).await.expect("ext1's timeline");
    let visible_seqs: Vec<i64> = alice
        .timeline(&c.id)
        .await
        .expect("alice's timeline")
        .iter()
        .filter(|i| !matches!(&i.item, Some(Item::Event(e)) if about_internal(e)))
        .map(|i| i.seq)
        .collect();
    assert_eq!(seqs(&timeline), visible_seqs);
    assert_eq!(
        ext1.messages(&c.id).await.expect("messages").len(),
        2,
        "externals see every message"
    );

    // Paging over the filtered view still visits everything once.
    assert_eq!(
        events_in(&ext1, &c.id, Order::OldestFirst, 1).await,
        expected
    );
    assert_eq!(
        timeline_in(&ext1, &c.id, Order::NewestFirst, 1).await,
        reversed(&timeline)
    );
}

async fn removed_participants_read_up_to_their_removal(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice
        .create_group("t", &["bob", "carol"])
        .await
        .expect("create");
    let m1 = alice.send(&c.id, "m1").await.expect("send");
    let m2 = bob.send(&c.id, "m2").await.expect("send");
    alice.remove(&c.id, "bob").await.expect("remove bob");
    let removal = alice
        .events(&c.id)
        .await
        .expect("events")
        .pop()
        .expect("the removal event");
    assert_eq!(removal.r#type(), EventType::ParticipantRemoved);
    app.user(TENANT, "carol")
        .send(&c.id, "after bob")
        .await
        .expect("send");
    alice.add_users(&c.id, &["dave"]).await.expect("add dave");

    let conversation = bob
        .get(&c.id)
        .await
        .expect("bob can still read the conversation");
    assert_eq!(conversation.id, c.id);
    assert_eq!(
        bob.messages(&c.id).await.expect("messages"),
        vec![m1.clone(), m2.clone()]
    );
    assert_eq!(
        messages_in(&bob, &c.id, Order::NewestFirst, 1).await,
        vec![m2, m1]
    );
    let timeline = bob.timeline(&c.id).await.expect("timeline");
    assert_eq!(
        seqs(&timeline),
        (1..removal.seq).collect::<Vec<_>>(),
        "everything before the removal, nothing after"
    );
    assert!(
        bob.events(&c.id)
            .await
            .expect("events")
            .iter()
            .all(|e| e.seq < removal.seq)
    );
    assert!(
        timeline_in(&bob, &c.id, Order::NewestFirst, 2)
            .await
            .iter()
            .all(|i| i.seq < removal.seq)
    );

    let before = alice.snapshot(&c.id).await;
    expect_err(
        bob.send(&c.id, "can I still talk?").await,
        Code::PermissionDenied,
        ErrorReason::ParticipantRemoved,
    );
    expect_err(
        bob.add_users(&c.id, &["frank"]).await,
        Code::PermissionDenied,
        ErrorReason::ParticipantRemoved,
    );
    expect_err(
        bob.remove(&c.id, "carol").await,
        Code::PermissionDenied,
        ErrorReason::ParticipantRemoved,
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");

    // Under SINCE_JOIN a removed participant sees [history_from, removal).
    let policy = pb::Policy {
        new_participant_history: pb::policy::History::SinceJoin as i32,
        ..Default::default()
    };
    let s = alice
        .create_group_with("since", &["carol"], Some(policy))
        .await
        .expect("create");
    alice.send(&s.id, "before").await.expect("send");
    let joined = alice
        .add_users(&s.id, &["frank"])
        .await
        .expect("add frank")
        .results[0]
        .participant
        .clone()
        .expect("participant")
        .history_from;
    let during = alice.send(&s.id, "during").await.expect("send");
    alice.remove(&s.id, "frank").await.expect("remove frank");
    let removed_at = alice
        .events(&s.id)
        .await
        .expect("events")
        .pop()
        .expect("event")
        .seq;
    alice.send(&s.id, "after").await.expect("send");
    let frank = app.user(TENANT, "frank");
    assert_eq!(frank.messages(&s.id).await.expect("messages"), vec![during]);
    assert_eq!(
        seqs(&frank.timeline(&s.id).await.expect("timeline")),
        (joined..removed_at).collect::<Vec<_>>()
    );
}

/// The roster and the invitations are the conversation as it is now: a removed participant,
/// who may read only the history they were part of, gets PARTICIPANT_REMOVED for them (but
/// still reads the conversation, the timeline up to their removal and their own row).
async fn removed_participants_see_no_roster_after_their_removal(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let carol = app.user(TENANT, "carol");
    let c = alice
        .create_group("t", &["bob", "carol"])
        .await
        .expect("create");
    alice.remove(&c.id, "carol").await.expect("remove carol");
    alice
        .add_users(&c.id, &["dave"])
        .await
        .expect("add dave after");

    expect_err(
        carol.participants(&c.id).await,
        Code::PermissionDenied,
        ErrorReason::ParticipantRemoved,
    );
    expect_err(
        carol.participant(&c.id, "dave").await,
        Code::PermissionDenied,
        ErrorReason::ParticipantRemoved,
    );
    expect_err(
        carol.invitations(&c.id).await,
        Code::PermissionDenied,
        ErrorReason::ParticipantRemoved,
    );
    let own = carol.participant(&c.id, "carol").await.expect("own row");
    assert_eq!(own.state(), pb::participant::State::Removed);
    carol.get(&c.id).await.expect("the conversation");
    let seen = carol.timeline(&c.id).await.expect("the timeline");
    assert!(
        seen.iter().all(|item| match &item.item {
            Some(pb::timeline_item::Item::Event(e)) => !e.subject_ids.contains(&"dave".to_owned()),
            _ => true,
        }),
        "nothing after the removal: {seen:?}"
    );
    // Added back, she sees the roster again.
    alice.add_users(&c.id, &["carol"]).await.expect("re-add");
    assert_eq!(
        carol.active_ids(&c.id).await.expect("roster"),
        vec!["alice", "bob", "carol", "dave"]
    );
}

async fn non_participants_read_nothing(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let c = app
        .user(TENANT, "alice")
        .create_group("t", &["bob"])
        .await
        .expect("create");
    app.user(TENANT, "alice")
        .send(&c.id, "private")
        .await
        .expect("send");
    for caller in [app.user(TENANT, "carol"), app.external(TENANT, "ext1")] {
        expect_err(
            caller.timeline(&c.id).await,
            Code::PermissionDenied,
            ErrorReason::NotAParticipant,
        );
        expect_err(
            caller.messages(&c.id).await,
            Code::PermissionDenied,
            ErrorReason::NotAParticipant,
        );
        expect_err(
            caller.events(&c.id).await,
            Code::PermissionDenied,
            ErrorReason::NotAParticipant,
        );
    }
    let mallory = app.user(OTHER_TENANT, "mallory");
    expect_err(
        mallory.timeline(&c.id).await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );
    expect_err(
        mallory.messages(&c.id).await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );
}

both_dbs!(
    removed_participants_see_no_roster_after_their_removal,
    seq_is_gapless_across_messages_and_events,
    order_and_paging,
    external_viewers_do_not_see_internal_roster_events,
    removed_participants_read_up_to_their_removal,
    non_participants_read_nothing,
);
