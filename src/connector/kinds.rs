//! The connector types oxidex implements, in one list: `config::load` decodes and
//! validates every `connectors[].config` through it (in the same pass and report
//! as the rest of the config), and [`super::build_connectors`] opens the decoded
//! configs, which can no longer be wrong. A new connector type is a row in
//! [`KINDS`] and a variant of [`KindConfig`].

use std::sync::Arc;

use serde_json::Value;

use super::config::{self, ConfigReader, DecodeConfig, Problems};
use super::{Connector, ConnectorError, gitea, github, ldap, mock, oidc};
use crate::Clock;

/// One connector type.
pub struct Kind {
    /// The `type` value that selects it.
    pub name: &'static str,
    /// Checks a username and password itself, so it can serve the `password` grant.
    pub checks_passwords: bool,
    /// Its `config` keys.
    keys: &'static [&'static str],
    decode: fn(&ConfigReader, &mut Problems, Option<&str>) -> KindConfig,
}

/// Every connector type oxidex implements. (The password database, `local`, is
/// not one of them: `enablePasswordDB` switches it on.)
pub const KINDS: &[Kind] = &[
    Kind {
        name: "mockCallback",
        checks_passwords: false,
        keys: &[],
        decode: |_, _, _| KindConfig::MockCallback,
    },
    Kind {
        name: "mockPassword",
        checks_passwords: true,
        keys: mock::MockPasswordConfig::KEYS,
        decode: |r, p, cb| KindConfig::MockPassword(mock::MockPasswordConfig::decode(r, p, cb)),
    },
    Kind {
        name: gitea::KIND,
        checks_passwords: false,
        keys: gitea::GiteaConfig::KEYS,
        decode: |r, p, cb| KindConfig::Gitea(gitea::GiteaConfig::decode(r, p, cb)),
    },
    Kind {
        name: github::KIND,
        checks_passwords: false,
        keys: github::GithubConfig::KEYS,
        decode: |r, p, cb| KindConfig::Github(github::GithubConfig::decode(r, p, cb)),
    },
    Kind {
        name: oidc::KIND,
        checks_passwords: false,
        keys: oidc::OidcConfig::KEYS,
        decode: |r, p, cb| KindConfig::Oidc(oidc::OidcConfig::decode(r, p, cb)),
    },
    Kind {
        name: ldap::KIND,
        checks_passwords: true,
        keys: ldap::LdapConfig::KEYS,
        decode: |r, p, cb| KindConfig::Ldap(ldap::LdapConfig::decode(r, p, cb)),
    },
];

/// Connector types Dex has that oxidex does not implement (yet): refused as
/// "not supported" rather than "unknown".
const DEX_ONLY_KINDS: &[&str] = &[
    "gitlab",
    "google",
    "oauth",
    "saml",
    "samlExperimental",
    "authproxy",
    "linkedin",
    "microsoft",
    "bitbucket-cloud",
    "openshift",
    "atlassian-crowd",
    "keystone",
];

/// A decoded, validated `connectors[].config`.
#[derive(Clone)]
pub enum KindConfig {
    MockCallback,
    MockPassword(mock::MockPasswordConfig),
    Gitea(gitea::GiteaConfig),
    Github(github::GithubConfig),
    Oidc(oidc::OidcConfig),
    Ldap(ldap::LdapConfig),
}

/// The implemented type named `name`.
pub fn find(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|kind| kind.name == name)
}

/// Why `name` is no connector type oxidex can open, listing the ones it can.
pub fn unknown_kind_message(name: &str) -> String {
    let known = KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ");
    if DEX_ONLY_KINDS.contains(&name) {
        format!("connector type {name:?} is not supported by oxidex yet (supported: {known})")
    } else {
        format!("unknown connector type {name:?} (oxidex supports: {known})")
    }
}

impl Kind {
    /// Decodes `config` (found at `path`). `callback` is `<issuer>/callback`, which
    /// OAuth2 connectors' `redirectURI` must equal (`None`: the issuer is invalid).
    /// Returns the config and the paths of unknown keys, or every problem, each
    /// starting with its key path.
    pub fn decode(
        &self,
        path: &str,
        config: &Value,
        callback: Option<&str>,
    ) -> Result<(KindConfig, Vec<String>), Vec<String>> {
        config::parse(path, config, self.keys, |r, p| {
            (self.decode)(r, p, callback)
        })
    }
}

impl KindConfig {
    /// Opens the connector. Makes no network call (the `oidc` connector discovers
    /// its provider in the background and on first use); fails only when the
    /// upstream HTTP or TLS client cannot be built.
    pub(super) fn open(&self, id: &str, clock: &Clock) -> Result<Connector, ConnectorError> {
        Ok(match self {
            KindConfig::MockCallback => Connector::Callback(Arc::new(mock::MockCallback::new())),
            KindConfig::MockPassword(config) => {
                Connector::Password(Arc::new(mock::MockPassword::from_config(config.clone())))
            }
            KindConfig::Gitea(config) => Connector::Callback(Arc::new(gitea::GiteaConnector::new(
                id,
                config.clone(),
                Arc::clone(clock),
            )?)),
            KindConfig::Github(config) => {
                Connector::Callback(Arc::new(github::GithubConnector::new(id, config.clone())?))
            }
            KindConfig::Oidc(config) => {
                let connector = Arc::new(oidc::OidcConnector::new(
                    id,
                    config.clone(),
                    Arc::clone(clock),
                )?);
                connector.warm_up();
                Connector::Callback(connector)
            }
            KindConfig::Ldap(config) => {
                Connector::Password(Arc::new(ldap::LdapConnector::new(id, config.clone())?))
            }
        })
    }
}
