#!/usr/bin/env python3
"""Authlib's client_credentials grant against a running oxidex on which the grant is enabled
(Dex master's opt-in). Starts nothing.

  python client_credentials.py --issuer URL --client-id ID --client-secret SECRET
                               [--client-name NAME] [--public-client-id ID]

One line per step, then `N passed, N failed`; the exit status is non-zero when anything failed.
"""

import argparse
import base64
import json
import sys

import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError

passed = 0
failed = 0


def check(step, fn):
    global passed, failed
    try:
        detail = fn()
        passed += 1
        print(f"PASS {step}{' ' + detail if detail else ''}", flush=True)
    except Exception as err:  # noqa: BLE001 - every failure is reported, none aborts
        failed += 1
        print(f"FAIL {step} {type(err).__name__}: {err}", flush=True)


def payload(jwt):
    part = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def dex_subject(user_id):
    """Dex's `sub`: base64url(protobuf {1: user id}) when the connector id is empty."""
    raw = user_id.encode()
    n, varint = len(raw), bytearray()
    while n >= 0x80:
        varint.append((n & 0x7F) | 0x80)
        n >>= 7
    varint.append(n)
    return base64.urlsafe_b64encode(b"\x0a" + bytes(varint) + raw).rstrip(b"=").decode()


def expect_error(fn, code):
    try:
        fn()
    except OAuthError as err:
        if err.error != code:
            raise AssertionError(f"got {err.error}, want {code}") from err
        return f"{err.error}: {err.description}"
    raise AssertionError(f"succeeded, want {code}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--client-name")
    parser.add_argument("--public-client-id")
    opts = parser.parse_args()

    meta = requests.get(f"{opts.issuer}/.well-known/openid-configuration", timeout=10).json()
    token_url = meta["token_endpoint"]

    def advertised():
        grants = meta.get("grant_types_supported", [])
        assert "client_credentials" in grants, grants

    check("discovery advertises client_credentials", advertised)

    def session(client_id, secret, method="client_secret_basic"):
        return OAuth2Session(client_id, secret, token_endpoint_auth_method=method)

    def tokens_for_the_client():
        for method in ("client_secret_basic", "client_secret_post"):
            token = session(opts.client_id, opts.client_secret, method).fetch_token(
                token_url, grant_type="client_credentials", scope="profile groups"
            )
            assert token["token_type"].lower() == "bearer", token
            assert "refresh_token" not in token and "id_token" not in token, token
            claims = payload(token["access_token"])
            assert claims["sub"] == dex_subject(opts.client_id), claims
            assert claims["aud"] == opts.client_id, claims
            if opts.client_name:
                assert claims.get("name") == opts.client_name, claims
        return f"sub={claims['sub']}"

    check("fetch_token(client_credentials), Basic and post: the client's own token", tokens_for_the_client)

    def id_token_with_openid():
        token = session(opts.client_id, opts.client_secret).fetch_token(
            token_url, grant_type="client_credentials", scope="openid"
        )
        claims = payload(token["id_token"])
        assert claims["sub"] == dex_subject(opts.client_id) and claims["aud"] == opts.client_id, claims
        # No browser session issued it (Dex HEAD: no sid, no auth_time).
        assert "sid" not in claims and "auth_time" not in claims, claims
        info = requests.get(
            meta["userinfo_endpoint"], headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=10
        )
        assert info.status_code == 200 and info.json().get("sub") == claims["sub"], (info.status_code, info.text[:200])

    check("openid adds an ID token naming the client (no sid); userinfo takes the access token", id_token_with_openid)
    check(
        "offline_access is invalid_scope",
        lambda: expect_error(
            lambda: session(opts.client_id, opts.client_secret).fetch_token(
                token_url, grant_type="client_credentials", scope="offline_access"
            ),
            "invalid_scope",
        ),
    )
    check(
        "a wrong secret is invalid_client",
        lambda: expect_error(
            lambda: session(opts.client_id, "wrong").fetch_token(token_url, grant_type="client_credentials"),
            "invalid_client",
        ),
    )
    if opts.public_client_id:
        check(
            "a public client is unauthorized_client",
            lambda: expect_error(
                lambda: OAuth2Session(opts.public_client_id, token_endpoint_auth_method="none").fetch_token(
                    token_url, grant_type="client_credentials"
                ),
                "unauthorized_client",
            ),
        )

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
