//! Recognising paths inside the Nix store, where every file is world-readable.

use std::path::{Component, Path};

/// Nix's base-32 alphabet: digits and lower-case letters without `e`, `o`, `u`, `t`.
fn is_nix_base32(byte: u8) -> bool {
    matches!(byte, b'0'..=b'9' | b'a'..=b'z') && !matches!(byte, b'e' | b'o' | b'u' | b't')
}

/// A store object name: `<32 base-32 chars>-<name>` with a non-empty name.
fn is_store_object_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() > 33 && bytes[..32].iter().all(|b| is_nix_base32(*b)) && bytes[32] == b'-'
}

/// True when `path` is a store object under `/nix/store` or anything below one.
/// The path is taken as written (callers canonicalise first to see through symlinks).
pub fn is_in_nix_store(path: &Path) -> bool {
    let mut components = path.components();
    let prefix_ok = matches!(components.next(), Some(Component::RootDir))
        && components.next() == Some(Component::Normal("nix".as_ref()))
        && components.next() == Some(Component::Normal("store".as_ref()));
    prefix_ok
        && matches!(
            components.next(),
            Some(Component::Normal(name)) if name.to_str().is_some_and(is_store_object_name)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0c8xyz9bz3ai2k3qh8x8a9fw2p1l6c5y";

    #[test]
    fn recognises_store_paths() {
        assert_eq!(HASH.len(), 32);
        assert!(is_in_nix_store(Path::new(&format!(
            "/nix/store/{HASH}-oxidex.json"
        ))));
        assert!(is_in_nix_store(Path::new(&format!(
            "/nix/store/{HASH}-etc/oxidex/config.json"
        ))));
        assert!(is_in_nix_store(Path::new(&format!(
            "/nix//store/{HASH}-x/"
        ))));
    }

    #[test]
    fn refuses_look_alikes() {
        let not_store = [
            "/nix/store".to_owned(),
            "/nix/store/".to_owned(),
            format!("/nix/store/{HASH}"),
            format!("/nix/store/{HASH}-"),
            format!("nix/store/{HASH}-x"),
            format!("/home/nix/store/{HASH}-x"),
            format!("/nix/var/{HASH}-x"),
            // `e`, `o`, `u`, `t` are not in Nix's alphabet, upper case neither.
            format!("/nix/store/{}e-x", &HASH[..31]),
            format!("/nix/store/{}t-x", &HASH[..31]),
            format!("/nix/store/{}A-x", &HASH[..31]),
            format!("/nix/store/{}-x", &HASH[..31]),
            format!("/nix/store/{HASH}a-x"),
            "/etc/oxidex/config.json".to_owned(),
        ];
        for path in not_store {
            assert!(!is_in_nix_store(Path::new(&path)), "{path}");
        }
    }
}
