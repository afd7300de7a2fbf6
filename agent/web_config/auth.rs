//! `basic_auth_users`: bcrypt-hashed passwords, checked off the async
//! runtime, with verified credentials remembered as keyed digests.

use std::collections::{BTreeMap, VecDeque};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use hyper::header::HeaderValue;
use ring::hmac;
use subtle::ConstantTimeEq;

/// How many verified credentials are remembered.
const VERIFIED_CACHE: usize = 64;

/// `basic_auth_users`: user name to bcrypt hash.
///
/// A bcrypt check costs tens of milliseconds by design, too much for every
/// scrape. A credential that passed is remembered as an HMAC-SHA256 of the
/// user and password under a key drawn at random when the file is loaded,
/// so the memory holds no password and no offline-guessable hash; a later
/// request with the same credential is let in after a constant-time
/// comparison against every remembered digest. A failed check is never
/// remembered: every wrong guess pays the full bcrypt cost, and guesses
/// are checked one at a time, so password spraying costs the node at most
/// one core. Unknown users are checked against a configured user's hash,
/// so they cost the same as known ones.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// The hash an unknown user is checked against: the costliest one.
    decoy: String,
    key: hmac::Key,
    verified: Mutex<VecDeque<[u8; 32]>>,
    bcrypt: tokio::sync::Semaphore,
}

impl BasicAuth {
    pub(super) fn new(users: BTreeMap<String, String>) -> Result<Self, String> {
        let mut decoy = (0, String::new());
        for (user, hash) in &users {
            let parts = bcrypt::HashParts::from_str(hash)
                .map_err(|e| format!("basic_auth_users: {user}: not a bcrypt hash ({e})"))?;
            let cost = parts.get_cost();
            if !(4..=31).contains(&cost) {
                return Err(format!(
                    "basic_auth_users: {user}: bcrypt cost {cost} is outside 4-31"
                ));
            }
            if cost > decoy.0 {
                decoy = (cost, hash.clone());
            }
        }
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| "cannot draw a random key".to_owned())?;
        Ok(Self {
            users,
            decoy: decoy.1,
            key,
            verified: Mutex::new(VecDeque::with_capacity(VERIFIED_CACHE)),
            bcrypt: tokio::sync::Semaphore::new(1),
        })
    }

    /// How many users the file lists.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    fn digest(&self, user: &[u8], password: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&(user.len() as u64).to_le_bytes());
        ctx.update(user);
        ctx.update(password);
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether this digest was verified before; compares against every
    /// remembered digest in constant time.
    fn remembered(&self, digest: &[u8; 32]) -> bool {
        let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        let mut found = subtle::Choice::from(0);
        for d in verified.iter() {
            found |= d.ct_eq(digest);
        }
        found.into()
    }

    fn remember(&self, digest: [u8; 32]) {
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= VERIFIED_CACHE {
            verified.pop_front();
        }
        verified.push_back(digest);
    }

    /// The bcrypt check itself (slow: run it off the async runtime).
    fn verify(&self, user: &[u8], password: &[u8]) -> bool {
        let known = std::str::from_utf8(user)
            .ok()
            .and_then(|u| self.users.get(u));
        let hash = known.unwrap_or(&self.decoy);
        let matches = bcrypt::verify(password, hash).unwrap_or(false);
        matches && known.is_some()
    }

    /// Whether an `Authorization` header carries the credentials of a
    /// configured user.
    pub async fn check(self: &Arc<Self>, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        let digest = self.digest(&user, &password);
        if self.remembered(&digest) {
            return true;
        }
        let Ok(_slot) = self.bcrypt.acquire().await else {
            return false;
        };
        // Another request may have verified the same credential meanwhile.
        if self.remembered(&digest) {
            return true;
        }
        let me = self.clone();
        let ok = tokio::task::spawn_blocking(move || me.verify(&user, &password))
            .await
            .unwrap_or(false);
        if ok {
            self.remember(digest);
        }
        ok
    }
}

/// User and password of a `Basic` Authorization header.
fn credentials(header: &HeaderValue) -> Option<(Vec<u8>, Vec<u8>)> {
    let v = header.as_bytes();
    let space = v.iter().position(|&b| b == b' ')?;
    if !v[..space].eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(v[space + 1..].trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn basic_auth_checks_and_remembers() {
        let hash = bcrypt::hash("right", 4).unwrap();
        let auth = Arc::new(BasicAuth::new([("alice".to_owned(), hash)].into()).unwrap());
        let header = |u: &str, p: &str| {
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            HeaderValue::from_str(&format!("Basic {v}")).unwrap()
        };
        assert!(!auth.check(None).await);
        assert!(!auth.check(Some(&header("alice", "wrong"))).await);
        assert!(!auth.check(Some(&header("bob", "right"))).await);
        assert!(
            !auth
                .check(Some(&HeaderValue::from_static("Bearer x")))
                .await
        );
        assert!(auth.verified.lock().unwrap().is_empty());
        assert!(auth.check(Some(&header("alice", "right"))).await);
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
        assert!(auth.check(Some(&header("alice", "right"))).await);
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
        // A remembered credential does not let in a neighbour.
        assert!(!auth.check(Some(&header("alice", "right2"))).await);
        assert!(!auth.check(Some(&header("alic", "eright"))).await);
        for i in 0..VERIFIED_CACHE + 5 {
            auth.remember([i as u8; 32]);
        }
        assert_eq!(auth.verified.lock().unwrap().len(), VERIFIED_CACHE);
    }
}
