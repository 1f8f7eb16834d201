//! Connectors: their configs through the config loader, each upstream connector
//! on its own against the fake forge, and the fake forge against the real one.

mod config;
mod forge_contract;
mod gitea;
mod oidc;
