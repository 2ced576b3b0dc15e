//! Waitpoint tokens: HMAC-SHA256 over what a token grants, and the keyring
//! that signs and verifies them.
//!
//! Definitions: a token reads
//! `wpt1~<key id>~<execution id>~<waitpoint>~<seq>~<expires_at_ms>~<mac>`,
//! where `mac` is the hex HMAC-SHA256, under the named key, of everything
//! before the last `~`. `~` appears in none of the fields, so the split is
//! unambiguous; the fields are not secret, only unforgeable.
//!
//! Invariants: `verify` reads nothing but the token, the keyring and the
//! clock, so a forged, altered, truncated, expired or wrong-key token is
//! refused before any store is touched; the MAC comparison is constant-time
//! (`Mac::verify_slice`). Whether a valid token is used up is the store's
//! answer (the suspension it names must be in force, the waitpoint open).

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::ids::ExecutionId;
use crate::model::Execution;
use crate::waitpoint::check_waitpoint_name;

/// The version tag every token starts with.
const TOKEN_VERSION: &str = "wpt1";
/// Longest token accepted, in bytes; longer input is refused unread.
pub const TOKEN_LEN_MAX: usize = 512;
/// Shortest signing secret, in bytes.
pub const SECRET_BYTES_MIN: usize = 32;
/// Longest key id, in bytes.
pub const KEY_ID_LEN_MAX: usize = 32;
/// Most keys a keyring holds (the signing key and those in their grace).
pub const KEYS_MAX: usize = 16;
/// How long a rotated-out key still verifies unless told otherwise: 7 days.
pub const GRACE_MS_DEFAULT: i64 = 7 * 24 * 3_600_000;

/// What a token grants: one signal to one waitpoint of one suspension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenClaims {
    /// The suspended execution.
    pub execution_id: ExecutionId,
    /// The waitpoint it opens.
    pub waitpoint: String,
    /// The suspension (`Suspension::seq`) it belongs to.
    pub seq: u32,
    /// When it stops verifying.
    pub expires_at_ms: i64,
}

/// A waitpoint's token as a suspend returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitpointToken {
    /// The waitpoint.
    pub name: String,
    /// The credential that delivers its signal.
    pub token: String,
    /// When the token stops verifying.
    pub expires_at_ms: i64,
}

/// One HMAC key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    /// Named in every token it signs; lowercase letters, digits, `-`, `_`.
    pub id: String,
    /// The secret, hex-encoded.
    secret_hex: String,
    /// When the key was made.
    pub created_at_ms: i64,
    /// Set once the key is rotated out: it verifies until then, and signs
    /// nothing.
    #[serde(default)]
    pub verify_until_ms: Option<i64>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("created_at_ms", &self.created_at_ms)
            .field("verify_until_ms", &self.verify_until_ms)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key named `id` with `secret` (at least `SECRET_BYTES_MIN` bytes).
    pub fn new(id: &str, secret: &[u8], created_at_ms: i64) -> Result<Self> {
        check_key_id(id)?;
        if secret.len() < SECRET_BYTES_MIN {
            return Err(Error::invalid(
                "secret",
                format!("must be at least {SECRET_BYTES_MIN} bytes"),
            ));
        }
        Ok(Self {
            id: id.to_owned(),
            secret_hex: hex_encode(secret),
            created_at_ms,
            verify_until_ms: None,
        })
    }

    /// A key from fresh random bytes: its id is `k` and the hex of
    /// `id_bytes`, its secret `secret`.
    pub fn from_random(id_bytes: &[u8], secret: &[u8], created_at_ms: i64) -> Result<Self> {
        Self::new(&format!("k{}", hex_encode(id_bytes)), secret, created_at_ms)
    }

    fn mac(&self) -> Result<Hmac<Sha256>> {
        let secret = hex_decode(&self.secret_hex)
            .ok_or_else(|| Error::Internal(format!("key {} has a malformed secret", self.id)))?;
        Hmac::<Sha256>::new_from_slice(&secret)
            .map_err(|_| Error::Internal(format!("key {} cannot key HMAC", self.id)))
    }

    fn verifies_at(&self, now_ms: i64) -> bool {
        self.verify_until_ms.is_none_or(|until| now_ms < until)
    }
}

fn check_key_id(id: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if id.is_empty() || id.len() > KEY_ID_LEN_MAX || !id.chars().all(allowed) {
        return Err(Error::invalid(
            "key id",
            format!("must be 1..={KEY_ID_LEN_MAX} of a-z 0-9 - _"),
        ));
    }
    Ok(())
}

/// The keys that sign and verify tokens: the first signs, every key still
/// in its grace period verifies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyring {
    keys: Vec<SigningKey>,
}

impl Keyring {
    /// A keyring of one signing key.
    pub fn new(key: SigningKey) -> Self {
        Self { keys: vec![key] }
    }

    /// Parses a keyring file; says what is wrong with it.
    pub fn from_json(text: &str) -> Result<Self> {
        let ring: Keyring = serde_json::from_str(text)
            .map_err(|e| Error::invalid("keyring", format!("not a Weft keyring: {e}")))?;
        let Some(first) = ring.keys.first() else {
            return Err(Error::invalid("keyring", "holds no key"));
        };
        if first.verify_until_ms.is_some() {
            return Err(Error::invalid(
                "keyring",
                "its first key must be the signing key (no verify_until_ms)",
            ));
        }
        for key in &ring.keys {
            check_key_id(&key.id)?;
            key.mac()?;
        }
        Ok(ring)
    }

    /// The keyring file's text.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| Error::Internal(format!("keyring does not serialize: {e}")))
    }

    /// The key that signs new tokens.
    pub fn signing_key(&self) -> &SigningKey {
        &self.keys[0]
    }

    /// Every key, signing key first.
    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// Makes `key` the signing key; the old one verifies for `grace_ms`
    /// more, and keys whose grace is over are dropped.
    pub fn rotate(&mut self, key: SigningKey, now_ms: i64, grace_ms: i64) -> Result<()> {
        if self.keys.iter().any(|k| k.id == key.id) {
            return Err(Error::invalid("key id", format!("{} is in use", key.id)));
        }
        if let Some(old) = self.keys.first_mut() {
            old.verify_until_ms = Some(now_ms.saturating_add(grace_ms.max(0)));
        }
        self.keys.retain(|k| k.verifies_at(now_ms));
        self.keys.insert(0, key);
        self.keys.truncate(KEYS_MAX);
        Ok(())
    }

    /// The token for `claims`, signed by the signing key.
    pub fn sign(&self, claims: &TokenClaims) -> Result<String> {
        let key = self.signing_key();
        let body = format!(
            "{TOKEN_VERSION}~{}~{}~{}~{}~{}",
            key.id, claims.execution_id, claims.waitpoint, claims.seq, claims.expires_at_ms
        );
        let mut mac = key.mac()?;
        mac.update(body.as_bytes());
        Ok(format!(
            "{body}~{}",
            hex_encode(&mac.finalize().into_bytes())
        ))
    }

    /// What `token` grants, if a key of this ring signed it and it has not
    /// expired at `now_ms`; `InvalidToken` otherwise, whatever the reason.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<TokenClaims> {
        if token.len() > TOKEN_LEN_MAX {
            return Err(Error::InvalidToken);
        }
        let (body, mac_hex) = token.rsplit_once('~').ok_or(Error::InvalidToken)?;
        let fields: Vec<&str> = body.split('~').collect();
        let [version, key_id, execution_id, waitpoint, seq, expires_at_ms] = fields[..] else {
            return Err(Error::InvalidToken);
        };
        if version != TOKEN_VERSION {
            return Err(Error::InvalidToken);
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id && k.verifies_at(now_ms))
            .ok_or(Error::InvalidToken)?;
        let tag = hex_decode(mac_hex).ok_or(Error::InvalidToken)?;
        let mut mac = key.mac()?;
        mac.update(body.as_bytes());
        mac.verify_slice(&tag).map_err(|_| Error::InvalidToken)?;
        // Signed by us, so the fields are well-formed unless a key leaked;
        // parse them strictly anyway.
        let claims = TokenClaims {
            execution_id: ExecutionId::parse(execution_id).map_err(|_| Error::InvalidToken)?,
            waitpoint: waitpoint.to_owned(),
            seq: seq.parse().map_err(|_| Error::InvalidToken)?,
            expires_at_ms: expires_at_ms.parse().map_err(|_| Error::InvalidToken)?,
        };
        check_waitpoint_name("token", &claims.waitpoint).map_err(|_| Error::InvalidToken)?;
        if claims.expires_at_ms <= now_ms {
            return Err(Error::InvalidToken);
        }
        Ok(claims)
    }

    /// One token per waitpoint of the execution's last suspension.
    pub fn tokens_for(&self, exec: &Execution) -> Result<Vec<WaitpointToken>> {
        let Some(suspension) = &exec.suspension else {
            return Ok(Vec::new());
        };
        suspension
            .waitpoints
            .iter()
            .map(|w| {
                let claims = TokenClaims {
                    execution_id: exec.id.clone(),
                    waitpoint: w.name.clone(),
                    seq: suspension.seq,
                    expires_at_ms: w.expires_at_ms,
                };
                Ok(WaitpointToken {
                    name: w.name.clone(),
                    token: self.sign(&claims)?,
                    expires_at_ms: w.expires_at_ms,
                })
            })
            .collect()
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    //! Tokens verify only unaltered, unexpired and under a key in its grace;
    //! every other input is `InvalidToken`.
    use super::*;
    use crate::ids::PartitionId;

    fn key(id: &str, fill: u8) -> SigningKey {
        SigningKey::new(id, &[fill; 32], 0).unwrap()
    }

    fn claims() -> TokenClaims {
        TokenClaims {
            execution_id: ExecutionId::mint(PartitionId(7), 1_000),
            waitpoint: "approve.deploy".into(),
            seq: 3,
            expires_at_ms: 10_000,
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let ring = Keyring::new(key("k1", 1));
        let granted = claims();
        let token = ring.sign(&granted).unwrap();
        assert_eq!(ring.verify(&token, 9_999).unwrap(), granted);
        assert_eq!(ring.verify(&token, 10_000), Err(Error::InvalidToken));
    }

    #[test]
    fn every_alteration_is_refused() {
        let ring = Keyring::new(key("k1", 1));
        let token = ring.sign(&claims()).unwrap();
        let fields: Vec<&str> = token.split('~').collect();
        for i in 0..fields.len() {
            let mut altered: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            altered[i] = match i {
                3 => "approve.other".into(),
                4 => "4".into(),
                5 => "99999999".into(),
                _ => format!("{}0", altered[i]),
            };
            let altered = altered.join("~");
            assert_eq!(ring.verify(&altered, 0), Err(Error::InvalidToken), "{i}");
        }
        for cut in [1, 10, token.len() / 2, token.len() - 1] {
            assert_eq!(ring.verify(&token[..cut], 0), Err(Error::InvalidToken));
        }
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(ring.verify(&flipped, 0), Err(Error::InvalidToken));
        assert_eq!(ring.verify("", 0), Err(Error::InvalidToken));
        assert_eq!(
            ring.verify(&"~".repeat(TOKEN_LEN_MAX + 1), 0),
            Err(Error::InvalidToken)
        );
    }

    #[test]
    fn another_keys_token_is_refused() {
        let ours = Keyring::new(key("k1", 1));
        let theirs = Keyring::new(key("k1", 2));
        let token = theirs.sign(&claims()).unwrap();
        assert_eq!(ours.verify(&token, 0), Err(Error::InvalidToken));
    }

    #[test]
    fn rotation_keeps_the_old_key_verifying_for_its_grace() {
        let mut ring = Keyring::new(key("k1", 1));
        let old = ring.sign(&claims()).unwrap();
        ring.rotate(key("k2", 2), 1_000, 500).unwrap();
        let new = ring.sign(&claims()).unwrap();
        assert!(new.contains("~k2~"));
        assert!(ring.verify(&old, 1_499).is_ok());
        assert!(ring.verify(&new, 1_499).is_ok());
        assert_eq!(ring.verify(&old, 1_500), Err(Error::InvalidToken));
        // The next rotation drops the key whose grace is over.
        ring.rotate(key("k3", 3), 2_000, 500).unwrap();
        let ids: Vec<&str> = ring.keys().iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["k3", "k2"]);
        assert!(ring.rotate(key("k2", 4), 2_000, 0).is_err());
    }

    #[test]
    fn keyrings_round_trip_and_bad_files_are_refused() {
        let mut ring = Keyring::new(key("k1", 1));
        ring.rotate(key("k2", 2), 1_000, 500).unwrap();
        let text = ring.to_json().unwrap();
        assert_eq!(Keyring::from_json(&text).unwrap(), ring);
        assert!(!format!("{:?}", ring).contains(&hex_encode(&[1; 32])));
        for bad in [
            "",
            "{}",
            r#"{"keys":[]}"#,
            r#"{"keys":[{"id":"K!","secret_hex":"00","created_at_ms":0}]}"#,
            r#"{"keys":[{"id":"k","secret_hex":"zz","created_at_ms":0}]}"#,
        ] {
            assert!(Keyring::from_json(bad).is_err(), "{bad}");
        }
        assert!(SigningKey::new("k", &[0; 8], 0).is_err());
        let random = SigningKey::from_random(&[0xab, 0x01], &[1; 32], 0).unwrap();
        assert_eq!(random.id, "kab01");
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_decode(&hex_encode(&bytes)).unwrap(), bytes);
        assert!(hex_decode("abc").is_none());
        assert!(hex_decode("AB").is_none());
    }
}
