//! Authentication of `connection.init`: a JWT or an API key becomes an
//! [`Identity`], the user id and the channels it may use.
//!
//! JWTs are HS256 with the configured secret; `sub` and `exp` are required,
//! `nbf` is honoured, `aud` and `iss` are checked when configured, `channels`
//! (patterns) and `role` are optional, and `role: "admin"` may use every
//! channel. API keys are static keys from the configuration, each with
//! its user id and patterns. In development mode the key `development` is
//! accepted too, grants every channel and lets the client pick its user id,
//! so two browser tabs can act as two users without minting tokens. The
//! server's admin token is accepted as an API key too: it connects as the
//! user [`ADMIN_USER`] with every channel, so the dashboard reads any
//! channel with the one secret its operator already has.
//!
//! A JWT connection may later present a new token for the same user
//! ([`Authenticator::refresh`]); its permissions and expiry become the new
//! token's, its user never changes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::names::{check_tenant, parse_patterns, ChannelPattern};
use crate::protocol::Credentials;
use crate::settings::SETTINGS_CHANNEL;

/// The API key accepted in development mode.
pub const DEVELOPMENT_KEY: &str = "development";

/// The user a development-key connection acts as when it names none.
pub const DEVELOPMENT_USER: &str = "developer";

/// The user a connection that authenticated with the admin token acts as.
pub const ADMIN_USER: &str = "nova:admin";

/// The prefix of the server's own user ids ([`ADMIN_USER`]): no token or
/// key may name a user with it, so no real user shares the dashboard's
/// presence, rate limits or direct messages.
pub const RESERVED_USER_PREFIX: &str = "nova:";

/// Clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 5;

/// How long after its `exp` a token is still honoured (clock skew between
/// the issuer and this server): a connection ends this long after `exp`.
pub const EXPIRY_LEEWAY: Duration = Duration::from_secs(LEEWAY_SECS);

/// Who a connection is and what it may do.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user id: the JWT's `sub` or the API key's user.
    pub user_id: Arc<str>,
    /// Channels granted, by pattern.
    grants: Vec<ChannelPattern>,
    /// `role: "admin"`: every channel.
    admin: bool,
    /// The JWT's `exp`; the session closes with 4002 once it passes.
    pub expires_at: Option<SystemTime>,
    /// Whether it came from a JWT (an API key's identity cannot be
    /// refreshed).
    jwt: bool,
    /// The tenant (the JWT's `tenant` claim, the API key's configured
    /// one); `None` is the default tenant. Channels, presence, user sends
    /// and broadcasts are the tenant's own.
    pub tenant: Option<Arc<str>>,
}

impl Identity {
    /// Whether this identity may subscribe and publish to `channel`.
    pub fn may_access(&self, channel: &str) -> bool {
        self.admin || self.grants.iter().any(|p| p.matches(channel))
    }

    /// Whether this identity may subscribe to `channel`: what it may access,
    /// and the settings channel, which every authenticated client may
    /// follow (but none publish to).
    pub fn may_subscribe(&self, channel: &str) -> bool {
        self.may_access(channel) || channel == SETTINGS_CHANNEL
    }

    /// Whether it came from a JWT.
    pub fn is_jwt(&self) -> bool {
        self.jwt
    }

    /// When a connection with this identity ends: `exp` plus the leeway;
    /// `None` when it never does.
    pub fn ends_at(&self) -> Option<SystemTime> {
        self.expires_at.and_then(|exp| exp.checked_add(EXPIRY_LEEWAY))
    }

    /// Whether the JWT has expired by `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.ends_at().is_some_and(|end| now > end)
    }
}

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Bad signature, malformed token, unknown key, bad claims: 4001.
    #[error("{0}")]
    Invalid(String),
    /// A JWT past its `exp`: 4002.
    #[error("token expired")]
    Expired,
    /// A genuine token this server will not take (valid for longer than
    /// the configured maximum): 4001, but not a guess, so the throttle of
    /// failed authentications does not count it.
    #[error("{0}")]
    Refused(String),
}

/// Why `connection.refresh` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// The connection authenticated with an API key: it has no expiry and
    /// nothing to refresh (4005; the connection stays as it is).
    #[error("this connection authenticated with an API key, which does not expire: there is nothing to refresh")]
    NotRefreshable,
    /// The token is valid but names another user (4001, and the connection
    /// is closed: a connection's user never changes).
    #[error("the token's 'sub' is not this connection's user; a connection's user never changes")]
    OtherUser,
    /// The new token is for another tenant.
    #[error("the token's 'tenant' is not this connection's tenant; a connection's tenant never changes")]
    OtherTenant,
    /// The token itself was refused (4001, or 4002 when expired); the
    /// current credentials stay in force.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// A static API key and what it grants.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// The tenant its connections belong to; `None`: the default one.
    pub tenant: Option<String>,
    /// The secret key.
    pub key: String,
    /// The user id connections with this key act as.
    pub user_id: String,
    /// The channels it grants.
    pub channels: Vec<ChannelPattern>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
}

/// How client JWTs are verified.
#[derive(Debug, Clone, Default)]
pub struct JwtConfig {
    /// The HS256 secret.
    pub secret: Vec<u8>,
    /// When set, tokens must carry this `aud`.
    pub audience: Option<String>,
    /// When set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// The longest a token may still be valid for when presented: a token
    /// whose `exp` is further away is refused, so a leaked token cannot be
    /// one that never expires. `None`: no limit.
    pub max_lifetime: Option<Duration>,
}

/// The default of [`JwtConfig::max_lifetime`].
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Verifies credentials. Built once at start and shared by every session.
pub struct Authenticator {
    jwt: Option<(DecodingKey, Validation)>,
    max_lifetime: Option<Duration>,
    api_keys: Vec<ApiKey>,
    development_key: bool,
    /// The admin token, taken as an API key for [`ADMIN_USER`].
    admin_key: Option<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("jwt", &self.jwt.is_some())
            .field("api_keys", &self.api_keys.len())
            .field("development_key", &self.development_key)
            .field("admin_key", &self.admin_key.is_some())
            .finish()
    }
}

impl Authenticator {
    /// `jwt` enables JWTs; `development_key` enables the key
    /// [`DEVELOPMENT_KEY`]; `admin_key` (the admin token) is accepted as an
    /// API key for [`ADMIN_USER`] with every channel.
    pub fn new(jwt: Option<&JwtConfig>, api_keys: Vec<ApiKey>, development_key: bool, admin_key: Option<&str>) -> Self {
        let max_lifetime = jwt.and_then(|c| c.max_lifetime);
        let jwt = jwt.map(|config| {
            let mut validation = Validation::new(Algorithm::HS256);
            let mut required = vec!["exp", "sub"];
            validation.leeway = LEEWAY_SECS;
            validation.validate_nbf = true;
            match &config.audience {
                Some(aud) => {
                    validation.set_audience(&[aud]);
                    required.push("aud");
                }
                // Not configured: a token's `aud` is not checked (the library
                // would otherwise refuse every token that has one).
                None => validation.validate_aud = false,
            }
            if let Some(iss) = &config.issuer {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            validation.set_required_spec_claims(&required);
            (DecodingKey::from_secret(&config.secret), validation)
        });
        let admin_key = admin_key.filter(|k| !k.is_empty()).map(str::to_owned);
        Authenticator { jwt, max_lifetime, api_keys, development_key, admin_key }
    }

    /// Checks credentials and returns who they belong to.
    pub fn authenticate(&self, credentials: &Credentials) -> Result<Identity, AuthError> {
        match credentials {
            Credentials::Token(token) => self.verify_jwt(token),
            Credentials::ApiKey { key, user_id } => self.verify_key(key, user_id.as_deref()),
        }
    }

    /// Checks the token of a `connection.refresh` on a connection that
    /// authenticated as `current`: the identity the connection has from now
    /// on. Failures are not counted by the throttle of failed
    /// authentications: the connection is authenticated already and its
    /// frames are rate-limited.
    pub fn refresh(&self, current: &Identity, token: &str) -> Result<Identity, RefreshError> {
        if !current.jwt {
            return Err(RefreshError::NotRefreshable);
        }
        let next = self.verify_jwt(token)?;
        if next.user_id != current.user_id {
            return Err(RefreshError::OtherUser);
        }
        if next.tenant != current.tenant {
            return Err(RefreshError::OtherTenant);
        }
        Ok(next)
    }

    fn verify_jwt(&self, token: &str) -> Result<Identity, AuthError> {
        let (key, validation) =
            self.jwt.as_ref().ok_or_else(|| AuthError::Invalid("JWT authentication is not configured".into()))?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad token signature".into()),
                ErrorKind::ImmatureSignature => AuthError::Invalid("token not valid yet ('nbf')".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("token 'aud' is not this server".into()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("token 'iss' is not trusted".into()),
                ErrorKind::MissingRequiredClaim(claim) => AuthError::Invalid(format!("token has no '{claim}' claim")),
                _ => AuthError::Invalid(format!("invalid token: {e}")),
            })?
            .claims;
        check_user_id(&claims.sub).map_err(|why| AuthError::Invalid(format!("token 'sub': {why}")))?;
        if let Some(max) = self.max_lifetime {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            if claims.exp > now.saturating_add(max.as_secs()) {
                return Err(AuthError::Refused(format!(
                    "token 'exp' is more than {} from now, longer than this server accepts",
                    humantime::format_duration(max)
                )));
            }
        }
        let grants = parse_patterns(claims.channels.as_deref().unwrap_or_default())
            .map_err(|e| AuthError::Invalid(format!("token 'channels': {e}")))?;
        if let Some(tenant) = &claims.tenant {
            check_tenant(tenant).map_err(|why| AuthError::Invalid(format!("token 'tenant' {why}")))?;
        }
        Ok(Identity {
            user_id: Arc::from(claims.sub),
            grants,
            admin: claims.role.as_deref() == Some("admin"),
            // Beyond what SystemTime holds: the token does not expire.
            expires_at: UNIX_EPOCH.checked_add(Duration::from_secs(claims.exp)),
            jwt: true,
            tenant: claims.tenant.map(Arc::from),
        })
    }

    fn verify_key(&self, key: &str, user_id: Option<&str>) -> Result<Identity, AuthError> {
        if self.development_key && constant_time_eq(key.as_bytes(), DEVELOPMENT_KEY.as_bytes()) {
            let user = user_id.unwrap_or(DEVELOPMENT_USER);
            check_user_id(user).map_err(|why| AuthError::Invalid(format!("'data.user_id': {why}")))?;
            let all = ChannelPattern::parse("*:*").map_err(|e| AuthError::Invalid(e.to_string()))?;
            return Ok(Identity {
                user_id: Arc::from(user),
                grants: vec![all],
                admin: false,
                expires_at: None,
                jwt: false,
                tenant: None,
            });
        }
        // Compare against every key so the time taken does not tell which
        // prefix matched.
        let found = self.api_keys.iter().fold(None, |found, k| {
            if constant_time_eq(k.key.as_bytes(), key.as_bytes()) {
                Some(k)
            } else {
                found
            }
        });
        // Compared whether or not a configured key matched, for the same
        // reason.
        let admin = self.admin_key.as_ref().is_some_and(|admin| constant_time_eq(admin.as_bytes(), key.as_bytes()));
        if admin {
            if user_id.is_some_and(|u| u != ADMIN_USER) {
                return Err(AuthError::Invalid("the admin token cannot choose its user id".into()));
            }
            return Ok(Identity {
                user_id: Arc::from(ADMIN_USER),
                grants: Vec::new(),
                admin: true,
                expires_at: None,
                jwt: false,
                tenant: None,
            });
        }
        let api_key = found.ok_or_else(|| AuthError::Invalid("unknown API key".into()))?;
        if user_id.is_some_and(|u| u != api_key.user_id) {
            return Err(AuthError::Invalid("this API key cannot choose its user id".into()));
        }
        Ok(Identity {
            user_id: Arc::from(api_key.user_id.as_str()),
            grants: api_key.channels.clone(),
            admin: false,
            expires_at: None,
            jwt: false,
            tenant: api_key.tenant.as_deref().map(Arc::from),
        })
    }
}

/// A user id is 1–128 characters with no control characters: it is echoed in
/// presence lists, logs and URLs.
pub fn check_user_id(user: &str) -> Result<(), &'static str> {
    // Characters, as the rule says, not bytes: a name in another script
    // is not held to a third of the length.
    if user.is_empty() || user.chars().count() > 128 {
        return Err("must be 1 to 128 characters");
    }
    if user.starts_with(RESERVED_USER_PREFIX) {
        return Err("must not start with 'nova:', which names the server's own users");
    }
    if user.chars().any(char::is_control) {
        return Err("must not hold control characters");
    }
    // Bidirectional controls make a user id display as another one in
    // listings and logs (Trojan Source).
    if user
        .chars()
        .any(|c| matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
    {
        return Err("must not hold bidirectional control characters");
    }
    Ok(())
}

/// Equality whose running time depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret-test-secret-test-secret";

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn token(claims: serde_json::Value, secret: &[u8]) -> Credentials {
        Credentials::Token(encode(&Header::default(), &claims, &EncodingKey::from_secret(secret)).unwrap())
    }

    fn jwt_config() -> JwtConfig {
        JwtConfig { secret: SECRET.to_vec(), audience: None, issuer: None, max_lifetime: None }
    }

    fn auth() -> Authenticator {
        let key = ApiKey {
            key: "k-123".into(),
            user_id: "svc".into(),
            channels: parse_patterns(&["team:*"]).unwrap(),
            tenant: None,
        };
        Authenticator::new(Some(&jwt_config()), vec![key], false, Some(ADMIN_TOKEN))
    }

    const ADMIN_TOKEN: &str = "the-admin-token-0123456789";

    #[test]
    fn valid_jwt_grants_its_patterns() {
        let id = auth()
            .authenticate(&token(json!({"sub":"alice","exp":now()+60,"channels":["conversation:*"]}), SECRET))
            .unwrap();
        assert_eq!(&*id.user_id, "alice");
        assert!(id.may_access("conversation:c1"));
        assert!(!id.may_access("team:t1"));
        assert!(!id.expired(SystemTime::now()));
    }

    #[test]
    fn a_token_valid_for_longer_than_the_maximum_is_refused() {
        let config = JwtConfig { max_lifetime: Some(Duration::from_secs(3600)), ..jwt_config() };
        let strict = Authenticator::new(Some(&config), vec![], false, None);
        let forever = token(json!({"sub":"a","exp":u64::MAX}), SECRET);
        assert!(matches!(strict.authenticate(&forever), Err(AuthError::Refused(why)) if why.contains("'exp'")));
        let day = token(json!({"sub":"a","exp":now()+86_400}), SECRET);
        assert!(strict.authenticate(&day).is_err());
        assert!(strict.authenticate(&token(json!({"sub":"a","exp":now()+3000}), SECRET)).is_ok());
        assert!(auth().authenticate(&day).is_ok(), "no maximum configured");
    }

    #[test]
    fn user_ids_with_bidirectional_controls_are_refused() {
        for bad in ["admin\u{202E}nimda", "a\u{2066}b", "\u{200F}x", "a\u{061C}"] {
            assert!(check_user_id(bad).is_err(), "{bad:?}");
            let forged = token(json!({"sub": bad, "exp": now() + 60}), SECRET);
            assert!(auth().authenticate(&forged).is_err(), "{bad:?}");
        }
        assert!(check_user_id("émile-ü").is_ok());
    }

    #[test]
    fn jwt_without_channels_is_denied_everything() {
        let id = auth().authenticate(&token(json!({"sub":"a","exp":now()+60}), SECRET)).unwrap();
        assert!(!id.may_access("conversation:c1"));
    }

    #[test]
    fn admin_role_may_use_any_channel() {
        let id = auth().authenticate(&token(json!({"sub":"root","exp":now()+60,"role":"admin"}), SECRET)).unwrap();
        assert!(id.may_access("system:settings"));
    }

    #[test]
    fn expired_jwt_is_4002_and_bad_ones_4001() {
        let a = auth();
        assert_eq!(
            a.authenticate(&token(json!({"sub":"a","exp":now()-3600}), SECRET)).unwrap_err(),
            AuthError::Expired
        );
        let wrong = a.authenticate(&token(json!({"sub":"a","exp":now()+60}), b"another-secret")).unwrap_err();
        assert!(matches!(wrong, AuthError::Invalid(ref m) if m.contains("signature")), "{wrong:?}");
        let no_exp = a.authenticate(&token(json!({"sub":"a"}), SECRET)).unwrap_err();
        assert!(matches!(no_exp, AuthError::Invalid(ref m) if m.contains("exp")), "{no_exp:?}");
        let garbage = a.authenticate(&Credentials::Token("not.a.jwt".into())).unwrap_err();
        assert!(matches!(garbage, AuthError::Invalid(_)));
        let bad_pattern =
            a.authenticate(&token(json!({"sub":"a","exp":now()+60,"channels":["nope:*"]}), SECRET)).unwrap_err();
        assert!(matches!(bad_pattern, AuthError::Invalid(ref m) if m.contains("channels")));
    }

    #[test]
    fn audience_and_issuer_are_checked_only_when_configured() {
        let claims = json!({"sub":"a","exp":now()+60,"aud":"nova","iss":"idp"});
        assert!(auth().authenticate(&token(claims.clone(), SECRET)).is_ok(), "unconfigured aud is not checked");
        let strict = JwtConfig { audience: Some("nova".into()), issuer: Some("idp".into()), ..jwt_config() };
        let a = Authenticator::new(Some(&strict), vec![], false, None);
        assert!(a.authenticate(&token(claims, SECRET)).is_ok());
        let other_aud = json!({"sub":"a","exp":now()+60,"aud":"other","iss":"idp"});
        assert!(matches!(a.authenticate(&token(other_aud, SECRET)), Err(AuthError::Invalid(m)) if m.contains("aud")));
        let no_iss = json!({"sub":"a","exp":now()+60,"aud":"nova"});
        assert!(a.authenticate(&token(no_iss, SECRET)).is_err());
    }

    #[test]
    fn token_not_valid_yet_is_refused() {
        let claims = json!({"sub":"a","exp":now()+600,"nbf":now()+300});
        assert!(matches!(auth().authenticate(&token(claims, SECRET)), Err(AuthError::Invalid(m)) if m.contains("nbf")));
    }

    #[test]
    fn a_far_future_exp_does_not_overflow() {
        let id = auth().authenticate(&token(json!({"sub":"a","exp":u64::MAX}), SECRET)).unwrap();
        assert!(!id.expired(SystemTime::now()));
    }

    #[test]
    fn jwt_signed_with_another_algorithm_is_refused() {
        let claims = json!({"sub":"a","exp":now()+60});
        let t = encode(&Header::new(Algorithm::HS512), &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        assert!(matches!(auth().authenticate(&Credentials::Token(t)), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn api_keys_carry_their_user_and_patterns() {
        let a = auth();
        let id = a.authenticate(&Credentials::ApiKey { key: "k-123".into(), user_id: None }).unwrap();
        assert_eq!(&*id.user_id, "svc");
        assert!(id.may_access("team:x") && !id.may_access("conversation:x"));
        let other = Credentials::ApiKey { key: "k-123".into(), user_id: Some("mallory".into()) };
        assert!(a.authenticate(&other).is_err());
        assert!(a.authenticate(&Credentials::ApiKey { key: "k-12".into(), user_id: None }).is_err());
        let dev = Credentials::ApiKey { key: DEVELOPMENT_KEY.into(), user_id: None };
        assert!(a.authenticate(&dev).is_err(), "development key only in development mode");
    }

    #[test]
    fn the_admin_token_is_a_key_for_the_admin_user_with_every_channel() {
        let a = auth();
        let key = |key: &str, user_id: Option<&str>| Credentials::ApiKey {
            key: key.into(),
            user_id: user_id.map(str::to_owned),
        };
        let id = a.authenticate(&key(ADMIN_TOKEN, None)).unwrap();
        assert_eq!(&*id.user_id, ADMIN_USER);
        assert!(id.may_access("system:settings") && id.may_access("conversation:c1") && id.may_access("team:t"));
        assert!(!id.is_jwt() && id.expires_at.is_none() && id.tenant.is_none());
        assert_eq!(&*a.authenticate(&key(ADMIN_TOKEN, Some(ADMIN_USER))).unwrap().user_id, ADMIN_USER);
        let chosen = a.authenticate(&key(ADMIN_TOKEN, Some("alice"))).unwrap_err();
        assert!(matches!(chosen, AuthError::Invalid(ref m) if m.contains("user id")), "{chosen:?}");
        for wrong in [&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1], "the-admin-token-0123456780", ""] {
            let refused = a.authenticate(&key(wrong, None)).unwrap_err();
            assert!(matches!(refused, AuthError::Invalid(ref m) if m == "unknown API key"), "{wrong}: {refused:?}");
        }
        let without = Authenticator::new(Some(&jwt_config()), vec![], false, None);
        assert!(without.authenticate(&key(ADMIN_TOKEN, None)).is_err(), "no admin token configured");
        let empty = Authenticator::new(None, vec![], false, Some(""));
        assert!(empty.authenticate(&key("", None)).is_err(), "an empty admin token is no key");
    }

    #[test]
    fn development_key_picks_any_user_and_channel() {
        let a = Authenticator::new(None, vec![], true, None);
        let id =
            a.authenticate(&Credentials::ApiKey { key: DEVELOPMENT_KEY.into(), user_id: Some("bob".into()) }).unwrap();
        assert_eq!(&*id.user_id, "bob");
        assert!(id.may_access("system:settings"));
        let id = a.authenticate(&Credentials::ApiKey { key: DEVELOPMENT_KEY.into(), user_id: None }).unwrap();
        assert_eq!(&*id.user_id, DEVELOPMENT_USER);
        assert!(matches!(
            a.authenticate(&token(json!({"sub":"a","exp":now()+60}), SECRET)),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn a_refresh_keeps_the_user_and_takes_the_new_grants_and_expiry() {
        let a = auth();
        let current =
            a.authenticate(&token(json!({"sub":"alice","exp":now()+60,"channels":["team:*"]}), SECRET)).unwrap();
        let Credentials::Token(next) =
            token(json!({"sub":"alice","exp":now()+600,"channels":["conversation:*"]}), SECRET)
        else {
            unreachable!()
        };
        let next = a.refresh(&current, &next).unwrap();
        assert!(next.may_access("conversation:c1") && !next.may_access("team:t1"));
        assert!(next.expires_at > current.expires_at);
        assert!(next.may_subscribe(SETTINGS_CHANNEL) && !next.may_access(SETTINGS_CHANNEL));
    }

    #[test]
    fn a_refresh_is_refused_for_another_user_a_bad_token_and_an_api_key() {
        let a = auth();
        let alice = a.authenticate(&token(json!({"sub":"alice","exp":now()+60}), SECRET)).unwrap();
        let raw = |claims: serde_json::Value, secret: &[u8]| match token(claims, secret) {
            Credentials::Token(t) => t,
            Credentials::ApiKey { .. } => unreachable!(),
        };
        let other = a.refresh(&alice, &raw(json!({"sub":"bob","exp":now()+60}), SECRET));
        assert_eq!(other.unwrap_err(), RefreshError::OtherUser);
        let expired = a.refresh(&alice, &raw(json!({"sub":"alice","exp":now()-3600}), SECRET));
        assert_eq!(expired.unwrap_err(), RefreshError::Auth(AuthError::Expired));
        let forged = a.refresh(&alice, &raw(json!({"sub":"alice","exp":now()+60}), b"another-secret"));
        assert!(matches!(forged, Err(RefreshError::Auth(AuthError::Invalid(_)))), "{forged:?}");
        let service = a.authenticate(&Credentials::ApiKey { key: "k-123".into(), user_id: None }).unwrap();
        let svc_token = raw(json!({"sub":"svc","exp":now()+60}), SECRET);
        assert_eq!(a.refresh(&service, &svc_token).unwrap_err(), RefreshError::NotRefreshable);
        assert!(!service.is_jwt() && alice.is_jwt());
    }

    #[test]
    fn a_connection_ends_the_leeway_after_exp() {
        let id = auth().authenticate(&token(json!({"sub":"a","exp":now()+60}), SECRET)).unwrap();
        let exp = id.expires_at.unwrap();
        assert_eq!(id.ends_at(), Some(exp + EXPIRY_LEEWAY));
        assert!(!id.expired(exp + EXPIRY_LEEWAY) && id.expired(exp + EXPIRY_LEEWAY + Duration::from_millis(1)));
    }

    #[test]
    fn user_ids_are_checked() {
        assert!(check_user_id("alice@example.com").is_ok());
        assert!(check_user_id("").is_err());
        assert!(check_user_id("a\nb").is_err());
        assert!(check_user_id(&"u".repeat(129)).is_err());
        assert!(check_user_id(&"é".repeat(128)).is_ok());
        assert!(check_user_id(&"é".repeat(129)).is_err());
    }
}
