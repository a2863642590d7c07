//! Bounds (SPEC §4): every string and repeated field of a request has a documented maximum,
//! checked before any per-item work. One past a bound is refused at once (under [`QUICK`])
//! with INVALID_ARGUMENT and the right reason, without a statement beyond the caller's own
//! directory entry; exactly the bound is accepted, so the bound is the documented one. A field
//! of megabytes or a list of 200,000 costs the server no more than one a character or an item
//! too long.

use std::{
    fmt::Debug,
    future::Future,
    time::{Duration, Instant},
};

use parley_tests::*;
use pb::add_participants_result::Outcome;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// How soon a refusal must come: generous (a refusal is a comparison, plus loopback and the
/// caller's directory look-up), not a benchmark.
const QUICK: Duration = Duration::from_millis(100);
/// Attempts a refusal gets to come within [`QUICK`]: one slowed by a busy machine comes quick
/// on another attempt, one slowed by per-item work never does. A refused call writes nothing,
/// so repeating it is harmless.
const ATTEMPTS: usize = 3;
/// Statements a refused call may run: a user principal's own directory entry is read before
/// the request is looked at; a service principal's call reads nothing.
const USER: u64 = 1;
const SERVICE: u64 = 0;
/// Characters far past every bound (25 times the longest, a body's), yet cheap to carry.
const FAR: usize = 100_000;
/// A field of megabytes, within tonic's 4 MiB message limit: carrying it takes long enough in
/// a debug build to need [`refused_huge`].
const MEGABYTES: usize = 3_000_000;
/// The number of ids in the attack of issue 7.
const ATTACK: usize = 200_000;

/// Makes `$caller`'s call `$client().$method($msg)` a closure that sends a fresh request (`$msg`
/// is evaluated on each call) and answers the reply's message.
macro_rules! rpc {
    ($caller:expr, $client:ident . $method:ident ( $msg:expr )) => {
        || {
            let mut client = $caller.$client();
            let request = $caller.req($msg);
            async move {
                client
                    .$method(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        }
    };
}

/// Runs `call` (a fresh call each time), which a bound must refuse, and returns its status
/// after asserting that it was refused within [`QUICK`] (in one of [`ATTEMPTS`]), ran at most
/// `reads` statements (so nothing was looked up per item, and nothing was written) and did not
/// echo the oversize input.
async fn refused<T, Fut>(app: &TestApp, reads: u64, call: impl Fn() -> Fut) -> Status
where
    T: Debug,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut times = Vec::new();
    for _ in 0..ATTEMPTS {
        let attempt = call();
        let statements = app.statement_count();
        let started = Instant::now();
        let result = patiently(attempt).await;
        let elapsed = started.elapsed();
        let ran = app.statement_count() - statements;
        let status = match result {
            Ok(value) => panic!("expected a refusal, got Ok({value:?})"),
            Err(status) => status,
        };
        assert!(
            ran <= reads,
            "a refused call ran {ran} statements (at most {reads}): {status:?}"
        );
        assert!(
            status.message().len() < 1_000,
            "a {}-byte error message",
            status.message().len()
        );
        if elapsed < QUICK {
            return status;
        }
        times.push(elapsed);
    }
    panic!("refused in {times:?}, never under {QUICK:?}");
}

/// [`refused`], as INVALID_ARGUMENT `INVALID_FIELD` naming `field`.
async fn refused_field<T, Fut>(
    app: &TestApp,
    reads: u64,
    field: &str,
    call: impl Fn() -> Fut,
) -> Status
where
    T: Debug,
    Fut: Future<Output = Result<T, Status>>,
{
    let status = refused(app, reads, call).await;
    assert_invalid_field(&status, field);
    status
}

/// [`refused`], with `code` and `reason`.
async fn refused_with<T, Fut>(
    app: &TestApp,
    reads: u64,
    code: Code,
    reason: ErrorReason,
    call: impl Fn() -> Fut,
) -> Status
where
    T: Debug,
    Fut: Future<Output = Result<T, Status>>,
{
    let status = refused(app, reads, call).await;
    assert_error(&status, code, reason);
    status
}

/// Rounds of [`refused_huge`] between comparisons of the best of each side, and how many such
/// batches a busy machine gets before the test fails.
const ROUNDS: usize = 10;
const BATCHES: usize = 3;

/// Awaits `call`, failing the test if it takes longer than a few seconds: per-item work on a
/// huge list would take minutes, and the test should say so rather than hang.
async fn patiently<T>(call: impl Future<Output = T>) -> T {
    const PATIENCE: Duration = Duration::from_secs(10);
    tokio::time::timeout(PATIENCE, call)
        .await
        .unwrap_or_else(|_| panic!("no answer within {PATIENCE:?}"))
}

/// Sends a huge request (a list of [`ATTACK`] items, or [`MEGABYTES`] of text) as `caller`,
/// which a bound must refuse, and returns its status after asserting that what the server adds
/// to carrying the request stays within [`QUICK`], and that it ran at most `reads` statements.
///
/// Carrying 200,000 items or megabytes costs the transport alone (the client's encoding, and
/// the server's decoding before any Parley code runs) around 100 ms in a debug build, and
/// several times that on a busy machine; nothing in the server can make that faster. So the same request also
/// goes with a forged token, which is carried, decoded and refused before a handler sees it,
/// and the bound applies to the difference: what the server does with the list once it has it
/// (the quadratic de-duplication of issue 7 took minutes). Scheduling noise on a busy machine
/// is several times [`QUICK`], so the two are taken in turns (which goes first alternates) and
/// the best of each compared, after [`ROUNDS`] and again after each further batch.
async fn refused_huge<T, Fut>(
    app: &TestApp,
    reads: u64,
    caller: &Caller,
    call: impl Fn(Caller) -> Fut,
) -> Status
where
    T: Debug,
    Fut: Future<Output = Result<T, Status>>,
{
    let forged = app.with_token(app.forged_token(TENANT, "intruder"));
    let (mut carried, mut answered) = (Duration::MAX, Duration::MAX);
    let mut refusal = None;
    for round in 0..ROUNDS * BATCHES {
        for baseline in [round % 2 == 0, round % 2 == 1] {
            if baseline {
                let call = call(forged.clone());
                let started = Instant::now();
                let status = patiently(call)
                    .await
                    .expect_err("a forged token is refused");
                carried = carried.min(started.elapsed());
                assert_error(&status, Code::Unauthenticated, ErrorReason::TokenInvalid);
                continue;
            }
            let call = call(caller.clone());
            let statements = app.statement_count();
            let started = Instant::now();
            let result = patiently(call).await;
            answered = answered.min(started.elapsed());
            let ran = app.statement_count() - statements;
            let status = match result {
                Ok(value) => panic!("expected a refusal, got Ok({value:?})"),
                Err(status) => status,
            };
            assert!(
                ran <= reads,
                "a refused call ran {ran} statements (at most {reads}): {status:?}"
            );
            refusal = Some(status);
        }
        if (round + 1) % ROUNDS == 0 && answered < carried + QUICK {
            eprintln!(
                "{:?}: carried in {carried:?}, refused in {answered:?} (best of {})",
                app.db,
                round + 1
            );
            return refusal.expect("at least one round");
        }
    }
    panic!("refused in {answered:?} at best, while carrying the request alone took {carried:?}");
}

/// A fresh request id of exactly the bound's 128 characters.
fn longest_request_id() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), "r".repeat(96))
}

fn long(n: usize) -> String {
    "x".repeat(n)
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("u{i}")).collect()
}

/// An email address of exactly `n` characters (`n` > 73).
fn email_of_len(n: usize) -> String {
    let domain = ".example";
    format!(
        "{}@{}{domain}",
        "a".repeat(64),
        "d".repeat(n - 65 - domain.len())
    )
}

fn create_request(title: &str, participant_ids: Vec<String>) -> pb::CreateConversationRequest {
    pb::CreateConversationRequest {
        request_id: request_id(),
        kind: pb::conversation::Kind::Group as i32,
        title: title.to_owned(),
        participant_ids,
        policy: None,
    }
}

fn send_request(conversation_id: &str, body: String, request_id: String) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        conversation_id: conversation_id.to_owned(),
        body,
        request_id,
    }
}

// ----- CreateConversation ------------------------------------------------------------------

/// Issue 7: 200,000 participant ids from any user token ran past a 30 s deadline. The raw
/// list's length is now checked before any id is looked at, de-duplicated or validated.
async fn a_huge_participant_list_is_refused_at_once(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");

    let attacks = [
        ids(ATTACK),
        vec!["bob".to_owned(); ATTACK],
        vec!["not an id".to_owned(); ATTACK],
    ];
    for participant_ids in attacks {
        let request = create_request("attack", participant_ids);
        let status = refused_huge(&app, USER, &alice, |caller| {
            let request = request.clone();
            async move { caller.create(request).await }
        })
        .await;
        assert_error(
            &status,
            Code::InvalidArgument,
            ErrorReason::TooManyInitialParticipants,
        );
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.metadata.get("max").map(String::as_str), Some("10"));
    }
    assert!(
        alice.list_conversations().await.expect("list").is_empty(),
        "nothing was created"
    );
}

/// At most `max_initial_participants` (10) ids, duplicates and the creator counted; after
/// de-duplication, at most 10 people with the creator (rule 12).
async fn initial_participants_count_the_raw_list(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let others = seed_many(&app, "p", 10).await;
    let alice = app.user(TENANT, "alice");

    // Eleven ids are refused even when they name one person, or the creator and ten others.
    let mut eleven = vec!["alice".to_owned()];
    eleven.extend(others.iter().cloned());
    for request in [
        create_request("dupes", vec!["bob".to_owned(); 11]),
        create_request("eleven", eleven),
    ] {
        refused_with(
            &app,
            USER,
            Code::InvalidArgument,
            ErrorReason::TooManyInitialParticipants,
            || alice.create(request.clone()),
        )
        .await;
    }
    // Ten ids naming ten others are eleven people.
    expect_err(
        alice
            .create(create_request("ten others", others.clone()))
            .await,
        Code::InvalidArgument,
        ErrorReason::TooManyInitialParticipants,
    );
    assert!(
        alice.list_conversations().await.expect("list").is_empty(),
        "nothing was created"
    );

    // Exactly the bound: ten ids, the creator among them, are ten people.
    let mut ten = vec!["alice".to_owned()];
    ten.extend(others[..9].iter().cloned());
    let c = alice
        .create(create_request("ten", ten))
        .await
        .expect("ten ids, the creator included");
    assert_eq!(c.participant_count, 10);
    // Ten ids naming one person.
    let c = alice
        .create(create_request("twice", vec!["bob".to_owned(); 10]))
        .await
        .expect("ten ids naming bob");
    assert_eq!(c.participant_count, 2);
}

// ----- ConversationService strings -----------------------------------------------------------

async fn conversation_strings_are_bounded(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let longest_id = "p".repeat(128);
    app.service(TENANT)
        .upsert_user(&longest_id, Kind::Internal)
        .await
        .expect("a 128-character user id");
    let alice = app.user(TENANT, "alice");
    let service = app.service(TENANT);

    // CreateConversation.
    let with_request_id = |request_id: String| pb::CreateConversationRequest {
        request_id,
        ..create_request("t", vec!["bob".into()])
    };
    for (field, request) in [
        ("title", create_request(&long(201), vec!["bob".into()])),
        ("title", create_request(&long(FAR), vec!["bob".into()])),
        ("participant_ids[0]", create_request("t", vec![long(129)])),
        ("participant_ids[0]", create_request("t", vec![long(FAR)])),
        ("request_id", with_request_id(long(129))),
        ("request_id", with_request_id(long(FAR))),
    ] {
        refused_field(&app, USER, field, || alice.create(request.clone())).await;
    }
    assert!(
        alice.list_conversations().await.expect("list").is_empty(),
        "nothing was created"
    );
    // Exactly the bounds.
    let c = alice
        .create(pb::CreateConversationRequest {
            request_id: longest_request_id(),
            ..create_request(&"é".repeat(200), vec![longest_id.clone(), "bob".into()])
        })
        .await
        .expect("a 200-character title, a 128-character id and request id");
    assert_eq!(c.title.chars().count(), 200);
    assert_eq!(c.participant_count, 3);
    let id = c.id.as_str();

    // Messages, lifecycle, access checks: nothing written by any refusal.
    let before = alice.snapshot(id).await;
    for (field, request) in [
        ("body", send_request(id, long(4_001), request_id())),
        ("body", send_request(id, long(FAR), request_id())),
        ("request_id", send_request(id, "hi".into(), long(129))),
        ("request_id", send_request(id, "hi".into(), long(FAR))),
    ] {
        refused_field(
            &app,
            USER,
            field,
            rpc!(alice, conv.send_message(request.clone())),
        )
        .await;
    }
    let megabytes = send_request(id, long(MEGABYTES), request_id());
    let status = refused_huge(&app, USER, &alice, |caller| {
        let request = megabytes.clone();
        async move { caller.conv().send_message(caller.req(request)).await }
    })
    .await;
    assert_invalid_field(&status, "body");
    refused_field(
        &app,
        USER,
        "request_id",
        rpc!(
            alice,
            conv.archive_conversation(pb::ArchiveConversationRequest {
                id: id.to_owned(),
                request_id: long(129),
            })
        ),
    )
    .await;
    refused_field(
        &app,
        USER,
        "request_id",
        rpc!(
            alice,
            conv.unarchive_conversation(pb::UnarchiveConversationRequest {
                id: id.to_owned(),
                request_id: long(129),
            })
        ),
    )
    .await;
    refused_field(
        &app,
        USER,
        "request_id",
        rpc!(
            alice,
            conv.close_conversation(pb::CloseConversationRequest {
                id: id.to_owned(),
                request_id: long(129),
            })
        ),
    )
    .await;
    refused_field(
        &app,
        USER,
        "id",
        rpc!(
            alice,
            conv.get_conversation(pb::GetConversationRequest { id: long(FAR) })
        ),
    )
    .await;
    for user_id in [long(129), long(FAR)] {
        refused_field(
            &app,
            SERVICE,
            "user_id",
            rpc!(
                service,
                conv.check_access(pb::CheckAccessRequest {
                    conversation_id: id.to_owned(),
                    user_id: user_id.clone(),
                })
            ),
        )
        .await;
    }
    assert_eq!(alice.snapshot(id).await, before, "nothing was written");

    // Exactly the bounds.
    let message = alice
        .conv()
        .send_message(alice.req(send_request(id, "ü".repeat(4_000), longest_request_id())))
        .await
        .expect("a 4,000-character body and a 128-character request id")
        .into_inner();
    assert_eq!(message.body.chars().count(), 4_000);
    let access = service
        .conv()
        .check_access(service.req(pb::CheckAccessRequest {
            conversation_id: id.to_owned(),
            user_id: longest_id,
        }))
        .await
        .expect("a 128-character user id")
        .into_inner();
    assert!(access.can_read && access.can_post);
}

// ----- UpdateConversation --------------------------------------------------------------------

fn update_request(
    conversation: pb::Conversation,
    paths: Vec<String>,
    request_id: String,
) -> pb::UpdateConversationRequest {
    pb::UpdateConversationRequest {
        conversation: Some(conversation),
        update_mask: Some(prost_types::FieldMask { paths }),
        request_id,
    }
}

async fn update_fields_are_bounded(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let id = c.id.as_str();
    let conversation = |f: &dyn Fn(&mut pb::Conversation)| {
        let mut conversation = pb::Conversation {
            id: c.id.clone(),
            title: "new".into(),
            ..Default::default()
        };
        f(&mut conversation);
        conversation
    };
    let plain = || conversation(&|_| {});
    let title = || vec!["title".to_owned()];
    let before = alice.snapshot(id).await;

    let cases = [
        (
            "conversation.etag",
            update_request(conversation(&|c| c.etag = long(65)), title(), request_id()),
        ),
        (
            "conversation.etag",
            update_request(conversation(&|c| c.etag = long(FAR)), title(), request_id()),
        ),
        (
            "conversation.title",
            update_request(
                conversation(&|c| c.title = long(201)),
                title(),
                request_id(),
            ),
        ),
        (
            "conversation.title",
            update_request(
                conversation(&|c| c.title = long(FAR)),
                title(),
                request_id(),
            ),
        ),
        (
            "conversation.owner_id",
            update_request(
                conversation(&|c| c.owner_id = long(129)),
                title(),
                request_id(),
            ),
        ),
        (
            "update_mask.paths",
            update_request(plain(), vec!["title".to_owned(); 17], request_id()),
        ),
        (
            "update_mask.paths[1]",
            update_request(plain(), vec!["title".into(), long(65)], request_id()),
        ),
        (
            "update_mask.paths[0]",
            update_request(plain(), vec![long(FAR)], request_id()),
        ),
        ("request_id", update_request(plain(), title(), long(129))),
    ];
    for (field, request) in cases {
        refused_field(
            &app,
            USER,
            field,
            rpc!(alice, conv.update_conversation(request.clone())),
        )
        .await;
    }
    let attack = update_request(plain(), vec!["title".to_owned(); ATTACK], request_id());
    let status = refused_huge(&app, USER, &alice, |caller| {
        let request = attack.clone();
        async move { caller.conv().update_conversation(caller.req(request)).await }
    })
    .await;
    assert_invalid_field(&status, "update_mask.paths");
    assert_eq!(alice.snapshot(id).await, before, "nothing was written");

    // Exactly the bounds: a 64-character etag is compared (and is stale), a 64-character path
    // is interpreted (and names no field), 16 paths are applied.
    let stale = update_request(conversation(&|c| c.etag = long(64)), title(), request_id());
    expect_err(
        alice.conv().update_conversation(alice.req(stale)).await,
        Code::Aborted,
        ErrorReason::EtagMismatch,
    );
    let unknown = update_request(plain(), vec![long(64)], request_id());
    let status = alice
        .conv()
        .update_conversation(alice.req(unknown))
        .await
        .expect_err("no such field");
    assert_eq!(
        field_violations(&status)
            .iter()
            .map(|v| v.field.as_str())
            .collect::<Vec<_>>(),
        vec!["update_mask"],
        "the path was read, not refused for its length: {status:?}"
    );
    assert_eq!(alice.snapshot(id).await, before, "nothing was written");
    let updated = alice
        .conv()
        .update_conversation(alice.req(update_request(
            conversation(&|c| {
                c.title = "é".repeat(200);
                c.etag = before.conversation.etag.clone();
                c.owner_id = long(128);
            }),
            vec!["title".to_owned(); 16],
            longest_request_id(),
        )))
        .await
        .expect("16 paths, a 200-character title, a 128-character request id")
        .into_inner();
    assert_eq!(updated.title, "é".repeat(200));
    assert_eq!(updated.owner_id, "alice", "owner_id is output only");
}

// ----- ParticipantService --------------------------------------------------------------------

fn add_request(
    conversation_id: &str,
    invitees: Vec<pb::Invitee>,
    request_id: String,
) -> pb::AddParticipantsRequest {
    pb::AddParticipantsRequest {
        conversation_id: conversation_id.to_owned(),
        invitees,
        partial_success: false,
        request_id,
    }
}

fn guests(n: usize) -> Vec<pb::Invitee> {
    (0..n)
        .map(|i| email_invitee(&format!("guest{i}@example.com")))
        .collect()
}

fn user(id: String) -> pb::Invitee {
    pb::Invitee {
        invitee: Some(pb::invitee::Invitee::UserId(id)),
    }
}

fn group(id: String) -> pb::Invitee {
    pb::Invitee {
        invitee: Some(pb::invitee::Invitee::GroupId(id)),
    }
}

fn email(address: String) -> pb::Invitee {
    pb::Invitee {
        invitee: Some(pb::invitee::Invitee::Email(address)),
    }
}

async fn participant_fields_are_bounded(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let longest_id = "p".repeat(128);
    app.service(TENANT)
        .upsert_user(&longest_id, Kind::Internal)
        .await
        .expect("a 128-character user id");
    let alice = app.user(TENANT, "alice");
    let dave = app.user(TENANT, "dave");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let id = c.id.as_str();
    let before = alice.snapshot(id).await;

    // AddParticipants: the invitee count before any invitee (rule 3).
    let status = refused_with(
        &app,
        USER,
        Code::InvalidArgument,
        ErrorReason::TooManyInvitees,
        rpc!(
            alice,
            part.add_participants(add_request(id, guests(1_001), request_id()))
        ),
    )
    .await;
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.metadata.get("max").map(String::as_str), Some("1000"));
    // (User ids: 200,000 email invitees would pass tonic's 4 MiB limit.)
    let attack = add_request(
        id,
        ids(ATTACK).into_iter().map(user).collect(),
        request_id(),
    );
    let status = refused_huge(&app, USER, &alice, |caller| {
        let request = attack.clone();
        async move { caller.part().add_participants(caller.req(request)).await }
    })
    .await;
    assert_error(&status, Code::InvalidArgument, ErrorReason::TooManyInvitees);

    for (field, invitee) in [
        ("invitees[0].user_id", user(long(129))),
        ("invitees[0].user_id", user(long(FAR))),
        ("invitees[0].group_id", group(long(129))),
        ("invitees[0].email", email(email_of_len(321))),
        ("invitees[0].email", email(long(FAR))),
    ] {
        refused_field(
            &app,
            USER,
            field,
            rpc!(
                alice,
                part.add_participants(add_request(id, vec![invitee.clone()], request_id()))
            ),
        )
        .await;
    }
    refused_field(
        &app,
        USER,
        "request_id",
        rpc!(
            alice,
            part.add_participants(add_request(id, guests(1), long(129)))
        ),
    )
    .await;

    // RemoveParticipant, SetParticipantRole, GetParticipant.
    let remove = |user_id: String, request_id: String| pb::RemoveParticipantRequest {
        conversation_id: id.to_owned(),
        user_id,
        request_id,
    };
    let set_role = |user_id: String, request_id: String| pb::SetParticipantRoleRequest {
        conversation_id: id.to_owned(),
        user_id,
        role: pb::participant::Role::Admin as i32,
        request_id,
    };
    for user_id in [long(129), long(FAR)] {
        refused_field(
            &app,
            USER,
            "user_id",
            rpc!(
                alice,
                part.remove_participant(remove(user_id.clone(), request_id()))
            ),
        )
        .await;
        refused_field(
            &app,
            USER,
            "user_id",
            rpc!(
                alice,
                part.set_participant_role(set_role(user_id.clone(), request_id()))
            ),
        )
        .await;
        refused_field(
            &app,
            USER,
            "user_id",
            rpc!(
                alice,
                part.get_participant(pb::GetParticipantRequest {
                    conversation_id: id.to_owned(),
                    user_id: user_id.clone(),
                })
            ),
        )
        .await;
    }
    refused_field(
        &app,
        USER,
        "request_id",
        rpc!(
            alice,
            part.remove_participant(remove("bob".into(), long(129)))
        ),
    )
    .await;
    refused_field(
        &app,
        USER,
        "request_id",
        rpc!(
            alice,
            part.set_participant_role(set_role("bob".into(), long(129)))
        ),
    )
    .await;

    // Invitations: tokens, ids, request ids.
    let accept =
        |token: String, request_id: String| pb::AcceptInvitationRequest { token, request_id };
    let decline =
        |token: String, request_id: String| pb::DeclineInvitationRequest { token, request_id };
    for token in [long(129), long(FAR)] {
        refused_field(
            &app,
            USER,
            "token",
            rpc!(
                dave,
                part.accept_invitation(accept(token.clone(), request_id()))
            ),
        )
        .await;
        refused_field(
            &app,
            USER,
            "token",
            rpc!(
                dave,
                part.decline_invitation(decline(token.clone(), request_id()))
            ),
        )
        .await;
    }
    refused_field(
        &app,
        USER,
        "request_id",
        rpc!(dave, part.accept_invitation(accept(long(43), long(129)))),
    )
    .await;
    refused_field(
        &app,
        USER,
        "request_id",
        rpc!(dave, part.decline_invitation(decline(long(43), long(129)))),
    )
    .await;
    refused_field(
        &app,
        USER,
        "invitation_id",
        rpc!(
            alice,
            part.revoke_invitation(pb::RevokeInvitationRequest {
                invitation_id: long(FAR),
                request_id: request_id(),
            })
        ),
    )
    .await;
    refused_field(
        &app,
        USER,
        "request_id",
        rpc!(
            alice,
            part.revoke_invitation(pb::RevokeInvitationRequest {
                invitation_id: uuid::Uuid::now_v7().to_string(),
                request_id: long(129),
            })
        ),
    )
    .await;
    assert_eq!(alice.snapshot(id).await, before, "nothing was written");

    // Exactly the bounds: a 128-character token is looked up (and is no invitation).
    expect_err(
        dave.part()
            .accept_invitation(dave.req(accept(long(128), longest_request_id())))
            .await,
        Code::NotFound,
        ErrorReason::InvitationNotFound,
    );
    // 1,000 invitees, among them a 128-character user id and a 320-character email.
    let mut invitees = guests(998);
    invitees.push(user(longest_id.clone()));
    invitees.push(email(email_of_len(320)));
    let added = alice
        .part()
        .add_participants(alice.req(add_request(id, invitees, longest_request_id())))
        .await
        .expect("1,000 invitees")
        .into_inner();
    assert_eq!(added.results.len(), 1_000);
    let invited = added
        .results
        .iter()
        .filter(|r| r.outcome() == Outcome::Invited)
        .count();
    assert_eq!(invited, 999);
    assert!(
        added
            .results
            .iter()
            .any(|r| r.outcome() == Outcome::Added && result_user(r) == Some(longest_id.as_str()))
    );
    let role = alice
        .set_role(id, &longest_id, pb::participant::Role::Admin)
        .await
        .expect("a 128-character user id");
    assert_eq!(role.user_id, longest_id);
}

// ----- page tokens -----------------------------------------------------------------------------

/// A page token longer than any Parley seals is refused before it is decoded, on every List
/// method.
async fn page_tokens_are_bounded_before_decoding(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let service = app.service(TENANT);
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let id = c.id.clone();
    let order = pb::Order::OldestFirst as i32;

    for token in [long(4_097), long(FAR)] {
        let page_token = || token.clone();
        refused_field(
            &app,
            USER,
            "page_token",
            rpc!(
                alice,
                conv.list_conversations(pb::ListConversationsRequest {
                    page_size: 0,
                    page_token: page_token(),
                    include_removed: false,
                })
            ),
        )
        .await;
        refused_field(
            &app,
            USER,
            "page_token",
            rpc!(
                alice,
                conv.list_messages(pb::ListMessagesRequest {
                    conversation_id: id.clone(),
                    order,
                    page_size: 0,
                    page_token: page_token(),
                })
            ),
        )
        .await;
        refused_field(
            &app,
            USER,
            "page_token",
            rpc!(
                alice,
                conv.list_timeline(pb::ListTimelineRequest {
                    conversation_id: id.clone(),
                    order,
                    page_size: 0,
                    page_token: page_token(),
                })
            ),
        )
        .await;
        refused_field(
            &app,
            USER,
            "page_token",
            rpc!(
                alice,
                part.list_events(pb::ListEventsRequest {
                    conversation_id: id.clone(),
                    order,
                    page_size: 0,
                    page_token: page_token(),
                })
            ),
        )
        .await;
        refused_field(
            &app,
            USER,
            "page_token",
            rpc!(
                alice,
                part.list_participants(pb::ListParticipantsRequest {
                    conversation_id: id.clone(),
                    page_size: 0,
                    page_token: page_token(),
                    state: 0,
                    kind: 0,
                })
            ),
        )
        .await;
        refused_field(
            &app,
            USER,
            "page_token",
            rpc!(
                alice,
                part.list_invitations(pb::ListInvitationsRequest {
                    conversation_id: id.clone(),
                    page_size: 0,
                    page_token: page_token(),
                })
            ),
        )
        .await;
        refused_field(
            &app,
            SERVICE,
            "page_token",
            rpc!(
                service,
                dir.list_users(pb::ListUsersRequest {
                    page_size: 0,
                    page_token: page_token(),
                })
            ),
        )
        .await;
        refused_field(
            &app,
            SERVICE,
            "page_token",
            rpc!(
                service,
                notif.list_notifications(pb::ListNotificationsRequest {
                    page_size: 0,
                    page_token: page_token(),
                    include_acked: true,
                })
            ),
        )
        .await;
    }
    // The tokens Parley seals still page.
    let first = service
        .dir()
        .list_users(service.req(pb::ListUsersRequest {
            page_size: 1,
            page_token: String::new(),
        }))
        .await
        .expect("ListUsers")
        .into_inner();
    service
        .dir()
        .list_users(service.req(pb::ListUsersRequest {
            page_size: 1,
            page_token: first.next_page_token,
        }))
        .await
        .expect("its own token");
}

// ----- DirectoryService ----------------------------------------------------------------------

fn user_request(
    id: String,
    display_name: String,
    email: String,
    request_id: String,
) -> pb::UpsertUserRequest {
    pb::UpsertUserRequest {
        user: Some(pb::User {
            id,
            display_name,
            email,
            kind: pb::user::Kind::Internal as i32,
            status: pb::user::Status::Active as i32,
            create_time: None,
            update_time: None,
        }),
        request_id,
    }
}

fn group_request(
    id: String,
    name: String,
    member_ids: Vec<String>,
    request_id: String,
) -> pb::UpsertGroupRequest {
    pb::UpsertGroupRequest {
        group: Some(pb::Group {
            id,
            name,
            member_ids,
            update_time: None,
        }),
        request_id,
    }
}

async fn directory_fields_are_bounded(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let service = app.service(TENANT);
    let new = |id: String, name: String, email: String| user_request(id, name, email, request_id());
    let (n, e) = (|| "N".to_owned(), || "new@acme.example".to_owned());

    // UpsertUser.
    for (field, request) in [
        ("user.id", new(long(129), n(), e())),
        ("user.id", new(long(FAR), n(), e())),
        ("user.display_name", new("new".into(), long(201), e())),
        ("user.display_name", new("new".into(), long(FAR), e())),
        ("user.email", new("new".into(), n(), email_of_len(321))),
        ("user.email", new("new".into(), n(), long(FAR))),
        (
            "request_id",
            user_request("new".into(), n(), e(), long(129)),
        ),
    ] {
        refused_field(
            &app,
            SERVICE,
            field,
            rpc!(service, dir.upsert_user(request.clone())),
        )
        .await;
    }
    expect_err(
        service.get_user("new").await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
    for id in [long(129), long(FAR)] {
        refused_field(
            &app,
            SERVICE,
            "id",
            rpc!(service, dir.get_user(pb::GetUserRequest { id: id.clone() })),
        )
        .await;
        refused_field(
            &app,
            SERVICE,
            "id",
            rpc!(
                service,
                dir.deactivate_user(pb::DeactivateUserRequest {
                    id: id.clone(),
                    request_id: request_id(),
                })
            ),
        )
        .await;
        refused_field(
            &app,
            SERVICE,
            "id",
            rpc!(
                service,
                dir.get_group(pb::GetGroupRequest { id: id.clone() })
            ),
        )
        .await;
        refused_field(
            &app,
            SERVICE,
            "id",
            rpc!(
                service,
                dir.delete_group(pb::DeleteGroupRequest {
                    id: id.clone(),
                    request_id: request_id(),
                })
            ),
        )
        .await;
    }
    refused_field(
        &app,
        SERVICE,
        "request_id",
        rpc!(
            service,
            dir.deactivate_user(pb::DeactivateUserRequest {
                id: "bob".into(),
                request_id: long(129),
            })
        ),
    )
    .await;
    assert_eq!(
        service.get_user("bob").await.expect("bob").status(),
        pb::user::Status::Active,
        "bob was not deactivated"
    );
    // The act-as header is a user id too.
    let acting = service.acting_as(&long(129));
    let unknown = uuid::Uuid::now_v7().to_string();
    refused_field(&app, SERVICE, "x-parley-act-as", || acting.get(&unknown)).await;

    // SearchUsers: bounded before it is trimmed.
    for query in [long(321), " ".repeat(FAR)] {
        refused_field(
            &app,
            SERVICE,
            "query",
            rpc!(
                service,
                dir.search_users(pb::SearchUsersRequest {
                    query: query.clone(),
                    page_size: 0,
                })
            ),
        )
        .await;
    }

    // UpsertGroup: the member count before any member.
    let members = seed_many(&app, "m", 1_000).await;
    let mut too_many = members.clone();
    too_many.push("alice".into());
    let bob = || vec!["bob".to_owned()];
    let g = || "g".to_owned();
    for (field, request) in [
        (
            "group.member_ids",
            group_request(g(), n(), too_many, request_id()),
        ),
        (
            "group.id",
            group_request(long(129), n(), bob(), request_id()),
        ),
        (
            "group.name",
            group_request(g(), long(201), bob(), request_id()),
        ),
        (
            "group.name",
            group_request(g(), long(FAR), bob(), request_id()),
        ),
        (
            "group.member_ids[0]",
            group_request(g(), n(), vec![long(129)], request_id()),
        ),
        ("request_id", group_request(g(), n(), bob(), long(129))),
    ] {
        refused_field(
            &app,
            SERVICE,
            field,
            rpc!(service, dir.upsert_group(request.clone())),
        )
        .await;
    }
    let attack = group_request(g(), n(), ids(ATTACK), request_id());
    let status = refused_huge(&app, SERVICE, &service, |caller| {
        let request = attack.clone();
        async move { caller.dir().upsert_group(caller.req(request)).await }
    })
    .await;
    assert_invalid_field(&status, "group.member_ids");
    expect_err(
        service
            .dir()
            .get_group(service.req(pb::GetGroupRequest { id: g() }))
            .await,
        Code::NotFound,
        ErrorReason::GroupNotFound,
    );

    // Exactly the bounds.
    let longest = "p".repeat(128);
    let user = service
        .dir()
        .upsert_user(service.req(user_request(
            longest.clone(),
            "é".repeat(200),
            email_of_len(320),
            longest_request_id(),
        )))
        .await
        .expect("a 128-character id, a 200-character name, a 320-character email")
        .into_inner();
    assert_eq!(service.get_user(&longest).await.expect("read back"), user);
    let group = service
        .dir()
        .upsert_group(service.req(group_request(
            longest.clone(),
            "é".repeat(200),
            members,
            longest_request_id(),
        )))
        .await
        .expect("1,000 members")
        .into_inner();
    assert_eq!(group.member_ids.len(), 1_000);
    let found = service
        .dir()
        .search_users(service.req(pb::SearchUsersRequest {
            query: email_of_len(320),
            page_size: 0,
        }))
        .await
        .expect("a 320-character query")
        .into_inner();
    assert_eq!(found.users, vec![user]);
    service
        .acting_as(&longest)
        .list_conversations()
        .await
        .expect("a 128-character act-as header");
}

/// `--max-group-members` sets the bound.
async fn group_members_follow_the_setting(db: Db) {
    let app = spawn_app_with(db, |config| config.limits.max_group_members = 3).await;
    seed_standard(&app).await;
    let service = app.service(TENANT);
    let four = ["alice", "bob", "carol", "dave"]
        .map(str::to_owned)
        .to_vec();
    refused_field(
        &app,
        SERVICE,
        "group.member_ids",
        rpc!(
            service,
            dir.upsert_group(group_request(
                "g".into(),
                "G".into(),
                four.clone(),
                request_id()
            ))
        ),
    )
    .await;
    let three = four[..3].to_vec();
    let group = service
        .dir()
        .upsert_group(service.req(group_request("g".into(), "G".into(), three, request_id())))
        .await
        .expect("three members")
        .into_inner();
    assert_eq!(group.member_ids.len(), 3);
}

// ----- NotificationService -------------------------------------------------------------------

fn ack_request(ids: Vec<String>, request_id: String) -> pb::AckNotificationsRequest {
    pb::AckNotificationsRequest { ids, request_id }
}

fn uuids(n: usize) -> Vec<String> {
    (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect()
}

async fn acknowledgements_are_bounded(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    alice
        .create_group("t", &["bob", "carol"])
        .await
        .expect("create");
    let service = app.service(TENANT);
    let before = app.unacked_notifications(TENANT).await;
    assert!(!before.is_empty());
    let real = before[0].id.clone();

    let mut one_too_many = uuids(1_000);
    one_too_many.push(real.clone());
    for (field, request) in [
        ("ids", ack_request(one_too_many, request_id())),
        ("ids[0]", ack_request(vec![long(FAR)], request_id())),
        ("request_id", ack_request(vec![real.clone()], long(129))),
    ] {
        refused_field(
            &app,
            SERVICE,
            field,
            rpc!(service, notif.ack_notifications(request.clone())),
        )
        .await;
    }
    // 100,000 ids: 200,000 would pass tonic's 4 MiB limit.
    let attack = ack_request(vec![real.clone(); 100_000], request_id());
    let status = refused_huge(&app, SERVICE, &service, |caller| {
        let request = attack.clone();
        async move { caller.notif().ack_notifications(caller.req(request)).await }
    })
    .await;
    assert_invalid_field(&status, "ids");
    assert_eq!(
        app.unacked_notifications(TENANT).await,
        before,
        "nothing was acknowledged"
    );

    // Exactly the bound.
    let mut thousand = uuids(999);
    thousand.push(real.clone());
    let acked = service
        .notif()
        .ack_notifications(service.req(ack_request(thousand, longest_request_id())))
        .await
        .expect("1,000 ids")
        .into_inner()
        .acked;
    assert_eq!(acked, 1);
    let after = app.unacked_notifications(TENANT).await;
    assert_eq!(after.len(), before.len() - 1);
    assert!(after.iter().all(|n| n.id != real));
}

both_dbs!(
    a_huge_participant_list_is_refused_at_once,
    initial_participants_count_the_raw_list,
    conversation_strings_are_bounded,
    update_fields_are_bounded,
    participant_fields_are_bounded,
    page_tokens_are_bounded_before_decoding,
    directory_fields_are_bounded,
    group_members_follow_the_setting,
    acknowledgements_are_bounded,
);
