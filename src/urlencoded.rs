//! Go's `url.QueryUnescape`, the one percent-decoder for every query string, form
//! body and Basic credential we read.

/// A `%` not followed by two hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidEscape;

/// `+` becomes a space and `%XX` the byte `0xXX`; a malformed escape is refused
/// (Go's `QueryUnescape` does not pass it through, unlike the WHATWG reading).
/// The bytes are returned as they are: callers decide whether they must be UTF-8.
pub fn query_unescape(raw: &[u8]) -> Result<Vec<u8>, InvalidEscape> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = |at: usize| raw.get(at).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(InvalidEscape);
                };
                out.push(hi << 4 | lo);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_like_go_query_unescape() {
        assert_eq!(query_unescape(b"").unwrap(), b"");
        assert_eq!(query_unescape(b"a+b%2Bc%2fd").unwrap(), b"a b+c/d");
        assert_eq!(
            query_unescape(b"%00%ff%C3%A9").unwrap(),
            b"\x00\xff\xc3\xa9"
        );
        assert_eq!(query_unescape(b"\xff").unwrap(), b"\xff");
        for bad in [
            &b"%"[..],
            b"%4",
            b"%zz",
            b"%4g",
            b"a%",
            b"%%41",
            b"%\xc3\xa9",
        ] {
            assert_eq!(query_unescape(bad), Err(InvalidEscape), "{bad:?}");
        }
    }
}
