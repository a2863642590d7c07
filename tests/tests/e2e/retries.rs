//! Safe retries: a request repeated with one request_id by one principal returns the first reply
//! and is applied once; a reused request_id with another body is refused; request_ids are per
//! principal; concurrent duplicates apply once.

use parley_tests::*;
use pb::{add_participants_result::Outcome, event::Type as EventType, participant::Role};
use tonic::Code;

/// Every unacknowledged notification of [`TENANT`].
async fn outbox(app: &TestApp) -> Vec<pb::Notification> {
    app.unacked_notifications(TENANT).await
}

async fn count_events(caller: &Caller, id: &str, kind: EventType) -> usize {
    caller.events_of(id, kind).await.expect("events").len()
}

async fn create_conversation_is_applied_once(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let request = pb::CreateConversationRequest {
        request_id: request_id(),
        kind: pb::conversation::Kind::Group as i32,
        title: "once".into(),
        participant_ids: vec!["bob".into(), "carol".into()],
        policy: None,
    };
    let first = alice.create(request.clone()).await.expect("create");
    let again = alice.create(request.clone()).await.expect("retry");
    assert_eq!(again, first, "the first reply");
    assert_eq!(alice.list_conversations().await.expect("list").len(), 1);
    let notes = outbox(&app).await;
    assert_eq!(notes.len(), 2, "one set of notifications: {notes:?}");

    let before = alice.snapshot(&first.id).await;
    let other = pb::CreateConversationRequest {
        title: "another body".into(),
        ..request.clone()
    };
    expect_err(
        alice.create(other).await,
        Code::InvalidArgument,
        ErrorReason::RequestIdReused,
    );
    assert_eq!(alice.list_conversations().await.expect("list").len(), 1);
    assert_eq!(alice.snapshot(&first.id).await, before, "nothing changed");
    assert_eq!(outbox(&app).await, notes);

    // Another principal's request_id space is its own.
    let theirs = pb::CreateConversationRequest {
        participant_ids: vec!["dave".into()],
        ..request.clone()
    };
    let bobs = bob.create(theirs).await.expect("bob's own create");
    assert_ne!(bobs.id, first.id);
    assert_eq!(bobs.owner_id, "bob");
    assert_eq!(bob.list_conversations().await.expect("list").len(), 2);

    // request_id is at most 128 characters.
    let long = pb::CreateConversationRequest {
        request_id: "r".repeat(129),
        ..request.clone()
    };
    expect_invalid(alice.create(long).await, "request_id");
    assert_eq!(alice.list_conversations().await.expect("list").len(), 1);
    let ok = pb::CreateConversationRequest {
        request_id: "r".repeat(128),
        ..request
    };
    alice.create(ok).await.expect("128 characters are fine");
}

async fn send_message_is_applied_once(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let request = pb::SendMessageRequest {
        conversation_id: c.id.clone(),
        body: "hello".into(),
        request_id: request_id(),
    };
    let first = alice
        .conv()
        .send_message(alice.req(request.clone()))
        .await
        .expect("send");
    let before = alice.snapshot(&c.id).await;
    let again = alice
        .conv()
        .send_message(alice.req(request.clone()))
        .await
        .expect("retry");
    assert_eq!(again.into_inner(), first.into_inner());
    assert_eq!(
        alice.snapshot(&c.id).await,
        before,
        "one message, seq unchanged"
    );
    assert_eq!(alice.messages(&c.id).await.expect("messages").len(), 1);

    let other = pb::SendMessageRequest {
        body: "another body".into(),
        ..request.clone()
    };
    expect_err(
        alice.conv().send_message(alice.req(other)).await,
        Code::InvalidArgument,
        ErrorReason::RequestIdReused,
    );
    assert_eq!(alice.snapshot(&c.id).await, before, "nothing changed");

    let bobs = bob
        .conv()
        .send_message(bob.req(request))
        .await
        .expect("bob's own")
        .into_inner();
    assert_eq!(bobs.sender_id, "bob");
    assert_eq!(alice.messages(&c.id).await.expect("messages").len(), 2);
}

/// One service acting for two users: the same request id and body are two requests, one per
/// user; each user's own retry gets their own reply back.
async fn act_as_users_have_their_own_request_ids(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let request = pb::SendMessageRequest {
        conversation_id: c.id.clone(),
        body: "hello".into(),
        request_id: request_id(),
    };
    let send = |caller: Caller| {
        let request = request.clone();
        async move {
            caller
                .conv()
                .send_message(caller.req(request))
                .await
                .expect("send")
                .into_inner()
        }
    };
    let as_alice = app.service_as(TENANT, "alice");
    let as_bob = app.service_as(TENANT, "bob");
    let for_alice = send(as_alice.clone()).await;
    let for_bob = send(as_bob.clone()).await;
    assert_eq!(
        (for_alice.sender_id.as_str(), for_bob.sender_id.as_str()),
        ("alice", "bob"),
        "bob's message is not a replay of alice's"
    );
    assert_ne!(for_alice.id, for_bob.id);

    let before = alice.snapshot(&c.id).await;
    assert_eq!(send(as_alice).await, for_alice, "alice's retry");
    assert_eq!(send(as_bob).await, for_bob, "bob's retry");
    assert_eq!(
        alice.snapshot(&c.id).await,
        before,
        "retries change nothing"
    );
    assert_eq!(alice.messages(&c.id).await.expect("messages").len(), 2);
}

/// The directory's mutations and AckNotifications honour request_id too: a repeat gets the
/// first reply (a second DeleteGroup reports success, a second ack the count the first one
/// acknowledged), and the same id with another body is REQUEST_ID_REUSED with nothing written.
async fn directory_and_acks_are_applied_once(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let service = app.service(TENANT);
    let dir = service.dir();

    // UpsertUser.
    let upsert = pb::UpsertUserRequest {
        user: Some(pb::User {
            id: "zoe".into(),
            display_name: "Zoe".into(),
            email: "zoe@acme.example".into(),
            kind: pb::user::Kind::Internal as i32,
            ..Default::default()
        }),
        request_id: request_id(),
    };
    let first = dir
        .clone()
        .upsert_user(service.req(upsert.clone()))
        .await
        .expect("upsert")
        .into_inner();
    let again = dir
        .clone()
        .upsert_user(service.req(upsert.clone()))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(again, first, "the first reply, update_time included");
    let mut renamed = upsert.clone();
    if let Some(u) = renamed.user.as_mut() {
        u.display_name = "Zoë".into();
    }
    expect_err(
        dir.clone().upsert_user(service.req(renamed)).await,
        Code::InvalidArgument,
        ErrorReason::RequestIdReused,
    );
    assert_eq!(
        service.get_user("zoe").await.expect("get"),
        first,
        "nothing was written"
    );

    // DeactivateUser.
    let deactivate = pb::DeactivateUserRequest {
        id: "zoe".into(),
        request_id: request_id(),
    };
    let first = dir
        .clone()
        .deactivate_user(service.req(deactivate.clone()))
        .await
        .expect("deactivate")
        .into_inner();
    let again = dir
        .clone()
        .deactivate_user(service.req(deactivate))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(again, first);

    // UpsertGroup and DeleteGroup.
    let group = pb::UpsertGroupRequest {
        group: Some(pb::Group {
            id: "crew".into(),
            name: "Crew".into(),
            member_ids: vec!["alice".into(), "bob".into()],
            update_time: None,
        }),
        request_id: request_id(),
    };
    let first = dir
        .clone()
        .upsert_group(service.req(group.clone()))
        .await
        .expect("upsert group")
        .into_inner();
    let again = dir
        .clone()
        .upsert_group(service.req(group))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(again, first);
    let delete = pb::DeleteGroupRequest {
        id: "crew".into(),
        request_id: request_id(),
    };
    dir.clone()
        .delete_group(service.req(delete.clone()))
        .await
        .expect("delete");
    dir.clone()
        .delete_group(service.req(delete.clone()))
        .await
        .expect("a repeated delete reports success, not GROUP_NOT_FOUND");
    expect_err(
        dir.clone()
            .delete_group(service.req(pb::DeleteGroupRequest {
                id: "other".into(),
                ..delete
            }))
            .await,
        Code::InvalidArgument,
        ErrorReason::RequestIdReused,
    );

    // AckNotifications.
    let alice = app.user(TENANT, "alice");
    alice
        .create_group("t", &["bob", "carol"])
        .await
        .expect("create: two ADDED_TO_CONVERSATION");
    let ids: Vec<String> = outbox(&app).await.into_iter().map(|n| n.id).collect();
    assert_eq!(ids.len(), 2);
    let ack = pb::AckNotificationsRequest {
        ids,
        request_id: request_id(),
    };
    let notif = service.notif();
    let first = notif
        .clone()
        .ack_notifications(service.req(ack.clone()))
        .await
        .expect("ack")
        .into_inner();
    assert_eq!(first.acked, 2);
    let again = notif
        .clone()
        .ack_notifications(service.req(ack.clone()))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(again.acked, 2, "the first reply, not a fresh count of 0");
    let fresh = notif
        .clone()
        .ack_notifications(service.req(pb::AckNotificationsRequest {
            request_id: request_id(),
            ..ack
        }))
        .await
        .expect("a new ack of the same ids")
        .into_inner();
    assert_eq!(fresh.acked, 0, "acking is idempotent");
}

async fn concurrent_duplicates_apply_once(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice.create_group("t", &["bob"]).await.expect("create");

    let request = pb::SendMessageRequest {
        conversation_id: c.id.clone(),
        body: "only once".into(),
        request_id: request_id(),
    };
    let calls = (0..10)
        .map(|_| {
            let (alice, request) = (alice.clone(), request.clone());
            async move {
                alice
                    .conv()
                    .send_message(alice.req(request))
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .collect();
    let replies: Vec<pb::Message> = all_at_once(calls)
        .await
        .into_iter()
        .map(|r| r.expect("every duplicate gets the reply"))
        .collect();
    assert!(replies.iter().all(|r| *r == replies[0]), "{replies:?}");
    assert_eq!(
        alice.messages(&c.id).await.expect("messages"),
        vec![replies[0].clone()]
    );

    let before = outbox(&app).await;
    let request = pb::AddParticipantsRequest {
        conversation_id: c.id.clone(),
        invitees: vec![user_invitee("dave"), user_invitee("frank")],
        partial_success: false,
        request_id: request_id(),
    };
    let calls = (0..8)
        .map(|_| {
            let (bob, request) = (bob.clone(), request.clone());
            async move {
                bob.part()
                    .add_participants(bob.req(request))
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .collect();
    let replies: Vec<pb::AddParticipantsResponse> = all_at_once(calls)
        .await
        .into_iter()
        .map(|r| r.expect("every duplicate gets the reply"))
        .collect();
    assert!(replies.iter().all(|r| *r == replies[0]), "{replies:?}");
    assert!(
        replies[0]
            .results
            .iter()
            .all(|r| r.outcome() == Outcome::Added)
    );
    let added = alice
        .events_of(&c.id, EventType::ParticipantAdded)
        .await
        .expect("events");
    assert_eq!(added.iter().filter(|e| e.actor_id == "bob").count(), 1);
    let notes = outbox(&app).await;
    assert_eq!(
        notes.len(),
        before.len() + 3,
        "one set: two added, one to the owner"
    );
}

async fn add_participants_is_applied_once(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let before_notes = outbox(&app).await;
    let request = pb::AddParticipantsRequest {
        conversation_id: c.id.clone(),
        invitees: vec![user_invitee("dave"), user_invitee("frank")],
        partial_success: false,
        request_id: request_id(),
    };
    let first = bob
        .part()
        .add_participants(bob.req(request.clone()))
        .await
        .expect("add");
    let snapshot = alice.snapshot(&c.id).await;
    let notes = outbox(&app).await;
    assert_eq!(notes.len(), before_notes.len() + 3);
    let again = bob
        .part()
        .add_participants(bob.req(request.clone()))
        .await
        .expect("retry");
    assert_eq!(
        again.into_inner(),
        first.into_inner(),
        "ADDED again, not ALREADY_PARTICIPANT"
    );
    assert_eq!(
        alice.snapshot(&c.id).await,
        snapshot,
        "one PARTICIPANT_ADDED event"
    );
    assert_eq!(outbox(&app).await, notes, "one set of notifications");

    let other = pb::AddParticipantsRequest {
        invitees: vec![user_invitee("carol")],
        ..request
    };
    expect_err(
        bob.part().add_participants(bob.req(other)).await,
        Code::InvalidArgument,
        ErrorReason::RequestIdReused,
    );
    assert_eq!(alice.snapshot(&c.id).await, snapshot, "nothing changed");
    assert_eq!(outbox(&app).await, notes);

    // An email invitation retried: the same invitation, no second notification, no new token.
    let request = pb::AddParticipantsRequest {
        conversation_id: c.id.clone(),
        invitees: vec![email_invitee("guest@acme.example")],
        partial_success: false,
        request_id: request_id(),
    };
    let first = alice
        .part()
        .add_participants(alice.req(request.clone()))
        .await
        .expect("invite");
    let first = first.into_inner();
    assert_eq!(first.results[0].outcome(), Outcome::Invited);
    let snapshot = alice.snapshot(&c.id).await;
    let notes = outbox(&app).await;
    let again = alice
        .part()
        .add_participants(alice.req(request))
        .await
        .expect("retry");
    assert_eq!(
        again.into_inner(),
        first,
        "INVITED again, not ALREADY_INVITED"
    );
    assert_eq!(alice.snapshot(&c.id).await, snapshot);
    assert_eq!(outbox(&app).await, notes, "the token was not rotated");
}

async fn remove_and_set_role_are_applied_once(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group("t", &["bob", "carol", "dave"])
        .await
        .expect("create");

    let request = pb::RemoveParticipantRequest {
        conversation_id: c.id.clone(),
        user_id: "carol".into(),
        request_id: request_id(),
    };
    let first = alice
        .part()
        .remove_participant(alice.req(request.clone()))
        .await
        .expect("remove");
    let snapshot = alice.snapshot(&c.id).await;
    let again = alice
        .part()
        .remove_participant(alice.req(request.clone()))
        .await
        .expect("retry");
    assert_eq!(again.into_inner(), first.into_inner());
    assert_eq!(alice.snapshot(&c.id).await, snapshot);
    assert_eq!(
        count_events(&alice, &c.id, EventType::ParticipantRemoved).await,
        1
    );
    let other = pb::RemoveParticipantRequest {
        user_id: "dave".into(),
        ..request
    };
    expect_err(
        alice.part().remove_participant(alice.req(other)).await,
        Code::InvalidArgument,
        ErrorReason::RequestIdReused,
    );
    assert_eq!(alice.snapshot(&c.id).await, snapshot, "dave stays");

    let request = pb::SetParticipantRoleRequest {
        conversation_id: c.id.clone(),
        user_id: "bob".into(),
        role: Role::Admin as i32,
        request_id: request_id(),
    };
    let first = alice
        .part()
        .set_participant_role(alice.req(request.clone()))
        .await
        .expect("set");
    let snapshot = alice.snapshot(&c.id).await;
    let again = alice
        .part()
        .set_participant_role(alice.req(request.clone()))
        .await
        .expect("retry");
    assert_eq!(again.into_inner(), first.into_inner());
    assert_eq!(alice.snapshot(&c.id).await, snapshot);
    assert_eq!(count_events(&alice, &c.id, EventType::RoleChanged).await, 1);
    let other = pb::SetParticipantRoleRequest {
        role: Role::Member as i32,
        ..request
    };
    expect_err(
        alice.part().set_participant_role(alice.req(other)).await,
        Code::InvalidArgument,
        ErrorReason::RequestIdReused,
    );
    assert_eq!(alice.snapshot(&c.id).await, snapshot, "bob stays ADMIN");
}

async fn state_changes_are_applied_once(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let rid = request_id();

    let archive = pb::ArchiveConversationRequest {
        id: c.id.clone(),
        request_id: rid.clone(),
    };
    let first = alice
        .conv()
        .archive_conversation(alice.req(archive.clone()))
        .await
        .expect("archive");
    let snapshot = alice.snapshot(&c.id).await;
    let again = alice
        .conv()
        .archive_conversation(alice.req(archive))
        .await
        .expect("retry");
    assert_eq!(again.into_inner(), first.into_inner());
    assert_eq!(alice.snapshot(&c.id).await, snapshot);

    let unarchive = pb::UnarchiveConversationRequest {
        id: c.id.clone(),
        request_id: request_id(),
    };
    let first = alice
        .conv()
        .unarchive_conversation(alice.req(unarchive.clone()))
        .await
        .expect("unarchive");
    let snapshot = alice.snapshot(&c.id).await;
    let again = alice
        .conv()
        .unarchive_conversation(alice.req(unarchive))
        .await
        .expect("retry");
    assert_eq!(again.into_inner(), first.into_inner());
    assert_eq!(alice.snapshot(&c.id).await, snapshot);

    let close = pb::CloseConversationRequest {
        id: c.id.clone(),
        request_id: request_id(),
    };
    let first = alice
        .conv()
        .close_conversation(alice.req(close.clone()))
        .await
        .expect("close");
    let snapshot = alice.snapshot(&c.id).await;
    let again = alice
        .conv()
        .close_conversation(alice.req(close))
        .await
        .expect("retry");
    assert_eq!(again.into_inner(), first.into_inner());
    assert_eq!(alice.snapshot(&c.id).await, snapshot);

    for kind in [
        EventType::ConversationArchived,
        EventType::ConversationUnarchived,
        EventType::ConversationClosed,
    ] {
        assert_eq!(count_events(&alice, &c.id, kind).await, 1, "{kind:?}");
    }
    // The archive request_id on another conversation is another body.
    let d = alice.create_group("d", &["bob"]).await.expect("create");
    let reused = pb::ArchiveConversationRequest {
        id: d.id.clone(),
        request_id: rid,
    };
    expect_err(
        alice.conv().archive_conversation(alice.req(reused)).await,
        Code::InvalidArgument,
        ErrorReason::RequestIdReused,
    );
    assert_eq!(
        alice.get(&d.id).await.expect("get").state(),
        pb::conversation::State::Active
    );
}

async fn update_conversation_is_applied_once(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let request = pb::UpdateConversationRequest {
        conversation: Some(pb::Conversation {
            id: c.id.clone(),
            etag: c.etag.clone(),
            title: "renamed".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["title".into()],
        }),
        request_id: request_id(),
    };
    let first = alice
        .conv()
        .update_conversation(alice.req(request.clone()))
        .await
        .expect("update");
    let first = first.into_inner();
    assert_ne!(first.etag, c.etag);
    let snapshot = alice.snapshot(&c.id).await;
    // The etag it carries is stale now; the retry still gets the first reply.
    let again = alice
        .conv()
        .update_conversation(alice.req(request.clone()))
        .await
        .expect("retry");
    assert_eq!(again.into_inner(), first);
    assert_eq!(alice.snapshot(&c.id).await, snapshot);
    assert_eq!(
        count_events(&alice, &c.id, EventType::TitleChanged).await,
        1
    );

    let mut other = request;
    other.conversation.as_mut().expect("set").title = "another".into();
    other.conversation.as_mut().expect("set").etag = String::new();
    expect_err(
        alice.conv().update_conversation(alice.req(other)).await,
        Code::InvalidArgument,
        ErrorReason::RequestIdReused,
    );
    assert_eq!(alice.snapshot(&c.id).await, snapshot);
}

async fn invitation_answers_are_applied_once(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let response = alice
        .add(
            &c.id,
            vec![
                email_invitee("g1@acme.example"),
                email_invitee("g2@acme.example"),
            ],
            false,
        )
        .await
        .expect("invite");
    let id = response.results[0]
        .invitation
        .as_ref()
        .expect("invitation")
        .id
        .clone();

    let request = pb::RevokeInvitationRequest {
        invitation_id: id,
        request_id: request_id(),
    };
    let first = alice
        .part()
        .revoke_invitation(alice.req(request.clone()))
        .await
        .expect("revoke");
    let snapshot = alice.snapshot(&c.id).await;
    let again = alice
        .part()
        .revoke_invitation(alice.req(request.clone()))
        .await
        .expect("retry");
    assert_eq!(
        again.into_inner(),
        first.into_inner(),
        "REVOKED again, not INVITATION_NOT_PENDING"
    );
    assert_eq!(alice.snapshot(&c.id).await, snapshot);
    assert_eq!(
        count_events(&alice, &c.id, EventType::InvitationRevoked).await,
        1
    );
    let other = pb::RevokeInvitationRequest {
        invitation_id: response.results[1]
            .invitation
            .as_ref()
            .expect("invitation")
            .id
            .clone(),
        ..request
    };
    expect_err(
        alice.part().revoke_invitation(alice.req(other)).await,
        Code::InvalidArgument,
        ErrorReason::RequestIdReused,
    );
    assert_eq!(
        alice.snapshot(&c.id).await,
        snapshot,
        "g2's invitation stays pending"
    );

    // AcceptInvitation carries a request_id too.
    let token = outbox(&app)
        .await
        .into_iter()
        .find(|n| {
            matches!(&n.recipient, Some(pb::notification::Recipient::RecipientEmail(e)) if e == "g2@acme.example")
        })
        .expect("g2's invitation")
        .invitation_token;
    let g2 = app.external(TENANT, "g2");
    let request = pb::AcceptInvitationRequest {
        token,
        request_id: request_id(),
    };
    let first = g2
        .part()
        .accept_invitation(g2.req(request.clone()))
        .await
        .expect("accept");
    let snapshot = alice.snapshot(&c.id).await;
    let again = g2
        .part()
        .accept_invitation(g2.req(request))
        .await
        .expect("retry");
    assert_eq!(again.into_inner(), first.into_inner());
    assert_eq!(alice.snapshot(&c.id).await, snapshot);
    assert_eq!(
        count_events(&alice, &c.id, EventType::InvitationAccepted).await,
        1
    );
}

both_dbs!(
    directory_and_acks_are_applied_once,
    act_as_users_have_their_own_request_ids,
    create_conversation_is_applied_once,
    send_message_is_applied_once,
    concurrent_duplicates_apply_once,
    add_participants_is_applied_once,
    remove_and_set_role_are_applied_once,
    state_changes_are_applied_once,
    update_conversation_is_applied_once,
    invitation_answers_are_applied_once,
);
