//! Email invitations: inviting an address nobody in the directory has, re-inviting (the same
//! link again), the policy, lock and cap rules for email invitees, accepting, declining, revoking,
//! expiry and listing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parley_tests::*;
use pb::{
    add_participants_result::Outcome,
    event::Type as EventType,
    invitation::State as IState,
    notification::{Kind as NKind, Recipient},
    participant::{Kind as PKind, Role, State as PState},
    policy::Permission,
};
use tonic::{Code, Status};

// ----- helpers -----------------------------------------------------------------------------

async fn invite(
    caller: &Caller,
    id: &str,
    emails: &[&str],
) -> Result<pb::AddParticipantsResponse, Status> {
    caller
        .add(id, emails.iter().map(|e| email_invitee(e)).collect(), false)
        .await
}

async fn invitations(caller: &Caller, id: &str) -> Result<Vec<pb::Invitation>, Status> {
    caller.invitations(id).await
}

async fn accept(caller: &Caller, token: &str) -> Result<pb::Participant, Status> {
    caller.accept_invitation(token).await
}

async fn decline(caller: &Caller, token: &str) -> Result<pb::Invitation, Status> {
    caller.decline_invitation(token).await
}

async fn revoke(caller: &Caller, invitation_id: &str) -> Result<pb::Invitation, Status> {
    let msg = pb::RevokeInvitationRequest {
        invitation_id: invitation_id.to_owned(),
        request_id: request_id(),
    };
    Ok(caller
        .part()
        .revoke_invitation(caller.req(msg))
        .await?
        .into_inner())
}

async fn outbox(app: &TestApp) -> Vec<pb::Notification> {
    app.unacked_notifications(TENANT).await
}

/// The invitation tokens sent to `email`, oldest first.
fn tokens_for(notes: &[pb::Notification], email: &str) -> Vec<String> {
    notes
        .iter()
        .filter(|n| n.kind() == NKind::Invitation)
        .filter(|n| matches!(&n.recipient, Some(Recipient::RecipientEmail(e)) if e == email))
        .map(|n| n.invitation_token.clone())
        .collect()
}

/// The one invitation token sent to `email`.
async fn token_of(app: &TestApp, email: &str) -> String {
    let tokens = tokens_for(&outbox(app).await, email);
    assert_eq!(tokens.len(), 1, "one invitation notification for {email}");
    tokens[0].clone()
}

/// Everything a failed invitation call must leave as it was.
#[derive(Debug, PartialEq)]
struct World {
    snapshot: Snapshot,
    invitations: Vec<pb::Invitation>,
    outbox: Vec<pb::Notification>,
}

async fn world(app: &TestApp, owner: &Caller, id: &str) -> World {
    World {
        snapshot: owner.snapshot(id).await,
        invitations: invitations(owner, id).await.expect("ListInvitations"),
        outbox: outbox(app).await,
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn assert_token_shape(token: &str) {
    let body = token.trim_end_matches('=');
    assert!(
        body.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "base64url token: {token}"
    );
    assert!(body.len() * 6 >= 128, "at least 128 bits: {token}");
}

/// An UpdateConversation of one policy field, without an etag.
fn update_policy(id: &str, policy: pb::Policy, path: &str) -> pb::UpdateConversationRequest {
    pb::UpdateConversationRequest {
        conversation: Some(pb::Conversation {
            id: id.to_owned(),
            policy: Some(policy),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec![path.to_owned()],
        }),
        request_id: request_id(),
    }
}

fn lower_cap(id: &str, max: i32) -> pb::UpdateConversationRequest {
    update_policy(id, policy_with_max(max), "policy.max_participants")
}

// ----- tests -------------------------------------------------------------------------------

async fn an_unknown_email_gets_a_pending_invitation(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let before_outbox = outbox(&app).await.len();

    let response = invite(&alice, &c.id, &["Guest@ACME.example"])
        .await
        .expect("invite");
    assert_eq!(response.results.len(), 1, "{response:?}");
    let result = &response.results[0];
    assert_eq!(result.outcome(), Outcome::Invited);
    assert!(result.participant.is_none());
    let inv = result
        .invitation
        .as_ref()
        .expect("INVITED carries the invitation");
    assert!(!inv.id.is_empty());
    assert_eq!(inv.conversation_id, c.id);
    assert_eq!(inv.email, "guest@acme.example", "lower-cased");
    assert_eq!(inv.invited_by, "alice");
    assert_eq!(inv.state(), IState::Pending);
    let expire = inv.expire_time.as_ref().expect("expire_time").seconds;
    let want = now_secs() + 7 * 24 * 3600;
    assert!(
        (expire - want).abs() < 600,
        "expires in about 7 days: {expire} vs {want}"
    );

    assert_eq!(
        invitations(&alice, &c.id).await.expect("list"),
        vec![inv.clone()]
    );
    assert_eq!(
        alice.active_ids(&c.id).await.expect("roster"),
        vec!["alice", "bob"]
    );
    assert_eq!(alice.get(&c.id).await.expect("get").participant_count, 2);

    let sent = alice
        .events_of(&c.id, EventType::InvitationSent)
        .await
        .expect("events");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].actor_id, "alice");
    assert_eq!(sent[0].subject_ids, vec!["guest@acme.example"]);

    let notes = outbox(&app).await;
    assert_eq!(
        notes.len(),
        before_outbox + 1,
        "exactly one new notification: {notes:?}"
    );
    let n = notes.last().expect("a notification");
    assert_eq!(n.kind(), NKind::Invitation);
    assert_eq!(
        n.recipient,
        Some(Recipient::RecipientEmail("guest@acme.example".into()))
    );
    assert_eq!(n.conversation_id, c.id);
    assert_eq!(n.actor_id, "alice");
    assert_token_shape(&n.invitation_token);
}

async fn inviting_again_sends_the_same_link(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let email = email_of(TENANT, "guest");
    let first = invite(&alice, &c.id, &[&email]).await.expect("invite");
    let inv = first.results[0].invitation.clone().expect("invitation");
    let old_token = token_of(&app, &email).await;

    let again = invite(&alice, &c.id, &[&email])
        .await
        .expect("invite again");
    assert_eq!(again.results.len(), 1);
    assert_eq!(again.results[0].outcome(), Outcome::AlreadyInvited);
    assert_eq!(again.results[0].reason(), ErrorReason::AlreadyInvited);
    if let Some(same) = &again.results[0].invitation {
        assert_eq!(same.id, inv.id, "no second invitation");
    }
    let listed = invitations(&alice, &c.id).await.expect("list");
    assert_eq!(listed.len(), 1, "no second invitation: {listed:?}");
    assert_eq!(listed[0].id, inv.id);
    let tokens = tokens_for(&outbox(&app).await, &email);
    assert_eq!(tokens.len(), 2, "the invitation is sent again");
    assert_eq!(tokens[1], old_token, "with the link already sent (rule 23)");
    assert_token_shape(&tokens[1]);

    let guest = app.external(TENANT, "guest");
    let p = accept(&guest, &old_token)
        .await
        .expect("accept with the first link");
    assert_eq!(
        (p.conversation_id.as_str(), p.user_id.as_str()),
        (c.id.as_str(), "guest")
    );
    assert_eq!(
        (p.kind(), p.role(), p.state()),
        (PKind::External, Role::Member, PState::Active)
    );
    assert_eq!(p.added_by, "alice");
    assert_eq!(alice.participant(&c.id, "guest").await.expect("get"), p);
    assert_eq!(
        alice.active_ids(&c.id).await.expect("roster"),
        vec!["alice", "bob", "guest"]
    );
    let listed = invitations(&alice, &c.id).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state(), IState::Accepted);
    let events = alice.events(&c.id).await.expect("events");
    let n = events.len();
    assert_eq!(
        (events[n - 2].r#type(), events[n - 1].r#type()),
        (EventType::ParticipantAdded, EventType::InvitationAccepted)
    );
    assert_eq!(events[n - 2].subject_ids, vec!["guest"]);
    assert!(events[n - 2].seq < events[n - 1].seq);
    let user = app
        .service(TENANT)
        .get_user("guest")
        .await
        .expect("in the directory");
    assert_eq!(user.kind(), pb::user::Kind::External);

    let before = world(&app, &alice, &c.id).await;
    expect_err(
        accept(&guest, &tokens[1]).await,
        Code::FailedPrecondition,
        ErrorReason::InvitationNotPending,
    );
    assert_eq!(
        world(&app, &alice, &c.id).await,
        before,
        "nothing was written"
    );
}

async fn a_directory_email_is_that_user(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let before = outbox(&app).await.len();
    let response = invite(&alice, &c.id, &["DAVE@Acme.Example"])
        .await
        .expect("add");
    assert_eq!(response.results[0].outcome(), Outcome::Added);
    assert!(response.results[0].invitation.is_none());
    assert_eq!(
        response.results[0]
            .participant
            .as_ref()
            .map(|p| p.user_id.as_str()),
        Some("dave")
    );
    assert!(invitations(&alice, &c.id).await.expect("list").is_empty());
    let notes = outbox(&app).await;
    assert_eq!(notes.len(), before + 1, "{notes:?}");
    let n = notes.last().expect("a notification");
    assert_eq!(n.kind(), NKind::AddedToConversation);
    assert_eq!(n.recipient, Some(Recipient::RecipientUserId("dave".into())));
}

async fn email_invitations_need_add_external(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let before = world(&app, &alice, &c.id).await;
    let status = invite(&bob, &c.id, &["guest@acme.example"])
        .await
        .expect_err("bob may not");
    assert_error(
        &status,
        Code::PermissionDenied,
        ErrorReason::NoExternalInvitePermission,
    );
    assert_eq!(
        world(&app, &alice, &c.id).await,
        before,
        "nothing was written"
    );

    let open = pb::Policy {
        add_external: Permission::Participants as i32,
        ..Default::default()
    };
    let c2 = alice
        .create_group_with("open", &["bob"], Some(open))
        .await
        .expect("create");
    let response = invite(&bob, &c2.id, &["guest@acme.example"])
        .await
        .expect("bob may");
    assert_eq!(response.results[0].outcome(), Outcome::Invited);
    assert_eq!(
        response.results[0]
            .invitation
            .as_ref()
            .expect("invitation")
            .invited_by,
        "bob"
    );
}

async fn the_lock_blocks_new_invitations_not_pending_ones(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let early = email_of(TENANT, "early");
    invite(&alice, &c.id, &[&early])
        .await
        .expect("invite before the first message");
    let token = token_of(&app, &early).await;
    alice.send(&c.id, "the first message").await.expect("send");

    let before = world(&app, &alice, &c.id).await;
    expect_err(
        invite(&alice, &c.id, &["late@acme.example"]).await,
        Code::FailedPrecondition,
        ErrorReason::ExternalRosterLocked,
    );
    assert_eq!(
        world(&app, &alice, &c.id).await,
        before,
        "nothing was written"
    );

    let p = accept(&app.external(TENANT, "early"), &token)
        .await
        .expect("still acceptable");
    assert_eq!((p.kind(), p.state()), (PKind::External, PState::Active));
    assert_eq!(
        alice.active_ids(&c.id).await.expect("roster"),
        vec!["alice", "bob", "early"]
    );
}

/// Rule 9: only active participants count against the cap; a pending invitation is checked
/// against it when it is accepted.
async fn the_cap_counts_active_participants_only(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group_with("capped", &["bob"], Some(policy_with_max(3)))
        .await
        .expect("create");
    let (g1, g2) = (email_of(TENANT, "g1"), email_of(TENANT, "g2"));
    // Two pending invitations and the last seat taken: none of them holds a seat.
    invite(&alice, &c.id, &[&g1, &g2])
        .await
        .expect("invitations take no seat");
    alice
        .add_users(&c.id, &["carol"])
        .await
        .expect("the third seat is free");
    assert_eq!(alice.get(&c.id).await.expect("get").participant_count, 3);
    // Inviting at the cap is allowed (checked at acceptance), adding is not.
    invite(&alice, &c.id, &["g3@acme.example"])
        .await
        .expect("an invitation at the cap");
    let token = token_of(&app, &g1).await;
    let before = world(&app, &alice, &c.id).await;
    expect_err(
        alice.add_users(&c.id, &["dave"]).await,
        Code::FailedPrecondition,
        ErrorReason::ParticipantLimitExceeded,
    );
    // The cap is checked again at acceptance.
    expect_err(
        accept(&app.external(TENANT, "g1"), &token).await,
        Code::FailedPrecondition,
        ErrorReason::ParticipantLimitExceeded,
    );
    // The cap cannot be lowered under the active participants.
    expect_err(
        alice
            .conv()
            .update_conversation(alice.req(lower_cap(&c.id, 2)))
            .await,
        Code::FailedPrecondition,
        ErrorReason::ParticipantLimitExceeded,
    );
    assert_eq!(
        world(&app, &alice, &c.id).await,
        before,
        "nothing was written"
    );

    // A freed seat takes the accepted invitation.
    alice.remove(&c.id, "carol").await.expect("remove carol");
    let p = accept(&app.external(TENANT, "g1"), &token)
        .await
        .expect("accept into the freed seat");
    assert_eq!(p.state(), PState::Active);
    assert_eq!(alice.get(&c.id).await.expect("get").participant_count, 3);
}

async fn accept_checks_the_token_and_the_email(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let email = email_of(TENANT, "guest");
    invite(&alice, &c.id, &[&email]).await.expect("invite");
    let token = token_of(&app, &email).await;
    let guest = app.external(TENANT, "guest");

    let before = world(&app, &alice, &c.id).await;
    expect_invalid(accept(&guest, "").await, "token");
    expect_err(
        accept(&guest, "not-a-token").await,
        Code::NotFound,
        ErrorReason::InvitationNotFound,
    );
    let last = if token.ends_with('x') { 'y' } else { 'x' };
    let forged = format!("{}{last}", &token[..token.len() - 1]);
    expect_err(
        accept(&guest, &forged).await,
        Code::NotFound,
        ErrorReason::InvitationNotFound,
    );
    // bob is in the directory; someone else's token is not his, nor a stranger's.
    for other in [app.user(TENANT, "bob"), app.external(TENANT, "stranger")] {
        expect_err(
            accept(&other, &token).await,
            Code::PermissionDenied,
            ErrorReason::InvitationEmailMismatch,
        );
    }
    assert_eq!(
        world(&app, &alice, &c.id).await,
        before,
        "nothing was written"
    );

    // An invitation of another tenant, to the same address, is unknown here.
    let mallory = app.user(OTHER_TENANT, "mallory");
    let other = mallory
        .create_group("red", &[])
        .await
        .expect("create in globex");
    invite(&mallory, &other.id, &[&email])
        .await
        .expect("invite in globex");
    let foreign = tokens_for(&app.unacked_notifications(OTHER_TENANT).await, &email);
    assert_eq!(foreign.len(), 1);
    expect_err(
        accept(&guest, &foreign[0]).await,
        Code::NotFound,
        ErrorReason::InvitationNotFound,
    );
    assert_eq!(
        world(&app, &alice, &c.id).await,
        before,
        "nothing was written"
    );

    // The email claim matches case-insensitively.
    let shouting =
        app.with_token(app.token(TENANT, "guest", Kind::External, Some("GUEST@ACME.EXAMPLE")));
    let p = accept(&shouting, &token).await.expect("accept");
    assert_eq!((p.user_id.as_str(), p.kind()), ("guest", PKind::External));
}

async fn expired_invitations_cannot_be_accepted(db: Db) {
    let app = spawn_app_with(db, |c| c.limits.invitation_ttl = Duration::from_secs(1)).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let email = email_of(TENANT, "guest");
    let response = invite(&alice, &c.id, &[&email]).await.expect("invite");
    let inv = response.results[0].invitation.clone().expect("invitation");
    let expire = inv.expire_time.expect("expire_time").seconds;
    assert!(
        (expire - now_secs()).abs() <= 3,
        "expires in about a second"
    );
    let token = token_of(&app, &email).await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let guest = app.external(TENANT, "guest");
    let before = (alice.snapshot(&c.id).await, outbox(&app).await);
    expect_err(
        accept(&guest, &token).await,
        Code::FailedPrecondition,
        ErrorReason::InvitationExpired,
    );
    assert_eq!(
        (alice.snapshot(&c.id).await, outbox(&app).await),
        before,
        "nothing was written"
    );
    let listed = invitations(&alice, &c.id).await.expect("list");
    assert!(
        matches!(listed[0].state(), IState::Pending | IState::Expired),
        "{listed:?}"
    );
    assert_eq!(
        alice.active_ids(&c.id).await.expect("roster"),
        vec!["alice", "bob"]
    );
}

async fn declining(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let email = email_of(TENANT, "guest");
    let response = invite(&alice, &c.id, &[&email]).await.expect("invite");
    let id = response.results[0]
        .invitation
        .as_ref()
        .expect("invitation")
        .id
        .clone();
    let token = token_of(&app, &email).await;
    let guest = app.external(TENANT, "guest");

    let before = world(&app, &alice, &c.id).await;
    expect_invalid(decline(&guest, "").await, "token");
    expect_err(
        decline(&guest, "nope").await,
        Code::NotFound,
        ErrorReason::InvitationNotFound,
    );
    expect_err(
        decline(&app.external(TENANT, "stranger"), &token).await,
        Code::PermissionDenied,
        ErrorReason::InvitationEmailMismatch,
    );
    assert_eq!(
        world(&app, &alice, &c.id).await,
        before,
        "nothing was written"
    );

    let inv = decline(&guest, &token).await.expect("decline");
    assert_eq!(
        (inv.id.as_str(), inv.state()),
        (id.as_str(), IState::Declined)
    );
    assert_eq!(
        invitations(&alice, &c.id).await.expect("list")[0].state(),
        IState::Declined
    );
    let declined = alice
        .events_of(&c.id, EventType::InvitationDeclined)
        .await
        .expect("events");
    assert_eq!(declined.len(), 1);
    assert_eq!(
        alice.active_ids(&c.id).await.expect("roster"),
        vec!["alice", "bob"]
    );

    let before = world(&app, &alice, &c.id).await;
    expect_err(
        decline(&guest, &token).await,
        Code::FailedPrecondition,
        ErrorReason::InvitationNotPending,
    );
    expect_err(
        accept(&guest, &token).await,
        Code::FailedPrecondition,
        ErrorReason::InvitationNotPending,
    );
    assert_eq!(
        world(&app, &alice, &c.id).await,
        before,
        "nothing was written"
    );
}

async fn revoking(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let carol = app.user(TENANT, "carol");
    let open = pb::Policy {
        add_external: Permission::Participants as i32,
        ..Default::default()
    };
    let c = alice
        .create_group_with("t", &["bob", "carol"], Some(open))
        .await
        .expect("create");
    let response = invite(&bob, &c.id, &["g1@acme.example", "g2@acme.example"])
        .await
        .expect("invite");
    let ids: Vec<String> = response
        .results
        .iter()
        .map(|r| r.invitation.as_ref().expect("invitation").id.clone())
        .collect();
    let token = token_of(&app, "g1@acme.example").await;

    let before = world(&app, &alice, &c.id).await;
    expect_err(
        revoke(&carol, &ids[0]).await,
        Code::PermissionDenied,
        ErrorReason::NoPermission,
    );
    expect_err(
        revoke(&alice, &uuid::Uuid::now_v7().to_string()).await,
        Code::NotFound,
        ErrorReason::InvitationNotFound,
    );
    expect_invalid(revoke(&alice, "not a uuid").await, "invitation_id");
    expect_err(
        revoke(&app.user(OTHER_TENANT, "mallory"), &ids[0]).await,
        Code::NotFound,
        ErrorReason::InvitationNotFound,
    );
    assert_eq!(
        world(&app, &alice, &c.id).await,
        before,
        "nothing was written"
    );

    // The inviter revokes one, the owner the other.
    let inv = revoke(&bob, &ids[0]).await.expect("the inviter revokes");
    assert_eq!(
        (inv.id.as_str(), inv.state()),
        (ids[0].as_str(), IState::Revoked)
    );
    let inv = revoke(&alice, &ids[1]).await.expect("the owner revokes");
    assert_eq!(inv.state(), IState::Revoked);
    let revoked = alice
        .events_of(&c.id, EventType::InvitationRevoked)
        .await
        .expect("events");
    assert_eq!(revoked.len(), 2);
    assert_eq!(
        (revoked[0].actor_id.as_str(), revoked[1].actor_id.as_str()),
        ("bob", "alice")
    );
    let listed = invitations(&alice, &c.id).await.expect("list");
    assert!(
        listed.iter().all(|i| i.state() == IState::Revoked),
        "{listed:?}"
    );

    let before = world(&app, &alice, &c.id).await;
    expect_err(
        revoke(&bob, &ids[0]).await,
        Code::FailedPrecondition,
        ErrorReason::InvitationNotPending,
    );
    expect_err(
        accept(&app.external(TENANT, "g1"), &token).await,
        Code::FailedPrecondition,
        ErrorReason::InvitationNotPending,
    );
    assert_eq!(
        world(&app, &alice, &c.id).await,
        before,
        "nothing was written"
    );
}

async fn listing_invitations_pages(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let emails: Vec<String> = (0..5).map(|i| format!("guest{i}@acme.example")).collect();
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    invite(&alice, &c.id, &refs).await.expect("invite");

    let bob = app.user(TENANT, "bob");
    let (mut seen, mut page_token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let msg = pb::ListInvitationsRequest {
            conversation_id: c.id.clone(),
            page_size: 2,
            page_token,
        };
        let page = bob
            .part()
            .list_invitations(bob.req(msg))
            .await
            .expect("a participant lists")
            .into_inner();
        assert!(page.invitations.len() <= 2);
        pages += 1;
        seen.extend(page.invitations.into_iter().map(|i| i.email));
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(pages < 10, "the listing ends");
        page_token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(sorted(seen), emails);

    expect_err(
        invitations(&app.user(TENANT, "dave"), &c.id).await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    expect_err(
        invitations(&app.user(OTHER_TENANT, "mallory"), &c.id).await,
        Code::NotFound,
        ErrorReason::ConversationNotFound,
    );
    let msg = pb::ListInvitationsRequest {
        conversation_id: c.id.clone(),
        page_size: 2,
        page_token: "garbage".into(),
    };
    expect_err(
        alice.part().list_invitations(alice.req(msg)).await,
        Code::InvalidArgument,
        ErrorReason::InvalidField,
    );
}

/// Revoking is a change to the conversation: the caller must be an active participant (a
/// stranger is NOT_A_PARTICIPANT, a removed inviter PARTICIPANT_REMOVED), and an archived
/// conversation is read-only.
async fn revoking_needs_a_seat_and_an_open_conversation(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let open = pb::Policy {
        add_external: Permission::Participants as i32,
        ..Default::default()
    };
    let c = alice
        .create_group_with("t", &["bob"], Some(open))
        .await
        .expect("create");
    let response = invite(&bob, &c.id, &["g1@acme.example"])
        .await
        .expect("invite");
    let id = response.results[0]
        .invitation
        .as_ref()
        .expect("invitation")
        .id
        .clone();
    alice.remove(&c.id, "bob").await.expect("remove bob");

    let before = world(&app, &alice, &c.id).await;
    expect_err(
        revoke(&app.user(TENANT, "frank"), &id).await,
        Code::PermissionDenied,
        ErrorReason::NotAParticipant,
    );
    expect_err(
        revoke(&bob, &id).await,
        Code::PermissionDenied,
        ErrorReason::ParticipantRemoved,
    );
    assert_eq!(
        world(&app, &alice, &c.id).await,
        before,
        "nothing was written"
    );

    alice.archive(&c.id).await.expect("archive");
    let before = world(&app, &alice, &c.id).await;
    expect_err(
        revoke(&alice, &id).await,
        Code::FailedPrecondition,
        ErrorReason::ConversationArchived,
    );
    assert_eq!(
        world(&app, &alice, &c.id).await,
        before,
        "nothing was written"
    );
    alice.unarchive(&c.id).await.expect("unarchive");
    let inv = revoke(&alice, &id).await.expect("the owner revokes");
    assert_eq!(inv.state(), IState::Revoked);
}

fn set_lock(id: &str, on: bool) -> pb::UpdateConversationRequest {
    let policy = pb::Policy {
        lock_external_roster_on_first_message: Some(on),
        ..Default::default()
    };
    update_policy(id, policy, "policy.lock_external_roster_on_first_message")
}

/// An invitation made after the first message (while the lock was off) is not one of "those
/// people on the list": once the lock is on, accepting it is refused, and nothing is written.
async fn the_lock_applies_at_acceptance_to_later_invitations(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let unlocked = pb::Policy {
        lock_external_roster_on_first_message: Some(false),
        ..Default::default()
    };
    let c = alice
        .create_group_with("t", &["bob"], Some(unlocked))
        .await
        .expect("create");
    alice.send(&c.id, "the first message").await.expect("send");
    let late = email_of(TENANT, "late");
    invite(&alice, &c.id, &[&late])
        .await
        .expect("the lock is off: invite after the first message");
    let token = token_of(&app, &late).await;
    alice
        .conv()
        .update_conversation(alice.req(set_lock(&c.id, true)))
        .await
        .expect("turn the lock on");

    let guest = app.external(TENANT, "late");
    let before = world(&app, &alice, &c.id).await;
    expect_err(
        accept(&guest, &token).await,
        Code::FailedPrecondition,
        ErrorReason::ExternalRosterLocked,
    );
    assert_eq!(
        world(&app, &alice, &c.id).await,
        before,
        "nothing was written"
    );
    assert_eq!(
        invitations(&alice, &c.id).await.expect("list")[0].state(),
        IState::Pending,
        "still pending"
    );

    // With the lock off again, the same token works.
    alice
        .conv()
        .update_conversation(alice.req(set_lock(&c.id, false)))
        .await
        .expect("turn the lock off");
    let p = accept(&guest, &token).await.expect("accept");
    assert_eq!((p.kind(), p.state()), (PKind::External, PState::Active));
}

/// The notifications an invitation's answers owe, exactly: an acceptance is an add (rules 21
/// and 22: the new participant, and the owner when someone else invited); declining and revoking
/// owe nothing.
async fn answers_owe_exactly_their_notifications(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let bob = app.user(TENANT, "bob");
    let open = pb::Policy {
        add_external: Permission::Participants as i32,
        ..Default::default()
    };
    let c = alice
        .create_group_with("t", &["bob"], Some(open))
        .await
        .expect("create");
    let (g1, g2, g3) = (
        email_of(TENANT, "g1"),
        email_of(TENANT, "g2"),
        email_of(TENANT, "g3"),
    );
    invite(&bob, &c.id, &[&g1, &g2, &g3])
        .await
        .expect("bob invites");
    let t1 = token_of(&app, &g1).await;
    let t2 = token_of(&app, &g2).await;
    let third = invitations(&alice, &c.id)
        .await
        .expect("list")
        .into_iter()
        .find(|i| i.email == g3)
        .expect("g3's invitation");
    let start = outbox(&app).await.len();

    accept(&app.external(TENANT, "g1"), &t1)
        .await
        .expect("accept");
    let owed: Vec<(NKind, Option<Recipient>, String, Vec<String>)> = outbox(&app).await[start..]
        .iter()
        .map(|n| {
            (
                n.kind(),
                n.recipient.clone(),
                n.actor_id.clone(),
                n.subject_ids.clone(),
            )
        })
        .collect();
    assert_eq!(
        owed,
        vec![
            (
                NKind::AddedToConversation,
                Some(Recipient::RecipientUserId("g1".into())),
                "bob".to_owned(),
                vec!["g1".to_owned()]
            ),
            (
                NKind::ParticipantAddedByOther,
                Some(Recipient::RecipientUserId("alice".into())),
                "bob".to_owned(),
                vec!["g1".to_owned()]
            ),
        ],
        "an acceptance owes what an add owes"
    );

    let after_accept = outbox(&app).await.len();
    decline(&app.external(TENANT, "g2"), &t2)
        .await
        .expect("decline");
    revoke(&bob, &third.id).await.expect("the inviter revokes");
    assert_eq!(
        outbox(&app).await.len(),
        after_accept,
        "declining and revoking owe nothing"
    );
}

/// An invitation the owner made and the invitee accepts tells the invitee only: the owner made
/// the add.
async fn accepting_the_owners_invitation_tells_the_newcomer_only(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let guest = email_of(TENANT, "guest");
    invite(&alice, &c.id, &[&guest]).await.expect("invite");
    let token = token_of(&app, &guest).await;
    let start = outbox(&app).await.len();
    accept(&app.external(TENANT, "guest"), &token)
        .await
        .expect("accept");
    let owed = outbox(&app).await;
    let owed = &owed[start..];
    assert_eq!(owed.len(), 1, "{owed:?}");
    assert_eq!(owed[0].kind(), NKind::AddedToConversation);
    assert_eq!(
        owed[0].recipient,
        Some(Recipient::RecipientUserId("guest".into()))
    );
    assert_eq!(owed[0].actor_id, "alice");
}

both_dbs!(
    revoking_needs_a_seat_and_an_open_conversation,
    the_lock_applies_at_acceptance_to_later_invitations,
    answers_owe_exactly_their_notifications,
    accepting_the_owners_invitation_tells_the_newcomer_only,
    an_unknown_email_gets_a_pending_invitation,
    inviting_again_sends_the_same_link,
    a_directory_email_is_that_user,
    email_invitations_need_add_external,
    the_lock_blocks_new_invitations_not_pending_ones,
    the_cap_counts_active_participants_only,
    accept_checks_the_token_and_the_email,
    expired_invitations_cannot_be_accepted,
    declining,
    revoking,
    listing_invitations_pages,
);
