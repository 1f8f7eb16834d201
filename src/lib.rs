//! oxidex: a Dex-compatible OpenID Connect identity provider.

pub mod config;
pub mod connector;
pub mod keys;
pub mod storage;
pub mod web;
