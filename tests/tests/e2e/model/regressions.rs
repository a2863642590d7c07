//! Disagreements the model test found, each kept as a plain test of the shortest sequence.
//!
//! Fixed: a removed participant's frozen view of the conversation (rule 15) was taken as their
//! participant row's kind said, not as they are judged when they read it (rule 18: the row OR the
//! directory entry says EXTERNAL, at once), so someone whose directory entry says EXTERNAL read,
//! once removed, a `participant_count` that counted internal participants. The frozen view now
//! keeps both the internal and the external reading (`visibility::freeze`).

use parley_tests::*;
use pb::participant::State as PState;

/// Turns `id`'s directory entry EXTERNAL.
async fn make_external(app: &TestApp, id: &str) {
    let service = app.service(TENANT);
    let mut entry = service.get_user(id).await.expect("the directory entry");
    entry.kind = pb::user::Kind::External as i32;
    service
        .upsert(entry)
        .await
        .expect("the entry turns EXTERNAL");
}

/// The model test's shortest failing sequence: carol (internal row) is judged external from the
/// moment her directory entry says so, and reads a count of the owner alone; removed, she must
/// read the conversation as it was just after her removal, as she saw it then (rule 15): still
/// the owner alone, never bob, an internal participant (rule 18).
async fn a_removed_viewer_judged_external_keeps_the_external_count(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let carol = app.user(TENANT, "carol");
    let c = alice
        .create_group("shared", &["bob", "carol"])
        .await
        .expect("create");
    make_external(&app, "carol").await;
    let active = carol.get(&c.id).await.expect("get while active");
    assert_eq!(active.participant_count, 1, "the owner only (rule 18)");

    alice.remove(&c.id, "carol").await.expect("remove carol");
    let removed = carol.get(&c.id).await.expect("get once removed");
    assert_eq!(removed.viewer_state(), PState::Removed);
    assert_eq!(
        removed.participant_count, 1,
        "a viewer judged external never counts internal participants (rules 15, 18)"
    );
    let listed = carol
        .list_conversations_with(true, 0)
        .await
        .expect("ListConversations");
    assert_eq!(listed, vec![removed]);
}

/// The same rule when the directory entry turns EXTERNAL after the removal: from then on, at
/// once, the count carol reads is the one an external viewer read at her removal (the owner
/// and the external participants then active), not the internal one.
async fn a_viewer_judged_external_after_removal_reads_the_external_count(db: Db) {
    let app = spawn_app(db).await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let carol = app.user(TENANT, "carol");
    let c = alice
        .create_group("shared", &["bob", "carol", "ext1"])
        .await
        .expect("create");
    alice.remove(&c.id, "carol").await.expect("remove carol");
    assert_eq!(
        carol.get(&c.id).await.expect("get").participant_count,
        3,
        "internal: alice, bob, ext1"
    );

    make_external(&app, "carol").await;
    let now = carol.get(&c.id).await.expect("get");
    assert_eq!(now.viewer_state(), PState::Removed);
    assert_eq!(
        now.participant_count, 2,
        "judged external at once (rule 18): alice and ext1, as at her removal (rule 15)"
    );
}

both_dbs!(
    a_removed_viewer_judged_external_keeps_the_external_count,
    a_viewer_judged_external_after_removal_reads_the_external_count,
);
