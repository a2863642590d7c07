//! NotificationService: who may drain the outbox, exactly which notifications each change owes,
//! ordering and key paging, acknowledgement, tenant isolation.

use std::collections::HashSet;

use parley_tests::*;
use pb::notification::{Kind as NKind, Recipient};
use tonic::{Code, Status};

// ----- helpers -----------------------------------------------------------------------------

async fn page(
    caller: &Caller,
    page_size: i32,
    page_token: &str,
    include_acked: bool,
) -> Result<pb::ListNotificationsResponse, Status> {
    let msg = pb::ListNotificationsRequest {
        page_size,
        page_token: page_token.to_owned(),
        include_acked,
    };
    Ok(caller
        .notif()
        .list_notifications(caller.req(msg))
        .await?
        .into_inner())
}

/// Every notification the caller sees, oldest first, over all pages.
async fn all(caller: &Caller, include_acked: bool) -> Vec<pb::Notification> {
    let (mut out, mut token) = (Vec::new(), String::new());
    for _ in 0..100 {
        let p = page(caller, 0, &token, include_acked)
            .await
            .expect("ListNotifications");
        out.extend(p.notifications);
        if p.next_page_token.is_empty() {
            return out;
        }
        token = p.next_page_token;
    }
    panic!("ListNotifications did not end");
}

async fn ack(caller: &Caller, ids: &[String]) -> Result<i32, Status> {
    let msg = pb::AckNotificationsRequest {
        ids: ids.to_vec(),
        request_id: request_id(),
    };
    Ok(caller
        .notif()
        .ack_notifications(caller.req(msg))
        .await?
        .into_inner()
        .acked)
}

/// The notifications of `after` whose ids are not in `before`.
fn new_since(before: &[pb::Notification], after: Vec<pb::Notification>) -> Vec<pb::Notification> {
    let old: HashSet<&str> = before.iter().map(|n| n.id.as_str()).collect();
    after
        .into_iter()
        .filter(|n| !old.contains(n.id.as_str()))
        .collect()
}

fn recipient(n: &pb::Notification) -> String {
    match &n.recipient {
        Some(Recipient::RecipientUserId(u)) => format!("user:{u}"),
        Some(Recipient::RecipientEmail(e)) => format!("email:{e}"),
        None => "none".to_owned(),
    }
}

/// `(kind, recipient)` of each notification, sorted.
fn kinds(notes: &[pb::Notification]) -> Vec<(NKind, String)> {
    let mut out: Vec<(NKind, String)> = notes.iter().map(|n| (n.kind(), recipient(n))).collect();
    out.sort();
    out
}

fn added(users: &[&str]) -> Vec<(NKind, String)> {
    let mut out: Vec<(NKind, String)> = users
        .iter()
        .map(|u| (NKind::AddedToConversation, format!("user:{u}")))
        .collect();
    out.sort();
    out
}

fn ids(notes: &[pb::Notification]) -> Vec<String> {
    notes.iter().map(|n| n.id.clone()).collect()
}

// ----- tests -------------------------------------------------------------------------------

async fn only_services_read_the_outbox(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    alice.create_group("t", &["bob"]).await.expect("create");
    let service = app.service(TENANT);
    let before = all(&service, true).await;
    assert_eq!(before.len(), 1);

    for user in [alice.clone(), app.external(TENANT, "ext1")] {
        expect_err(
            page(&user, 0, "", false).await,
            Code::PermissionDenied,
            ErrorReason::NoPermission,
        );
        expect_err(
            ack(&user, &ids(&before)).await,
            Code::PermissionDenied,
            ErrorReason::NoPermission,
        );
    }
    expect_err(
        page(&service, 0, "garbage", false).await,
        Code::InvalidArgument,
        ErrorReason::InvalidField,
    );
    let status = ack(&service, &["not-a-uuid".to_owned()])
        .await
        .expect_err("ids are UUIDs");
    assert_error(&status, Code::InvalidArgument, ErrorReason::InvalidField);
    assert!(
        field_violations(&status)
            .iter()
            .any(|v| v.field.starts_with("ids")),
        "{status:?}"
    );
    assert_eq!(all(&service, true).await, before, "nothing was acked");
    assert_eq!(all(&service, false).await, before);
}

async fn creating_owes_one_per_other_participant(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let service = app.service(TENANT);
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group("t", &["bob", "carol"])
        .await
        .expect("create");
    let notes = all(&service, false).await;
    assert_eq!(
        kinds(&notes),
        added(&["bob", "carol"]),
        "none for the owner: {notes:?}"
    );
    for n in &notes {
        assert_eq!(
            (n.conversation_id.as_str(), n.actor_id.as_str()),
            (c.id.as_str(), "alice")
        );
        assert!(n.invitation_token.is_empty());
        assert!(n.create_time.is_some());
        assert!(uuid::Uuid::parse_str(&n.id).is_ok(), "{}", n.id);
    }

    // A DIRECT conversation: the other person.
    let d = app
        .user(TENANT, "dave")
        .create_direct("frank")
        .await
        .expect("direct");
    let more = new_since(&notes, all(&service, false).await);
    assert_eq!(kinds(&more), added(&["frank"]));
    assert_eq!(more[0].conversation_id, d.id);

    // A failed creation owes nothing.
    expect_err(
        alice.create_group("t", &["bob", "nobody"]).await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    assert_eq!(all(&service, false).await.len(), notes.len() + 1);
}

async fn the_owner_adding_owes_no_added_by_other(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let service = app.service(TENANT);
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let before = all(&service, false).await;
    alice
        .add_users(&c.id, &["dave", "frank", "bob"])
        .await
        .expect("add");
    let notes = new_since(&before, all(&service, false).await);
    assert_eq!(kinds(&notes), added(&["dave", "frank"]), "{notes:?}");
    assert!(
        notes
            .iter()
            .all(|n| n.actor_id == "alice" && n.conversation_id == c.id)
    );
}

async fn another_adding_tells_the_owner_once(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let service = app.service(TENANT);
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice.create_group("t", &["bob"]).await.expect("create");

    let before = all(&service, false).await;
    bob.add_users(&c.id, &["dave", "frank"])
        .await
        .expect("bob adds");
    let notes = new_since(&before, all(&service, false).await);
    let mut want = added(&["dave", "frank"]);
    want.push((NKind::ParticipantAddedByOther, "user:alice".to_owned()));
    want.sort();
    assert_eq!(kinds(&notes), want, "{notes:?}");
    let by_other: Vec<&pb::Notification> = notes
        .iter()
        .filter(|n| n.kind() == NKind::ParticipantAddedByOther)
        .collect();
    assert_eq!(by_other[0].actor_id, "bob");
    assert_eq!(by_other[0].conversation_id, c.id);
    assert_eq!(
        sorted(by_other[0].subject_ids.clone()),
        vec!["dave", "frank"]
    );
    assert!(notes.iter().all(|n| n.actor_id == "bob"));

    // Already there: nothing owed.
    let before = all(&service, false).await;
    let response = bob
        .add_users(&c.id, &["dave", "alice"])
        .await
        .expect("already participants");
    assert!(
        response
            .results
            .iter()
            .all(|r| r.outcome() == pb::add_participants_result::Outcome::AlreadyParticipant)
    );
    assert_eq!(
        all(&service, false).await,
        before,
        "ALREADY_PARTICIPANT owes nothing"
    );

    // A failed atomic call: nothing owed.
    expect_err(
        bob.add_users(&c.id, &["carol", "nobody"]).await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    expect_err(
        bob.add_users(&c.id, &["carol", "ext1"]).await,
        Code::PermissionDenied,
        ErrorReason::NoExternalInvitePermission,
    );
    assert_eq!(
        all(&service, false).await,
        before,
        "a failed call owes nothing"
    );

    // Partial success: only for those actually added.
    bob.add(
        &c.id,
        vec![
            user_invitee("carol"),
            user_invitee("nobody"),
            user_invitee("dave"),
        ],
        true,
    )
    .await
    .expect("partial");
    let notes = new_since(&before, all(&service, false).await);
    let mut want = added(&["carol"]);
    want.push((NKind::ParticipantAddedByOther, "user:alice".to_owned()));
    want.sort();
    assert_eq!(kinds(&notes), want, "{notes:?}");
    let by_other = notes
        .iter()
        .find(|n| n.kind() == NKind::ParticipantAddedByOther)
        .expect("one");
    assert_eq!(by_other.subject_ids, vec!["carol"]);
}

async fn listing_is_oldest_first_and_key_paged(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let users = seed_many(&app, "u", 7).await;
    let service = app.service(TENANT);
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    for user in &users {
        alice.add_users(&c.id, &[user]).await.expect("add");
    }
    let everything = all(&service, false).await;
    assert_eq!(everything.len(), 8);
    let recipients: Vec<String> = everything.iter().map(recipient).collect();
    let mut want = vec!["user:bob".to_owned()];
    want.extend(users.iter().map(|u| format!("user:{u}")));
    assert_eq!(recipients, want, "oldest first");
    let times: Vec<(i64, i32)> = everything
        .iter()
        .map(|n| {
            n.create_time
                .as_ref()
                .map(|t| (t.seconds, t.nanos))
                .expect("create_time")
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // Page by key: acknowledging the first page does not make the next skip anything.
    let first = page(&service, 3, "", false).await.expect("page 1");
    assert_eq!(first.notifications, everything[..3].to_vec());
    assert!(!first.next_page_token.is_empty());
    assert_eq!(
        ack(&service, &ids(&first.notifications))
            .await
            .expect("ack"),
        3
    );
    let second = page(&service, 3, &first.next_page_token, false)
        .await
        .expect("page 2");
    assert_eq!(second.notifications, everything[3..6].to_vec());
    let third = page(&service, 3, &second.next_page_token, false)
        .await
        .expect("page 3");
    assert_eq!(third.notifications, everything[6..].to_vec());
    assert!(third.next_page_token.is_empty(), "the listing ends");

    let status = page(&service, 3, &tamper(&first.next_page_token), false)
        .await
        .expect_err("a tampered token");
    assert_error(&status, Code::InvalidArgument, ErrorReason::InvalidField);
}

async fn acking_is_idempotent(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let service = app.service(TENANT);
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group("t", &["bob", "carol"])
        .await
        .expect("create");
    alice
        .add(&c.id, vec![email_invitee("guest@acme.example")], false)
        .await
        .expect("invite");
    let notes = all(&service, false).await;
    assert_eq!(notes.len(), 3);
    let invitation = notes
        .iter()
        .find(|n| n.kind() == NKind::Invitation)
        .expect("INVITATION")
        .clone();
    assert!(!invitation.invitation_token.is_empty());
    assert_eq!(recipient(&invitation), "email:guest@acme.example");

    let bob_note = notes
        .iter()
        .find(|n| recipient(n) == "user:bob")
        .expect("bob's")
        .clone();
    let first = vec![bob_note.id.clone(), invitation.id.clone()];
    assert_eq!(ack(&service, &first).await.expect("ack"), 2);
    assert_eq!(
        ack(&service, &first).await.expect("ack again"),
        0,
        "idempotent"
    );
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(ack(&service, &[unknown]).await.expect("unknown id"), 0);

    let left = all(&service, false).await;
    assert_eq!(
        kinds(&left),
        added(&["carol"]),
        "acked ones leave the default list"
    );
    let with_acked = all(&service, true).await;
    assert_eq!(
        ids(&with_acked),
        ids(&notes),
        "include_acked lists them all, in order"
    );
    // A page at a time, acknowledged and unacknowledged ones still come in id order, once.
    let (mut paged, mut token) = (Vec::new(), String::new());
    for _ in 0..10 {
        let p = page(&service, 1, &token, true).await.expect("a page");
        paged.extend(ids(&p.notifications));
        token = p.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(paged, ids(&notes), "paged with the acknowledged ones");
    let acked_invitation = with_acked
        .iter()
        .find(|n| n.id == invitation.id)
        .expect("listed");
    assert!(
        acked_invitation.invitation_token.is_empty(),
        "the secret is gone once acked"
    );
    assert_eq!(acked_invitation.kind(), NKind::Invitation);

    let mixed = vec![bob_note.id.clone(), left[0].id.clone(), left[0].id.clone()];
    assert_eq!(
        ack(&service, &mixed).await.expect("ack"),
        1,
        "only the newly acked count"
    );
    assert!(all(&service, false).await.is_empty());
    assert_eq!(all(&service, true).await.len(), 3);
}

async fn the_outbox_is_per_tenant(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    seed_users(&app, OTHER_TENANT, &[("max", Kind::Internal)]).await;
    let alice = app.user(TENANT, "alice");
    alice
        .create_group("t", &["bob", "carol"])
        .await
        .expect("create");
    let acme = all(&app.service(TENANT), false).await;
    assert_eq!(acme.len(), 2);

    let globex = app.service(OTHER_TENANT);
    assert!(
        all(&globex, true).await.is_empty(),
        "another tenant sees none of them"
    );
    assert_eq!(
        ack(&globex, &ids(&acme)).await.expect("ack"),
        0,
        "nor acks them"
    );
    assert_eq!(all(&app.service(TENANT), false).await, acme);

    app.user(OTHER_TENANT, "mallory")
        .create_group("red", &["max"])
        .await
        .expect("create");
    let theirs = all(&globex, false).await;
    assert_eq!(kinds(&theirs), added(&["max"]));
    assert_eq!(
        all(&app.service(TENANT), false).await,
        acme,
        "nor does acme see theirs"
    );
}

/// Several acknowledgements of the same notifications at once (the notification service's
/// replicas, a retry racing its first try) all succeed, and together acknowledge each
/// notification once: it is then listed once, acknowledged.
async fn acknowledgements_at_once_count_each_notification_once(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let users = seed_many(&app, "u", 20).await;
    let service = app.service(TENANT);
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    alice.add_users(&c.id, &names).await.expect("add");
    let notes = ids(&all(&service, false).await);
    assert_eq!(notes.len(), 21);
    let tries = (0..6).map(|k| {
        let service = &service;
        let mut list = notes.clone();
        list.rotate_left(k * 3);
        async move { ack(service, &list).await }
    });
    let counts: Vec<i32> = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(|r| r.expect("every acknowledgement succeeds"))
        .collect();
    assert_eq!(counts.iter().sum::<i32>(), 21, "{counts:?}");
    assert!(all(&service, false).await.is_empty());
    assert_eq!(ids(&all(&service, true).await), notes);
}

both_dbs!(
    only_services_read_the_outbox,
    acknowledgements_at_once_count_each_notification_once,
    creating_owes_one_per_other_participant,
    the_owner_adding_owes_no_added_by_other,
    another_adding_tells_the_owner_once,
    listing_is_oldest_first_and_key_paged,
    acking_is_idempotent,
    the_outbox_is_per_tenant,
);
