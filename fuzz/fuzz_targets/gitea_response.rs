//! The gitea (Forgejo) connector's reading of upstream answers: the token
//! endpoint's answer (JSON or form-encoded), `GET /api/v1/user` with the display
//! name rule, and a page of `GET /api/v1/user/teams` turned into groups.
//!
//! Input: a mode byte, two bytes of HTTP status, then the body.
//!
//! Properties: no panic; an accepted token has an access token and an expiry
//! that is unset or in the future; groups are non-empty and unique, also when
//! the same page is read twice.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use oxidex::connector::gitea::{
    GiteaUser, Team, add_team_groups, display_name, read_api_response, read_token_response,
};

const URL: &str = "https://forge.example/login/oauth/access_token";

fuzz_target!(|data: &[u8]| {
    let [mode, hi, lo, body @ ..] = data else {
        return;
    };
    let Ok(status) = StatusCode::from_u16(100 + u16::from_be_bytes([*hi, *lo]) % 500) else {
        return;
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    match mode % 3 {
        0 | 1 => {
            let form_encoded = mode % 3 == 1;
            if let Ok(token) = read_token_response(status, form_encoded, body, URL, now) {
                assert!(status.is_success());
                assert!(!token.access_token.is_empty());
                let now_secs = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                assert!(token.expires_at == 0 || token.expires_at > now_secs);
            }
        }
        _ => {
            if let Ok(user) = read_api_response::<GiteaUser>(status, body, URL) {
                assert!(status.is_success());
                let _ = display_name(&user);
            }
            let Ok(teams) = read_api_response::<Vec<Team>>(status, body, URL) else {
                return;
            };
            let mut groups = vec!["existing".to_owned()];
            add_team_groups(&mut groups, &teams);
            add_team_groups(&mut groups, &teams);
            for (i, group) in groups.iter().enumerate() {
                assert!(!group.is_empty());
                assert!(!groups[..i].contains(group), "duplicate group {group:?}");
            }
        }
    }
});
