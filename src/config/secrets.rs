//! Secret forms: `…File` siblings, the Nix-store inline-secret rule, bcrypt hashes.

use std::path::Path;

use base64::Engine as _;
use serde_json::Value;

use super::Report;
use super::decode::join;
use super::env::is_single_reference;
use super::nix_store::is_in_nix_store;

/// Reads a secret from a file: one trailing newline (`\n` or `\r\n`) is trimmed;
/// an unreadable or empty file is an error. Messages name the file, never its content.
///
/// A file in the Nix store is refused before it is read, whether named directly or
/// through a symlink: every store file is world-readable, so the secret has
/// already leaked to every local user (every `…File` form comes through here).
pub fn read_secret_file(file: &str) -> Result<String, String> {
    refuse_store_file(Path::new(file))?;
    let bytes = read_bounded(file, MAX_SECRET_FILE)?;
    let mut text =
        String::from_utf8(bytes).map_err(|_| format!("file {file:?} is not valid UTF-8"))?;
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    if text.is_empty() {
        return Err(format!("file {file:?} is empty"));
    }
    Ok(text)
}

/// Largest secret file read. Secrets are short (a client secret, a password, a
/// bcrypt hash); anything larger is a mistake such as a path to the wrong file.
pub const MAX_SECRET_FILE: u64 = 64 * 1024;

/// A regular file's contents, at most `max` bytes. A device, FIFO or socket
/// (`/dev/stdin`, `/dev/zero`, a named pipe) would block start-up or never end,
/// so only regular files (after symlinks) are read. Every file a config names
/// (secrets, certificates, keys) is read through here.
pub(crate) fn read_bounded(file: &str, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let opened =
        std::fs::File::open(file).map_err(|e| format!("cannot read file {file:?}: {e}"))?;
    let metadata = opened
        .metadata()
        .map_err(|e| format!("cannot read file {file:?}: {e}"))?;
    if !metadata.is_file() {
        return Err(format!("file {file:?} is not a regular file"));
    }
    let mut bytes = Vec::new();
    opened
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read file {file:?}: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "file {file:?} is larger than {max} bytes; is it the right file?"
        ));
    }
    Ok(bytes)
}

fn refuse_store_file(file: &Path) -> Result<(), String> {
    let canonical = std::fs::canonicalize(file).ok();
    if is_in_nix_store(file) || canonical.as_deref().is_some_and(is_in_nix_store) {
        return Err(format!(
            "file {:?} is in the Nix store, which every local user can read; keep secret \
             files outside it (e.g. systemd LoadCredential= and $CREDENTIALS_DIRECTORY)",
            file.display().to_string()
        ));
    }
    Ok(())
}

/// Keys inside connector and storage configs whose inline values are secrets
/// (`clientSecret`, `password`, `bindPW`, `token`, …). Reference forms
/// (`…File`, `…Env`) are not secrets themselves.
pub fn is_inline_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    if k.ends_with("file") || k.ends_with("env") || k.ends_with("prompt") {
        return false;
    }
    k == "bindpw" || k == "token" || k.contains("secret") || k.contains("password")
}

/// Dex's own `…File` keys: paths the owner reads itself (the TLS files of
/// `storage.config.ssl`), not file forms of a `ca`/`cert`/`key` value.
const PATH_KEYS: &[&str] = &["caFile", "certFile", "keyFile"];

/// The key a `…File` key stands for: `clientSecretFile` → `clientSecret`.
fn file_form_target(key: &str) -> Option<&str> {
    if PATH_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)) {
        return None;
    }
    key.strip_suffix("File").filter(|k| !k.is_empty())
}

/// Replaces every string `KFile` key (at any depth) with `K` holding the file's
/// content. `K` and `KFile` together is an error naming both.
pub fn apply_file_forms(path: &str, value: &mut Value, report: &mut Report) {
    match value {
        Value::Object(map) => {
            let file_keys: Vec<String> = map
                .iter()
                .filter(|(k, v)| v.is_string() && file_form_target(k).is_some())
                .map(|(k, _)| k.clone())
                .collect();
            for file_key in file_keys {
                let Some(target) = file_form_target(&file_key).map(str::to_owned) else {
                    continue;
                };
                let Some(Value::String(file)) = map.remove(&file_key) else {
                    continue;
                };
                if file.is_empty() {
                    continue;
                }
                if let Some(existing) = map.keys().find(|k| k.eq_ignore_ascii_case(&target)) {
                    report.error(
                        join(path, &file_key),
                        format!(
                            "both {} and {} are set; use only one",
                            join(path, existing),
                            join(path, &file_key)
                        ),
                    );
                    continue;
                }
                match read_secret_file(&file) {
                    Ok(secret) => {
                        map.insert(target, Value::String(secret));
                    }
                    Err(message) => report.error(join(path, &file_key), message),
                }
            }
            for (key, item) in map.iter_mut() {
                apply_file_forms(&join(path, key), item, report);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                apply_file_forms(&format!("{path}[{i}]"), item, report);
            }
        }
        _ => {}
    }
}

/// True when a value written in the file itself carries a secret: non-empty and
/// not just a `$VAR` reference (when expansion is on).
pub fn is_inline(value: &str, expansion: bool) -> bool {
    !(value.is_empty() || expansion && is_single_reference(value))
}

/// The message for an inline secret in a store file.
pub fn nix_store_message(config_path: &Path, instead: &str) -> String {
    format!(
        "inline secret in a world-readable Nix store file ({}); use {instead}",
        config_path.display()
    )
}

/// Refuses inline secret values in a connector or storage config (Nix-store rule).
pub fn refuse_inline_secrets(
    path: &str,
    value: &Value,
    expansion: bool,
    config_path: &Path,
    report: &mut Report,
) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                let key_path = join(path, key);
                match item {
                    Value::String(s) if is_inline_secret_key(key) && is_inline(s, expansion) => {
                        let instead = format!("{key_path}File or a $VAR reference");
                        report.error(&key_path, nix_store_message(config_path, &instead));
                    }
                    _ => refuse_inline_secrets(&key_path, item, expansion, config_path, report),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                refuse_inline_secrets(
                    &format!("{path}[{i}]"),
                    item,
                    expansion,
                    config_path,
                    report,
                );
            }
        }
        _ => {}
    }
}

const BCRYPT_ALPHABET: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Bcrypt's cost if `hash` is a well-formed `$2a$`/`$2b$`/`$2y$` hash.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    let bytes = hash.as_bytes();
    let well_formed = bytes.len() == 60
        && (hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$"))
        && bytes[4].is_ascii_digit()
        && bytes[5].is_ascii_digit()
        && bytes[6] == b'$'
        && bytes[7..].iter().all(|b| BCRYPT_ALPHABET.contains(b));
    if !well_formed {
        return None;
    }
    hash[4..6].parse().ok()
}

pub const MIN_BCRYPT_COST: u32 = 10;
pub const MAX_BCRYPT_COST: u32 = 16;

/// Accepts a bcrypt hash, or (Dex's legacy form) the base64 of one, and returns
/// the plain hash. The cost must lie within 10–16: Dex refuses anything else at
/// login time with an HTTP 500, so it is better refused here.
pub fn normalize_bcrypt(hash: &str) -> Result<String, String> {
    let plain = if bcrypt_cost(hash).is_some() {
        hash.to_owned()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(hash.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|decoded| bcrypt_cost(decoded).is_some())
            .ok_or_else(|| {
                "malformed bcrypt hash: expected a $2a$, $2b$ or $2y$ hash (or its base64)"
                    .to_owned()
            })?
    };
    let cost = bcrypt_cost(&plain).unwrap_or_default();
    if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(format!(
            "bcrypt cost {cost} is outside {MIN_BCRYPT_COST}–{MAX_BCRYPT_COST} \
             (Dex would accept it here and then fail every login for this user)"
        ));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const HASH: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";

    #[test]
    fn bcrypt_forms_and_costs() {
        assert_eq!(normalize_bcrypt(HASH).unwrap(), HASH);
        let b64 = base64::engine::general_purpose::STANDARD.encode(HASH);
        assert_eq!(normalize_bcrypt(&b64).unwrap(), HASH);
        let low = HASH.replacen("$10$", "$04$", 1);
        assert!(normalize_bcrypt(&low).unwrap_err().contains("cost 4"));
        let high = HASH.replacen("$10$", "$17$", 1);
        assert!(normalize_bcrypt(&high).unwrap_err().contains("cost 17"));
        assert!(
            normalize_bcrypt("hunter2")
                .unwrap_err()
                .contains("malformed bcrypt hash")
        );
        assert!(normalize_bcrypt(&HASH[..59]).is_err());
        assert!(normalize_bcrypt(&HASH.replacen("$2a$", "$2x$", 1)).is_err());
        // A real hash made by the bcrypt crate passes.
        let made = bcrypt::hash("pw", 10).unwrap();
        assert_eq!(normalize_bcrypt(&made).unwrap(), made);
    }

    #[test]
    fn secret_files_trim_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, content: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path.to_str().unwrap().to_owned()
        };
        assert_eq!(read_secret_file(&write("a", "s3cret\n")).unwrap(), "s3cret");
        assert_eq!(
            read_secret_file(&write("b", "s3cret\r\n")).unwrap(),
            "s3cret"
        );
        assert_eq!(
            read_secret_file(&write("c", "s3cret\n\n")).unwrap(),
            "s3cret\n"
        );
        assert_eq!(
            read_secret_file(&write("d", " s3cret ")).unwrap(),
            " s3cret "
        );
        let empty = write("e", "\n");
        assert!(read_secret_file(&empty).unwrap_err().contains("is empty"));
        let missing = dir.path().join("missing");
        let err = read_secret_file(missing.to_str().unwrap()).unwrap_err();
        assert!(
            err.contains("cannot read file") && err.contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn secret_files_in_the_nix_store_are_refused_unread() {
        let store_file = "/nix/store/0c8xyz9bz3ai2k3qh8x8a9fw2p1l6c5y-forgejo-secret";
        let err = read_secret_file(store_file).unwrap_err();
        assert!(
            err.contains("Nix store") && err.contains(store_file),
            "{err}"
        );
        // A look-alike outside the store is only a missing file.
        let err = read_secret_file("/nix/stor/0c8xyz9bz3ai2k3qh8x8a9fw2p1l6c5y-x").unwrap_err();
        assert!(err.contains("cannot read file"), "{err}");
    }

    #[test]
    fn secret_keys() {
        for key in [
            "clientSecret",
            "password",
            "bindPW",
            "token",
            "keystonePassword",
            "secret",
        ] {
            assert!(is_inline_secret_key(key), "{key}");
        }
        for key in [
            "clientSecretFile",
            "clientID",
            "baseURL",
            "usernamePrompt",
            "secretEnv",
            "passwordPrompt",
        ] {
            assert!(!is_inline_secret_key(key), "{key}");
        }
    }

    #[test]
    fn secret_files_must_be_small_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; (MAX_SECRET_FILE + 1) as usize]).unwrap();
        let err = read_secret_file(big.to_str().unwrap()).unwrap_err();
        assert!(err.contains("larger than"), "{err}");
        // A device never ends (or blocks start-up): refused before reading.
        let err = read_secret_file("/dev/zero").unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        let err = read_secret_file(dir.path().to_str().unwrap()).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        let ok = dir.path().join("ok");
        std::fs::write(&ok, "s3cret\n").unwrap();
        assert_eq!(read_secret_file(ok.to_str().unwrap()).unwrap(), "s3cret");
    }
}
