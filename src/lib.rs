//! oxidex: a Dex-compatible OpenID Connect identity provider.

pub mod config;
pub mod keys;
pub mod oidc;
pub mod storage;
