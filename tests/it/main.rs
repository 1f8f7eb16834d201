//! The one integration-test binary: each test starts oxidex in-process on
//! 127.0.0.1:0 and talks real HTTP to it.
//!
//! Skipped with the `sandboxed-tests` feature (the Nix build sandbox), where
//! tests may not open sockets.
#![cfg(not(feature = "sandboxed-tests"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod browser;
mod cli;
mod device;
mod discovery;
mod forgejo;
mod hostile;
mod introspect;
mod keys;
mod login;
mod ops;
mod postgres;
mod support;
