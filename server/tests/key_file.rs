//! The key file: two secrets, the HS256 one and the invitation one (SPEC rule 23), and the
//! upgrade of a file from before the second existed.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use parley_server::auth::KeyFile;
use sha2::Sha256;

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read the key file")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn random_line() -> String {
    let mut bytes = [0u8; 32];
    for b in bytes.iter_mut() {
        *b = rand::random();
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What an old one-line file's invitation secret is derived as.
fn derived_from(line: &str) -> Vec<u8> {
    let secret = URL_SAFE_NO_PAD.decode(line).expect("base64url");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret).expect("any key length");
    mac.update(b"parley invitation secret v1");
    mac.finalize().into_bytes().to_vec()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn a_new_file_holds_two_random_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("parley.key");
    let key = KeyFile::load_or_create(&path).expect("create");
    let written = lines(&path);
    assert_eq!(written.len(), 2, "{written:?}");
    assert_eq!(URL_SAFE_NO_PAD.encode(key.secret()), written[0]);
    assert_eq!(URL_SAFE_NO_PAD.encode(key.invitation_secret()), written[1]);
    assert_eq!(key.invitation_secret().len(), 32);
    assert_ne!(key.secret(), key.invitation_secret());
    assert_ne!(
        key.invitation_secret(),
        derived_from(&written[0]).as_slice(),
        "a new file's invitation secret is random, not derived"
    );
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);

    let again = KeyFile::load_or_create(&path).expect("reload");
    assert_eq!(again.secret(), key.secret());
    assert_eq!(again.invitation_secret(), key.invitation_secret());
    assert_eq!(lines(&path), written, "reloading writes nothing");
}

#[test]
fn an_old_file_gets_its_invitation_line_once_and_keeps_it_through_a_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("parley.key");
    let old = random_line();
    std::fs::write(&path, format!("{old}\n")).expect("write an old key file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    let key = KeyFile::load_or_create(&path).expect("load an old file");
    assert_eq!(
        URL_SAFE_NO_PAD.encode(key.secret()),
        old,
        "the HS256 secret is kept"
    );
    assert_eq!(key.invitation_secret(), derived_from(&old).as_slice());
    assert_eq!(
        lines(&path),
        vec![old.clone(), URL_SAFE_NO_PAD.encode(derived_from(&old))],
        "the invitation line is appended"
    );
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600, "still private");

    // Rotating the HS256 line leaves the invitation secret (and every link sent) as it was.
    let invitation_line = lines(&path)[1].clone();
    let rotated = random_line();
    std::fs::write(&path, format!("{rotated}\n{invitation_line}\n")).expect("rotate line 1");
    let after = KeyFile::load_or_create(&path).expect("load the rotated file");
    assert_eq!(URL_SAFE_NO_PAD.encode(after.secret()), rotated);
    assert_eq!(after.invitation_secret(), key.invitation_secret());
    assert_eq!(lines(&path), vec![rotated, invitation_line]);
}

#[test]
fn replicas_upgrading_one_old_file_at_once_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("parley.key");
    let old = random_line();
    // No trailing newline: the appended line must still be a line of its own.
    std::fs::write(&path, &old).expect("write an old key file");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (path, barrier) = (path.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                KeyFile::load_or_create(&path)
                    .expect("load")
                    .invitation_secret()
                    .to_vec()
            })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().expect("no panic"), derived_from(&old));
    }
    assert_eq!(
        lines(&path),
        vec![old.clone(), URL_SAFE_NO_PAD.encode(derived_from(&old))],
        "one invitation line, whoever appended it"
    );
}

#[test]
fn replicas_creating_one_file_at_once_agree() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("parley.key");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // Never a half-written file: every start succeeds.
                    let key = KeyFile::load_or_create(&path).expect("load or create");
                    (key.secret().to_vec(), key.invitation_secret().to_vec())
                })
            })
            .collect();
        let keys: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect();
        assert!(keys.iter().all(|k| *k == keys[0]), "one key file for all");
        assert_eq!(lines(&path).len(), 2);
        assert_eq!(mode(&path) & 0o777, 0o600);
        let leftovers = std::fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }
}

#[test]
fn a_read_only_old_file_still_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("parley.key");
    let old = random_line();
    std::fs::write(&path, format!("{old}\n")).expect("write an old key file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    }
    let key = KeyFile::load_or_create(&path).expect("a read-only file loads");
    assert_eq!(URL_SAFE_NO_PAD.encode(key.secret()), old);
    assert_eq!(
        key.invitation_secret(),
        derived_from(&old).as_slice(),
        "derived, written or not (root may write a 0400 file)"
    );
}

#[test]
fn files_that_are_not_key_files_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (random_line(), random_line());
    for (name, text) in [
        ("empty", String::new()),
        ("garbage", "not base64 !\n".to_owned()),
        ("short", format!("{}\n", URL_SAFE_NO_PAD.encode([1u8; 16]))),
        (
            "short second",
            format!("{a}\n{}\n", URL_SAFE_NO_PAD.encode([1u8; 16])),
        ),
        ("a third secret", format!("{a}\n{b}\n{a}\n")),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &text).expect("write");
        let err = KeyFile::load_or_create(&path).expect_err(name);
        assert!(
            err.to_string().contains("does not hold a Parley key"),
            "{name}: {err}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            text,
            "{name}: untouched"
        );
    }
    // A repeated invitation line (two appends where locks do not hold) is the same secret.
    let path = dir.path().join("repeated");
    std::fs::write(&path, format!("{a}\n{b}\n{b}\n")).expect("write");
    let key = KeyFile::load_or_create(&path).expect("load");
    assert_eq!(URL_SAFE_NO_PAD.encode(key.invitation_secret()), b);
}
