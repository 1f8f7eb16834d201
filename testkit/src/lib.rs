//! Test support for oxidex, kept out of the shipped crate: stand-ins for the
//! upstreams oxidex talks to, throwaway PostgreSQL databases and the domain unit
//! tests' fixtures. A dev-dependency of `oxidex`; its integration tests
//! (`tests/it`) use it. Everything here needs only loopback (or the database
//! `OXIDEX_TEST_POSTGRES` names), so it also runs in the Nix build sandbox.
//!
//! `postgres` and `oidc_fixtures` are also compiled into oxidex's own unit tests
//! (`#[path]` modules), which cannot use this crate without getting a second copy
//! of oxidex's types. So they name oxidex's items as `crate::…`, and the imports
//! below make those names mean the same here.

use oxidex::{config, keys, oidc, storage};

pub mod fake_forgejo;
pub mod oidc_fixtures;
pub mod postgres;
