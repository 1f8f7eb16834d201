//! The storage conformance suite: every backend must pass every check here.
//!
//! Each check takes a factory that returns a fresh, empty storage (checks may call it
//! more than once). [`conformance_tests!`] turns the list of checks into one `#[test]`
//! per check for a backend; the backends are instantiated at the bottom of this file.
//! Modelled on what Dex's `storage/conformance` suite verifies, adapted to our
//! entities (no connectors in storage; clients and passwords only those made
//! through the gRPC API; auth sessions added).

// Test-only code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use super::*;
use fixtures::*;

pub(crate) type Factory<'a> = &'a dyn Fn() -> SharedStorage;

const HOUR: Duration = Duration::from_secs(3600);

/// Test objects with every field set to something distinctive, so a backend that
/// drops or mixes up a field fails the round-trip comparisons.
pub(crate) mod fixtures {
    use super::*;

    /// An instant with sub-millisecond digits, to catch truncation.
    pub(crate) fn instant(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(secs, 123_456_789)
    }

    pub(crate) fn claims(user: &str) -> Claims {
        Claims {
            user_id: format!("{user}-id"),
            username: user.to_owned(),
            preferred_username: format!("{user}-preferred"),
            email: format!("{user}@example.com"),
            email_verified: true,
            groups: vec!["admins".to_owned(), "ops".to_owned()],
        }
    }

    pub(crate) fn pkce() -> Pkce {
        Pkce {
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned(),
            code_challenge_method: "S256".to_owned(),
        }
    }

    pub(crate) fn auth_request(id: &str, expiry: SystemTime) -> AuthRequest {
        AuthRequest {
            id: id.to_owned(),
            client_id: "grafana".to_owned(),
            response_types: vec!["code".to_owned(), "id_token".to_owned()],
            scopes: vec!["openid".to_owned(), "email".to_owned()],
            redirect_uri: "https://grafana.example.com/login/generic_oauth".to_owned(),
            nonce: format!("{id}-nonce"),
            state: format!("{id}-state"),
            force_approval_prompt: true,
            logged_in: true,
            claims: claims("alice"),
            connector_id: "forgejo".to_owned(),
            connector_data: Some(b"{\"upstream\":\"refresh\"}\x00\xff".to_vec()),
            expiry,
            pkce: pkce(),
            hmac_key: vec![0, 1, 2, 254, 255],
            auth_time: Some(instant(1_700_000_100)),
            browser_binding: format!("{id}-browser"),
            session_id: String::new(),
        }
    }

    pub(crate) fn auth_code(id: &str, expiry: SystemTime) -> AuthCode {
        AuthCode {
            id: id.to_owned(),
            client_id: "grafana".to_owned(),
            redirect_uri: "https://grafana.example.com/login/generic_oauth".to_owned(),
            nonce: format!("{id}-nonce"),
            scopes: vec!["openid".to_owned(), "offline_access".to_owned()],
            connector_id: "forgejo".to_owned(),
            // Empty but present must stay distinct from absent.
            connector_data: Some(Vec::new()),
            claims: claims("bob"),
            expiry,
            pkce: pkce(),
            auth_time: Some(instant(1_700_000_200)),
            browser_binding: format!("{id}-browser"),
            session_id: String::new(),
        }
    }

    pub(crate) fn refresh_token(id: &str) -> RefreshToken {
        RefreshToken {
            id: id.to_owned(),
            token: format!("{id}-secret"),
            obsolete_token: format!("{id}-previous"),
            created_at: instant(1_700_000_300),
            last_used: instant(1_700_000_400),
            client_id: "argocd".to_owned(),
            connector_id: "forgejo".to_owned(),
            connector_data: Some(vec![9, 8, 7]),
            claims: claims("carol"),
            scopes: vec!["openid".to_owned(), "groups".to_owned()],
            nonce: format!("{id}-nonce"),
            auth_time: Some(instant(1_700_000_250)),
            session_id: String::new(),
        }
    }

    pub(crate) fn offline_session(user_id: &str, connector_id: &str) -> OfflineSession {
        OfflineSession {
            user_id: user_id.to_owned(),
            connector_id: connector_id.to_owned(),
            refresh: BTreeMap::new(),
            connector_data: Some(b"upstream-refresh-token".to_vec()),
        }
    }

    pub(crate) fn refresh_ref(id: &str) -> RefreshTokenRef {
        RefreshTokenRef {
            id: id.to_owned(),
            client_id: "argocd".to_owned(),
            created_at: instant(1_700_000_500),
            last_used: instant(1_700_000_600),
        }
    }

    pub(crate) fn signing_key(kid: &str, algorithm: &str) -> StoredSigningKey {
        StoredSigningKey {
            kid: kid.to_owned(),
            algorithm: algorithm.to_owned(),
            private_pkcs8: format!("pkcs8-of-{kid}").into_bytes(),
            public_jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "alg": algorithm, "use": "sig",
                "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
            }),
        }
    }

    pub(crate) fn keys(signing: &str, next: Option<&str>, retired: &[&str]) -> Keys {
        Keys {
            signing_key: signing_key(signing, "RS256"),
            next_key: next.map(|kid| signing_key(kid, "ES256")),
            verification_keys: retired
                .iter()
                .enumerate()
                .map(|(i, kid)| VerificationKey {
                    public_jwk: signing_key(kid, "RS256").public_jwk,
                    expiry: instant(1_700_001_000 + i as u64),
                })
                .collect(),
            next_rotation: instant(1_700_021_600),
        }
    }

    pub(crate) fn device_request(user_code: &str, expiry: SystemTime) -> DeviceRequest {
        DeviceRequest {
            user_code: user_code.to_owned(),
            device_code: format!("{user_code}-device"),
            client_id: "kubectl".to_owned(),
            client_secret: "not-so-secret".to_owned(),
            scopes: vec!["openid".to_owned(), "offline_access".to_owned()],
            expiry,
        }
    }

    pub(crate) fn device_token(device_code: &str, expiry: SystemTime) -> DeviceToken {
        DeviceToken {
            device_code: device_code.to_owned(),
            status: "authorization_pending".to_owned(),
            token: String::new(),
            expiry,
            last_request: instant(1_700_000_700),
            poll_interval_seconds: 5,
            pkce: pkce(),
            browser_binding: format!("{device_code}-browser"),
            hop_verifier: format!("{device_code}-hop"),
        }
    }
}

fn later() -> SystemTime {
    instant(1_900_000_000)
}

fn rejected<T>(_: T) -> StorageResult<T> {
    Err(StorageError::Rejected("refused by test".to_owned()))
}

fn assert_rejected<T: std::fmt::Debug>(result: StorageResult<T>) {
    assert_eq!(
        result.unwrap_err(),
        StorageError::Rejected("refused by test".to_owned())
    );
}

pub(crate) fn auth_request_crud(new: Factory<'_>) {
    let s = new();
    let mut first = auth_request("req-1", later());
    first.auth_time = None;
    let second = auth_request("req-2", later());
    s.create_auth_request(&first).unwrap();
    s.create_auth_request(&second).unwrap();
    assert_eq!(
        s.create_auth_request(&first),
        Err(StorageError::AlreadyExists)
    );

    assert_eq!(s.get_auth_request("req-1").unwrap(), first);
    assert_eq!(s.get_auth_request("req-2").unwrap(), second);

    let mut expected = first.clone();
    expected.claims = claims("dave");
    expected.connector_id = "oidc".to_owned();
    expected.connector_data = None;
    expected.logged_in = true;
    expected.auth_time = Some(instant(1_700_000_999));
    let want = expected.clone();
    let updated = s
        .update_auth_request("req-1", &mut |mut r| {
            assert_eq!(r, first, "updater must see the stored value");
            r.claims = want.claims.clone();
            r.connector_id = want.connector_id.clone();
            r.connector_data = None;
            r.auth_time = want.auth_time;
            Ok(r)
        })
        .unwrap();
    assert_eq!(updated, expected);
    assert_eq!(s.get_auth_request("req-1").unwrap(), expected);
    assert_eq!(s.get_auth_request("req-1").unwrap().pkce, pkce());
    assert_eq!(
        s.get_auth_request("req-2").unwrap(),
        second,
        "update touched another row"
    );

    s.delete_auth_request("req-1").unwrap();
    s.delete_auth_request("req-2").unwrap();
    assert_eq!(s.get_auth_request("req-1"), Err(StorageError::NotFound));
    assert_eq!(s.delete_auth_request("req-1"), Err(StorageError::NotFound));
}

pub(crate) fn auth_code_crud(new: Factory<'_>) {
    let s = new();
    let code = auth_code("code-1", later());
    let mut other = auth_code("code-2", later());
    other.connector_data = None;
    other.auth_time = None;
    s.create_auth_code(&code).unwrap();
    s.create_auth_code(&other).unwrap();
    assert_eq!(s.create_auth_code(&code), Err(StorageError::AlreadyExists));

    assert_eq!(s.get_auth_code("code-1").unwrap(), code);
    assert_eq!(s.get_auth_code("code-2").unwrap(), other);

    s.delete_auth_code("code-1").unwrap();
    assert_eq!(s.get_auth_code("code-1"), Err(StorageError::NotFound));
    // Single use: the second delete of the same code must fail.
    assert_eq!(s.delete_auth_code("code-1"), Err(StorageError::NotFound));
    assert_eq!(s.get_auth_code("code-2").unwrap(), other);
}

fn tombstone(code: &str, refresh_token_id: Option<&str>, expiry: SystemTime) -> RedeemedCode {
    RedeemedCode {
        id: code.to_owned(),
        client_id: "grafana".to_owned(),
        refresh_token_id: refresh_token_id.map(str::to_owned),
        user_id: "bob-id".to_owned(),
        connector_id: "forgejo".to_owned(),
        expiry,
    }
}

fn redeem_only(s: &SharedStorage, redeemed: &RedeemedCode) -> StorageResult<()> {
    s.commit_grant(GrantWrite {
        redeem: Some(redeemed),
        refresh: None,
    })
}

/// Commits a grant whose link adds `token`'s reference, sets the session's
/// connector data to `data`, and prunes the references named in `prune`.
fn commit_linked(
    s: &SharedStorage,
    redeem: Option<&RedeemedCode>,
    token: &RefreshToken,
    data: &[u8],
    prune: &[&str],
) -> StorageResult<()> {
    let mut link = |session: &mut OfflineSession| {
        let pruned: Vec<String> = prune.iter().map(|id| (*id).to_owned()).collect();
        session.refresh.retain(|id, _| !pruned.contains(id));
        session
            .refresh
            .insert(token.id.clone(), refresh_ref(&token.id));
        session.connector_data = Some(data.to_vec());
        pruned
    };
    s.commit_grant(GrantWrite {
        redeem,
        refresh: Some(NewRefreshToken {
            token,
            link: &mut link,
        }),
    })
}

/// Redeeming spends the code and leaves its tombstone, atomically and once.
pub(crate) fn auth_code_redeem(new: Factory<'_>) {
    let s = new();
    let t = instant(1_700_000_000);
    s.create_auth_code(&auth_code("code-1", t)).unwrap();
    s.create_auth_code(&auth_code("code-2", t)).unwrap();
    let tombstone = tombstone("code-1", Some("rt-1"), t);
    assert_eq!(s.get_redeemed_code("code-1"), Err(StorageError::NotFound));
    redeem_only(&s, &tombstone).unwrap();
    assert_eq!(s.get_auth_code("code-1"), Err(StorageError::NotFound));
    assert_eq!(s.get_redeemed_code("code-1").unwrap(), tombstone);
    // The tombstone is not a code: deleting the code finds none and keeps it.
    assert_eq!(s.delete_auth_code("code-1"), Err(StorageError::NotFound));
    assert_eq!(s.get_redeemed_code("code-1").unwrap(), tombstone);
    // A second redemption finds no code and changes nothing.
    let mut again = tombstone.clone();
    again.refresh_token_id = None;
    assert_eq!(redeem_only(&s, &again), Err(StorageError::NotFound));
    assert_eq!(s.get_redeemed_code("code-1").unwrap(), tombstone);
    // A code never issued leaves no tombstone behind.
    let mut ghost = tombstone.clone();
    ghost.id = "ghost".to_owned();
    assert_eq!(redeem_only(&s, &ghost), Err(StorageError::NotFound));
    assert_eq!(s.get_redeemed_code("ghost"), Err(StorageError::NotFound));
    assert!(s.get_auth_code("code-2").is_ok());

    // Tombstones are collected with the codes, after their expiry.
    assert_eq!(s.garbage_collect(t).unwrap().auth_codes, 0);
    assert!(s.get_redeemed_code("code-1").is_ok());
    assert_eq!(s.garbage_collect(t + HOUR).unwrap().auth_codes, 2);
    assert_eq!(s.get_redeemed_code("code-1"), Err(StorageError::NotFound));
}

/// A grant's refresh token is stored with its link: the offline session is
/// created when missing, edited when present, and the tokens the link pruned are
/// deleted (missing ones skipped), with or without a code to spend.
pub(crate) fn grant_links_and_prunes(new: Factory<'_>) {
    let s = new();
    let t = instant(1_700_000_000);
    s.create_auth_code(&auth_code("code-1", later())).unwrap();
    let first = refresh_token("rt-1");
    let user = first.claims.user_id.clone();
    assert_eq!(
        s.get_offline_session(&user, "forgejo"),
        Err(StorageError::NotFound)
    );
    let redeemed = tombstone("code-1", Some("rt-1"), t);
    commit_linked(&s, Some(&redeemed), &first, b"up-1", &[]).unwrap();
    assert_eq!(s.get_refresh_token("rt-1").unwrap(), first);
    assert_eq!(s.get_redeemed_code("code-1").unwrap(), redeemed);
    assert_eq!(s.get_auth_code("code-1"), Err(StorageError::NotFound));
    let mut expected = OfflineSession::empty(&user, "forgejo");
    expected
        .refresh
        .insert("rt-1".to_owned(), refresh_ref("rt-1"));
    expected.connector_data = Some(b"up-1".to_vec());
    assert_eq!(s.get_offline_session(&user, "forgejo").unwrap(), expected);

    // Without a code (the password grant); an existing session keeps its other
    // references, and a pruned token is deleted with its reference.
    let bystander = refresh_token("rt-other");
    s.create_refresh_token(&bystander).unwrap();
    let second = refresh_token("rt-2");
    commit_linked(&s, None, &second, b"up-2", &["rt-1", "rt-gone"]).unwrap();
    assert_eq!(s.get_refresh_token("rt-1"), Err(StorageError::NotFound));
    assert_eq!(s.get_refresh_token("rt-2").unwrap(), second);
    assert_eq!(s.get_refresh_token("rt-other").unwrap(), bystander);
    let session = s.get_offline_session(&user, "forgejo").unwrap();
    assert_eq!(
        session.refresh.keys().collect::<Vec<_>>(),
        vec!["rt-2"],
        "{session:?}"
    );
    assert_eq!(session.connector_data, Some(b"up-2".to_vec()));
}

/// A grant that fails writes nothing: a spent code leaves no token and no session
/// change; a taken token id leaves the code unspent and the pruned token alive.
pub(crate) fn grant_is_all_or_nothing(new: Factory<'_>) {
    let s = new();
    let t = instant(1_700_000_000);
    let old = refresh_token("rt-old");
    let user = old.claims.user_id.clone();
    commit_linked(&s, None, &old, b"up-0", &[]).unwrap();
    let session = s.get_offline_session(&user, "forgejo").unwrap();

    // The code is gone (spent): NotFound, and nothing written.
    let token = refresh_token("rt-new");
    let spent = tombstone("spent", Some("rt-new"), t);
    assert_eq!(
        commit_linked(&s, Some(&spent), &token, b"up-1", &["rt-old"]),
        Err(StorageError::NotFound)
    );
    assert_eq!(s.get_refresh_token("rt-new"), Err(StorageError::NotFound));
    assert_eq!(s.get_refresh_token("rt-old").unwrap(), old);
    assert_eq!(s.get_redeemed_code("spent"), Err(StorageError::NotFound));
    assert_eq!(s.get_offline_session(&user, "forgejo").unwrap(), session);

    // The token id is taken: AlreadyExists, and the code is still there to spend.
    s.create_auth_code(&auth_code("code-1", later())).unwrap();
    let redeemed = tombstone("code-1", Some("rt-old"), t);
    let mut clash = old.clone();
    clash.token = "other-secret".to_owned();
    assert_eq!(
        commit_linked(&s, Some(&redeemed), &clash, b"up-1", &["rt-old"]),
        Err(StorageError::AlreadyExists)
    );
    assert!(s.get_auth_code("code-1").is_ok());
    assert_eq!(s.get_redeemed_code("code-1"), Err(StorageError::NotFound));
    assert_eq!(s.get_refresh_token("rt-old").unwrap(), old);
    assert_eq!(s.get_offline_session(&user, "forgejo").unwrap(), session);

    // A session of another user is neither created nor touched by the failures.
    let mut stranger = refresh_token("rt-stranger");
    stranger.claims.user_id = "stranger-id".to_owned();
    assert_eq!(
        commit_linked(&s, Some(&spent), &stranger, b"up", &[]),
        Err(StorageError::NotFound)
    );
    assert_eq!(
        s.get_offline_session("stranger-id", "forgejo"),
        Err(StorageError::NotFound)
    );
}

/// Of many concurrent redemptions of one code, each with its own refresh token,
/// exactly one commits; the others write nothing.
pub(crate) fn concurrent_grants_of_one_code(new: Factory<'_>) {
    const THREADS: usize = 8;
    let s = new();
    let t = instant(1_700_000_000);
    s.create_auth_code(&auth_code("code-1", later())).unwrap();
    let start = Barrier::new(THREADS);
    let results: Vec<StorageResult<()>> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..THREADS)
            .map(|i| {
                let (s, start) = (Arc::clone(&s), &start);
                scope.spawn(move || {
                    let id = format!("rt-{i}");
                    let token = refresh_token(&id);
                    let redeemed = tombstone("code-1", Some(&id), t);
                    start.wait();
                    commit_linked(&s, Some(&redeemed), &token, id.as_bytes(), &[])
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let winners: Vec<usize> = (0..THREADS).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (i, result) in results.iter().enumerate() {
        if !winners.contains(&i) {
            assert_eq!(result, &Err(StorageError::NotFound));
        }
    }
    let winner = format!("rt-{}", winners[0]);
    let stored: Vec<String> = s
        .list_refresh_tokens()
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(stored, vec![winner.clone()]);
    let session = s
        .get_offline_session(&refresh_token("x").claims.user_id, "forgejo")
        .unwrap();
    assert_eq!(session.refresh.keys().collect::<Vec<_>>(), vec![&winner]);
    assert_eq!(session.connector_data, Some(winner.as_bytes().to_vec()));
    assert_eq!(
        s.get_redeemed_code("code-1").unwrap().refresh_token_id,
        Some(winner)
    );
}

/// Concurrent first links of one user create the offline session once and lose
/// no reference.
pub(crate) fn concurrent_grants_share_one_new_session(new: Factory<'_>) {
    const THREADS: usize = 8;
    let s = new();
    let start = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for i in 0..THREADS {
            let (s, start) = (Arc::clone(&s), &start);
            scope.spawn(move || {
                let token = refresh_token(&format!("rt-{i}"));
                start.wait();
                commit_linked(&s, None, &token, b"up", &[]).unwrap();
            });
        }
    });
    let session = s
        .get_offline_session(&refresh_token("x").claims.user_id, "forgejo")
        .unwrap();
    assert_eq!(session.refresh.len(), THREADS, "{session:?}");
    assert_eq!(s.list_refresh_tokens().unwrap().len(), THREADS);
}

/// Issuing a code deletes the auth request and stores the code in one step: a
/// second issue finds the request gone and stores nothing; a taken code id
/// leaves the request in place.
pub(crate) fn auth_request_exchanged_for_code(new: Factory<'_>) {
    let s = new();
    s.create_auth_request(&auth_request("req-1", later()))
        .unwrap();
    s.create_auth_request(&auth_request("req-2", later()))
        .unwrap();
    let code = auth_code("code-1", later());
    s.exchange_auth_request_for_code("req-1", &code).unwrap();
    assert_eq!(s.get_auth_request("req-1"), Err(StorageError::NotFound));
    assert_eq!(s.get_auth_code("code-1").unwrap(), code);

    let other = auth_code("code-2", later());
    assert_eq!(
        s.exchange_auth_request_for_code("req-1", &other),
        Err(StorageError::NotFound)
    );
    assert_eq!(s.get_auth_code("code-2"), Err(StorageError::NotFound));

    assert_eq!(
        s.exchange_auth_request_for_code("req-2", &code),
        Err(StorageError::AlreadyExists)
    );
    assert!(s.get_auth_request("req-2").is_ok());

    // Double submits racing: one code.
    const THREADS: usize = 8;
    let start = Barrier::new(THREADS);
    let results: Vec<StorageResult<()>> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..THREADS)
            .map(|i| {
                let (s, start) = (Arc::clone(&s), &start);
                scope.spawn(move || {
                    let code = auth_code(&format!("race-{i}"), later());
                    start.wait();
                    s.exchange_auth_request_for_code("req-2", &code)
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let issued = (0..THREADS)
        .filter(|i| s.get_auth_code(&format!("race-{i}")).is_ok())
        .count();
    assert_eq!(issued, 1);
}

/// What one login commit may touch: the request, a code, a browser session and
/// the offline session of carol at forgejo.
type LoginState = (
    StorageResult<AuthRequest>,
    StorageResult<AuthCode>,
    StorageResult<BrowserSession>,
    StorageResult<OfflineSession>,
);

fn login_state(s: &SharedStorage, request: &str, code: &str, session: &str) -> LoginState {
    (
        s.get_auth_request(request),
        s.get_auth_code(code),
        s.get_browser_session(session),
        s.get_offline_session("carol-id", "forgejo"),
    )
}

/// Commits a login of `request` whose offline-session edit sets carol's
/// connector data at forgejo to `data`.
fn commit_login_with(
    s: &SharedStorage,
    request: &AuthRequest,
    next: RequestNext<'_>,
    browser_session: Option<BrowserSessionWrite<'_>>,
    data: &[u8],
) -> StorageResult<Option<BrowserSession>> {
    let mut edit = |session: &mut OfflineSession| session.connector_data = Some(data.to_vec());
    let mut browser_session = browser_session;
    s.commit_login(LoginWrite {
        request,
        next,
        browser_session: browser_session.as_mut().map(BrowserSessionWrite::reborrow),
        offline_session: Some(OfflineSessionEdit {
            user_id: "carol-id",
            connector_id: "forgejo",
            edit: &mut edit,
        }),
    })
}

/// A login commit writes the request's fate, the browser session and the
/// offline session together, and returns the browser session as written.
pub(crate) fn login_commit_writes_everything(new: Factory<'_>) {
    let s = new();
    let t = instant(1_700_000_000);
    // Logged in, approval next: the request is replaced, a session created, the
    // offline session created with the edit applied.
    let request = auth_request("req-1", later());
    s.create_auth_request(&request).unwrap();
    let mut logged_in = request.clone();
    logged_in.logged_in = true;
    logged_in.session_id = "sid-1".to_owned();
    let session = browser_session("sid-1", t, t + HOUR);
    let written = commit_login_with(
        &s,
        &request,
        RequestNext::Replace(&logged_in),
        Some(BrowserSessionWrite::Create(&session)),
        b"up-1",
    )
    .unwrap();
    assert_eq!(written.as_ref(), Some(&session));
    assert_eq!(s.get_auth_request("req-1").unwrap(), logged_in);
    assert_eq!(s.get_browser_session("sid-1").unwrap(), session);
    let offline = s.get_offline_session("carol-id", "forgejo").unwrap();
    assert_eq!(offline.connector_data, Some(b"up-1".to_vec()));
    assert!(offline.refresh.is_empty());

    // The response now: the request goes, the code comes, the session is
    // updated, the existing offline session edited (its references kept).
    s.update_offline_session("carol-id", "forgejo", &mut |mut o| {
        o.refresh.insert("rt-1".to_owned(), refresh_ref("rt-1"));
        Ok(o)
    })
    .unwrap();
    let code = auth_code("code-1", later());
    let mut updater = |mut session: BrowserSession| {
        session.last_activity = t + Duration::from_secs(5);
        Ok(session)
    };
    let written = commit_login_with(
        &s,
        &logged_in,
        RequestNext::Exchange(&code),
        Some(BrowserSessionWrite::Update {
            id: "sid-1",
            updater: &mut updater,
        }),
        b"up-2",
    )
    .unwrap()
    .unwrap();
    assert_eq!(written.last_activity, t + Duration::from_secs(5));
    assert_eq!(s.get_browser_session("sid-1").unwrap(), written);
    assert_eq!(s.get_auth_request("req-1"), Err(StorageError::NotFound));
    assert_eq!(s.get_auth_code("code-1").unwrap(), code);
    let offline = s.get_offline_session("carol-id", "forgejo").unwrap();
    assert_eq!(offline.connector_data, Some(b"up-2".to_vec()));
    assert_eq!(offline.refresh.keys().collect::<Vec<_>>(), vec!["rt-1"]);

    // Implicit flow: the request is deleted, nothing else needs to be written.
    let implicit = auth_request("req-2", later());
    s.create_auth_request(&implicit).unwrap();
    let written = s
        .commit_login(LoginWrite {
            request: &implicit,
            next: RequestNext::Delete,
            browser_session: None,
            offline_session: None,
        })
        .unwrap();
    assert_eq!(written, None);
    assert_eq!(s.get_auth_request("req-2"), Err(StorageError::NotFound));
}

/// A login commit that fails writes nothing, whichever of its parts failed.
pub(crate) fn login_commit_is_all_or_nothing(new: Factory<'_>) {
    let s = new();
    let t = instant(1_700_000_000);
    let request = auth_request("req-1", later());
    s.create_auth_request(&request).unwrap();
    s.create_offline_session(&offline_session("carol-id", "forgejo"))
        .unwrap();
    let taken = browser_session("sid-taken", t, t + HOUR);
    s.create_browser_session(&taken).unwrap();
    s.create_auth_code(&auth_code("code-taken", later()))
        .unwrap();
    let before = login_state(&s, "req-1", "code-1", "sid-1");
    let unchanged = |s: &SharedStorage| {
        assert_eq!(login_state(s, "req-1", "code-1", "sid-1"), before);
        assert_eq!(s.get_browser_session("sid-taken").unwrap(), taken);
    };
    let code = auth_code("code-1", later());
    let session = browser_session("sid-1", t, t + HOUR);
    let create = || Some(BrowserSessionWrite::Create(&session));

    // The request is gone.
    let gone = auth_request("req-gone", later());
    assert_eq!(
        commit_login_with(&s, &gone, RequestNext::Exchange(&code), create(), b"x"),
        Err(StorageError::NotFound)
    );
    unchanged(&s);

    // The request changed since it was read (another login came first).
    let mut stale = request.clone();
    stale.state = "an older state".to_owned();
    assert!(matches!(
        commit_login_with(&s, &stale, RequestNext::Exchange(&code), create(), b"x"),
        Err(StorageError::Rejected(_))
    ));
    unchanged(&s);

    // The code id is taken.
    let clash = auth_code("code-taken", later());
    assert_eq!(
        commit_login_with(&s, &request, RequestNext::Exchange(&clash), create(), b"x"),
        Err(StorageError::AlreadyExists)
    );
    unchanged(&s);

    // The browser session id is taken.
    assert_eq!(
        commit_login_with(
            &s,
            &request,
            RequestNext::Exchange(&code),
            Some(BrowserSessionWrite::Create(&taken)),
            b"x"
        ),
        Err(StorageError::AlreadyExists)
    );
    unchanged(&s);

    // The browser session to update has ended.
    let mut never = |_: BrowserSession| -> StorageResult<BrowserSession> {
        panic!("the updater of a missing session was called")
    };
    assert_eq!(
        commit_login_with(
            &s,
            &request,
            RequestNext::Exchange(&code),
            Some(BrowserSessionWrite::Update {
                id: "sid-ended",
                updater: &mut never,
            }),
            b"x"
        ),
        Err(StorageError::NotFound)
    );
    unchanged(&s);

    // The browser session's updater refuses.
    let mut refuse = rejected::<BrowserSession>;
    assert_rejected(commit_login_with(
        &s,
        &request,
        RequestNext::Exchange(&code),
        Some(BrowserSessionWrite::Update {
            id: "sid-taken",
            updater: &mut refuse,
        }),
        b"x",
    ));
    unchanged(&s);

    // A replacement must keep the request's id.
    let other = auth_request("req-other", later());
    assert!(commit_login_with(&s, &request, RequestNext::Replace(&other), create(), b"x").is_err());
    unchanged(&s);
    assert_eq!(s.get_auth_request("req-other"), Err(StorageError::NotFound));
}

/// Of many concurrent commits of one login (double submits, two tabs), exactly
/// one writes; the others find the request gone and write nothing.
pub(crate) fn concurrent_login_commits_of_one_request(new: Factory<'_>) {
    const THREADS: usize = 8;
    let s = new();
    let t = instant(1_700_000_000);
    let request = auth_request("req-1", later());
    s.create_auth_request(&request).unwrap();
    let start = Barrier::new(THREADS);
    let results: Vec<StorageResult<Option<BrowserSession>>> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..THREADS)
            .map(|i| {
                let (s, start, request) = (Arc::clone(&s), &start, &request);
                scope.spawn(move || {
                    let code = auth_code(&format!("code-{i}"), later());
                    let session = browser_session(&format!("sid-{i}"), t, t + HOUR);
                    start.wait();
                    commit_login_with(
                        &s,
                        request,
                        RequestNext::Exchange(&code),
                        Some(BrowserSessionWrite::Create(&session)),
                        format!("up-{i}").as_bytes(),
                    )
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let winners: Vec<usize> = (0..THREADS).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = winners[0];
    for (i, result) in results.iter().enumerate() {
        if i != winner {
            assert_eq!(result, &Err(StorageError::NotFound));
            assert_eq!(
                s.get_auth_code(&format!("code-{i}")),
                Err(StorageError::NotFound)
            );
            assert_eq!(
                s.get_browser_session(&format!("sid-{i}")),
                Err(StorageError::NotFound)
            );
        }
    }
    assert!(s.get_auth_code(&format!("code-{winner}")).is_ok());
    assert!(s.get_browser_session(&format!("sid-{winner}")).is_ok());
    assert_eq!(
        s.get_offline_session("carol-id", "forgejo")
            .unwrap()
            .connector_data,
        Some(format!("up-{winner}").into_bytes())
    );
}

pub(crate) fn refresh_token_crud(new: Factory<'_>) {
    let s = new();
    assert_eq!(s.list_refresh_tokens().unwrap(), Vec::new());
    let first = refresh_token("rt-1");
    s.create_refresh_token(&first).unwrap();
    assert_eq!(
        s.create_refresh_token(&first),
        Err(StorageError::AlreadyExists)
    );
    assert_eq!(s.get_refresh_token("rt-1").unwrap(), first);

    let mut second = refresh_token("rt-0");
    second.connector_data = None;
    second.auth_time = None;
    s.create_refresh_token(&second).unwrap();
    let mut listed = s.list_refresh_tokens().unwrap();
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, vec![second.clone(), first.clone()]);

    let mut expected = first.clone();
    expected.obsolete_token = first.token.clone();
    expected.token = "rotated".to_owned();
    expected.last_used = instant(1_800_000_000);
    expected.connector_data = None;
    let updated = s
        .update_refresh_token("rt-1", &mut |mut t| {
            t.obsolete_token = t.token.clone();
            t.token = "rotated".to_owned();
            t.last_used = instant(1_800_000_000);
            t.connector_data = None;
            Ok(t)
        })
        .unwrap();
    assert_eq!(updated, expected);
    assert_eq!(s.get_refresh_token("rt-1").unwrap(), expected);
    assert_eq!(s.get_refresh_token("rt-0").unwrap(), second);

    s.delete_refresh_token("rt-1").unwrap();
    s.delete_refresh_token("rt-0").unwrap();
    assert_eq!(s.get_refresh_token("rt-1"), Err(StorageError::NotFound));
    assert_eq!(s.delete_refresh_token("rt-1"), Err(StorageError::NotFound));
    assert_eq!(s.list_refresh_tokens().unwrap(), Vec::new());
}

pub(crate) fn offline_session_crud(new: Factory<'_>) {
    let s = new();
    let session = offline_session("alice-id", "forgejo");
    s.create_offline_session(&session).unwrap();
    assert_eq!(
        s.create_offline_session(&session),
        Err(StorageError::AlreadyExists)
    );
    let stored = s.get_offline_session("alice-id", "forgejo").unwrap();
    assert!(stored.refresh.is_empty());
    assert_eq!(stored, session);

    // The key is the pair: same user, other connector is another session.
    let mut other = offline_session("alice-id", "oidc");
    other.connector_data = None;
    s.create_offline_session(&other).unwrap();
    assert_eq!(
        s.get_offline_session("alice-id", "forgejo"),
        Ok(session.clone())
    );
    assert_eq!(s.get_offline_session("alice-id", "oidc"), Ok(other.clone()));
    assert_eq!(
        s.get_offline_session("forgejo", "alice-id"),
        Err(StorageError::NotFound)
    );

    let mut expected = session.clone();
    expected
        .refresh
        .insert("rt-1".to_owned(), refresh_ref("rt-1"));
    expected.connector_data = Some(b"newer-upstream-token".to_vec());
    let updated = s
        .update_offline_session("alice-id", "forgejo", &mut |mut o| {
            o.refresh.insert("rt-1".to_owned(), refresh_ref("rt-1"));
            o.connector_data = Some(b"newer-upstream-token".to_vec());
            Ok(o)
        })
        .unwrap();
    assert_eq!(updated, expected);
    assert_eq!(
        s.get_offline_session("alice-id", "forgejo").unwrap(),
        expected
    );
    assert_eq!(s.get_offline_session("alice-id", "oidc").unwrap(), other);

    s.delete_offline_session("alice-id", "forgejo").unwrap();
    assert_eq!(
        s.get_offline_session("alice-id", "forgejo"),
        Err(StorageError::NotFound)
    );
    assert_eq!(
        s.delete_offline_session("alice-id", "forgejo"),
        Err(StorageError::NotFound)
    );
    assert_eq!(s.get_offline_session("alice-id", "oidc").unwrap(), other);
}

pub(crate) fn keys_crud(new: Factory<'_>) {
    let s = new();
    assert_eq!(s.get_keys().unwrap(), None);

    let first = keys("kid-a", Some("kid-b"), &[]);
    let mut seen = Vec::new();
    let stored = s
        .update_keys(&mut |current| {
            seen.push(current);
            Ok(first.clone())
        })
        .unwrap();
    assert_eq!(seen, vec![None], "the first update_keys must see None");
    assert_eq!(stored, first);
    assert_eq!(s.get_keys().unwrap(), Some(first.clone()));

    // Rotation: the next key takes over, the old one is kept for verification.
    let second = keys("kid-b", Some("kid-c"), &["kid-a", "kid-z"]);
    let mut seen = Vec::new();
    s.update_keys(&mut |current| {
        seen.push(current);
        Ok(second.clone())
    })
    .unwrap();
    assert_eq!(seen, vec![Some(first.clone())]);
    let round_trip = s.get_keys().unwrap().unwrap();
    assert_eq!(round_trip, second);
    assert_eq!(round_trip.verification_keys.len(), 2);
    assert!(round_trip.next_key.is_some());

    // Compare-and-swap: an updater error leaves the stored keys as they were.
    assert_rejected(s.update_keys(&mut |current| {
        let mut k = current.unwrap();
        k.signing_key = signing_key("kid-evil", "RS256");
        rejected(k)
    }));
    assert_eq!(s.get_keys().unwrap(), Some(second));
}

pub(crate) fn keys_first_update_rejected_stores_nothing(new: Factory<'_>) {
    let s = new();
    assert_rejected(s.update_keys(&mut |current| {
        assert_eq!(current, None);
        rejected(keys("kid-a", None, &[]))
    }));
    assert_eq!(s.get_keys().unwrap(), None);
}

pub(crate) fn device_request_crud(new: Factory<'_>) {
    let s = new();
    let request = device_request("ABCD-EFGH", later());
    s.create_device_request(&request).unwrap();
    assert_eq!(
        s.create_device_request(&request),
        Err(StorageError::AlreadyExists)
    );
    assert_eq!(s.get_device_request("ABCD-EFGH").unwrap(), request);
    assert_eq!(
        s.get_device_request("WXYZ-WXYZ"),
        Err(StorageError::NotFound)
    );
}

pub(crate) fn device_token_crud(new: Factory<'_>) {
    let s = new();
    let token = device_token("dev-1", later());
    s.create_device_token(&token).unwrap();
    assert_eq!(
        s.create_device_token(&token),
        Err(StorageError::AlreadyExists)
    );
    assert_eq!(s.get_device_token("dev-1").unwrap(), token);

    let mut expected = token.clone();
    expected.status = "complete".to_owned();
    expected.token = r#"{"access_token":"at","token_type":"bearer"}"#.to_owned();
    expected.last_request = instant(1_700_000_777);
    let want = expected.clone();
    let updated = s
        .update_device_token("dev-1", &mut |mut t| {
            t.status = want.status.clone();
            t.token = want.token.clone();
            t.last_request = want.last_request;
            Ok(t)
        })
        .unwrap();
    assert_eq!(updated, expected);
    let stored = s.get_device_token("dev-1").unwrap();
    assert_eq!(stored, expected);
    assert_eq!(stored.pkce, pkce());
}

pub(crate) fn missing_objects_are_not_found(new: Factory<'_>) {
    fn nf<T>() -> StorageResult<T> {
        Err(StorageError::NotFound)
    }
    fn never_called<T>(_: T) -> StorageResult<T> {
        panic!("updater called for a missing object")
    }
    let s = new();

    assert_eq!(s.get_auth_request("x"), nf());
    assert_eq!(s.update_auth_request("x", &mut |r| never_called(r)), nf());
    assert_eq!(s.delete_auth_request("x"), nf());

    assert_eq!(s.get_auth_code("x"), nf());
    assert_eq!(s.delete_auth_code("x"), nf());

    assert_eq!(s.get_refresh_token("x"), nf());
    assert_eq!(s.update_refresh_token("x", &mut |t| never_called(t)), nf());
    assert_eq!(s.delete_refresh_token("x"), nf());

    assert_eq!(s.get_offline_session("x", "y"), nf());
    assert_eq!(
        s.update_offline_session("x", "y", &mut |o| never_called(o)),
        nf()
    );
    assert_eq!(s.delete_offline_session("x", "y"), nf());

    assert_eq!(s.get_device_request("x"), nf());
    assert_eq!(s.get_device_token("x"), nf());
    assert_eq!(s.update_device_token("x", &mut |d| never_called(d)), nf());

    assert_eq!(s.get_keys(), Ok(None));
}

/// An updater that changes its input and then fails must leave nothing written.
pub(crate) fn rejected_updates_write_nothing(new: Factory<'_>) {
    let s = new();
    let request = auth_request("req", later());
    let token = refresh_token("rt");
    let offline = offline_session("alice-id", "forgejo");
    let device = device_token("dev", later());
    s.create_auth_request(&request).unwrap();
    s.create_refresh_token(&token).unwrap();
    s.create_offline_session(&offline).unwrap();
    s.create_device_token(&device).unwrap();

    assert_rejected(s.update_auth_request("req", &mut |mut r| {
        r.logged_in = false;
        r.expiry = instant(0);
        rejected(r)
    }));
    assert_rejected(s.update_refresh_token("rt", &mut |mut t| {
        t.token = "stolen".to_owned();
        rejected(t)
    }));
    assert_rejected(
        s.update_offline_session("alice-id", "forgejo", &mut |mut o| {
            o.refresh.insert("rt".to_owned(), refresh_ref("rt"));
            rejected(o)
        }),
    );
    assert_rejected(s.update_device_token("dev", &mut |mut d| {
        d.status = "complete".to_owned();
        rejected(d)
    }));

    assert_eq!(s.get_auth_request("req").unwrap(), request);
    assert_eq!(s.get_refresh_token("rt").unwrap(), token);
    assert_eq!(
        s.get_offline_session("alice-id", "forgejo").unwrap(),
        offline
    );
    assert_eq!(s.get_device_token("dev").unwrap(), device);
    // The rejected expiry changes must not have reached the GC either.
    assert_eq!(
        s.garbage_collect(instant(1_000)).unwrap(),
        GcCounts::default()
    );
}

/// Objects whose expiry is `t` survive collection at `t - 1h` and at `t` itself
/// (only `expiry < now` is expired) and are removed, each counted once, at `t + 1h`.
pub(crate) fn garbage_collection(new: Factory<'_>) {
    let s = new();
    let t = instant(1_700_000_000);
    s.create_auth_request(&auth_request("req", t)).unwrap();
    s.create_auth_code(&auth_code("code", t)).unwrap();
    s.create_device_request(&device_request("ABCD-EFGH", t))
        .unwrap();
    s.create_device_token(&device_token("dev", t)).unwrap();

    for now in [t - HOUR, t] {
        assert_eq!(s.garbage_collect(now).unwrap(), GcCounts::default());
        assert!(s.get_auth_request("req").is_ok());
        assert!(s.get_auth_code("code").is_ok());
        assert!(s.get_device_request("ABCD-EFGH").is_ok());
        assert!(s.get_device_token("dev").is_ok());
    }

    let counts = s.garbage_collect(t + HOUR).unwrap();
    assert_eq!(
        counts,
        GcCounts {
            auth_requests: 1,
            auth_codes: 1,
            device_requests: 1,
            device_tokens: 1,
            revoked_access_tokens: 0,
        }
    );
    assert_eq!(counts.total(), 4);
    let nf = StorageError::NotFound;
    assert_eq!(s.get_auth_request("req").unwrap_err(), nf);
    assert_eq!(s.get_auth_code("code").unwrap_err(), nf);
    assert_eq!(s.get_device_request("ABCD-EFGH").unwrap_err(), nf);
    assert_eq!(s.get_device_token("dev").unwrap_err(), nf);
    assert_eq!(
        s.garbage_collect(t + HOUR).unwrap(),
        GcCounts::default(),
        "a second collection finds nothing"
    );
}

/// Refresh tokens, offline sessions and keys have no stored expiry: never collected.
pub(crate) fn garbage_collection_spares_long_lived_objects(new: Factory<'_>) {
    let s = new();
    let token = refresh_token("rt");
    let offline = offline_session("alice-id", "forgejo");
    let k = keys("kid-a", Some("kid-b"), &["kid-old"]);
    s.create_refresh_token(&token).unwrap();
    s.create_offline_session(&offline).unwrap();
    s.update_keys(&mut |_| Ok(k.clone())).unwrap();

    let far_future = instant(1_700_000_000) + 100 * 365 * 24 * HOUR;
    assert_eq!(s.garbage_collect(far_future).unwrap(), GcCounts::default());
    assert_eq!(s.get_refresh_token("rt").unwrap(), token);
    assert_eq!(
        s.get_offline_session("alice-id", "forgejo").unwrap(),
        offline
    );
    assert_eq!(s.get_keys().unwrap(), Some(k));
}

/// Expiry changed by an update is what the collector goes by afterwards.
pub(crate) fn garbage_collection_follows_updated_expiry(new: Factory<'_>) {
    let s = new();
    let now = instant(1_700_000_000);
    s.create_auth_request(&auth_request("extended", now - HOUR))
        .unwrap();
    s.create_auth_request(&auth_request("shortened", now + HOUR))
        .unwrap();
    s.create_device_token(&device_token("dev", now - HOUR))
        .unwrap();

    s.update_auth_request("extended", &mut |mut r| {
        r.expiry = now + HOUR;
        Ok(r)
    })
    .unwrap();
    s.update_auth_request("shortened", &mut |mut r| {
        r.expiry = now - HOUR;
        Ok(r)
    })
    .unwrap();
    s.update_device_token("dev", &mut |mut d| {
        d.expiry = now + HOUR;
        Ok(d)
    })
    .unwrap();

    let counts = s.garbage_collect(now).unwrap();
    assert_eq!(
        counts,
        GcCounts {
            auth_requests: 1,
            ..GcCounts::default()
        }
    );
    assert!(s.get_auth_request("extended").is_ok());
    assert_eq!(s.get_auth_request("shortened"), Err(StorageError::NotFound));
    assert!(s.get_device_token("dev").is_ok());
}

fn revoked(key: &str, revoked_at: SystemTime, expiry: SystemTime) -> RevokedAccessTokens {
    RevokedAccessTokens {
        key: key.to_owned(),
        revoked_at,
        expiry,
    }
}

/// A revocation round-trips; revoking a key again keeps the later instants, so a
/// repeated (or older) revocation never shortens or lifts one.
pub(crate) fn revoked_access_tokens_merge(new: Factory<'_>) {
    let s = new();
    let t = instant(1_700_000_000);
    assert_eq!(
        s.get_revoked_access_tokens("jti a"),
        Err(StorageError::NotFound)
    );
    let first = revoked("jti a", t, t + HOUR);
    s.revoke_access_tokens(&first).unwrap();
    assert_eq!(s.get_revoked_access_tokens("jti a").unwrap(), first);
    assert_eq!(
        s.get_revoked_access_tokens("jti b"),
        Err(StorageError::NotFound),
        "keys are exact"
    );

    s.revoke_access_tokens(&revoked("jti a", t - HOUR, t - HOUR))
        .unwrap();
    assert_eq!(s.get_revoked_access_tokens("jti a").unwrap(), first);

    s.revoke_access_tokens(&revoked("jti a", t + HOUR, t + 2 * HOUR))
        .unwrap();
    assert_eq!(
        s.get_revoked_access_tokens("jti a").unwrap(),
        revoked("jti a", t + HOUR, t + 2 * HOUR)
    );
    s.revoke_access_tokens(&revoked("jti a", t + 2 * HOUR, t))
        .unwrap();
    assert_eq!(
        s.get_revoked_access_tokens("jti a").unwrap(),
        revoked("jti a", t + 2 * HOUR, t + 2 * HOUR),
        "each instant merges on its own"
    );
}

/// Concurrent revocations of one key (the first ones racing to create the row)
/// all succeed and the row ends with the latest instants.
pub(crate) fn parallel_access_token_revocations(new: Factory<'_>) {
    const THREADS: u64 = 16;
    let s = new();
    let t = instant(1_700_000_000);
    let start = Barrier::new(THREADS as usize);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|i| {
                let (s, start) = (&s, &start);
                scope.spawn(move || {
                    start.wait();
                    let at = t + Duration::from_secs(i);
                    s.revoke_access_tokens(&revoked("grant x", at, at + HOUR))
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap().unwrap();
        }
    });
    let last = t + Duration::from_secs(THREADS - 1);
    assert_eq!(
        s.get_revoked_access_tokens("grant x").unwrap(),
        revoked("grant x", last, last + HOUR)
    );
}

/// Revocations are collected once their expiry has passed, counted on their own.
pub(crate) fn garbage_collection_of_revoked_access_tokens(new: Factory<'_>) {
    let s = new();
    let t = instant(1_700_000_000);
    s.revoke_access_tokens(&revoked("jti old", t - HOUR, t))
        .unwrap();
    s.revoke_access_tokens(&revoked("jti live", t - HOUR, t + HOUR))
        .unwrap();
    assert_eq!(s.garbage_collect(t).unwrap(), GcCounts::default());
    let counts = s.garbage_collect(t + Duration::from_secs(1)).unwrap();
    assert_eq!(
        counts,
        GcCounts {
            revoked_access_tokens: 1,
            ..GcCounts::default()
        }
    );
    assert_eq!(counts.total(), 1);
    assert_eq!(
        s.get_revoked_access_tokens("jti old"),
        Err(StorageError::NotFound)
    );
    assert!(s.get_revoked_access_tokens("jti live").is_ok());
}

/// Dex's `RefreshTokenParallelUpdate`: 100 concurrent increments all succeed.
pub(crate) fn parallel_refresh_token_updates(new: Factory<'_>) {
    let s = new();
    parallel_increments(&[s]);
}

/// Runs 100 threads, spread over `handles` (which must share their data), each
/// incrementing a counter kept in a refresh token's `token` field. All must succeed,
/// each must have seen a distinct predecessor, and the final value must be 100.
pub(crate) fn parallel_increments(handles: &[SharedStorage]) {
    const THREADS: usize = 100;
    let mut counter = refresh_token("counter");
    counter.token = "0".to_owned();
    handles[0].create_refresh_token(&counter).unwrap();

    let start = Barrier::new(THREADS);
    let results: Vec<StorageResult<RefreshToken>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|i| {
                let storage = Arc::clone(&handles[i % handles.len()]);
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    storage.update_refresh_token("counter", &mut |mut t| {
                        let n: u64 = t
                            .token
                            .parse()
                            .map_err(|e| StorageError::Rejected(format!("counter: {e}")))?;
                        t.token = (n + 1).to_string();
                        Ok(t)
                    })
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });

    let mut written: Vec<u64> = results
        .into_iter()
        .map(|r| r.unwrap().token.parse().unwrap())
        .collect();
    written.sort_unstable();
    let expected: Vec<u64> = (1..=THREADS as u64).collect();
    assert_eq!(written, expected, "lost or duplicated updates");
    for handle in handles {
        assert_eq!(handle.get_refresh_token("counter").unwrap().token, "100");
    }
}

fn browser_session(id: &str, created: SystemTime, idle: SystemTime) -> BrowserSession {
    let mut clients = BTreeMap::new();
    clients.insert(
        "web".to_owned(),
        SessionClient {
            authenticated_at: created,
            last_token_issued_at: Some(instant(1_700_000_010)),
            via_sso: false,
        },
    );
    clients.insert(
        "other".to_owned(),
        SessionClient {
            authenticated_at: created,
            last_token_issued_at: None,
            via_sso: true,
        },
    );
    BrowserSession {
        id: id.to_owned(),
        secret_hash: format!("{id}-hash"),
        user_id: "carol-id".to_owned(),
        connector_id: "mock".to_owned(),
        claims: claims("carol"),
        connector_data: Some(b"upstream".to_vec()),
        clients,
        created_at: created,
        authenticated_at: created,
        last_activity: created,
        absolute_expiry: later(),
        idle_expiry: idle,
    }
}

pub(crate) fn browser_session_crud(new: Factory<'_>) {
    let s = new();
    let session = browser_session("sid-1", instant(1_700_000_000), instant(1_700_003_600));
    s.create_browser_session(&session).unwrap();
    assert_eq!(
        s.create_browser_session(&session),
        Err(StorageError::AlreadyExists)
    );
    assert_eq!(s.get_browser_session("sid-1").unwrap(), session);
    let updated = s
        .update_browser_session("sid-1", &mut |mut b| {
            b.idle_expiry = instant(1_700_007_200);
            b.clients.remove("other");
            Ok(b)
        })
        .unwrap();
    assert_eq!(s.get_browser_session("sid-1").unwrap(), updated);
    assert_eq!(updated.clients.len(), 1);
    assert_rejected(s.update_browser_session("sid-1", &mut rejected));
    assert_eq!(s.get_browser_session("sid-1").unwrap(), updated);
    s.delete_browser_session("sid-1").unwrap();
    assert_eq!(
        s.delete_browser_session("sid-1"),
        Err(StorageError::NotFound)
    );
    assert_eq!(s.get_browser_session("sid-1"), Err(StorageError::NotFound));
}

/// Expired sessions are listed by the earlier of their two expiries, oldest
/// first, at most `limit`; an update that extends the idle expiry takes a
/// session off the list.
pub(crate) fn expired_browser_sessions(new: Factory<'_>) {
    let s = new();
    let t = |secs: u64| instant(1_700_000_000 + secs);
    s.create_browser_session(&browser_session("late", t(0), t(300)))
        .unwrap();
    s.create_browser_session(&browser_session("early", t(0), t(100)))
        .unwrap();
    s.create_browser_session(&browser_session("alive", t(0), t(10_000)))
        .unwrap();
    let ids = |list: Vec<BrowserSession>| list.into_iter().map(|b| b.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.expired_browser_sessions(t(50), 10).unwrap()),
        Vec::<String>::new()
    );
    // Exactly at its expiry a session is still alive.
    assert_eq!(
        ids(s.expired_browser_sessions(t(100), 10).unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(s.expired_browser_sessions(t(500), 10).unwrap()),
        ["early", "late"]
    );
    assert_eq!(
        ids(s.expired_browser_sessions(t(500), 1).unwrap()),
        ["early"]
    );
    s.update_browser_session("early", &mut |mut b| {
        b.idle_expiry = t(1000);
        Ok(b)
    })
    .unwrap();
    assert_eq!(
        ids(s.expired_browser_sessions(t(500), 10).unwrap()),
        ["late"]
    );
}

pub(crate) fn user_identity_crud(new: Factory<'_>) {
    let s = new();
    let mut consents = BTreeMap::new();
    consents.insert(
        "web".to_owned(),
        vec!["email".to_owned(), "openid".to_owned()],
    );
    let identity = UserIdentity {
        user_id: "carol-id".to_owned(),
        connector_id: "mock".to_owned(),
        consents,
        created_at: instant(1_700_000_000),
        updated_at: instant(1_700_000_001),
    };
    s.create_user_identity(&identity).unwrap();
    assert_eq!(
        s.create_user_identity(&identity),
        Err(StorageError::AlreadyExists)
    );
    assert_eq!(s.get_user_identity("carol-id", "mock").unwrap(), identity);
    assert_eq!(
        s.get_user_identity("carol-id", "other"),
        Err(StorageError::NotFound)
    );
    let updated = s
        .update_user_identity("carol-id", "mock", &mut |mut u| {
            u.consents
                .insert("other".to_owned(), vec!["groups".to_owned()]);
            Ok(u)
        })
        .unwrap();
    assert_eq!(s.get_user_identity("carol-id", "mock").unwrap(), updated);
    assert_rejected(s.update_user_identity("carol-id", "mock", &mut rejected));
    assert_eq!(
        s.update_user_identity("nobody", "mock", &mut |u| Ok(u)),
        Err(StorageError::NotFound)
    );
}

pub(crate) fn logout_deliveries(new: Factory<'_>) {
    let s = new();
    let t = |secs: u64| instant(1_700_000_000 + secs);
    let delivery = |id: &str, due| LogoutDelivery {
        id: id.to_owned(),
        client_id: "web".to_owned(),
        user_id: "carol-id".to_owned(),
        connector_id: "mock".to_owned(),
        session_id: "sid-1".to_owned(),
        attempts: 0,
        due,
        give_up_at: t(3600),
    };
    s.create_logout_delivery(&delivery("b", t(20))).unwrap();
    s.create_logout_delivery(&delivery("a", t(10))).unwrap();
    assert_eq!(
        s.create_logout_delivery(&delivery("a", t(10))),
        Err(StorageError::AlreadyExists)
    );
    let ids = |list: Vec<LogoutDelivery>| list.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.due_logout_deliveries(t(5), 10).unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(ids(s.due_logout_deliveries(t(30), 10).unwrap()), ["a", "b"]);
    assert_eq!(ids(s.due_logout_deliveries(t(30), 1).unwrap()), ["a"]);
    // Claimed (due moved on) ⇒ not due any more.
    let claimed = s
        .update_logout_delivery("a", &mut |mut d| {
            d.due = t(100);
            d.attempts += 1;
            Ok(d)
        })
        .unwrap();
    assert_eq!(claimed.attempts, 1);
    assert_eq!(ids(s.due_logout_deliveries(t(30), 10).unwrap()), ["b"]);
    assert_rejected(s.update_logout_delivery("a", &mut rejected));
    s.delete_logout_delivery("b").unwrap();
    assert_eq!(s.delete_logout_delivery("b"), Err(StorageError::NotFound));
    assert_eq!(ids(s.due_logout_deliveries(t(200), 10).unwrap()), ["a"]);
}

fn api_client(id: &str) -> ApiClient {
    ApiClient {
        id: id.to_owned(),
        secret: format!("{id}-secret"),
        redirect_uris: vec![
            format!("https://{id}.example.com/cb"),
            "http://127.0.0.1/cb".to_owned(),
        ],
        trusted_peers: vec!["peer".to_owned()],
        public: false,
        name: format!("{id} name"),
        logo_url: format!("https://{id}.example.com/logo.png"),
    }
}

pub(crate) fn api_client_crud(new: Factory<'_>) {
    let s = new();
    assert!(s.list_api_clients().unwrap().is_empty());
    let first = api_client("one");
    let second = ApiClient {
        public: true,
        secret: String::new(),
        trusted_peers: Vec::new(),
        ..api_client("two")
    };
    s.create_api_client(&first).unwrap();
    s.create_api_client(&second).unwrap();
    assert_eq!(
        s.create_api_client(&first),
        Err(StorageError::AlreadyExists)
    );
    assert_eq!(s.get_api_client("one").unwrap(), first);
    assert_eq!(s.get_api_client("two").unwrap(), second);
    assert_eq!(s.get_api_client("ONE"), Err(StorageError::NotFound));

    let updated = s
        .update_api_client("one", &mut |mut c| {
            assert_eq!(c, first, "updater must see the stored value");
            c.name = "renamed".to_owned();
            c.redirect_uris = vec!["https://new.example.com/cb".to_owned()];
            Ok(c)
        })
        .unwrap();
    assert_eq!(updated.name, "renamed");
    assert_eq!(s.get_api_client("one").unwrap(), updated);
    assert_rejected(s.update_api_client("one", &mut rejected));
    assert_eq!(s.get_api_client("one").unwrap(), updated);
    assert_eq!(
        s.update_api_client("missing", &mut |c| Ok(c)),
        Err(StorageError::NotFound)
    );

    let mut listed = s.list_api_clients().unwrap();
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, vec![updated, second.clone()]);

    s.delete_api_client("one").unwrap();
    assert_eq!(s.delete_api_client("one"), Err(StorageError::NotFound));
    assert_eq!(s.get_api_client("one"), Err(StorageError::NotFound));
    assert_eq!(s.list_api_clients().unwrap(), vec![second]);
}

pub(crate) fn api_password_crud(new: Factory<'_>) {
    let s = new();
    assert!(s.list_api_passwords().unwrap().is_empty());
    let user = ApiPassword {
        email: "Kilgore@Example.COM".to_owned(),
        hash: "$2a$10$33EMT0cVYVlPy6WAMCLsceLYjWhuHpbz5yuZxu/GAFj03J9Lytjuy".to_owned(),
        username: "kilgore".to_owned(),
        user_id: "kilgore-id".to_owned(),
    };
    let stored = ApiPassword {
        email: "kilgore@example.com".to_owned(),
        ..user.clone()
    };
    s.create_api_password(&user).unwrap();
    assert_eq!(s.get_api_password("KILGORE@example.com").unwrap(), stored);
    let other_case = ApiPassword {
        email: "KILGORE@EXAMPLE.COM".to_owned(),
        ..user.clone()
    };
    assert_eq!(
        s.create_api_password(&other_case),
        Err(StorageError::AlreadyExists)
    );
    let updated = s
        .update_api_password("kilgore@EXAMPLE.com", &mut |mut p| {
            assert_eq!(p, stored);
            p.username = "trout".to_owned();
            Ok(p)
        })
        .unwrap();
    assert_eq!(updated.username, "trout");
    assert_eq!(updated.email, "kilgore@example.com");
    assert_eq!(s.get_api_password("kilgore@example.com").unwrap(), updated);
    assert_rejected(s.update_api_password("kilgore@example.com", &mut rejected));
    assert_eq!(s.list_api_passwords().unwrap(), vec![updated]);
    assert_eq!(
        s.update_api_password("nobody@example.com", &mut |p| Ok(p)),
        Err(StorageError::NotFound)
    );
    s.delete_api_password("Kilgore@example.com").unwrap();
    assert_eq!(
        s.delete_api_password("kilgore@example.com"),
        Err(StorageError::NotFound)
    );
    assert!(s.list_api_passwords().unwrap().is_empty());
}

/// Declares one `#[test]` per conformance check. `$run` is a
/// `fn(fn(Factory<'_>))` that provides the backend's factory to a check.
macro_rules! conformance_tests {
    ($run:path) => {
        conformance_tests!(@each $run;
            auth_request_crud,
            auth_code_crud,
            auth_code_redeem,
            grant_links_and_prunes,
            grant_is_all_or_nothing,
            concurrent_grants_of_one_code,
            concurrent_grants_share_one_new_session,
            auth_request_exchanged_for_code,
            login_commit_writes_everything,
            login_commit_is_all_or_nothing,
            concurrent_login_commits_of_one_request,
            refresh_token_crud,
            offline_session_crud,
            keys_crud,
            keys_first_update_rejected_stores_nothing,
            device_request_crud,
            device_token_crud,
            missing_objects_are_not_found,
            rejected_updates_write_nothing,
            garbage_collection,
            garbage_collection_spares_long_lived_objects,
            garbage_collection_follows_updated_expiry,
            parallel_refresh_token_updates,
            revoked_access_tokens_merge,
            parallel_access_token_revocations,
            garbage_collection_of_revoked_access_tokens,
            browser_session_crud,
            expired_browser_sessions,
            user_identity_crud,
            logout_deliveries,
            api_client_crud,
            api_password_crud
        );
    };
    (@each $run:path; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                $run($crate::storage::conformance::$check);
            }
        )*
    };
}

type Check = fn(Factory<'_>);

mod memory_backend {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    fn run(check: Check) {
        check(&|| Arc::new(MemoryStorage::new()) as SharedStorage);
    }

    conformance_tests!(run);
}

mod sqlite_in_memory_backend {
    use super::*;
    use crate::storage::sqlite::SqliteStorage;

    fn run(check: Check) {
        check(&|| Arc::new(SqliteStorage::open_in_memory().unwrap()) as SharedStorage);
    }

    conformance_tests!(run);
}

mod sqlite_file_backend {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::storage::sqlite::SqliteStorage;

    fn run(check: Check) {
        let dir = tempfile::tempdir().unwrap();
        let n = AtomicUsize::new(0);
        check(&|| {
            let path = dir
                .path()
                .join(format!("oxidex-{}.db", n.fetch_add(1, Ordering::Relaxed)));
            Arc::new(SqliteStorage::open(&path).unwrap()) as SharedStorage
        });
    }

    conformance_tests!(run);
}

/// Runs only where a database is configured (see
/// [`crate::storage::postgres::test_db`]); each storage the factory makes gets
/// its own empty database, dropped after the check.
mod postgres_backend {
    use std::sync::Mutex;

    use super::*;
    use crate::storage::postgres::{PostgresStorage, test_db};

    fn run(check: Check) {
        let Some(base) = test_db::from_env() else {
            eprintln!("{} is not set: no PostgreSQL to test against", test_db::ENV);
            return;
        };
        let made = Mutex::new(Vec::new());
        check(&|| {
            let settings = test_db::create(&base).unwrap();
            made.lock().unwrap().push(settings.database.clone());
            Arc::new(PostgresStorage::open(&settings).unwrap()) as SharedStorage
        });
        for database in made.into_inner().unwrap() {
            test_db::drop(&base, &database).unwrap();
        }
    }

    conformance_tests!(run);
}
