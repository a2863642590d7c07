//! parley-sdk paging against a real server: single pages and streams over every page, for
//! users, messages, the timeline, participants, events, conversations and notifications.

use crate::sdk_support::{service, user};
use futures::{StreamExt, TryStreamExt};
use parley_sdk::{
    AddParticipants, EventType, ListConversations, ListEvents, ListInvitations, ListMessages,
    ListNotifications, ListParticipants, ListTimeline, ListUsers, NewConversation, Order,
    ParticipantState, pb::timeline_item::Item,
};
use parley_tests::*;

async fn users_in_pages_of_50(db: Db) {
    let app = spawn_app(db).await;
    let ids = seed_many(&app, "user", 250).await;
    let directory = service(&app).directory();

    // Page by page: five full pages, then none.
    let mut pages = Vec::new();
    let mut request = ListUsers::new().page_size(50);
    loop {
        let page = directory.list_users(request.clone()).await.expect("page");
        pages.push(page.items.len());
        match page.next_page_token {
            Some(token) => request = request.page_token(token),
            None => break,
        }
    }
    assert_eq!(pages.iter().sum::<usize>(), 250);
    assert!(pages.iter().all(|n| *n <= 50), "{pages:?}");
    assert!(pages.len() >= 5, "{pages:?}");

    // As one stream.
    let streamed: Vec<String> = directory
        .list_users_stream(ListUsers::new().page_size(50))
        .map_ok(|u| u.id)
        .try_collect()
        .await
        .expect("users");
    assert_eq!(sorted(streamed.clone()), ids);
    assert_eq!(streamed.len(), 250, "no item twice");

    // Reading part of it fetches only the pages it needs.
    let first: Vec<_> = directory
        .list_users_stream(ListUsers::new().page_size(50))
        .take(60)
        .try_collect()
        .await
        .expect("the first 60");
    assert_eq!(first.len(), 60);
}

async fn messages_and_timeline_in_pages_of_50(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let conversations = alice.conversations();
    let c = conversations
        .create(NewConversation::group(["bob"]).title("busy"))
        .await
        .expect("create");
    for i in 0..250 {
        conversations
            .send_message(&c.id, format!("message {i}"))
            .await
            .expect("send");
    }

    let oldest_first: Vec<String> = conversations
        .list_messages_stream(ListMessages::new(&c.id).page_size(50))
        .map_ok(|m| m.body)
        .try_collect()
        .await
        .expect("messages");
    let expected: Vec<String> = (0..250).map(|i| format!("message {i}")).collect();
    assert_eq!(oldest_first, expected);

    let newest_first: Vec<String> = conversations
        .list_messages_stream(
            ListMessages::new(&c.id)
                .order(Order::NewestFirst)
                .page_size(50),
        )
        .map_ok(|m| m.body)
        .try_collect()
        .await
        .expect("messages");
    assert_eq!(newest_first, expected.into_iter().rev().collect::<Vec<_>>());

    let first_page = conversations
        .list_messages(ListMessages::new(&c.id).page_size(50))
        .await
        .expect("page");
    assert_eq!(first_page.items.len(), 50);
    assert!(first_page.has_more());
    // A stream may start where a page left off.
    let rest = conversations
        .list_messages_stream(
            ListMessages::new(&c.id)
                .page_size(50)
                .page_token(first_page.next_page_token.clone().expect("a token")),
        )
        .try_collect::<Vec<_>>()
        .await
        .expect("the rest");
    assert_eq!(rest.len(), 200);
    assert_eq!(rest[0].seq, first_page.items[49].seq + 1);

    // The timeline: the creation and roster events, then every message, gapless.
    let timeline: Vec<_> = conversations
        .list_timeline_stream(ListTimeline::new(&c.id).page_size(50))
        .try_collect()
        .await
        .expect("timeline");
    let seqs: Vec<i64> = timeline.iter().map(|i| i.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let messages = timeline
        .iter()
        .filter(|i| matches!(i.item, Some(Item::Message(_))))
        .count();
    assert_eq!(messages, 250);
}

async fn participants_events_and_notifications(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let ids = seed_many(&app, "member", 240).await;
    let alice = user(&app, "alice");
    let c = alice
        .conversations()
        .create(NewConversation::group(["bob"]))
        .await
        .expect("create");
    alice
        .participants()
        .add(AddParticipants::new(&c.id).users(ids.iter().cloned()))
        .await
        .expect("add 240");
    alice
        .participants()
        .remove(&c.id, "member0000")
        .await
        .expect("remove one");

    let participants = alice.participants();
    let everyone: Vec<_> = participants
        .list_stream(ListParticipants::new(&c.id).page_size(50))
        .try_collect()
        .await
        .expect("participants");
    assert_eq!(everyone.len(), 242);
    let active: Vec<_> = participants
        .list_stream(
            ListParticipants::new(&c.id)
                .page_size(50)
                .state(ParticipantState::Active),
        )
        .try_collect()
        .await
        .expect("active participants");
    assert_eq!(active.len(), 241);
    assert!(active.iter().all(|p| p.user_id != "member0000"));

    let events: Vec<_> = participants
        .list_events_stream(ListEvents::new(&c.id).page_size(2))
        .try_collect()
        .await
        .expect("events");
    let types: Vec<EventType> = events.iter().map(|e| e.r#type()).collect();
    assert_eq!(types.first(), Some(&EventType::ConversationCreated));
    assert_eq!(types.last(), Some(&EventType::ParticipantRemoved));
    let newest: Vec<_> = participants
        .list_events_stream(ListEvents::new(&c.id).order(Order::NewestFirst))
        .try_collect()
        .await
        .expect("events");
    assert_eq!(newest.len(), events.len());
    assert_eq!(newest[0].seq, events[events.len() - 1].seq);

    let invitations: Vec<_> = participants
        .list_invitations_stream(ListInvitations::new(&c.id))
        .try_collect()
        .await
        .expect("invitations");
    assert!(invitations.is_empty());

    // The outbox, drained page by page and acknowledged.
    let notifications = service(&app).notifications();
    let pending: Vec<_> = notifications
        .list_stream(ListNotifications::new().page_size(50))
        .try_collect()
        .await
        .expect("notifications");
    assert!(pending.len() >= 241, "{}", pending.len());
    let acked = notifications
        .ack(pending.iter().map(|n| n.id.clone()))
        .await
        .expect("ack");
    assert_eq!(acked as usize, pending.len());
    let left = notifications
        .list(ListNotifications::new())
        .await
        .expect("page");
    assert!(left.items.is_empty() && !left.has_more());
    let all: Vec<_> = notifications
        .list_stream(ListNotifications::new().include_acked(true).page_size(100))
        .try_collect()
        .await
        .expect("notifications");
    assert_eq!(all.len(), pending.len());
}

async fn conversations_newest_first(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = user(&app, "alice");
    let mut created = Vec::new();
    for i in 0..12 {
        let c = alice
            .conversations()
            .create(NewConversation::group(["bob"]).title(format!("c{i}")))
            .await
            .expect("create");
        created.push(c.id);
    }
    let listed: Vec<String> = alice
        .conversations()
        .list_stream(ListConversations::new().page_size(5))
        .map_ok(|c| c.id)
        .try_collect()
        .await
        .expect("conversations");
    created.reverse();
    assert_eq!(listed, created);
}

both_dbs!(
    users_in_pages_of_50,
    messages_and_timeline_in_pages_of_50,
    participants_events_and_notifications,
    conversations_newest_first,
);
