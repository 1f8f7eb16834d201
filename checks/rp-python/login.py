#!/usr/bin/env python3
"""A third relying party (PyPI Authlib) logging in to a running oxidex. Starts nothing.

  python login.py --issuer URL --client-id ID --client-secret SECRET --redirect-uri URI
                  [--connector local] [--select picker|param] [--login L --password P]
                  [--expect-email E] [--expect-group G] [--auth client_secret_basic|client_secret_post]
                  [--post-logout-redirect-uri URI] [--skip LIST]

Authlib's own OIDC client (the framework-neutral core of its Flask/Django integrations) does
discovery, the authorization URL (PKCE S256, state, nonce), the code exchange (state check),
ID token validation (signature via JWKS with the advertised algs, iss, aud, exp, iat, nonce,
azp, at_hash), userinfo and refresh. Then, in groups that --skip (comma-separated) can leave
out for a server that lacks them:
  sessions            sid in the ID token; SSO (a second authorization in the same browser needs no
                      page); prompt=none with the session (a code) and without (login_required)
  revocation          Authlib's revoke_token (RFC 7009): a revoked access token is refused at
                      userinfo, a revoked refresh token no longer refreshes
  logout              RP-Initiated Logout (end_session_endpoint from discovery) with id_token_hint,
                      post_logout_redirect_uri and state, then prompt=none answers login_required
(client_credentials has its own script, client_credentials.py.)
One line per step, then `N passed, N failed`; the exit status is non-zero when anything failed.
"""

import argparse
import copy
import html
import html.parser
import re
import secrets
import sys
import urllib.parse

import requests
from authlib.integrations.base_client import BaseApp, OAuth2Mixin, OAuthError, OpenIDMixin
from authlib.integrations.requests_client import OAuth2Session

import authlib

SCOPE = "openid email profile groups offline_access"
REDIRECTS = (301, 302, 303, 307, 308)
GROUPS = ("sessions", "revocation", "logout")

passed = 0
failed = 0


def report(ok, step, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    print(f"{'PASS' if ok else 'FAIL'} {step}{' ' + detail if detail else ''}", flush=True)


def check(step, fn):
    """Runs one check; an exception fails it. Returns (ok, value)."""
    try:
        value = fn()
    except Exception as err:  # noqa: BLE001 - every failure is reported, not raised
        report(False, step, describe(err))
        return False, None
    detail = value[1] if isinstance(value, tuple) else (value or "")
    report(True, step, str(detail))
    return True, value[0] if isinstance(value, tuple) else value


def describe(err):
    if isinstance(err, OAuthError):
        return f"{err.error}: {err.description or ''}"
    return f"{type(err).__name__}: {err}"


class Failed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise Failed(message)


# ---------------------------------------------------------------------------------------------
# The RP: Authlib's framework-neutral OAuth2 + OpenID app over requests.


class Framework:
    """Authlib's integrations keep tokens in the web framework; here there is none."""

    def update_token(self, token, refresh_token=None, access_token=None):
        pass


class RelyingParty(OAuth2Mixin, OpenIDMixin, BaseApp):
    client_cls = OAuth2Session


# ---------------------------------------------------------------------------------------------
# The browser: manual redirects with a cookie-keeping session; forms and links from the HTML.


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms = []  # {"action", "method", "inputs": [attrs]}
        self.links = []  # (href, text)
        self._form = None
        self._link = None

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = {"action": attrs.get("action", ""), "method": attrs.get("method", "get").lower(), "inputs": []}
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None:
            self._form["inputs"].append(attrs)
        elif tag == "a" and "href" in attrs:
            self._link = [attrs["href"], ""]

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "a" and self._link is not None:
            self.links.append((self._link[0], self._link[1].strip()))
            self._link = None

    def handle_data(self, data):
        if self._link is not None:
            self._link[1] += data


def page_text(body, limit=300):
    """What a person reads on the page (its <main>, else the whole body), for error messages."""
    main = re.search(r"<main\b[^>]*>(.*?)</main>", body, re.S | re.I)
    text = re.sub(r"<[^>]*>", " ", main.group(1) if main else body)
    return " ".join(html.unescape(text).split())[:limit]


def hidden(form):
    return [(i["name"], i.get("value", "")) for i in form["inputs"] if i.get("type") == "hidden" and i.get("name")]


def login_through_pages(authorization_url, opts, deny=False, quiet=False, browser=None, silent=False):
    """Follows the pages from the authorization URL to the first redirect to the client. With
    `silent` (SSO, prompt=none) any page or connector callback on the way fails: the browser's
    session alone must bring it back to the client."""
    say = (lambda *a: None) if quiet or silent else (lambda step, detail: report(True, step, detail))
    target = urllib.parse.urlsplit(opts.redirect_uri)
    browser = browser if browser is not None else requests.Session()
    url = authorization_url
    response = browser.get(url, allow_redirects=False)
    seen = set()
    for _ in range(25):
        if response.status_code in REDIRECTS:
            url = urllib.parse.urljoin(url, response.headers["location"])
            parts = urllib.parse.urlsplit(url)
            if (parts.scheme, parts.netloc, parts.path) == (target.scheme, target.netloc, target.path):
                return url
            if parts.path.endswith("/callback") or "/callback/" in parts.path:
                expect(not silent, f"went through the connector again ({parts.path})")
                say("connector callback", f"{response.status_code} → {parts.path}")
            response = browser.get(url, allow_redirects=False)
            continue
        expect(response.status_code == 200, f"{response.status_code} at {url}: {response.text[:200]}")
        expect(not silent, f"a page was shown at {urllib.parse.urlsplit(url).path}: {page_text(response.text)}")
        page = Page()
        page.feed(response.text)
        password = next((f for f in page.forms if any(i.get("name") == "password" for i in f["inputs"])), None)
        decision = "rejected" if deny else "approve"
        approve = next((f for f in page.forms if ("approval", decision) in hidden(f)), None)
        if password is not None:
            expect("password" not in seen, "password form shown again (wrong credentials?)")
            seen.add("password")
            expect(opts.login and opts.password, "the connector asks for a password: pass --login and --password")
            expect(any(n == "csrf_token" for n, _ in hidden(password)), "password form has no csrf_token")
            action = urllib.parse.urljoin(url, password["action"])
            fields = hidden(password) + [("login", opts.login), ("password", opts.password)]
            response = browser.post(action, data=fields, allow_redirects=False)
            expect(response.status_code in REDIRECTS, f"password POST answered {response.status_code}")
            say("password form", f"{urllib.parse.urlsplit(action).path} → {response.status_code}")
            url = action
            continue
        if approve is not None:
            expect("approval" not in seen, "approval page shown again")
            seen.add("approval")
            action = urllib.parse.urljoin(url, approve["action"])
            response = browser.post(action, data=hidden(approve), allow_redirects=False)
            expect(response.status_code in REDIRECTS, f"approval POST answered {response.status_code}")
            say("approval page", f"approval={decision} → {response.status_code}")
            url = action
            continue
        choice = next(
            (
                (urllib.parse.urljoin(url, href), text)
                for href, text in page.links
                if urllib.parse.urlsplit(urllib.parse.urljoin(url, href)).path.endswith(f"/auth/{opts.connector}")
            ),
            None,
        )
        if choice is not None:
            expect("picker" not in seen, "connector picker shown again")
            seen.add("picker")
            say("connector picker", f'chose "{choice[1]}"')
            url = choice[0]
            response = browser.get(url, allow_redirects=False)
            continue
        raise Failed(f"unexpected page at {url}: {response.text[:300]}")
    raise Failed("too many redirects and pages")


# ---------------------------------------------------------------------------------------------


def main(opts):
    rp = RelyingParty(
        Framework(),
        name="oxidex",
        client_id=opts.client_id,
        client_secret=opts.client_secret,
        server_metadata_url=opts.issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={
            "scope": SCOPE,
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": opts.auth,
            "revocation_endpoint_auth_method": opts.auth,
        },
    )

    def discovery():
        metadata = rp.load_server_metadata()
        # Authlib does not compare the discovered issuer with the one asked for; do it here.
        expect(metadata["issuer"] == opts.issuer, f"issuer {metadata['issuer']}")
        return f"issuer={metadata['issuer']}"

    if not check("discovery", discovery)[0]:
        return

    def claims_options():
        # Authlib checks iss against the metadata by default; pin aud to this client too.
        return {
            "iss": {"essential": True, "value": opts.issuer},
            "aud": {"essential": True, "value": opts.client_id},
        }

    def authorize(**more):
        extra = {"connector_id": opts.connector} if opts.select == "param" else {}
        return rp.create_authorization_url(opts.redirect_uri, **extra, **more)

    request = authorize()
    expect(request.get("code_verifier") and request.get("nonce") and request.get("state"), "PKCE/nonce/state")
    report(True, "authorization url", "S256 state nonce" + (f" connector_id={opts.connector}" if opts.select == "param" else ""))

    # One browser for the whole run: its session cookie is what SSO, prompt=none and logout use.
    browser = requests.Session()
    ok, callback = check(
        "redirect to client", lambda: (login_through_pages(request["url"], opts, browser=browser), "code=…&state=…")
    )
    if not ok:
        return

    def exchange():
        token = rp.fetch_access_token(
            opts.redirect_uri,
            authorization_response=callback,
            state=request["state"],
            code_verifier=request["code_verifier"],
        )
        expect("id_token" in token, "no ID token")
        return token, f"token_type={token['token_type']} expires_in={token.get('expires_in')}"

    ok, token = check("code exchange (state checked)", exchange)
    if not ok:
        return

    def validate(tok):
        # Without claims_cls Authlib picks CodeIDToken and hands it the access token, so at_hash is
        # verified; given CodeIDToken explicitly it skips that check.
        claims = rp.parse_id_token(tok, request["nonce"], claims_options=claims_options())
        expect(claims.get("at_hash"), "no at_hash")
        return claims

    ok, claims = check(
        "ID token validation (sig via JWKS, iss, aud, exp, iat, nonce, azp, at_hash)",
        lambda: (lambda c: (c, f"sub={c['sub']} at_hash={c['at_hash']}"))(validate(token)),
    )
    if not ok:
        return

    def claim_values():
        if opts.expect_email:
            expect(claims.get("email") == opts.expect_email, f"email {claims.get('email')}")
            expect(claims.get("email_verified") is True, "email_verified")
        if opts.expect_group:
            expect(opts.expect_group in (claims.get("groups") or []), f"groups {claims.get('groups')}")
        expect(claims.get("name"), "no name")
        return f"email={claims.get('email')} name={claims.get('name')!r} groups={claims.get('groups')}"

    check("ID token claims", claim_values)

    def userinfo():
        info = rp.userinfo(token=token)
        expect(info["sub"] == claims["sub"], f"userinfo sub {info['sub']} != ID token sub")
        if opts.expect_email:
            expect(info.get("email") == opts.expect_email, f"email {info.get('email')}")
        return f"sub matches, email={info.get('email')}"

    check("userinfo", userinfo)

    metadata = rp.load_server_metadata()

    def refresh_with(refresh_token):
        with rp._get_oauth_client(**metadata) as session:  # noqa: SLF001 - Authlib's own session factory
            return session.refresh_token(metadata["token_endpoint"], refresh_token=refresh_token)

    def refresh():
        expect(token.get("refresh_token"), "offline_access gave no refresh token")
        new = refresh_with(token["refresh_token"])
        new_claims = validate(new)
        expect(new_claims["sub"] == claims["sub"], "sub changed")
        expect(new.get("refresh_token") and new["refresh_token"] != token["refresh_token"], "not rotated")
        return new, "new ID token valid (sig, iss, aud, exp, nonce, at_hash), rotated"

    ok, refreshed = check("refresh", refresh)

    def replay():
        try:
            refresh_with(token["refresh_token"])
        except OAuthError as err:
            expect(err.error == "invalid_grant", f"error {err.error}")
            return err.error
        raise Failed("the old refresh token was accepted again")

    check("old refresh token replay rejected", replay)

    def cancel():
        # Consent given above is remembered (per user and client), so prompt=consent asks again.
        denied = authorize(prompt="consent")
        back = login_through_pages(denied["url"], opts, deny=True, quiet=True)
        # Authlib reads error redirects in its web-framework layer (e.g. the Flask app's
        # authorize_access_token), which is not used here; do the same by hand.
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(back).query))
        expect("code" not in params, "a code came back after Cancel")
        expect(params.get("state") == denied["state"], f"state {params.get('state')!r} does not match")
        expect(params.get("error") == "access_denied", f"error {params.get('error')!r}")
        return f"error={params['error']} state matched"

    check("cancel on approval → access_denied", cancel)

    ctx = Context(opts, rp, browser, authorize, validate, claims, token, metadata)
    for group, run in (
        ("sessions", session_checks),
        ("revocation", revocation_checks),
        ("logout", logout_checks),
    ):
        if group not in opts.skip:
            run(ctx)
    if opts.skip:
        print(f"skipped: {', '.join(sorted(opts.skip))}")


class Context:
    """What the feature checks need from the login in main()."""

    def __init__(self, opts, rp, browser, authorize, validate, claims, token, metadata):
        self.opts, self.rp, self.browser, self.authorize = opts, rp, browser, authorize
        self.validate, self.claims, self.token, self.metadata = validate, claims, token, metadata

    def session(self):
        """Authlib's own requests session for the token, revocation and userinfo endpoints."""
        return self.rp._get_oauth_client(**self.metadata)  # noqa: SLF001 - Authlib's own session factory

    def authorize_and_exchange(self, browser, silent=False, **more):
        """One authorization in `browser` (pages as needed, or none with `silent`), then the code
        exchange and ID token validation."""
        request = self.authorize(**more)
        back = login_through_pages(request["url"], self.opts, quiet=True, browser=browser, silent=silent)
        token = self.rp.fetch_access_token(
            self.opts.redirect_uri,
            authorization_response=back,
            state=request["state"],
            code_verifier=request["code_verifier"],
        )
        request_nonce = request["nonce"]
        return token, self.rp.parse_id_token(
            token,
            request_nonce,
            claims_options={
                "iss": {"essential": True, "value": self.opts.issuer},
                "aud": {"essential": True, "value": self.opts.client_id},
            },
        )

    def expect_authorization_error(self, browser, code, **more):
        """The authorization comes back to the client, without a page, with error=`code`."""
        request = self.authorize(**more)
        back = login_through_pages(request["url"], self.opts, browser=browser, silent=True)
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(back).query))
        expect("code" not in params, f"a code came back; expected error={code}")
        expect(params.get("state") == request["state"], f"state {params.get('state')!r} does not match")
        expect(params.get("error") == code, f"error {params.get('error')!r} ({params.get('error_description')!r}), expected {code}")
        return f"error={code} state matched, no page shown"

    def userinfo_status(self, access_token):
        return requests.get(self.metadata["userinfo_endpoint"], headers={"Authorization": f"Bearer {access_token}"}, timeout=30)


def expect_token_error(fn, *codes):
    try:
        fn()
    except OAuthError as err:
        expect(err.error in codes, f"error {err.error}: {err.description}, expected {' or '.join(codes)}")
        return err.error
    raise Failed(f"accepted; expected {' or '.join(codes)}")


def session_checks(ctx):
    """OIDC Core §3.1.2.1 and Dex HEAD's sessions: the login in main() left a session in the browser."""
    claims = ctx.claims

    def sid():
        expect(claims.get("sid"), "no sid in the ID token")
        return f"sid={claims['sid']}" + (f" auth_time={claims['auth_time']}" if claims.get("auth_time") else "")

    check("sid claim", sid)

    def sso():
        _, again = ctx.authorize_and_exchange(ctx.browser, silent=True)
        expect(again["sub"] == claims["sub"], f"sub {again['sub']} != {claims['sub']}")
        expect(again.get("sid") == claims.get("sid"), f"sid {again.get('sid')} != {claims.get('sid')}")
        # auth_time is the time of the real login, not of the SSO.
        expect(again.get("auth_time") == claims.get("auth_time"), f"auth_time {again.get('auth_time')} != {claims.get('auth_time')}")
        return "same sub and sid" + (", same auth_time" if claims.get("auth_time") else "") + ", code without connector or approval"

    check("SSO: second authorization, no page", sso)

    def silent_with_session():
        _, again = ctx.authorize_and_exchange(ctx.browser, silent=True, prompt="none")
        expect((again["sub"], again.get("sid")) == (claims["sub"], claims.get("sid")), "sub or sid differ")
        return "same sub and sid"

    check("prompt=none with the session → code", silent_with_session)
    check(
        "prompt=none without a session → login_required",
        lambda: ctx.expect_authorization_error(requests.Session(), "login_required", prompt="none"),
    )


def revocation_checks(ctx):
    """RFC 7009 with Authlib's revoke_token at the advertised revocation_endpoint."""
    endpoint = ctx.metadata.get("revocation_endpoint")
    if not check("revocation_endpoint advertised", lambda: (expect(endpoint, "no revocation_endpoint in discovery"), endpoint)[1])[0]:
        return

    def fresh():
        # A fresh grant (SSO when sessions work, the pages again otherwise).
        token, _ = ctx.authorize_and_exchange(ctx.browser)
        expect(token.get("refresh_token"), "no refresh token")
        status = ctx.userinfo_status(token["access_token"]).status_code
        expect(status == 200, f"userinfo answered {status} before revocation")
        return token, "access token accepted at userinfo"

    ok, token = check("fresh tokens for revocation", fresh)
    if not ok:
        return

    def revoke(value, hint):
        with ctx.session() as session:
            response = session.revoke_token(endpoint, token=value, token_type_hint=hint)
        expect(response.status_code == 200, f"revocation answered {response.status_code}: {response.text[:200]}")

    def access():
        revoke(token["access_token"], "access_token")
        response = ctx.userinfo_status(token["access_token"])
        expect(response.status_code == 401, f"userinfo answered {response.status_code} after revocation")
        return f"401 {response.headers.get('WWW-Authenticate', '')}"

    check("revoke_token(access token) → userinfo refuses it", access)

    def refresh():
        # Rotate once first: the token revoked below demonstrably worked a moment before.
        with ctx.session() as session:
            live = session.refresh_token(ctx.metadata["token_endpoint"], refresh_token=token["refresh_token"])
        expect(live.get("refresh_token"), "no rotated refresh token")
        revoke(live["refresh_token"], "refresh_token")

        def again():
            with ctx.session() as session:
                session.refresh_token(ctx.metadata["token_endpoint"], refresh_token=live["refresh_token"])

        return expect_token_error(again, "invalid_grant", "invalid_request")

    check("revoke_token(refresh token) → refresh fails", refresh)
    check("revoking an unknown token → 200", lambda: (revoke("not-a-token-we-issued", None), "200")[1])


def logout_checks(ctx):
    """RP-Initiated Logout 1.0: Authlib has no helper; the URL comes from discovery."""
    endpoint = ctx.metadata.get("end_session_endpoint")
    if not check("end_session_endpoint advertised", lambda: (expect(endpoint, "no end_session_endpoint in discovery"), endpoint)[1])[0]:
        return
    # What the browser held before logging out: a copy plays a stolen or kept cookie afterwards.
    before = requests.Session()
    before.cookies = copy.deepcopy(ctx.browser.cookies)

    def logout():
        state = secrets.token_urlsafe(16)
        query = urllib.parse.urlencode({
            "id_token_hint": ctx.token["id_token"],
            "post_logout_redirect_uri": ctx.opts.post_logout_redirect_uri,
            "state": state,
        })
        url = f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"
        response = ctx.browser.get(url, allow_redirects=False)
        expect(response.status_code in REDIRECTS, f"{response.status_code} at {endpoint}: {page_text(response.text)}")
        back = urllib.parse.urlsplit(urllib.parse.urljoin(url, response.headers["location"]))
        expected = urllib.parse.urlsplit(ctx.opts.post_logout_redirect_uri)
        expect((back.scheme, back.netloc, back.path) == (expected.scheme, expected.netloc, expected.path), f"redirected to {back.geturl()}")
        got = dict(urllib.parse.parse_qsl(back.query)).get("state")
        expect(got == state, f"state {got!r} != {state!r}")
        return f"{response.status_code} → {back.scheme}://{back.netloc}{back.path}?state=… (echoed)"

    check("end session → post_logout_redirect_uri with state", logout)
    check(
        "after logout: prompt=none → login_required",
        lambda: ctx.expect_authorization_error(ctx.browser, "login_required", prompt="none"),
    )
    check(
        "after logout: the old session cookie → login_required",
        lambda: ctx.expect_authorization_error(before, "login_required", prompt="none"),
    )


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--issuer", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret", required=True)
    p.add_argument("--redirect-uri", required=True)
    p.add_argument("--connector", default="local")
    p.add_argument("--select", choices=("picker", "param"), default="picker")
    p.add_argument("--login")
    p.add_argument("--password")
    p.add_argument("--expect-email")
    p.add_argument("--expect-group")
    p.add_argument("--auth", choices=("client_secret_basic", "client_secret_post"), default="client_secret_basic")
    p.add_argument("--post-logout-redirect-uri")
    p.add_argument("--skip", default="", help=f"comma-separated groups to leave out: {','.join(GROUPS)}")
    opts = p.parse_args()
    opts.skip = {g.strip() for g in opts.skip.split(",") if g.strip()}
    unknown = opts.skip - set(GROUPS)
    if unknown:
        p.error(f"--skip takes {', '.join(GROUPS)}; unknown: {', '.join(sorted(unknown))}")
    if "logout" not in opts.skip and not opts.post_logout_redirect_uri:
        p.error("the logout checks need --post-logout-redirect-uri")
    if opts.expect_email is None and opts.login and "@" in opts.login:
        opts.expect_email = opts.login
    return opts


if __name__ == "__main__":
    options = parse()
    print(f"authlib {authlib.__version__} against {options.issuer} (connector {options.connector} via {options.select}, {options.auth})")
    try:
        main(options)
    except Exception as error:  # noqa: BLE001
        report(False, "unexpected error", describe(error))
    print(f"{passed} passed, {failed} failed")
    sys.exit(0 if failed == 0 and passed > 0 else 1)
