//! Invitation links (rule 23): the token is never stored, only derived when a notification is
//! read, so no value in the database opens an invitation; a resend carries the link already sent;
//! every replica on the key file, before and after a rotation of its HS256 line, derives the same
//! one. Also: declining needs a conversation that is not read-only, emails compare with Unicode
//! lower-casing, and accepting and adding on one conversation take their locks in one order.

use std::collections::BTreeSet;
use std::time::Duration;

use parley_server::auth::{Claims, KeyFile};
use parley_tests::*;
use pb::{
    add_participants_result::Outcome,
    invitation::State as IState,
    notification::{Kind as NKind, Recipient},
    participant::{Kind as PKind, State as PState},
};
use sea_orm::{ConnectionTrait, Statement};
use tonic::{Code, Status};

// ----- helpers -----------------------------------------------------------------------------

async fn invite(caller: &Caller, id: &str, emails: &[&str]) -> Result<Vec<Outcome>, Status> {
    let response = caller
        .add(id, emails.iter().map(|e| email_invitee(e)).collect(), false)
        .await?;
    Ok(response.results.iter().map(|r| r.outcome()).collect())
}

async fn accept(caller: &Caller, token: &str) -> Result<pb::Participant, Status> {
    caller.accept_invitation(token).await
}

async fn decline(caller: &Caller, token: &str) -> Result<pb::Invitation, Status> {
    caller.decline_invitation(token).await
}

/// Every notification of the tenant `reader` (a service) sees, acknowledged ones too or not.
async fn notifications(reader: &Caller, include_acked: bool) -> Vec<pb::Notification> {
    let msg = pb::ListNotificationsRequest {
        page_size: 1_000,
        page_token: String::new(),
        include_acked,
    };
    let page = reader
        .notif()
        .list_notifications(reader.req(msg))
        .await
        .expect("ListNotifications")
        .into_inner();
    assert!(page.next_page_token.is_empty(), "one page is enough here");
    page.notifications
}

fn invitations_to<'a>(notes: &'a [pb::Notification], email: &str) -> Vec<&'a pb::Notification> {
    notes
        .iter()
        .filter(|n| n.kind() == NKind::Invitation)
        .filter(|n| matches!(&n.recipient, Some(Recipient::RecipientEmail(e)) if e == email))
        .collect()
}

/// The link tokens the unacknowledged INVITATION notifications to `email` carry, oldest first.
async fn tokens_for(app: &TestApp, email: &str) -> Vec<String> {
    invitations_to(&app.unacked_notifications(TENANT).await, email)
        .into_iter()
        .map(|n| n.invitation_token.clone())
        .collect()
}

/// Everything a refused call must leave as it was: the conversation as its owner reads it (roster,
/// timeline, invitations, its notifications) and the tenant's whole outbox.
#[derive(Debug, PartialEq)]
struct World {
    snapshot: Snapshot,
    outbox: Vec<pb::Notification>,
}

async fn world(app: &TestApp, owner: &Caller, id: &str) -> World {
    World {
        snapshot: owner.snapshot(id).await,
        outbox: notifications(&app.service(TENANT), true).await,
    }
}

/// A caller whose token (signed with `key`) carries `email` as its email claim.
fn with_email(app: &TestApp, key: &KeyFile, sub: &str, email: &str) -> Caller {
    let mut claims = Claims::new(
        TENANT,
        sub,
        Kind::External.claim(),
        Duration::from_secs(3600),
    );
    claims.email = Some(email.to_owned());
    app.with_token(key.mint(&claims).expect("mint"))
}

/// Every value stored in the server's database, read directly: text values with their table and
/// column, and binary values.
struct Stored {
    texts: Vec<(String, String, String)>,
    blobs: Vec<Vec<u8>>,
}

async fn stored_values(app: &TestApp) -> Stored {
    let db = sea_orm::Database::connect(app.database_url())
        .await
        .expect("connect to the server's database");
    let backend = db.get_database_backend();
    let list_tables = match app.db {
        Db::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        }
        Db::Postgres => "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
    };
    let tables: Vec<String> = db
        .query_all_raw(Statement::from_string(backend, list_tables))
        .await
        .expect("list tables")
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("a table name"))
        .collect();
    for wanted in ["invitations", "notifications"] {
        assert!(tables.iter().any(|t| t == wanted), "{wanted} in {tables:?}");
    }
    let mut stored = Stored {
        texts: Vec::new(),
        blobs: Vec::new(),
    };
    for table in &tables {
        let rows = db
            .query_all_raw(Statement::from_string(
                backend,
                format!("SELECT * FROM \"{table}\""),
            ))
            .await
            .expect("read a table");
        for row in rows {
            for (i, column) in row.column_names().into_iter().enumerate() {
                if let Ok(Some(text)) = row.try_get_by_index::<Option<String>>(i) {
                    stored.texts.push((table.clone(), column, text));
                } else if let Ok(Some(bytes)) = row.try_get_by_index::<Option<Vec<u8>>>(i) {
                    stored.blobs.push(bytes);
                }
            }
        }
    }
    let _ = db.close().await;
    stored
}

// ----- tests -------------------------------------------------------------------------------

/// Rule 23: after inviting, resending, listing and acknowledging, every text value of every
/// table (the invitations and notifications tables above all) is tried as a link: none opens an
/// invitation, and no stored value, text or binary, holds a token the outbox handed out.
async fn the_database_holds_no_working_link(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let (g1, g2) = (email_of(TENANT, "g1"), email_of(TENANT, "g2"));
    invite(&alice, &c.id, &[&g1, &g2]).await.expect("invite");
    invite(&alice, &c.id, &[&g1]).await.expect("resend");
    let mut sent: BTreeSet<String> = BTreeSet::new();
    sent.extend(tokens_for(&app, &g1).await);
    sent.extend(tokens_for(&app, &g2).await);
    assert_eq!(sent.len(), 2, "one link per invitation: {sent:?}");
    // One delivered (acknowledged) notification too: its row must not hold the link either.
    let service = app.service(TENANT);
    let g2_note = invitations_to(&notifications(&service, false).await, &g2)[0]
        .id
        .clone();
    service
        .notif()
        .ack_notifications(service.req(pb::AckNotificationsRequest {
            ids: vec![g2_note],
            request_id: String::new(),
        }))
        .await
        .expect("ack");

    let stored = stored_values(&app).await;
    for table in ["invitations", "notifications"] {
        assert!(
            stored.texts.iter().any(|(t, _, _)| t == table),
            "{table} has rows"
        );
    }
    for token in &sent {
        for (table, column, text) in &stored.texts {
            assert!(
                !text.contains(token.as_str()),
                "{table}.{column} holds a link token"
            );
        }
        for blob in &stored.blobs {
            assert!(
                !blob.windows(token.len()).any(|w| w == token.as_bytes()),
                "a binary column holds a link token"
            );
        }
    }

    // Every stored text that could be a token (the server takes 1..128 characters) is tried.
    let candidates: BTreeSet<&str> = stored
        .texts
        .iter()
        .map(|(_, _, text)| text.as_str())
        .filter(|text| !text.is_empty() && text.len() <= 128)
        .collect();
    assert!(candidates.len() > 20, "{} values", candidates.len());
    let guest = app.external(TENANT, "g1");
    let before = world(&app, &alice, &c.id).await;
    for candidate in &candidates {
        let status = accept(&guest, candidate)
            .await
            .expect_err("a stored value is no link");
        assert_error(&status, Code::NotFound, ErrorReason::InvitationNotFound);
    }
    assert_eq!(
        world(&app, &alice, &c.id).await,
        before,
        "nothing was written"
    );

    // The links handed out are real: g1's opens g1's invitation.
    let g1_token = tokens_for(&app, &g1).await[0].clone();
    let p = accept(&guest, &g1_token).await.expect("accept");
    assert_eq!((p.user_id.as_str(), p.state()), ("g1", PState::Active));
}

/// Finding 5: each resend's notification carries the token of the first, and the first link
/// still opens the invitation after two resends; the invitation itself is unchanged by them.
async fn the_first_link_works_after_two_resends(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let email = email_of(TENANT, "guest");
    assert_eq!(
        invite(&alice, &c.id, &[&email]).await.expect("invite"),
        vec![Outcome::Invited]
    );
    let first = tokens_for(&app, &email).await;
    assert_eq!(first.len(), 1);
    let invitation = alice.invitations(&c.id).await.expect("list");

    for round in 1..=2 {
        assert_eq!(
            invite(&alice, &c.id, &[&email]).await.expect("resend"),
            vec![Outcome::AlreadyInvited]
        );
        let tokens = tokens_for(&app, &email).await;
        assert_eq!(tokens.len(), 1 + round, "one more notification");
        assert!(
            tokens.iter().all(|t| *t == first[0]),
            "every notification carries the first link: {tokens:?}"
        );
        assert_eq!(
            alice.invitations(&c.id).await.expect("list"),
            invitation,
            "a resend changes nothing about the invitation"
        );
    }

    let p = accept(&app.external(TENANT, "guest"), &first[0])
        .await
        .expect("the first link, after two resends");
    assert_eq!((p.user_id.as_str(), p.kind()), ("guest", PKind::External));
    assert_eq!(
        alice.invitations(&c.id).await.expect("list")[0].state(),
        IState::Accepted
    );
}

/// The invitation secret lives in the key file: a server started later on the same file (a
/// restart, another replica) derives the same link, and so does one started after the file's
/// HS256 line was rotated (tokens signed with the new secret), because the invitation secret is
/// the file's second line, which a rotation of the first leaves alone.
async fn the_link_survives_a_restart_and_a_key_rotation(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let (g1, g2) = (email_of(TENANT, "g1"), email_of(TENANT, "g2"));
    invite(&alice, &c.id, &[&g1, &g2]).await.expect("invite");
    let t1 = tokens_for(&app, &g1).await[0].clone();
    let t2 = tokens_for(&app, &g2).await[0].clone();

    let key_path = app.dir().join("parley.key");
    let key_lines: Vec<String> = std::fs::read_to_string(&key_path)
        .expect("read the key file")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(key_lines.len(), 2, "the HS256 line and the invitation line");

    // A restart on the same key file.
    let restarted = app.replica().await;
    let service = restarted.serve(&app.service(TENANT));
    let listed = notifications(&service, false).await;
    assert_eq!(invitations_to(&listed, &g1)[0].invitation_token, t1);
    let p = accept(&restarted.serve(&app.external(TENANT, "g1")), &t1)
        .await
        .expect("accept on the restarted server");
    assert_eq!(p.user_id, "g1");
    drop(restarted);

    // The HS256 line rotated: old tokens no longer verify, the link still does.
    let rotated_path = app.dir().join("rotated.key");
    let fresh = KeyFile::load_or_create(&rotated_path).expect("a fresh key");
    let new_line = std::fs::read_to_string(&rotated_path)
        .expect("read")
        .lines()
        .next()
        .expect("a first line")
        .to_owned();
    std::fs::write(&key_path, format!("{new_line}\n{}\n", key_lines[1])).expect("rotate line 1");
    let rotated = app.replica().await;
    let new_key = KeyFile::load_or_create(&key_path).expect("the rotated key file");
    assert_eq!(new_key.secret(), fresh.secret());
    let old_service = rotated.serve(&app.service(TENANT));
    let msg = pb::ListNotificationsRequest {
        page_size: 10,
        page_token: String::new(),
        include_acked: false,
    };
    expect_err(
        old_service
            .notif()
            .list_notifications(old_service.req(msg))
            .await,
        Code::Unauthenticated,
        ErrorReason::TokenInvalid,
    );
    let claims = Claims::new(
        TENANT,
        "svc-identity",
        Kind::Service.claim(),
        Duration::from_secs(3600),
    );
    let new_service = rotated.serve(&app.with_token(new_key.mint(&claims).expect("mint")));
    let listed = notifications(&new_service, false).await;
    assert_eq!(invitations_to(&listed, &g2)[0].invitation_token, t2);
    let g2_caller = rotated.serve(&with_email(&app, &new_key, "g2", &g2));
    let p = accept(&g2_caller, &t2)
        .await
        .expect("accept after the rotation");
    assert_eq!((p.user_id.as_str(), p.state()), ("g2", PState::Active));
}

/// Declining appends an event, and CLOSED and ARCHIVED conversations are read-only (rules 6,
/// 24): FAILED_PRECONDITION with the conversation's state as the reason, and nothing written,
/// as for accepting. Unarchived, the same link declines.
async fn declining_needs_a_conversation_that_is_not_read_only(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let closed = alice
        .create_group("closed", &["bob"])
        .await
        .expect("create");
    let archived = alice
        .create_group("archived", &["bob"])
        .await
        .expect("create");
    let (g1, g2) = (email_of(TENANT, "g1"), email_of(TENANT, "g2"));
    invite(&alice, &closed.id, &[&g1]).await.expect("invite");
    invite(&alice, &archived.id, &[&g2]).await.expect("invite");
    let t1 = tokens_for(&app, &g1).await[0].clone();
    let t2 = tokens_for(&app, &g2).await[0].clone();
    alice.close(&closed.id).await.expect("close");
    alice.archive(&archived.id).await.expect("archive");

    for (id, token, guest, reason) in [
        (&closed.id, &t1, "g1", ErrorReason::ConversationClosed),
        (&archived.id, &t2, "g2", ErrorReason::ConversationArchived),
    ] {
        let guest = app.external(TENANT, guest);
        let before = world(&app, &alice, id).await;
        expect_err(
            decline(&guest, token).await,
            Code::FailedPrecondition,
            reason,
        );
        expect_err(
            accept(&guest, token).await,
            Code::FailedPrecondition,
            reason,
        );
        assert_eq!(world(&app, &alice, id).await, before, "nothing was written");
        assert_eq!(
            alice.invitations(id).await.expect("list")[0].state(),
            IState::Pending
        );
    }

    alice.unarchive(&archived.id).await.expect("unarchive");
    let inv = decline(&app.external(TENANT, "g2"), &t2)
        .await
        .expect("decline once it is open again");
    assert_eq!(inv.state(), IState::Declined);
}

/// Emails are lower-cased with Unicode rules when invited, and compared with the same rules
/// when the invitee answers: "Émile@Example.test" is "émile@example.test", and "ÉMILE@…" too; an
/// address without the accent is someone else.
async fn emails_compare_with_unicode_lower_casing(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c1 = alice.create_group("one", &["bob"]).await.expect("create");
    let c2 = alice.create_group("two", &["bob"]).await.expect("create");
    invite(&alice, &c1.id, &["Émile@Example.test"])
        .await
        .expect("invite");
    invite(&alice, &c2.id, &["Émile@Example.test"])
        .await
        .expect("invite");
    let listed = alice.invitations(&c1.id).await.expect("list");
    assert_eq!(listed[0].email, "émile@example.test", "lower-cased");
    let tokens = tokens_for(&app, "émile@example.test").await;
    assert_eq!(tokens.len(), 2);

    let before = world(&app, &alice, &c1.id).await;
    expect_err(
        accept(
            &with_email(&app, &app.key, "emile", "emile@example.test"),
            &tokens[0],
        )
        .await,
        Code::PermissionDenied,
        ErrorReason::InvitationEmailMismatch,
    );
    assert_eq!(
        world(&app, &alice, &c1.id).await,
        before,
        "nothing was written"
    );

    let p = accept(
        &with_email(&app, &app.key, "emile", "émile@example.test"),
        &tokens[0],
    )
    .await
    .expect("the lower-cased claim");
    assert_eq!((p.user_id.as_str(), p.kind()), ("emile", PKind::External));
    let p = accept(
        &with_email(&app, &app.key, "emile", "ÉMILE@EXAMPLE.TEST"),
        &tokens[1],
    )
    .await
    .expect("the upper-cased claim, accent included");
    assert_eq!(p.conversation_id, c2.id);
}

/// Acknowledged INVITATION notifications still list with `include_acked`, without their token
/// (they were delivered; the proto documents it), while the link itself keeps working, and a
/// resend after the acknowledgement carries it again.
async fn acknowledged_invitations_list_without_their_token(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let email = email_of(TENANT, "guest");
    invite(&alice, &c.id, &[&email]).await.expect("invite");
    let service = app.service(TENANT);
    let note = invitations_to(&notifications(&service, false).await, &email)[0].clone();
    assert!(!note.invitation_token.is_empty());
    service
        .notif()
        .ack_notifications(service.req(pb::AckNotificationsRequest {
            ids: vec![note.id.clone()],
            request_id: String::new(),
        }))
        .await
        .expect("ack");

    assert!(invitations_to(&notifications(&service, false).await, &email).is_empty());
    let all = notifications(&service, true).await;
    let acked = invitations_to(&all, &email);
    assert_eq!(acked.len(), 1);
    assert_eq!(
        pb::Notification {
            invitation_token: note.invitation_token.clone(),
            ..acked[0].clone()
        },
        note,
        "the same notification"
    );
    assert!(acked[0].invitation_token.is_empty(), "no token once acked");

    invite(&alice, &c.id, &[&email]).await.expect("resend");
    assert_eq!(
        tokens_for(&app, &email).await,
        vec![note.invitation_token.clone()]
    );
    let p = accept(&app.external(TENANT, "guest"), &note.invitation_token)
        .await
        .expect("the delivered link works");
    assert_eq!(p.state(), PState::Active);
}

/// AcceptInvitation and AddParticipants (re-inviting the same email and adding a user) race on
/// one conversation, 20 rounds: both lock the conversation first, so neither fails for the
/// race (no INTERNAL, no deadlock surfacing as an error), and each round ends consistent.
async fn accepting_and_adding_at_once_take_one_lock_order(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let users = seed_many(&app, "r", 20).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("race", &["bob"]).await.expect("create");
    for (round, user) in users.iter().enumerate() {
        let email = format!("racer{round}@acme.example");
        invite(&alice, &c.id, &[&email]).await.expect("invite");
        let token = tokens_for(&app, &email).await[0].clone();
        let guest = with_email(&app, &app.key, &format!("racer{round}"), &email);
        let (adder, id, added, again) = (alice.clone(), c.id.clone(), user.clone(), email.clone());
        let accepting = async move { accept(&guest, &token).await.map(|_| ()) };
        let adding = async move {
            adder
                .add(&id, vec![email_invitee(&again), user_invitee(&added)], true)
                .await
                .map(|_| ())
        };
        let results = all_at_once(vec![
            Box::pin(accepting) as std::pin::Pin<Box<dyn Future<Output = _> + Send>>,
            Box::pin(adding),
        ])
        .await;
        for result in results {
            result.unwrap_or_else(|status| panic!("round {round}: {status:?}"));
        }
        let roster = alice.active_ids(&c.id).await.expect("roster");
        assert!(
            roster.contains(&format!("racer{round}")) && roster.contains(user),
            "round {round}: {roster:?}"
        );
    }
    assert_eq!(
        alice.get(&c.id).await.expect("get").participant_count,
        2 + 2 * 20
    );
}

/// An invitation made before links were derived (migration 000006) holds the hash of a random
/// token, and its notification no invitation id: that notification lists without a token, the
/// derived link does not open it yet, and a resend gives it the derived link (which the resend
/// carries). Other invitations resent with it are untouched. Simulated by rewriting the rows.
async fn an_invitation_from_before_derived_links_gets_one_on_resend(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let (old, new) = (email_of(TENANT, "old"), email_of(TENANT, "new"));
    invite(&alice, &c.id, &[&old, &new]).await.expect("invite");
    let derived = tokens_for(&app, &old).await[0].clone();
    let new_token = tokens_for(&app, &new).await[0].clone();

    let tables = sea_orm::Database::connect(app.database_url())
        .await
        .expect("connect to the server's database");
    for sql in [
        format!(
            "UPDATE invitations SET token_hash = '{}' WHERE email = '{old}'",
            "0".repeat(64)
        ),
        format!("UPDATE notifications SET invitation_id = NULL WHERE recipient_email = '{old}'"),
    ] {
        tables
            .execute_unprepared(&sql)
            .await
            .expect("make a legacy row");
    }
    let _ = tables.close().await;
    assert_eq!(
        tokens_for(&app, &old).await,
        vec![String::new()],
        "a legacy notification lists without a token"
    );
    // Tried by bob, already in the directory: a first call by "old" would add them to it, and
    // the resend would then add them as that directory user.
    let before = world(&app, &alice, &c.id).await;
    expect_err(
        accept(&app.user(TENANT, "bob"), &derived).await,
        Code::NotFound,
        ErrorReason::InvitationNotFound,
    );
    assert_eq!(
        world(&app, &alice, &c.id).await,
        before,
        "nothing was written"
    );

    assert_eq!(
        invite(&alice, &c.id, &[&old, &new]).await.expect("resend"),
        vec![Outcome::AlreadyInvited, Outcome::AlreadyInvited]
    );
    assert_eq!(
        tokens_for(&app, &old).await,
        vec![String::new(), derived.clone()]
    );
    assert_eq!(
        tokens_for(&app, &new).await,
        vec![new_token.clone(), new_token.clone()]
    );
    let p = accept(&app.external(TENANT, "old"), &derived)
        .await
        .expect("the resent link");
    assert_eq!(p.user_id, "old");
    let p = accept(&app.external(TENANT, "new"), &new_token)
        .await
        .expect("the other invitation's link is untouched");
    assert_eq!(p.user_id, "new");
}

both_dbs!(
    an_invitation_from_before_derived_links_gets_one_on_resend,
    the_database_holds_no_working_link,
    the_first_link_works_after_two_resends,
    the_link_survives_a_restart_and_a_key_rotation,
    declining_needs_a_conversation_that_is_not_read_only,
    emails_compare_with_unicode_lower_casing,
    acknowledged_invitations_list_without_their_token,
    accepting_and_adding_at_once_take_one_lock_order,
);
