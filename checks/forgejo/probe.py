#!/usr/bin/env python3
"""Probe the forge half of the login against a forge started by forge.py, with the login driver's
browser: authorize as a browser would, sign in, consent, catch the redirect to the (not running)
redirect URI, then do what an upstream connector does (code exchange, /api/v1/user,
/api/v1/user/teams, refresh rotation, OIDC discovery/id_token/userinfo, scoped tokens, a deleted
application). Prints one JSON document recording what the forge answered; tokens and secrets are
never printed, only their shapes.

  probe.py STATE_DIR > observations.json
"""

import base64
import json
import os
import secrets
import sys
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "login-driver"))
import login_driver as ld  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forge  # noqa: E402


def shape(value):
    """Describe a JSON value without its secrets: types and keys, short strings kept."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:2]] if any(isinstance(v, (dict, list)) for v in value) else value
    if isinstance(value, str) and (value.startswith(("eyJ", "gta_", "gto_")) or len(value) > 200):
        return f"<str len={len(value)} prefix={value[:4]!r}>"
    return value


def headers_of(resp, names=("Content-Type", "X-Total-Count", "Link", "WWW-Authenticate", "Cache-Control", "Pragma")):
    return {n: resp.headers.get(n) for n in names if resp.headers.get(n) is not None}


def authorize(info, app_client_id, redirect_uri, user, scope=None, extra=None):
    """Returns (browser, query of the redirect, trail)."""
    browser = ld.Browser()
    state = secrets.token_urlsafe(12)
    params = {"client_id": app_client_id, "redirect_uri": redirect_uri, "response_type": "code", "state": state}
    if scope is not None:
        params["scope"] = scope
    params.update(extra or {})
    start = info["url"] + "login/oauth/authorize?" + urllib.parse.urlencode(params)
    landed = ld.drive(browser, start, user, info["users"][user]["password"], stop=lambda u: u.startswith(redirect_uri))
    query = {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(landed).query).items()}
    if query.get("state") != state:
        raise ld.FlowError(f"state not echoed: {sorted(query)}")
    return browser, query


def token(browser, info, client_id, secret, form, style="basic"):
    url = info["url"] + "login/oauth/access_token"
    if style == "basic":
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        resp = browser.request("POST", url, form, {"Authorization": f"Basic {basic}", "Accept": "application/json"})
    else:
        resp = browser.request("POST", url, dict(form, client_id=client_id, client_secret=secret), {"Accept": "application/json"})
    return resp


def api(browser, info, path, access_token, scheme="Bearer"):
    return browser.request("GET", info["url"].rstrip("/") + path, headers={"Authorization": f"{scheme} {access_token}", "Accept": "application/json"})


def record(resp):
    try:
        body = json.loads(resp.body)
    except ValueError:
        body = resp.body[:200]
    return {"status": resp.status, "headers": headers_of(resp), "body": shape(body)}


def main():
    state = sys.argv[1]
    with open(os.path.join(state, "forge.json"), encoding="utf-8") as handle:
        info = json.load(handle)
    with open(info["apps"]["gitea"]["client_secret_file"], encoding="utf-8") as handle:
        secret = handle.read().strip()
    client_id = info["apps"]["gitea"]["client_id"]
    redirect = info["redirect_uris"][0]
    out = {"version": info["version"]}

    # 1. The first authorization by alice: Dex-style, no scope, no PKCE.
    browser, query = authorize(info, client_id, redirect, "alice")
    out["first_authorize_trail"] = browser.trail
    out["redirect_query_keys"] = sorted(query)
    out["code_prefix"] = query["code"][:4]

    # 2. Code exchange (Basic, no URL-encoding needed for UUID/gto_ secrets).
    resp = token(browser, info, client_id, secret, {"grant_type": "authorization_code", "code": query["code"], "redirect_uri": redirect})
    out["code_exchange"] = record(resp)
    tokens = json.loads(resp.body)
    _, access_claims = ld.jwt_claims(tokens["access_token"])
    _, refresh_claims = ld.jwt_claims(tokens["refresh_token"])
    out["access_token_claims"] = sorted(access_claims)
    out["refresh_token_claims"] = {k: v for k, v in refresh_claims.items() if k in ("tt", "cnt")}
    resp = token(browser, info, client_id, secret, {"grant_type": "authorization_code", "code": query["code"], "redirect_uri": redirect})
    out["code_reused"] = record(resp)

    # 3. The REST calls of the gitea connector.
    out["api_user"] = record(api(browser, info, "/api/v1/user", tokens["access_token"]))
    out["api_user_token_scheme"] = api(browser, info, "/api/v1/user", tokens["access_token"], "token").status
    out["api_user_teams"] = record(api(browser, info, "/api/v1/user/teams?page=1&limit=20", tokens["access_token"]))
    out["api_user_teams_page2"] = record(api(browser, info, "/api/v1/user/teams?page=2&limit=20", tokens["access_token"]))
    out["api_user_orgs"] = record(api(browser, info, "/api/v1/user/orgs", tokens["access_token"]))
    out["api_user_bad_token"] = record(api(browser, info, "/api/v1/user", "not.a.token"))
    no_auth = browser.request("GET", info["url"] + "api/v1/user", headers={"Accept": "application/json"})
    out["api_user_no_token"] = record(no_auth)

    # 4. Refresh twice, then the first refresh token again.
    first = tokens["refresh_token"]
    r1 = token(browser, info, client_id, secret, {"grant_type": "refresh_token", "refresh_token": first})
    out["refresh_1"] = record(r1)
    t1 = json.loads(r1.body)
    r2 = token(browser, info, client_id, secret, {"grant_type": "refresh_token", "refresh_token": t1["refresh_token"]}, style="post")
    out["refresh_2_post"] = record(r2)
    t2 = json.loads(r2.body)
    out["refresh_cnt_sequence"] = [ld.jwt_claims(t["refresh_token"])[1].get("cnt") for t in (tokens, t1, t2)]
    out["refresh_reuse_first"] = record(token(browser, info, client_id, secret, {"grant_type": "refresh_token", "refresh_token": first}))
    out["refresh_reuse_second"] = record(token(browser, info, client_id, secret, {"grant_type": "refresh_token", "refresh_token": t1["refresh_token"]}))
    out["old_access_token_after_refresh"] = api(browser, info, "/api/v1/user", tokens["access_token"]).status
    out["refresh_bad_secret"] = record(token(browser, info, client_id, "gto_wrong", {"grant_type": "refresh_token", "refresh_token": t2["refresh_token"]}))
    out["code_bad_secret"] = record(token(browser, info, client_id, "gto_wrong", {"grant_type": "authorization_code", "code": "gta_nope", "redirect_uri": redirect}))
    out["unknown_code"] = record(token(browser, info, client_id, secret, {"grant_type": "authorization_code", "code": "gta_nope", "redirect_uri": redirect}))

    # 5. Second authorization by alice: confidential client with an existing grant -> no consent.
    browser2, q2 = authorize(info, client_id, redirect, "alice", scope="openid profile email groups")
    out["second_authorize_trail"] = browser2.trail
    t3 = json.loads(token(browser2, info, client_id, secret, {"grant_type": "authorization_code", "code": q2["code"], "redirect_uri": redirect}).body)
    out["second_login_has_id_token"] = "id_token" in t3
    out["first_session_refresh_after_second_login"] = record(token(browser, info, client_id, secret, {"grant_type": "refresh_token", "refresh_token": t2["refresh_token"]}))

    # 6. OIDC: discovery, id_token, userinfo with a fresh app (grant scope is frozen per app).
    admin = forge.Api(info["url"], info["admin"]["username"], info["admin"]["password"])
    oidc_app = admin.call("POST", "/api/v1/user/applications/oauth2", {"name": "probe-oidc", "redirect_uris": [redirect], "confidential_client": True})
    disc = browser.request("GET", info["url"] + ".well-known/openid-configuration")
    out["discovery"] = record(disc)
    ob, oq = authorize(info, oidc_app["client_id"], redirect, "alice", scope="openid profile email groups",
                       extra={"nonce": "n-0S6", "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256"})
    out["oidc_authorize_trail"] = ob.trail
    wrong_pkce = token(ob, info, oidc_app["client_id"], oidc_app["client_secret"], {
        "grant_type": "authorization_code", "code": oq["code"], "redirect_uri": redirect, "code_verifier": "wrong" * 10})
    out["oidc_wrong_pkce"] = record(wrong_pkce)
    ob, oq = authorize(info, oidc_app["client_id"], redirect, "alice", scope="openid profile email groups",
                       extra={"nonce": "n-1", "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256"})
    ot = token(ob, info, oidc_app["client_id"], oidc_app["client_secret"], {
        "grant_type": "authorization_code", "code": oq["code"], "redirect_uri": redirect,
        "code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"})
    out["oidc_code_exchange"] = record(ot)
    otokens = json.loads(ot.body)
    if "id_token" not in otokens:
        print(json.dumps(out, indent=1))
        raise SystemExit("no id_token in the OIDC code exchange")
    header, claims = ld.jwt_claims(otokens["id_token"])
    out["id_token_header"] = {k: header[k] for k in header if k != "kid"}
    out["id_token_claims"] = claims
    out["oidc_userinfo"] = record(api(ob, info, "/login/oauth/userinfo", otokens["access_token"]))
    out["oidc_userinfo_bad_token"] = record(api(ob, info, "/login/oauth/userinfo", "x.y.z"))
    out["jwks"] = record(ob.request("GET", info["url"] + "login/oauth/keys"))

    # 7. Granular scopes: which API calls does a `read:user`-only token reach?
    scoped = admin.call("POST", "/api/v1/user/applications/oauth2", {"name": "probe-scoped", "redirect_uris": [redirect], "confidential_client": True})
    sb, sq = authorize(info, scoped["client_id"], redirect, "alice", scope="read:user")
    st = json.loads(token(sb, info, scoped["client_id"], scoped["client_secret"], {"grant_type": "authorization_code", "code": sq["code"], "redirect_uri": redirect}).body)
    out["scoped_read_user"] = {
        "/api/v1/user": api(sb, info, "/api/v1/user", st["access_token"]).status,
        "/api/v1/user/teams": api(sb, info, "/api/v1/user/teams", st["access_token"]).status,
        "/api/v1/user/orgs": record(api(sb, info, "/api/v1/user/orgs", st["access_token"])),
    }

    # 8. bob, outside the org: consent, then no teams.
    bb, bq = authorize(info, client_id, redirect, "bob")
    bt = json.loads(token(bb, info, client_id, secret, {"grant_type": "authorization_code", "code": bq["code"], "redirect_uri": redirect}).body)
    out["bob_teams"] = record(api(bb, info, "/api/v1/user/teams?page=1&limit=20", bt["access_token"]))

    # 9. Wrong password: what the sign-in page does.
    wb = ld.Browser()
    try:
        ld.drive(wb, info["url"] + "login/oauth/authorize?" + urllib.parse.urlencode(
            {"client_id": client_id, "redirect_uri": redirect, "response_type": "code", "state": "s"}),
            "alice", "wrong-password", stop=lambda u: u.startswith(redirect))
        out["wrong_password"] = "unexpectedly succeeded"
    except ld.FlowError as err:
        out["wrong_password"] = {"driver_error": str(err)[:300], "trail": wb.trail}

    # 10. Unknown client id and unregistered redirect at /authorize.
    out["authorize_unknown_client"] = record(browser2.request("GET", info["url"] + "login/oauth/authorize?" + urllib.parse.urlencode(
        {"client_id": "00000000-0000-0000-0000-000000000000", "redirect_uri": redirect, "response_type": "code", "state": "s"})))
    out["authorize_bad_redirect"] = record(browser2.request("GET", info["url"] + "login/oauth/authorize?" + urllib.parse.urlencode(
        {"client_id": client_id, "redirect_uri": "http://127.0.0.1:9/evil", "response_type": "code", "state": "s"})))

    # 11. The application deleted: refresh, API with an old access token, authorize.
    admin.call("DELETE", f"/api/v1/user/applications/oauth2/{oidc_app['id']}")
    out["deleted_app_refresh"] = record(token(ob, info, oidc_app["client_id"], oidc_app["client_secret"], {"grant_type": "refresh_token", "refresh_token": otokens["refresh_token"]}))
    out["deleted_app_access_token_api"] = record(api(ob, info, "/api/v1/user", otokens["access_token"]))
    out["deleted_app_authorize"] = record(ob.request("GET", info["url"] + "login/oauth/authorize?" + urllib.parse.urlencode(
        {"client_id": oidc_app["client_id"], "redirect_uri": redirect, "response_type": "code", "state": "s"})))
    for app in (scoped,):
        admin.call("DELETE", f"/api/v1/user/applications/oauth2/{app['id']}")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
