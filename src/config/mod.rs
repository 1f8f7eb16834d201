//! Configuration: Dex's schema read from JSON or YAML, secrets resolved from their
//! env/file forms, validated with key paths in every message.

pub mod duration;
pub mod schema;
pub mod settings;

pub use settings::*;
