//! HTTP Basic auth against argon2 password hashes.
//!
//! Users are `name:<argon2 PHC hash>` lines, read from a SecureString SSM
//! parameter (`SLIPWAY_USERS_PARAM`; on the first request, then again
//! once a minute) or, in local runs, straight from
//! `SLIPWAY_USERS`. Checks take the same time whether or not
//! the user exists: an unknown name is verified against a dummy hash.

use std::collections::HashMap;
use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use slipway_core::on_first_use::OnFirstUse;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("users line {line}: expected `name:<argon2 hash>`")]
    Line { line: usize },
    #[error("users line {line}: invalid user name (letters, digits, . _ @ - only)")]
    Name { line: usize },
    #[error("users line {line}: the password hash is not an argon2 PHC string")]
    Hash { line: usize },
    #[error("users line {line}: {name} is listed twice")]
    Duplicate { line: usize, name: String },
    #[error("no users are configured: set SLIPWAY_USERS_PARAM (or SLIPWAY_USERS for local runs)")]
    NoneConfigured,
    #[error("could not read the users: {0}")]
    Parameter(#[source] slipway_control::aws::SecretError),
}

/// The users allowed in, by name, and the credentials verified against
/// them so far.
pub struct Users {
    hashes: HashMap<String, String>,
    /// SHA-256 of each `Authorization` value argon2 accepted → its user.
    /// argon2 is slow on purpose (tens of milliseconds), and a CLI or
    /// browser sends the same header on every request: once verified, it
    /// is not verified again while these users are current (a re-read of
    /// the users starts afresh, so a removed user's cached header goes with
    /// them). Only accepted headers are kept, so guessing still pays
    /// argon2 on every try; a password is never kept, only a digest of it.
    verified: std::sync::Mutex<HashMap<[u8; 32], String>>,
}

/// Verified credentials kept at most; past it the cache starts afresh.
const VERIFIED_MAX: usize = 256;

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the hashes.
        f.debug_set().entries(self.hashes.keys()).finish()
    }
}

fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("slipway-dummy-password"))
}

/// An argon2id PHC string for `password` with a random salt, as stored in
/// the users parameter.
pub fn hash_password(password: &str) -> String {
    let salt =
        SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes()).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters")
        .to_string()
}

impl Users {
    pub fn parse(text: &str) -> Result<Self, UsersError> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let raw = raw.trim();
            if raw.is_empty() || raw.starts_with('#') {
                continue;
            }
            let (name, hash) = raw.split_once(':').ok_or(UsersError::Line { line })?;
            if !valid_user_name(name) {
                return Err(UsersError::Name { line });
            }
            let parsed = PasswordHash::new(hash).map_err(|_| UsersError::Hash { line })?;
            if !parsed.algorithm.as_str().starts_with("argon2") {
                return Err(UsersError::Hash { line });
            }
            if users.insert(name.to_owned(), hash.to_owned()).is_some() {
                return Err(UsersError::Duplicate {
                    line,
                    name: name.to_owned(),
                });
            }
        }
        if users.is_empty() {
            return Err(UsersError::NoneConfigured);
        }
        Ok(Self {
            hashes: users,
            verified: Default::default(),
        })
    }

    /// Reads users from the SSM parameter named by `param`, or from `inline`.
    pub async fn load(
        ssm: &aws_sdk_ssm::Client,
        param: Option<&str>,
        inline: Option<&str>,
    ) -> Result<Self, UsersError> {
        match (param, inline) {
            (Some(name), _) => match slipway_control::aws::secure_parameter(ssm, name).await {
                Ok(value) => Self::parse(&value),
                Err(slipway_control::aws::SecretError::Empty(_)) => Err(UsersError::NoneConfigured),
                Err(e) => Err(UsersError::Parameter(e)),
            },
            (None, inline) => Self::load_inline(inline),
        }
    }

    fn load_inline(inline: Option<&str>) -> Result<Self, UsersError> {
        Self::parse(inline.ok_or(UsersError::NoneConfigured)?)
    }

    /// The user's name if the `Authorization` header holds valid credentials.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<String> {
        let header = authorization?;
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(header.as_bytes()).into();
        let verified = || self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = verified().get(&digest) {
            return Some(name.clone());
        }
        let (name, password) = parse_basic(header)?;
        let hash = self.hashes.get(&name);
        let phc = PasswordHash::new(hash.map_or(dummy_hash(), String::as_str)).ok()?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &phc)
            .is_ok();
        if !(ok && hash.is_some()) {
            return None;
        }
        let mut verified = verified();
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(digest, name.clone());
        Some(name)
    }
}

/// How long users read from their parameter are trusted before they are
/// read again: a revoked user loses access within this.
pub const USERS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// Where the Basic-auth users come from: fixed (the local platform,
/// tests), or the SecureString parameter, read again once what was read is
/// older than its maximum age. A failed re-read keeps the users read last,
/// and is logged; the next request tries again.
#[derive(Clone)]
pub struct UserSource {
    /// The users and when they were read; `None` until a first read worked.
    current: std::sync::Arc<tokio::sync::RwLock<Option<Read>>>,
    parameter: Option<(OnFirstUse<aws_sdk_ssm::Client>, String)>,
    max_age: std::time::Duration,
}

type Read = (std::sync::Arc<Users>, std::time::Instant);
type Slot = tokio::sync::OwnedRwLockWriteGuard<Option<Read>>;

impl From<std::sync::Arc<Users>> for UserSource {
    fn from(users: std::sync::Arc<Users>) -> Self {
        Self {
            current: std::sync::Arc::new(tokio::sync::RwLock::new(Some((
                users,
                std::time::Instant::now(),
            )))),
            parameter: None,
            max_age: std::time::Duration::MAX,
        }
    }
}

impl UserSource {
    /// The users of `inline` (which never changes), parsed now; or those of
    /// the parameter `param`, read on the first request and again every
    /// `max_age`. A cold start waits on no AWS call (the function is ready
    /// sooner); a first request whose read fails is refused, and the next
    /// one reads again.
    pub fn start(
        ssm: &OnFirstUse<aws_sdk_ssm::Client>,
        param: Option<&str>,
        inline: Option<&str>,
        max_age: std::time::Duration,
    ) -> Result<Self, UsersError> {
        let Some(name) = param else {
            return Ok(Self::from(std::sync::Arc::new(Users::load_inline(inline)?)));
        };
        Ok(Self {
            current: std::sync::Arc::new(tokio::sync::RwLock::new(None)),
            parameter: Some((ssm.clone(), name.to_owned())),
            max_age,
        })
    }

    /// [`UserSource::start`], its first read done: an error if it failed.
    pub async fn load(
        ssm: &OnFirstUse<aws_sdk_ssm::Client>,
        param: Option<&str>,
        inline: Option<&str>,
        max_age: std::time::Duration,
    ) -> Result<Self, UsersError> {
        let source = Self::start(ssm, param, inline, max_age)?;
        source.current().await?;
        Ok(source)
    }

    /// The users as they are now; an error only while they could never be
    /// read.
    pub async fn current(&self) -> Result<std::sync::Arc<Users>, UsersError> {
        {
            if let Some((users, read_at)) = &*self.current.read().await
                && (read_at.elapsed() < self.max_age || self.parameter.is_none())
            {
                return Ok(users.clone());
            }
        }
        let slot = self.current.clone().write_owned().await;
        if let Some((users, read_at)) = &*slot
            && read_at.elapsed() < self.max_age
        {
            return Ok(users.clone());
        }
        self.read(slot).await
    }

    /// Reads the parameter into `slot`; on failure keeps what it held.
    async fn read(&self, mut slot: Slot) -> Result<std::sync::Arc<Users>, UsersError> {
        let (ssm, name) = self
            .parameter
            .as_ref()
            .expect("only a parameter's users are read");
        match Users::load(ssm, Some(name), None).await {
            Ok(users) => {
                let users = std::sync::Arc::new(users);
                *slot = Some((users.clone(), std::time::Instant::now()));
                Ok(users)
            }
            Err(e) => match &*slot {
                Some((users, _)) => {
                    tracing::warn!(error = %e, "could not read the users again; keeping those read last");
                    Ok(users.clone())
                }
                None => {
                    tracing::error!(error = %e, "could not read the users");
                    Err(e)
                }
            },
        }
    }
}

/// `Basic base64(name:password)` → (name, password).
fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 4096 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

/// A Basic `Authorization` header value, for clients and tests.
pub fn basic_header(name: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        Users::parse(&format!(
            "# team\nalice:{}\n\nbob:{}\n",
            hash_password("wonderland"),
            hash_password("builder")
        ))
        .unwrap()
    }

    #[test]
    fn the_right_password_authenticates_its_user() {
        let u = users();
        assert_eq!(
            u.authenticate(Some(&basic_header("alice", "wonderland")))
                .as_deref(),
            Some("alice")
        );
        assert_eq!(
            u.authenticate(Some(&basic_header("bob", "builder")))
                .as_deref(),
            Some("bob")
        );
    }

    #[test]
    fn wrong_passwords_unknown_users_and_malformed_headers_are_refused() {
        let u = users();
        for header in [
            basic_header("alice", "builder"),
            basic_header("mallory", "wonderland"),
            basic_header("alice", ""),
            "Bearer abc".to_string(),
            "Basic !!!not-base64".to_string(),
            "Basic".to_string(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("no-colon")
            ),
            String::new(),
        ] {
            assert_eq!(u.authenticate(Some(&header)), None, "{header}");
        }
        assert_eq!(u.authenticate(None), None);
    }

    #[test]
    fn a_header_once_accepted_is_accepted_again_and_a_wrong_one_still_refused() {
        let users = users();
        let alice = basic_header("alice", "wonderland");
        for _ in 0..3 {
            assert_eq!(users.authenticate(Some(&alice)).as_deref(), Some("alice"));
        }
        assert_eq!(users.verified.lock().unwrap().len(), 1);
        // The cache is keyed by the whole header: another password, another
        // user's name with alice's password, and a refused header are not in it.
        for refused in [
            basic_header("alice", "wonderland!"),
            basic_header("bob", "wonderland"),
            alice.replacen("Basic", "Bearer", 1),
        ] {
            assert_eq!(users.authenticate(Some(&refused)), None, "{refused}");
        }
        assert_eq!(users.verified.lock().unwrap().len(), 1);
        assert_eq!(
            users
                .authenticate(Some(&basic_header("bob", "builder")))
                .as_deref(),
            Some("bob")
        );
    }

    #[test]
    fn a_password_may_contain_colons() {
        let u = Users::parse(&format!("carol:{}", hash_password("a:b:c"))).unwrap();
        assert_eq!(
            u.authenticate(Some(&basic_header("carol", "a:b:c")))
                .as_deref(),
            Some("carol")
        );
    }

    #[test]
    fn malformed_user_lists_are_errors_that_name_the_line_not_the_hash() {
        let h = hash_password("x");
        let cases = [
            ("nocolon".to_string(), "line 1: expected"),
            (format!("bad name:{h}"), "line 1: invalid user name"),
            (
                "alice:plaintext-password".to_string(),
                "line 1: the password hash",
            ),
            (
                "alice:$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA".to_string(),
                "line 1: the password hash",
            ),
            (
                format!("alice:{h}\nalice:{h}"),
                "line 2: alice is listed twice",
            ),
            ("# only comments\n".to_string(), "no users are configured"),
        ];
        for (text, needle) in cases {
            let err = Users::parse(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(!err.contains("plaintext-password"));
        }
    }

    #[test]
    fn debug_output_lists_names_only() {
        let shown = format!("{:?}", users());
        assert!(
            shown.contains("alice") && !shown.contains("argon2"),
            "{shown}"
        );
    }
}
