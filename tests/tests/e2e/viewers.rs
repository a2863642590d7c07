//! What external and removed viewers see (rules 15 and 18): an external viewer's every reply is
//! unmoved by internal-only roster changes, and a removed viewer reads the conversation as it was
//! just after their removal.

use parley_tests::*;
use pb::participant::State as PState;
use tonic::{Code, Status};

/// Every reply an external (or any) viewer reads about one conversation.
#[derive(Debug, PartialEq)]
struct Seen {
    conversation: pb::Conversation,
    active: Vec<pb::Participant>,
    removed: Vec<pb::Participant>,
    all: Vec<pb::Participant>,
    owner: pb::Participant,
    own: pb::Participant,
    events: Vec<pb::Event>,
    timeline: Vec<pb::TimelineItem>,
    listed: Vec<pb::Conversation>,
}

async fn seen(viewer: &Caller, id: &str, own_id: &str, owner_id: &str) -> Seen {
    Seen {
        conversation: viewer.get(id).await.expect("GetConversation"),
        active: viewer
            .participants_in(id, PState::Active)
            .await
            .expect("ListParticipants ACTIVE"),
        removed: viewer
            .participants_in(id, PState::Removed)
            .await
            .expect("ListParticipants REMOVED"),
        all: viewer.participants(id).await.expect("ListParticipants"),
        owner: viewer
            .participant(id, owner_id)
            .await
            .expect("GetParticipant owner"),
        own: viewer
            .participant(id, own_id)
            .await
            .expect("GetParticipant self"),
        events: viewer.events(id).await.expect("ListEvents"),
        timeline: viewer.timeline(id).await.expect("ListTimeline"),
        listed: viewer
            .list_conversations_with(true, 0)
            .await
            .expect("ListConversations"),
    }
}

fn ids(list: &[pb::Participant]) -> Vec<&str> {
    list.iter().map(|p| p.user_id.as_str()).collect()
}

fn update_title(id: &str, title: &str) -> pb::UpdateConversationRequest {
    pb::UpdateConversationRequest {
        conversation: Some(pb::Conversation {
            id: id.to_owned(),
            title: title.to_owned(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["title".into()],
        }),
        request_id: request_id(),
    }
}

fn update_max(id: &str, max: i32) -> pb::UpdateConversationRequest {
    pb::UpdateConversationRequest {
        conversation: Some(pb::Conversation {
            id: id.to_owned(),
            policy: Some(pb::Policy {
                max_participants: max,
                ..Default::default()
            }),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["policy.max_participants".into()],
        }),
        request_id: request_id(),
    }
}

/// Rule 18: an external viewer's every reply, field by field, is the same before and after
/// internal people are added, promoted and removed; the roster they see is the external
/// participants and the owner, and the count covers that set.
async fn external_viewers_see_nothing_of_internal_changes(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let ext1 = app.external(TENANT, "ext1");
    let c = alice
        .create_group("shared", &["bob", "ext1"])
        .await
        .expect("create");
    // bob was removed before the external viewer's first look: hidden from them too.
    alice.remove(&c.id, "bob").await.expect("remove bob");
    let before = seen(&ext1, &c.id, "ext1", "alice").await;
    assert_eq!(ids(&before.active), ["alice", "ext1"]);
    assert!(before.removed.is_empty(), "{:?}", before.removed);
    assert_eq!(before.conversation.participant_count, 2);
    assert_eq!(before.conversation.viewer_state(), PState::Active);
    expect_err(
        ext1.participant(&c.id, "bob").await,
        Code::NotFound,
        ErrorReason::ParticipantNotFound,
    );

    // Internal-only roster changes: an add, a role change, a removal, a re-add.
    alice
        .add_users(&c.id, &["carol", "dave"])
        .await
        .expect("add carol and dave");
    alice
        .set_role(&c.id, "carol", pb::participant::Role::Admin)
        .await
        .expect("promote carol");
    alice.remove(&c.id, "dave").await.expect("remove dave");
    alice.add_users(&c.id, &["bob"]).await.expect("re-add bob");
    let internal = alice.get(&c.id).await.expect("alice's view");
    assert_eq!(
        internal.participant_count, 4,
        "internal viewers see the change"
    );

    let after = seen(&ext1, &c.id, "ext1", "alice").await;
    assert_eq!(after, before, "no reply to the external viewer moved");
    for hidden in ["bob", "carol", "dave"] {
        expect_err(
            ext1.participant(&c.id, hidden).await,
            Code::NotFound,
            ErrorReason::ParticipantNotFound,
        );
    }

    // A change they can see moves their etag (so the comparison above could fail).
    alice
        .conv()
        .update_conversation(alice.req(update_title(&c.id, "renamed")))
        .await
        .expect("rename");
    let renamed = ext1.get(&c.id).await.expect("get");
    assert_ne!(renamed.etag, before.conversation.etag);
    assert_eq!(renamed.title, "renamed");
    assert_eq!(renamed.participant_count, 2);
}

/// Rule 18, "at once": a participant whose directory entry turns EXTERNAL is judged as external
/// on their next call, whatever their participant row says.
async fn a_directory_kind_of_external_applies_at_once(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group("shared", &["bob", "carol", "ext1"])
        .await
        .expect("create");
    let bob = app.user(TENANT, "bob");
    assert_eq!(bob.get(&c.id).await.expect("get").participant_count, 4);
    let mut entry = app.service(TENANT).get_user("bob").await.expect("bob");
    entry.kind = pb::user::Kind::External as i32;
    app.service(TENANT)
        .upsert(entry)
        .await
        .expect("bob external");

    assert_eq!(bob.get(&c.id).await.expect("get").participant_count, 2);
    let mut shown = bob.active_ids(&c.id).await.expect("roster");
    shown.sort();
    // The roster shown is the external participants and the owner; bob's own row (which says
    // INTERNAL) is still his to read through GetParticipant.
    assert_eq!(shown, ["alice", "ext1"]);
    expect_err(
        bob.participant(&c.id, "carol").await,
        Code::NotFound,
        ErrorReason::ParticipantNotFound,
    );
    assert_eq!(
        bob.participant(&c.id, "bob")
            .await
            .expect("own row")
            .user_id,
        "bob"
    );
    let events = bob.events(&c.id).await.expect("events");
    assert!(
        events
            .iter()
            .all(|e| !e.subject_ids.iter().any(|s| s == "carol")),
        "no internal roster event: {events:?}"
    );
}

/// Rule 15: a removed participant reads the conversation as it was just after their removal,
/// whatever changes after; ListConversations lists it with `include_removed`, marked REMOVED.
async fn removed_viewers_read_the_conversation_as_it_was(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice
        .create_group("before", &["bob", "carol"])
        .await
        .expect("create");
    alice.remove(&c.id, "bob").await.expect("remove bob");
    let at_removal = bob.get(&c.id).await.expect("get after removal");
    assert_eq!(at_removal.viewer_state(), PState::Removed);
    assert_eq!(at_removal.participant_count, 2);
    assert_eq!(at_removal.title, "before");
    let listed = bob.list_conversations_with(true, 0).await.expect("list");
    assert_eq!(listed, vec![at_removal.clone()]);
    assert!(
        bob.list_conversations().await.expect("list").is_empty(),
        "not listed without include_removed"
    );

    // Rename, a policy change, an add and archiving: nothing of it reaches bob.
    alice
        .conv()
        .update_conversation(alice.req(update_title(&c.id, "after")))
        .await
        .expect("rename");
    alice
        .conv()
        .update_conversation(alice.req(update_max(&c.id, 50)))
        .await
        .expect("policy");
    alice.add_users(&c.id, &["dave"]).await.expect("add dave");
    alice.archive(&c.id).await.expect("archive");
    assert_eq!(bob.get(&c.id).await.expect("get"), at_removal);
    assert_eq!(
        bob.list_conversations_with(true, 0).await.expect("list"),
        vec![at_removal.clone()]
    );
    // The others see the conversation as it is, marked ACTIVE.
    let now = app.user(TENANT, "carol").get(&c.id).await.expect("carol");
    assert_eq!(now.title, "after");
    assert_eq!(now.viewer_state(), PState::Active);
    assert_ne!(now.etag, at_removal.etag);

    // Added again, bob sees it as it is.
    alice.unarchive(&c.id).await.expect("unarchive");
    alice.add_users(&c.id, &["bob"]).await.expect("re-add bob");
    let back = bob.get(&c.id).await.expect("get");
    assert_eq!(back.title, "after");
    assert_eq!(back.viewer_state(), PState::Active);
}

/// Rules 15 and 18 together: a removed external participant keeps the external view of the
/// moment of their removal.
async fn a_removed_external_keeps_the_external_view(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let ext1 = app.external(TENANT, "ext1");
    let c = alice
        .create_group("shared", &["bob", "ext1", "ext2"])
        .await
        .expect("create");
    let seen_before = ext1.get(&c.id).await.expect("get");
    assert_eq!(seen_before.participant_count, 3);
    alice.remove(&c.id, "ext1").await.expect("remove ext1");
    let frozen = ext1.get(&c.id).await.expect("get");
    assert_eq!(frozen.participant_count, 2, "alice and ext2");
    assert_eq!(frozen.viewer_state(), PState::Removed);
    alice.add_users(&c.id, &["carol"]).await.expect("add carol");
    alice
        .conv()
        .update_conversation(alice.req(update_title(&c.id, "later")))
        .await
        .expect("rename");
    assert_eq!(ext1.get(&c.id).await.expect("get"), frozen);
    // The roster is the conversation as it is now: not theirs to read.
    expect_err(
        ext1.participants(&c.id).await,
        Code::PermissionDenied,
        ErrorReason::ParticipantRemoved,
    );
}

/// Rule 5: a group with no active member yields one FAILED `GROUP_EMPTY` result; atomic calls
/// fail with it and write nothing.
async fn a_group_with_no_active_member_is_group_empty(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    // erin is deactivated by the standard seed.
    seed_group(&app, TENANT, "gone", &["erin"]).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("g", &["bob"]).await.expect("create");
    let before = alice.snapshot(&c.id).await;
    let status = expect_err(
        alice.add(&c.id, vec![group_invitee("gone")], false).await,
        Code::FailedPrecondition,
        ErrorReason::GroupEmpty,
    );
    assert_invitee_violations(&status, &[(0, ErrorReason::GroupEmpty)]);
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");

    let reply = alice
        .add(
            &c.id,
            vec![group_invitee("gone"), user_invitee("carol")],
            true,
        )
        .await
        .expect("partial success");
    assert_eq!(reply.results.len(), 2, "{reply:?}");
    let empty = &reply.results[0];
    assert_eq!(
        empty.outcome(),
        pb::add_participants_result::Outcome::Failed
    );
    assert_eq!(empty.reason(), ErrorReason::GroupEmpty);
    assert_eq!(
        empty.invitee,
        Some(group_invitee("gone")),
        "the result names the group"
    );
    assert_eq!(
        reply.results[1].outcome(),
        pb::add_participants_result::Outcome::Added
    );
}

/// An atomic failure's message summarises (a count and the first failure), and its details
/// stay within what a client accepts in trailers: the BadRequest lists the first failures, the
/// ErrorInfo says how many failed and how many are listed.
async fn an_atomic_failure_summarises_its_message(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("g", &["bob"]).await.expect("create");
    let before = alice.snapshot(&c.id).await;
    let missing: Vec<String> = (0..1000).map(|i| format!("nobody-{i:04}")).collect();
    let status: Status = expect_err(
        alice
            .add(
                &c.id,
                missing.iter().map(|u| user_invitee(u)).collect(),
                false,
            )
            .await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    assert!(
        status.message().starts_with("1000 invitees failed"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("nobody-0000"));
    assert!(
        !status.message().contains("nobody-0999"),
        "the message names one failure, not all: {}",
        status.message()
    );
    assert!(status.message().len() < 400, "{}", status.message());
    let info = error_info(&status);
    assert_eq!(
        info.metadata.get("failed_invitees").map(String::as_str),
        Some("1000")
    );
    let listed: usize = info.metadata["listed_invitees"].parse().expect("a count");
    assert!((1..1000).contains(&listed), "{listed}");
    let expected: Vec<(usize, ErrorReason)> = (0..listed)
        .map(|i| (i, ErrorReason::UserNotFound))
        .collect();
    assert_invitee_violations(&status, &expected);
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing was written");
}

/// A read authorizes and fetches in one snapshot: while bob reads the timeline over and over,
/// alice removes him and keeps posting; no read of his ever returns an item at or past his
/// removal (with the two in separate snapshots, a removal committing between them let the
/// fetch run with the window of an active participant).
async fn a_read_never_sees_past_a_removal_that_commits_during_it(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice.create_group("race", &["bob"]).await.expect("create");
    for i in 0..5 {
        alice
            .send(&c.id, &format!("before {i}"))
            .await
            .expect("send");
    }
    let reader = {
        let (bob, id) = (bob.clone(), c.id.clone());
        tokio::spawn(async move {
            let mut highest = 0;
            for _ in 0..300 {
                let msg = pb::ListTimelineRequest {
                    conversation_id: id.clone(),
                    order: pb::Order::NewestFirst as i32,
                    page_size: 5,
                    page_token: String::new(),
                };
                let page = bob
                    .conv()
                    .list_timeline(bob.req(msg))
                    .await
                    .expect("a removed participant still reads")
                    .into_inner();
                highest = page.items.iter().map(|i| i.seq).fold(highest, i64::max);
            }
            highest
        })
    };
    alice.remove(&c.id, "bob").await.expect("remove bob");
    for i in 0..40 {
        alice
            .send(&c.id, &format!("after {i}"))
            .await
            .expect("send");
    }
    let highest = reader.await.expect("the reader");
    let removal = alice
        .events_of(&c.id, pb::event::Type::ParticipantRemoved)
        .await
        .expect("events")[0]
        .seq;
    assert!(
        highest < removal,
        "bob read seq {highest}, at or past his removal at {removal}"
    );
}

both_dbs!(
    external_viewers_see_nothing_of_internal_changes,
    a_directory_kind_of_external_applies_at_once,
    removed_viewers_read_the_conversation_as_it_was,
    a_removed_external_keeps_the_external_view,
    a_group_with_no_active_member_is_group_empty,
    an_atomic_failure_summarises_its_message,
    a_read_never_sees_past_a_removal_that_commits_during_it,
);
