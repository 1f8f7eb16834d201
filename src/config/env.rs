//! Environment lookups and Dex's `$VAR` expansion (Go `os.ExpandEnv` semantics).

use std::collections::BTreeMap;

/// Where environment variables come from: the process environment, or a fixed map
/// (tests, or a caller that wants a hermetic load).
#[derive(Debug, Clone, Default)]
pub enum Env {
    #[default]
    Process,
    Map(BTreeMap<String, String>),
}

impl Env {
    /// A fixed environment from name/value pairs.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// The value of `name`; `None` when unset. A process variable that is not valid
    /// UTF-8 is read lossily rather than treated as unset.
    pub fn get(&self, name: &str) -> Option<String> {
        match self {
            Self::Process => std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()),
            Self::Map(map) => map.get(name).cloned(),
        }
    }

    /// A feature flag read like Dex's `pkg/featureflags`: Go `strconv.ParseBool`,
    /// empty or unparsable means `default`.
    pub fn flag(&self, name: &str, default: bool) -> bool {
        self.get(name)
            .and_then(|v| parse_go_bool(&v))
            .unwrap_or(default)
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn is_special_name(byte: u8) -> bool {
    matches!(
        byte,
        b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
    )
}

fn is_name_byte(byte: u8) -> bool {
    byte == b'_' || byte.is_ascii_alphanumeric()
}

/// What follows a `$`: the variable name (if any) and how many bytes after the `$`
/// the reference occupies.
enum Reference<'a> {
    /// `$NAME`, `${NAME}` or a one-character special name.
    Name(&'a str, usize),
    /// `${}` or an unclosed `${`: the given number of bytes are dropped.
    Swallow(usize),
    /// Not a reference: the `$` stays as it is.
    Literal,
}

fn reference_after_dollar(rest: &str) -> Reference<'_> {
    let bytes = rest.as_bytes();
    let Some(&first) = bytes.first() else {
        return Reference::Literal;
    };
    if first == b'{' {
        if bytes.len() > 2 && is_special_name(bytes[1]) && bytes[2] == b'}' {
            return Reference::Name(&rest[1..2], 3);
        }
        return match rest[1..].find('}') {
            Some(0) => Reference::Swallow(2),
            Some(end) => Reference::Name(&rest[1..=end], end + 2),
            None => Reference::Swallow(1),
        };
    }
    if is_special_name(first) {
        return Reference::Name(&rest[..1], 1);
    }
    let len = bytes.iter().take_while(|b| is_name_byte(**b)).count();
    if len == 0 {
        Reference::Literal
    } else {
        Reference::Name(&rest[..len], len)
    }
}

/// Go's `os.ExpandEnv`: `$NAME` and `${NAME}` are replaced by their values (unset
/// means empty); one-character special names (`$$`, `$1`, `$*`, …) are variables
/// too, so `pa$$word` becomes `paword`; `${}` and an unclosed `${` are dropped; a
/// `$` followed by anything else, or at the end, stays.
pub fn expand(text: &str, env: &Env) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        match reference_after_dollar(after) {
            Reference::Name(name, width) => {
                out.push_str(&env.get(name).unwrap_or_default());
                rest = &after[width..];
            }
            Reference::Swallow(width) => rest = &after[width..],
            Reference::Literal => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Dex's expansion of a decoded config block: every string value of an object is
/// expanded, recursively; inside arrays only strings and objects are processed
/// (arrays of arrays are left alone, as in Dex).
pub fn expand_value(value: &mut serde_json::Value, env: &Env) {
    match value {
        serde_json::Value::String(s) => *s = expand(s, env),
        serde_json::Value::Object(map) => {
            for item in map.values_mut() {
                expand_value(item, env);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                if item.is_string() || item.is_object() {
                    expand_value(item, env);
                }
            }
        }
        _ => {}
    }
}

/// True when the whole value is a single `$NAME` or `${NAME}` reference: such a
/// value carries no secret itself.
pub fn is_single_reference(text: &str) -> bool {
    let Some(after) = text.strip_prefix('$') else {
        return false;
    };
    match reference_after_dollar(after) {
        Reference::Name(_, width) => width == after.len(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env::from_pairs([
            ("HOME", "/home/me"),
            ("A_1", "x"),
            ("EMPTY", ""),
            ("1", "one"),
        ])
    }

    #[test]
    fn expands_like_go_expand_env() {
        let env = env();
        let cases = [
            ("$HOME/x", "/home/me/x"),
            ("${HOME}/x", "/home/me/x"),
            ("$A_1-y", "x-y"),
            ("$UNDEFINED", ""),
            ("a${UNDEFINED}b", "ab"),
            ("$EMPTY", ""),
            ("pa$$word", "paword"),
            ("$1 and ${1}", "one and one"),
            ("cost $5", "cost "),
            ("a$*b$#c$@d$!e$?f$-g", "abcdefg"),
            ("x${}y", "xy"),
            ("x${HOME", "xHOME"),
            ("end$", "end$"),
            ("a$%b", "a$%b"),
            ("a $ b", "a $ b"),
            ("no dollars", "no dollars"),
            ("${HOME}${HOME}", "/home/me/home/me"),
            ("$HOMEx", ""),
            ("ü$HOME€", "ü/home/me€"),
            ("${weird name}", ""),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &env), want, "expanding {input:?}");
        }
    }

    #[test]
    fn expands_decoded_values_recursively() {
        let env = env();
        let mut value = serde_json::json!({
            "a": "$HOME",
            "n": 5,
            "b": true,
            "nested": {"c": "${A_1}", "q": "quote\"$A_1\\"},
            "list": ["$A_1", {"d": "$A_1"}, ["$A_1"], 7]
        });
        expand_value(&mut value, &env);
        assert_eq!(
            value,
            serde_json::json!({
                "a": "/home/me",
                "n": 5,
                "b": true,
                "nested": {"c": "x", "q": "quote\"x\\"},
                "list": ["x", {"d": "x"}, ["$A_1"], 7]
            })
        );
    }

    #[test]
    fn recognises_single_references() {
        assert!(is_single_reference("$SECRET"));
        assert!(is_single_reference("${SECRET}"));
        assert!(is_single_reference("${CREDENTIALS_DIRECTORY}"));
        assert!(!is_single_reference("$SECRET/x"));
        assert!(!is_single_reference("x$SECRET"));
        assert!(!is_single_reference("hunter2"));
        assert!(!is_single_reference("$"));
        assert!(!is_single_reference("${}"));
        assert!(!is_single_reference("$A$B"));
    }

    #[test]
    fn flags_parse_like_go() {
        let env = Env::from_pairs([("ON", "T"), ("OFF", "0"), ("JUNK", "yes"), ("EMPTY", "")]);
        assert!(env.flag("ON", false));
        assert!(!env.flag("OFF", true));
        assert!(env.flag("JUNK", true));
        assert!(!env.flag("JUNK", false));
        assert!(env.flag("EMPTY", true));
        assert!(!env.flag("UNSET", false));
    }
}
