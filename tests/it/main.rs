//! The one integration-test binary: each test starts oxidex in-process on
//! 127.0.0.1:0 and talks real HTTP to it. Loopback is all it needs, so it also runs
//! in the Nix build sandbox (a private network namespace whose `lo` is up).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod binding;
mod browser;
mod cli;
mod client_credentials;
mod connectors;
mod device;
mod discovery;
mod faults;
mod forgejo;
mod grpc;
mod hostile;
mod https;
mod introspect;
mod keys;
mod ldap;
mod limits;
mod login;
mod ops;
mod pages;
mod postgres;
mod reload;
mod revocation;
mod sessions;
mod shutdown;
mod support;
mod token_exchange;
mod transport;
mod upstream_outages;
mod upstream_tls;
