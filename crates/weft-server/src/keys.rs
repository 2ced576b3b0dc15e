//! The keys that sign and verify waitpoint tokens, and the keyring file
//! they live in.
//!
//! Definitions: a *keyring file* is [`Keyring::to_json`], readable by its
//! owner only (0600). [`Keys`] is what a server consults: a fixed keyring
//! (given, or an ephemeral one made at start), or a file it re-reads when
//! the file changes, checked at most once per [`RELOAD_CHECK_INTERVAL`], so
//! `weft keys rotate` takes effect without a restart.
//!
//! Invariants: a keyring file is replaced atomically (written beside it,
//! then renamed over it), so a reader sees the old keyring or the new one,
//! never half of one. A file that stops parsing leaves the last good
//! keyring in force (with a warning), so a bad edit cannot lock every token
//! holder out.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use weft_core::token::{Keyring, GRACE_MS_DEFAULT};
use weft_core::{Clock, SystemClock};

/// The keyring file `weft dev` keeps in its data directory.
pub const DEV_KEYRING_FILE: &str = "signing-keys.json";
/// How often a file-backed [`Keys`] looks at its file's modification time.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a rotated-out key still verifies unless told otherwise.
pub const ROTATE_GRACE_MS_DEFAULT: i64 = GRACE_MS_DEFAULT;

/// Why a keyring could not be read, made or written; the message names the
/// file and says what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeysError(pub String);

impl std::fmt::Display for KeysError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeysError {}

/// The result of a keyring operation.
pub type KeysResult<T> = Result<T, KeysError>;

/// Milliseconds since the Unix epoch by the system clock, which is the clock
/// the stores stamp token expiries with.
pub fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// A keyring of one new random key.
///
/// # Errors
/// When the system has no randomness to give.
pub fn new_keyring() -> KeysResult<Keyring> {
    let key = weft_api::random_signing_key(now_ms()).map_err(|e| KeysError(e.to_string()))?;
    Ok(Keyring::new(key))
}

/// Reads a keyring file.
///
/// # Errors
/// When the file is missing, unreadable or not a keyring; a missing file's
/// message says how to create one.
pub fn read_keyring(path: &Path) -> KeysResult<Keyring> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            KeysError(format!(
                "signing keys {}: no such file; create it with `weft keys rotate --file {}`",
                path.display(),
                path.display()
            ))
        } else {
            KeysError(format!(
                "signing keys {}: cannot read it: {e}",
                path.display()
            ))
        }
    })?;
    Keyring::from_json(&text)
        .map_err(|e| KeysError(format!("signing keys {}: {e}", path.display())))
}

/// Writes a keyring file atomically, readable by its owner only.
///
/// # Errors
/// When the directory is not writable.
pub fn write_keyring(path: &Path, ring: &Keyring) -> KeysResult<()> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        KeysError(format!(
            "signing keys {}: cannot {what}: {e}",
            path.display()
        ))
    };
    let text = ring.to_json().map_err(|e| failed("serialize them", &e))?;
    let name = path
        .file_name()
        .ok_or_else(|| KeysError(format!("signing keys {}: not a file path", path.display())))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp{}", std::process::id()));
    let temp = path.with_file_name(temp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temp).and_then(|mut file| {
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&temp, path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(failed("write them", &e));
    }
    Ok(())
}

/// Reads the keyring at `path`, or makes and writes one when there is no
/// file yet (`weft dev`'s first start). Says whether it made one.
///
/// # Errors
/// As [`read_keyring`] and [`write_keyring`].
pub fn read_or_create_keyring(path: &Path) -> KeysResult<(Keyring, bool)> {
    if path.exists() {
        return Ok((read_keyring(path)?, false));
    }
    let ring = new_keyring()?;
    write_keyring(path, &ring)?;
    Ok((ring, true))
}

/// Makes a new signing key in the keyring file at `path` (creating the file
/// when there is none); the old key verifies for `grace_ms` more. Answers
/// the keyring as written.
///
/// # Errors
/// As [`read_keyring`] and [`write_keyring`]; a negative grace.
pub fn rotate_keyring_file(path: &Path, grace_ms: i64) -> KeysResult<Keyring> {
    if grace_ms < 0 {
        return Err(KeysError(format!(
            "--grace-ms must be >= 0, got {grace_ms}"
        )));
    }
    if !path.exists() {
        let ring = new_keyring()?;
        write_keyring(path, &ring)?;
        return Ok(ring);
    }
    let mut ring = read_keyring(path)?;
    let now = now_ms();
    let key = weft_api::random_signing_key(now).map_err(|e| KeysError(e.to_string()))?;
    ring.rotate(key, now, grace_ms)
        .map_err(|e| KeysError(format!("signing keys {}: {e}", path.display())))?;
    write_keyring(path, &ring)?;
    Ok(ring)
}

/// What tells a file apart from its earlier self without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// The keyring as last read, and when the file was last looked at.
#[derive(Debug)]
struct Loaded {
    ring: Arc<Keyring>,
    stamp: Option<Stamp>,
    checked: Instant,
}

#[derive(Debug)]
struct Inner {
    path: Option<PathBuf>,
    loaded: Mutex<Loaded>,
}

/// The keys a server signs and verifies tokens with. Cheap to clone; clones
/// share the keyring.
#[derive(Clone, Debug)]
pub struct Keys {
    inner: Arc<Inner>,
}

impl Keys {
    /// Always `ring` (until [`Keys::replace`]).
    pub fn fixed(ring: Keyring) -> Self {
        Self::build(None, ring, None)
    }

    /// A random key that lives as long as the process: tokens do not survive
    /// a restart.
    ///
    /// # Errors
    /// When the system has no randomness to give.
    pub fn ephemeral() -> KeysResult<Self> {
        Ok(Self::fixed(new_keyring()?))
    }

    /// The keyring file at `path`, re-read whenever it changes.
    ///
    /// # Errors
    /// As [`read_keyring`]: a missing file is an error that says how to
    /// create one.
    pub fn from_file(path: &Path) -> KeysResult<Self> {
        let stamp = stamp_of(path);
        let ring = read_keyring(path)?;
        Ok(Self::build(Some(path.to_owned()), ring, stamp))
    }

    fn build(path: Option<PathBuf>, ring: Keyring, stamp: Option<Stamp>) -> Self {
        Self {
            inner: Arc::new(Inner {
                path,
                loaded: Mutex::new(Loaded {
                    ring: Arc::new(ring),
                    stamp,
                    checked: Instant::now(),
                }),
            }),
        }
    }

    /// The keyring file, when the keys come from one.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The keyring in force; for a file, re-read first when it changed
    /// (looked at no more than once per [`RELOAD_CHECK_INTERVAL`]).
    pub fn current(&self) -> Arc<Keyring> {
        // Nothing panics while holding the lock; recover it if something did.
        let mut loaded = self
            .inner
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(path) = &self.inner.path {
            if loaded.checked.elapsed() >= RELOAD_CHECK_INTERVAL {
                loaded.checked = Instant::now();
                let stamp = stamp_of(path);
                if stamp != loaded.stamp {
                    // Remember the stamp either way, so a bad file is
                    // reported once, not every second.
                    loaded.stamp = stamp;
                    match read_keyring(path) {
                        Ok(ring) => {
                            tracing::info!(
                                path = %path.display(),
                                signing_key = %ring.signing_key().id,
                                "signing keys reloaded"
                            );
                            loaded.ring = Arc::new(ring);
                        }
                        Err(error) => tracing::warn!(
                            %error,
                            "signing keys changed but cannot be used; keeping the previous ones"
                        ),
                    }
                }
            }
        }
        Arc::clone(&loaded.ring)
    }

    /// Puts `ring` in force at once (a file, if any, is re-read only when it
    /// changes again).
    pub fn replace(&self, ring: Keyring) {
        let mut loaded = self
            .inner
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loaded.ring = Arc::new(ring);
    }
}

#[cfg(test)]
mod tests {
    //! Goal: keyring files are private, atomic, created when asked, and a
    //! rotation is noticed without a restart.
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn files_are_created_private_and_reused() {
        let dir = temp_dir("create");
        let path = dir.join(DEV_KEYRING_FILE);
        let (first, created) = read_or_create_keyring(&path).unwrap();
        assert!(created);
        let (again, created) = read_or_create_keyring(&path).unwrap();
        assert!(!created);
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let missing = Keys::from_file(&dir.join("nope.json")).unwrap_err();
        assert!(missing.0.contains("weft keys rotate --file"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rotation_is_noticed_and_keeps_the_old_key_in_grace() {
        let dir = temp_dir("rotate");
        let path = dir.join("keys.json");
        let first = rotate_keyring_file(&path, 60_000).unwrap();
        let keys = Keys::from_file(&path).unwrap();
        assert_eq!(keys.current().signing_key().id, first.signing_key().id);
        let second = rotate_keyring_file(&path, 60_000).unwrap();
        assert_eq!(second.keys().len(), 2);
        std::thread::sleep(RELOAD_CHECK_INTERVAL + Duration::from_millis(50));
        let now = keys.current();
        assert_eq!(now.signing_key().id, second.signing_key().id);
        assert_eq!(now.keys()[1].id, first.signing_key().id);
        std::fs::write(&path, "not json").unwrap();
        std::thread::sleep(RELOAD_CHECK_INTERVAL + Duration::from_millis(50));
        assert_eq!(keys.current().signing_key().id, second.signing_key().id);
        assert!(rotate_keyring_file(&path, -1).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
