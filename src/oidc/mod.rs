//! The OAuth2 / OpenID Connect domain: authorization-request validation, the
//! token grants, token minting, client authentication and Dex's wire encodings.
//!
//! Nothing here knows about HTTP types or reads the clock: callers pass plain
//! strings/structs and `now`, and render the results (redirect URLs, JSON bodies,
//! error pages). Storage is the synchronous [`crate::storage::Storage`] trait, so
//! async callers run these functions on the blocking pool.
//!
//! Behaviour follows Dex (Dex v2.45's `server/` package: `handlers.go`, `oauth2.go`,
//! `refreshhandlers.go`, `deviceflowhandlers.go`, `introspectionhandler.go`);
//! where oxidex deliberately differs, the item's documentation says "Beyond Dex".

pub mod authorize;
pub(crate) mod binding;
pub mod client_auth;
pub mod client_credentials;
pub(crate) mod device;
pub(crate) mod discovery;
pub(crate) mod error;
pub mod grants;
pub mod introspect;
pub(crate) mod mint;
pub(crate) mod redirect_uri;
pub mod revoke;
pub(crate) mod scopes;
pub(crate) mod session;
pub mod subject;
pub mod token_exchange;

// The fixtures live in the test kit, outside src/; unit tests compile them in so
// they share this crate's types.
#[cfg(test)]
#[path = "../../testkit/src/oidc_fixtures.rs"]
pub(crate) mod test_support;

pub use error::{AuthorizeError, ErrorCode, OAuthError, RedirectError};
pub use mint::{TokenResponse, TokenSigner};

/// Whether what expires at `expiry` has expired at `now`: only once `now` is past
/// it (at `expiry` itself it is still valid), compared to the nanosecond. This is
/// Dex's boundary for every kind: stored objects (auth requests and codes, device
/// requests and tokens, refresh lifetimes and the reuse window) are checked with
/// `time.Now().After(expiry)`, and the JWTs `/userinfo` and `/introspect` accept
/// go through go-oidc's verifier, which refuses them when `Expiry.Before(now)`.
pub fn is_expired(expiry: std::time::SystemTime, now: std::time::SystemTime) -> bool {
    now > expiry
}

/// Longest accepted value of any protocol parameter, in bytes (except `state`).
///
/// Dex has no limit. oxidex refuses oversized values with `invalid_request` so a
/// hostile request cannot make it store, sign or echo megabytes: 2 KiB is far above
/// any legitimate client id, redirect URI, scope list, nonce, code or token.
pub const MAX_PARAM_LEN: usize = 2048;

/// Longest accepted `state`, in bytes: room for a random value plus a return URL,
/// which some relying parties pack into it. Every byte is stored with the auth
/// request, which an anonymous client can create.
pub const MAX_STATE_LEN: usize = 2048;

/// Longest accepted `nonce` at `/auth`, in bytes (stored with the auth request;
/// a nonce is a random value, typically 16–64 characters).
pub const MAX_NONCE_LEN: usize = 512;

/// Longest accepted `scope` at `/auth`, in bytes: every valid scope, and a dozen
/// cross-client `audience:server:client_id:…` ones, fit easily.
pub const MAX_SCOPE_LEN: usize = 1024;

/// Longest accepted `response_type`: `code id_token token` is 19 bytes.
pub const MAX_RESPONSE_TYPE_LEN: usize = 64;

/// Checks one protocol parameter against [`MAX_PARAM_LEN`] (or [`MAX_STATE_LEN`]
/// for `state`); the error names the parameter.
pub fn check_param_len(name: &str, value: &str) -> Result<(), OAuthError> {
    let max = if name == "state" {
        MAX_STATE_LEN
    } else {
        MAX_PARAM_LEN
    };
    if value.len() > max {
        return Err(OAuthError::invalid_request(format!(
            "Parameter \"{name}\" is too long (at most {max} bytes)."
        )));
    }
    Ok(())
}
