//! Random values for identifiers and secrets (the OS CSPRNG via `rand`).

use rand::Rng;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A random lowercase base32 string of `len` characters.
pub fn token(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| {
            let i = rng.random_range(0..ALPHABET.len());
            char::from(ALPHABET.get(i).copied().unwrap_or(b'a'))
        })
        .collect()
}
