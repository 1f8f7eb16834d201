//! The form/query parser (`http::params::decode`), which reads every query string
//! and form body before any endpoint sees it.
//!
//! Properties: no panic; what it accepts, `form_urlencoded` (the WHATWG reading)
//! decodes to the same pairs; the accepted pairs survive re-encoding unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxidex::http::params::decode;

fuzz_target!(|data: &[u8]| {
    let Ok(pairs) = decode(data) else {
        return;
    };
    let whatwg: Vec<(String, String)> = form_urlencoded::parse(data).into_owned().collect();
    assert_eq!(pairs, whatwg, "differs from the WHATWG reading");

    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&pairs)
        .finish();
    assert_eq!(decode(encoded.as_bytes()).ok(), Some(pairs), "{encoded:?}");
});
