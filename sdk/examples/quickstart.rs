//! The parley-sdk quickstart: sync a few users into the directory, create a conversation, add
//! participants, handle typed errors, send a message and list the conversation's events.
//!
//! Run a server (see the README), then, from the directory holding its key file:
//!
//! ```text
//! cargo run -p parley-sdk --features dev-tokens --example quickstart
//! ```
//!
//! `PARLEY_ENDPOINT` (default `http://127.0.0.1:50051`) and `PARLEY_KEY_FILE` (default
//! `parley.key`, as the server) say where the server is and which key file it signs with. The
//! example mints its own development tokens from that key file; real applications get their
//! tokens from the identity provider.

use std::error::Error as StdError;

use futures::TryStreamExt;
use parley_sdk::{
    AddParticipants, Client, Error, ListEvents, NewConversation, Outcome, Permission,
    PolicyBuilder, UpsertUser,
    dev::{DevClaims, DevKey},
};

// A tenant of its own, so that the README's grpcurl walk-through (tenant `acme`) is left alone.
const TENANT: &str = "quickstart";

#[tokio::main]
async fn main() -> Result<(), Box<dyn StdError>> {
    let endpoint =
        std::env::var("PARLEY_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:50051".to_owned());
    let key_file = std::env::var("PARLEY_KEY_FILE").unwrap_or_else(|_| "parley.key".to_owned());
    let key = DevKey::load(&key_file)?;
    println!("Parley at {endpoint}, tokens signed with {key_file}");

    // A service principal (e.g. the identity system) keeps the directory in sync.
    let service = Client::builder(&endpoint)
        .bearer_token(key.mint(&DevClaims::service(TENANT, "quickstart-sync"))?)
        .user_agent("parley-quickstart")
        .connect()
        .await?;
    let directory = service.directory();
    for (id, name) in [
        ("alice", "Alice"),
        ("bob", "Bob"),
        ("carol", "Carol"),
        ("dave", "Dave"),
    ] {
        directory
            .upsert_user(
                UpsertUser::internal(id)
                    .display_name(name)
                    .email(format!("{id}@{TENANT}.example")),
            )
            .await?;
    }
    directory
        .upsert_user(
            UpsertUser::external("sam")
                .display_name("Sam (supplier)")
                .email("sam@supplier.example"),
        )
        .await?;
    directory
        .upsert_group("design", "Design team", ["carol", "dave"])
        .await?;
    println!("directory: 5 users and the group `design`");

    // Alice, an internal user, creates a conversation with Bob.
    let as_user = |id: &str| {
        let claims = DevClaims::internal(TENANT, id).email(format!("{id}@{TENANT}.example"));
        key.mint(&claims)
    };
    let alice = Client::connect(&endpoint, as_user("alice")?).await?;
    let conversation = alice
        .conversations()
        .create(
            NewConversation::group(["bob"])
                .title("Launch plan")
                .policy(PolicyBuilder::new().add_external(Permission::Owner)),
        )
        .await?;
    println!(
        "created {:?} ({}) owned by {}, {} participants",
        conversation.title, conversation.id, conversation.owner_id, conversation.participant_count
    );

    // Add a group's members, an external user and someone invited by email.
    let added = alice
        .participants()
        .add(
            AddParticipants::new(&conversation.id)
                .group("design")
                .user("sam")
                .email("pat@agency.example"),
        )
        .await?;
    for result in &added.results {
        let who = match result.invitee.as_ref().and_then(|i| i.invitee.as_ref()) {
            Some(parley_sdk::pb::invitee::Invitee::UserId(id)) => id.clone(),
            Some(parley_sdk::pb::invitee::Invitee::Email(email)) => email.clone(),
            Some(parley_sdk::pb::invitee::Invitee::GroupId(group)) => group.clone(),
            None => "?".to_owned(),
        };
        let via = if result.via_group_id.is_empty() {
            String::new()
        } else {
            format!(" (via {})", result.via_group_id)
        };
        println!("  {who}{via}: {:?}", result.outcome());
    }
    assert!(added.results.iter().all(|r| r.outcome() != Outcome::Failed));

    // Typed errors: Bob is a member, and only the owner may remove people.
    let bob = alice.with_token(as_user("bob")?)?;
    match bob.participants().remove(&conversation.id, "carol").await {
        Err(Error::NoRemovePermission {
            conversation_id, ..
        }) => println!("bob may not remove carol from {conversation_id}: NO_REMOVE_PERMISSION"),
        other => println!("unexpected: {other:?}"),
    }
    // An atomic batch with failing invitees applies nothing and names each failure.
    match alice
        .participants()
        .add(AddParticipants::new(&conversation.id).users(["frank", "alice"]))
        .await
    {
        Err(error) if !error.invitee_failures().is_empty() => {
            println!("adding frank and alice failed as a whole, nothing was applied:");
            for failure in error.invitee_failures() {
                let reason = failure.reason.map_or("?", |r| r.as_str_name());
                println!("  invitee #{}: {reason}", failure.index);
            }
        }
        other => println!("unexpected: {other:?}"),
    }

    // A message, sent once even if the call is retried.
    let message = alice
        .conversations()
        .send_message(&conversation.id, "Kick-off on Monday!")
        .await?;
    println!("message #{} sent by {}", message.seq, message.sender_id);

    // Every event of the timeline, across pages.
    println!("events:");
    let mut events = alice
        .participants()
        .list_events_stream(ListEvents::new(&conversation.id).page_size(2));
    while let Some(event) = events.try_next().await? {
        println!(
            "  #{} {:?} by {} {:?}",
            event.seq,
            event.r#type(),
            event.actor_id,
            event.subject_ids
        );
    }
    Ok(())
}
