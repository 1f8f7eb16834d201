#!/usr/bin/env python3
"""Browser-less login driver for oxidex: a cookie-keeping "browser" plus the part of Grafana's
generic_oauth client that matters, in one stdlib-only script.

It follows redirects hop by hop with a cookie jar, fills the pages it meets on the way (Forgejo's
sign-in form with its hidden `_csrf` field, Forgejo's consent form, oxidex's connector chooser,
approval and password pages) and then does what the relying party does.

Modes:
  grafana  start at Grafana's /login/generic_oauth, end logged in to Grafana, read /api/user and
           /api/user/orgs (the real Grafana does the code exchange). With --logout, then sign out
           of Grafana (GET /logout, which sends the browser to Grafana's signout_redirect_url) and
           check the oxidex session ended (see "Logout" below).
  oidc     play Grafana's generic_oauth against oxidex: discovery, authorize with state and PKCE,
           code exchange with client_secret_basic falling back to client_secret_post (like
           golang.org/x/oauth2's AutoDetect), id_token payload, userinfo, groups -> role. With
           --logout-url (what Grafana's signout_redirect_url would be), then sign out the way
           Grafana does and check the oxidex session ended.
  refresh  use the refresh token saved by `oidc --save-tokens`, check the new access token at
           userinfo and save the rotated refresh token.

Logout: Grafana's /logout redirects to signout_redirect_url and, when that URL carries a
post_logout_redirect_uri parameter and Grafana holds the user's unexpired OAuth token, adds
id_token_hint to it (pkg/services/authn/clients/oauth.go: Logout). The driver first checks that
the oxidex session works (a second login in the same browser does not go through the connector),
follows the logout to where oxidex sends the browser (it must be the post_logout_redirect_uri),
then checks that a new login goes through the connector again.

The result is one JSON document on stdout; progress goes to stderr. Exit status: 0 success (or
the expected failure with --expect-failure), 1 the flow failed or an expectation did not hold,
2 bad usage.
"""

import argparse
import base64
import hashlib
import html.parser
import http.cookiejar
import json
import os
import secrets
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

REDIRECTS = (301, 302, 303, 307, 308)
MAX_HOPS = 25
MAX_PAGES = 12


class FlowError(Exception):
    """The login flow cannot continue; the message says where and why."""


def log(message):
    print(f"login-driver: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# HTML: forms and links, as a browser sees them


class Form:
    def __init__(self, action, method):
        self.action = action
        self.method = (method or "get").lower()
        self.fields = []  # (name, value) that a browser submits without user input
        self.inputs = {}  # name -> type, for every named input
        self.buttons = []  # (name, value) of named submit buttons

    def has(self, name):
        return name in self.inputs

    def values(self, extra=None, button=None):
        data = list(self.fields)
        if button is not None:
            data.append(button)
        for key, value in (extra or {}).items():
            data = [(k, v) for (k, v) in data if k != key]
            data.append((key, value))
        return data


class PageParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms = []
        self.links = []
        self.title = ""
        self.errors = []  # texts of flash/alert error boxes, e.g. Forgejo's "Username or password is incorrect."
        self._in_title = False
        self._skip = 0  # inside <script>/<style>: not text a person reads
        self._error_tag = None  # (tag, nesting depth) of the error box being read
        self._form = None
        self._text = []

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag in ("script", "style"):
            self._skip += 1
        if self._error_tag is not None and tag == self._error_tag[0]:
            self._error_tag = (tag, self._error_tag[1] + 1)
        elif self._error_tag is None and tag in ("div", "p", "span", "li") and is_error_box(a.get("class", "")):
            self._error_tag = (tag, 1)
            self.errors.append("")
        if tag == "form":
            self._form = Form(a.get("action", ""), a.get("method", "get"))
            self.forms.append(self._form)
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag == "title":
            self._in_title = True
        elif tag in ("input", "button") and self._form is not None:
            self._field(tag, a)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def _field(self, tag, a):
        name = a.get("name")
        kind = a.get("type", "submit" if tag == "button" else "text").lower()
        if not name:
            return
        value = a.get("value", "")
        self._form.inputs[name] = kind
        if kind in ("submit", "image"):
            self._form.buttons.append((name, value))
        elif kind in ("checkbox", "radio"):
            if "checked" in a:
                self._form.fields.append((name, value or "on"))
        elif kind not in ("button", "reset", "file"):
            self._form.fields.append((name, value))

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        if self._error_tag is not None and tag == self._error_tag[0]:
            depth = self._error_tag[1] - 1
            self._error_tag = (tag, depth) if depth else None
        if tag == "form":
            self._form = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif self._skip:
            return
        elif data.strip():
            self._text.append(data.strip())
            if self._error_tag is not None:
                self.errors[-1] = (self.errors[-1] + " " + data.strip()).strip()

    def text(self, limit=600):
        """What the page says: its error boxes when it has any, else its visible text."""
        errors = [e for e in self.errors if e]
        return (" | ".join(errors) if errors else " ".join(self._text))[:limit]


def is_error_box(css_class):
    # Forgejo/Gitea: "ui negative message flash-error"; Dex-style themes: "dex-error-box"/"error".
    classes = css_class.split()
    return "flash-error" in classes or "dex-error-box" in classes or "error" in classes or (
        "negative" in classes and "message" in classes and "tw-hidden" not in classes
    )


def parse_page(body):
    parser = PageParser()
    parser.feed(body)
    parser.close()
    return parser


# ---------------------------------------------------------------------------------------------
# The "browser": a cookie jar and explicit redirects


class Response:
    def __init__(self, status, url, headers, body):
        self.status = status
        self.url = url
        self.headers = headers
        self.body = body

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as err:
            raise FlowError(
                f"{self.url} answered {self.status} with a body that is not JSON: {self.body[:200]!r}"
            ) from err


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Browser:
    def __init__(self, cafile=None):
        self.jar = http.cookiejar.CookieJar()
        context = ssl.create_default_context(cafile=cafile) if cafile else None
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar),
            _NoRedirect(),
            urllib.request.HTTPSHandler(context=context),
        )
        self.trail = []

    def request(self, method, url, data=None, headers=None):
        body = None
        hdrs = {"User-Agent": "oxidex-login-driver", "Accept": "text/html,application/json;q=0.9"}
        hdrs.update(headers or {})
        if data is not None:
            body = urllib.parse.urlencode(data).encode()
            hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
        req = urllib.request.Request(url, data=body, headers=hdrs, method=method)
        try:
            with self.opener.open(req, timeout=60) as resp:
                result = Response(resp.status, url, resp.headers, resp.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as err:
            result = Response(err.code, url, err.headers, err.read().decode("utf-8", "replace"))
        except urllib.error.URLError as err:
            raise FlowError(f"{method} {url} failed: {err.reason}") from err
        self.trail.append(f"{method} {url} -> {result.status}")
        return result

    def follow(self, url, method="GET", data=None, stop=None):
        """Request `url` and follow redirects like a browser. Returns (response, None), or
        (None, location) when `stop(location)` says the next hop is not ours to fetch."""
        for _ in range(MAX_HOPS):
            resp = self.request(method, url, data)
            if resp.status not in REDIRECTS:
                return resp, None
            location = resp.headers.get("Location")
            if not location:
                raise FlowError(f"{url} answered {resp.status} without a Location header")
            location = urllib.parse.urljoin(url, location)
            log(f"{resp.status} {url} -> {location}")
            if stop is not None and stop(location):
                return None, location
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, data = "GET", None
            url = location
        raise FlowError(f"more than {MAX_HOPS} redirects starting at {url}")


# ---------------------------------------------------------------------------------------------
# Walking through the pages between the client and the redirect back to it


def find_form(page, predicate):
    for form in page.forms:
        if predicate(form):
            return form
    return None


def submit(browser, resp, form, data, stop):
    action = urllib.parse.urljoin(resp.url, form.action or resp.url)
    if form.method == "post":
        return browser.follow(action, "POST", data, stop)
    query = urllib.parse.urlencode(data)
    return browser.follow(f"{action.split('?', 1)[0]}?{query}", "GET", None, stop)


def drive(browser, start, username, password, stop, connector=None):
    """Run the interactive part of a login. Returns the URL at which `stop` fired."""
    resp, stopped = browser.follow(start, stop=stop)
    logged_in = False
    for _ in range(MAX_PAGES):
        if stopped is not None:
            return stopped
        page = parse_page(resp.body)
        where = f"{resp.url} ({resp.status}, title {page.title.strip()!r})"
        if resp.status >= 400:
            raise FlowError(f"{where}: {page.text()}")
        if "change_password" in resp.url:
            raise FlowError(f"{where}: the upstream wants a password change; create users with --must-change-password=false")

        # Forgejo's sign-in form (user_name/password, hidden _csrf); oxidex's password page
        # (login/password).
        login_form = find_form(page, lambda f: f.has("password") and (f.has("user_name") or f.has("login")))
        if login_form is not None:
            if logged_in:
                raise FlowError(f"{where}: the credentials for {username!r} were rejected: {page.text()}")
            user_field = "user_name" if login_form.has("user_name") else "login"
            log(f"signing in as {username!r} at {resp.url}")
            resp, stopped = submit(browser, resp, login_form, login_form.values({user_field: username, "password": password}), stop)
            logged_in = True
            continue

        # Forgejo's consent page: POST /login/oauth/grant with its hidden fields and granted=true.
        grant = find_form(page, lambda f: f.action.rstrip("/").endswith("/login/oauth/grant"))
        if grant is not None:
            log(f"granting access at {resp.url}")
            resp, stopped = submit(browser, resp, grant, grant.values({"granted": "true"}), stop)
            continue

        # oxidex's (Dex's) approval page: the form whose `approval` value is `approve`.
        approve = find_form(
            page,
            lambda f: ("approval", "approve") in f.fields or ("approval", "approve") in f.buttons,
        )
        if approve is not None:
            log(f"approving at {resp.url}")
            resp, stopped = submit(browser, resp, approve, approve.values({"approval": "approve"}), stop)
            continue

        # oxidex's connector chooser: links to <issuer>/auth/<connector>.
        choices = [link for link in page.links if "/auth/" in link]
        if connector is not None:
            # Exact path match: `/auth/forgejo` must not pick `/auth/forgejo-oidc`.
            choices = [
                link for link in choices
                if urllib.parse.urlsplit(link).path.rstrip("/").endswith(f"/auth/{connector}")
            ]
        if len(choices) == 1 or (choices and connector is not None):
            target = urllib.parse.urljoin(resp.url, choices[0])
            log(f"choosing connector {target}")
            resp, stopped = browser.follow(target, stop=stop)
            continue
        if len(choices) > 1:
            raise FlowError(f"{where}: several connectors offered, pick one with --connector: {choices}")

        raise FlowError(f"{where}: no form or link to continue with: {page.text()}")
    raise FlowError(f"gave up after {MAX_PAGES} pages; last was {resp.url if resp else stopped}")


def connector_steps(browser, issuer, since):
    """The requests after trail index `since` that only a login through a connector makes: the
    upstream's redirect back to `<issuer>/callback…`, or a credentials form posted to
    `<issuer>/auth/<connector>/login` (password connectors). A login that oxidex answers from its
    browser session has none."""
    base = urllib.parse.urlsplit(issuer.rstrip("/"))
    steps = []
    for entry in browser.trail[since:]:
        method, url = entry.split(" ", 2)[:2]
        parts = urllib.parse.urlsplit(url)
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            continue
        rest = parts.path[len(base.path):] if parts.path.startswith(base.path + "/") else ""
        if rest == "/callback" or rest.startswith("/callback/") or (
            method == "POST" and rest.startswith("/auth/") and rest.endswith("/login")
        ):
            steps.append(f"{method} {parts.path}")
    return steps


def with_id_token_hint(signout_url, id_token):
    """Grafana's signout URL for an OIDC logout: id_token_hint is added only when the configured
    URL carries post_logout_redirect_uri; the query is re-encoded with sorted keys (Go's
    url.Values.Encode)."""
    parts = urllib.parse.urlsplit(signout_url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if not id_token or "post_logout_redirect_uri" not in {k for k, _ in query}:
        return signout_url
    query = [(k, v) for k, v in query if k != "id_token_hint"] + [("id_token_hint", id_token)]
    encoded = urllib.parse.urlencode(sorted(query, key=lambda kv: kv[0]))
    return urllib.parse.urlunsplit(parts._replace(query=encoded))


def check_logout_hop(browser, issuer, since, expect_hint):
    """The request to `<issuer>/logout` among the hops after trail index `since`, with the
    parameters Grafana sends; returns its post_logout_redirect_uri."""
    logout_url = issuer.rstrip("/") + "/logout"
    hops = [e.split(" ", 2)[1] for e in browser.trail[since:]]
    calls = [u for u in hops if u.split("?", 1)[0] == logout_url]
    if not calls:
        raise FlowError(f"the sign-out never reached {logout_url}; hops: {hops}")
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(calls[0]).query))
    target = params.get("post_logout_redirect_uri")
    if not target:
        raise FlowError(f"{logout_url} was called without post_logout_redirect_uri: {sorted(params)}")
    if expect_hint and not params.get("id_token_hint"):
        raise FlowError(f"{logout_url} was called without id_token_hint (Grafana adds it): {sorted(params)}")
    return target, sorted(params)


def same_place(a, b):
    pa, pb = urllib.parse.urlsplit(a), urllib.parse.urlsplit(b)
    return (pa.scheme, pa.netloc, pa.path or "/") == (pb.scheme, pb.netloc, pb.path or "/")


# ---------------------------------------------------------------------------------------------
# The relying party (what Grafana's generic_oauth does)


def b64url_json(segment):
    padded = segment + "=" * (-len(segment) % 4)
    try:
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except ValueError as err:
        raise FlowError(f"cannot decode JWT segment {segment[:40]!r}…") from err


def jwt_claims(token):
    parts = token.split(".")
    if len(parts) != 3:
        raise FlowError("the id_token is not a JWS compact serialisation")
    return b64url_json(parts[0]), b64url_json(parts[1])


def discover(browser, issuer):
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    resp = browser.request("GET", url, headers={"Accept": "application/json"})
    if resp.status != 200:
        raise FlowError(f"discovery at {url} answered {resp.status}: {resp.body[:200]!r}")
    doc = resp.json()
    if doc.get("issuer") != issuer:
        raise FlowError(f"discovery names issuer {doc.get('issuer')!r}, expected {issuer!r} (byte for byte)")
    for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        if key not in doc:
            raise FlowError(f"discovery document lacks {key}")
    return doc


def token_request(browser, endpoint, client_id, client_secret, form):
    """client_secret_basic with URL-encoded parts first, then client_secret_post: the order of
    golang.org/x/oauth2's AutoDetect, which Grafana uses."""
    basic = base64.b64encode(
        f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(client_secret)}".encode()
    ).decode()
    headers = {"Authorization": f"Basic {basic}", "Accept": "application/json"}
    resp = browser.request("POST", endpoint, form, headers)
    style = "client_secret_basic"
    if resp.status != 200:
        log(f"token endpoint answered {resp.status} to Basic auth ({resp.body[:200]!r}); retrying with client_secret_post")
        resp = browser.request(
            "POST", endpoint, dict(form, client_id=client_id, client_secret=client_secret), {"Accept": "application/json"}
        )
        style = "client_secret_post"
    if resp.status != 200:
        raise FlowError(f"token endpoint answered {resp.status}: {resp.body[:300]!r}")
    ctype = resp.headers.get("Content-Type", "")
    if "json" not in ctype:
        raise FlowError(f"token response has Content-Type {ctype!r}; clients parse it as JSON only when it says so")
    tokens = resp.json()
    for key in ("access_token", "token_type"):
        if not tokens.get(key):
            raise FlowError(f"token response lacks {key}: {sorted(tokens)}")
    return tokens, style


def userinfo(browser, endpoint, access_token):
    resp = browser.request("GET", endpoint, headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"})
    if resp.status != 200:
        raise FlowError(f"userinfo answered {resp.status}: {resp.body[:200]!r}")
    return resp.json()


def check_id_token(tokens, issuer, client_id, nonce=None):
    if "id_token" not in tokens:
        raise FlowError("no id_token in the token response although the openid scope was requested")
    header, claims = jwt_claims(tokens["id_token"])
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    problems = []
    if claims.get("iss") != issuer:
        problems.append(f"iss {claims.get('iss')!r} != {issuer!r}")
    if client_id not in auds:
        problems.append(f"aud {aud!r} lacks {client_id!r}")
    if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] <= time.time():
        problems.append(f"exp {claims.get('exp')!r} is not in the future")
    if not claims.get("sub"):
        problems.append("sub is empty")
    if nonce is not None and claims.get("nonce") != nonce:
        problems.append("nonce does not match")
    if problems:
        raise FlowError("id_token: " + "; ".join(problems))
    return header, claims


def parse_role_map(text):
    rules = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        group, sep, role = item.rpartition("=")
        if not sep or not group or not role:
            raise argparse.ArgumentTypeError(f"role rule {item!r} is not GROUP=ROLE")
        rules.append((group, role))
    return rules


def role_for(groups, rules, default):
    """Like role_attribute_path `contains(groups[*], 'g1') && 'R1' || … || 'default'`."""
    for group, role in rules:
        if group in groups:
            return role
    return default


def secret_from(args):
    if args.client_secret_file:
        with open(args.client_secret_file, encoding="utf-8") as handle:
            return handle.read().rstrip("\n")
    if args.client_secret is None:
        raise FlowError("give --client-secret or --client-secret-file")
    return args.client_secret


def save_tokens(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)


def identity(claims, info, rules, default_role):
    """Merge id_token claims and userinfo (first non-empty wins, id_token first) like Grafana."""

    def pick(*keys):
        for source in (claims, info):
            for key in keys:
                if source.get(key):
                    return source[key]
        return None

    groups = pick("groups") or []
    email = pick("email")
    if not email:
        raise FlowError("no email in id_token or userinfo; Grafana refuses such a login (auth.oauth.email.missing)")
    return {
        "sub": pick("sub"),
        "login": pick("preferred_username") or email,
        "email": email,
        "name": pick("name"),
        "groups": groups,
        "role": role_for(groups, rules, default_role),
    }


def authorize_and_exchange(args, browser, doc, secret):
    """One authorization (pages as they come) and its code exchange; returns (tokens, style)."""
    state = secrets.token_urlsafe(24)
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    params = {
        "client_id": args.client_id,
        "redirect_uri": args.redirect_uri,
        "response_type": "code",
        "scope": args.scopes,
        "state": state,
    }
    if not args.no_pkce:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    start = doc["authorization_endpoint"] + "?" + urllib.parse.urlencode(params)

    landed = drive(
        browser, start, args.username, args.password,
        stop=lambda url: url.startswith(args.redirect_uri), connector=args.connector,
    )
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(landed).query)
    if "error" in query:
        raise FlowError(
            f"oxidex redirected back with error={query['error'][0]!r} "
            f"description={query.get('error_description', [''])[0]!r}"
        )
    if query.get("state", [None])[0] != state:
        raise FlowError(f"state mismatch in {landed}")
    code = query.get("code", [None])[0]
    if not code:
        raise FlowError(f"no code in {landed}")

    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": args.redirect_uri}
    if not args.no_pkce:
        form["code_verifier"] = verifier
    return token_request(browser, doc["token_endpoint"], args.client_id, secret, form)


def oidc_logout(args, browser, doc, secret, first_claims, id_token):
    """Sign out as Grafana does (see "Logout" in the module doc) and check the session ended."""
    since = len(browser.trail)
    tokens, _ = authorize_and_exchange(args, browser, doc, secret)
    steps = connector_steps(browser, args.issuer, since)
    if steps:
        raise FlowError(f"before logout, a second login in the same browser went through the connector ({steps}): oxidex kept no session")
    if check_id_token(tokens, args.issuer, args.client_id)[1].get("sub") != first_claims.get("sub"):
        raise FlowError("the second login named another user")

    url = with_id_token_hint(args.logout_url, id_token)
    since = len(browser.trail)
    log(f"signing out at {url.split('?', 1)[0]}")
    resp, landed = browser.follow(url, stop=lambda u: not u.startswith(args.issuer.rstrip("/") + "/"))
    if landed is None:
        page = parse_page(resp.body)
        raise FlowError(f"logout stayed at {resp.url} ({resp.status}, title {page.title.strip()!r}): {page.text()}")
    target, sent = check_logout_hop(browser, args.issuer, since, expect_hint=True)
    if landed != target:
        raise FlowError(f"oxidex sent the browser to {landed}, not to post_logout_redirect_uri {target}")

    since = len(browser.trail)
    tokens, _ = authorize_and_exchange(args, browser, doc, secret)
    steps = connector_steps(browser, args.issuer, since)
    if not steps:
        raise FlowError("after logout a new login did not go through the connector: the oxidex session is still alive")
    if check_id_token(tokens, args.issuer, args.client_id)[1].get("sub") != first_claims.get("sub"):
        raise FlowError("the login after logout named another user")
    return {
        "sso_before_logout": True,
        "logout_parameters": sent,
        "landed": landed,
        "connector_after_logout": steps,
    }


def run_oidc(args, browser):
    secret = secret_from(args)
    doc = discover(browser, args.issuer)
    tokens, style = authorize_and_exchange(args, browser, doc, secret)
    _, claims = check_id_token(tokens, args.issuer, args.client_id)
    info = userinfo(browser, doc["userinfo_endpoint"], tokens["access_token"])
    if info.get("sub") != claims.get("sub"):
        raise FlowError(f"userinfo sub {info.get('sub')!r} differs from the id_token's {claims.get('sub')!r}")
    who = identity(claims, info, args.role_map, args.default_role)
    if args.save_tokens:
        save_tokens(args.save_tokens, {
            "issuer": args.issuer,
            "client_id": args.client_id,
            "token_endpoint": doc["token_endpoint"],
            "userinfo_endpoint": doc["userinfo_endpoint"],
            "access_token": tokens["access_token"],
            "refresh_token": tokens.get("refresh_token"),
            "id_token": tokens.get("id_token"),
        })
    result = dict(who)
    result.update(
        token_auth_style=style,
        expires_in=tokens.get("expires_in"),
        has_refresh_token=bool(tokens.get("refresh_token")),
        id_token_claims=claims,
        userinfo=info,
    )
    if args.logout_url:
        result["logout"] = oidc_logout(args, browser, doc, secret, claims, tokens["id_token"])
    return result


def run_refresh(args, browser):
    secret = secret_from(args)
    with open(args.tokens, encoding="utf-8") as handle:
        saved = json.load(handle)
    if not saved.get("refresh_token"):
        raise FlowError(f"{args.tokens} holds no refresh token (was offline_access requested?)")
    tokens, style = token_request(
        browser, saved["token_endpoint"], saved["client_id"], secret,
        {"grant_type": "refresh_token", "refresh_token": saved["refresh_token"]},
    )
    info = userinfo(browser, saved["userinfo_endpoint"], tokens["access_token"])
    claims = {}
    if tokens.get("id_token"):
        _, claims = check_id_token(tokens, saved["issuer"], saved["client_id"])
    # Like golang.org/x/oauth2: keep the old refresh token when the response has none.
    new_refresh = tokens.get("refresh_token") or saved["refresh_token"]
    save_tokens(args.save_tokens or args.tokens, dict(
        saved, access_token=tokens["access_token"], refresh_token=new_refresh, id_token=tokens.get("id_token")
    ))
    who = identity(claims, info, args.role_map, args.default_role)
    result = dict(who)
    result.update(
        token_auth_style=style,
        rotated=new_refresh != saved["refresh_token"],
        id_token_claims=claims,
        userinfo=info,
    )
    return result


def grafana_login(args, browser):
    base = args.grafana_url.rstrip("/")
    origin = urllib.parse.urlsplit(base)

    def back_at_grafana(url):
        parts = urllib.parse.urlsplit(url)
        return (parts.scheme, parts.netloc) == (origin.scheme, origin.netloc) and not parts.path.startswith("/login/generic_oauth")

    landed = drive(browser, base + "/login/generic_oauth", args.username, args.password, stop=back_at_grafana, connector=args.connector)
    if urllib.parse.urlsplit(landed).path.startswith("/login"):
        errors = [c.value for c in browser.jar if c.name in ("login_error", "grafana_error")]
        raise FlowError(f"Grafana sent the browser back to {landed}: the login failed {errors or '(see the Grafana log)'}")
    if not any(c.name == "grafana_session" for c in browser.jar):
        raise FlowError("Grafana did not set a grafana_session cookie")


def forget_grafana(browser, base):
    """Drop the browser's Grafana session cookies: Grafana sees a stranger, oxidex still knows its
    session (by name: Grafana and oxidex may share a host name, and cookies ignore ports)."""
    host = urllib.parse.urlsplit(base).hostname
    for cookie in [
        c for c in browser.jar
        if c.name in ("grafana_session", "grafana_session_expiry") and c.domain.lstrip(".") in (host, f"{host}.local")
    ]:
        browser.jar.clear(cookie.domain, cookie.path, cookie.name)


def grafana_logout(args, browser):
    """Sign out of Grafana (see "Logout" in the module doc) and check the oxidex session ended."""
    base = args.grafana_url.rstrip("/")
    forget_grafana(browser, base)
    since = len(browser.trail)
    grafana_login(args, browser)
    steps = connector_steps(browser, args.issuer, since)
    if steps:
        raise FlowError(f"before logout, a second Grafana login went through the connector ({steps}): oxidex kept no session")

    since = len(browser.trail)
    log(f"signing out of Grafana at {base}/logout")
    resp, _ = browser.follow(base + "/logout")
    target, sent = check_logout_hop(browser, args.issuer, since, expect_hint=True)
    if not same_place(resp.url, target) or resp.status != 200:
        raise FlowError(f"the sign-out ended at {resp.url} ({resp.status}), not at post_logout_redirect_uri {target}")
    if any(c.name == "grafana_session" for c in browser.jar):
        raise FlowError("Grafana kept its grafana_session cookie after /logout")

    since = len(browser.trail)
    grafana_login(args, browser)
    steps = connector_steps(browser, args.issuer, since)
    if not steps:
        raise FlowError("after logout a new Grafana login did not go through the connector: the oxidex session is still alive")
    return {
        "sso_before_logout": True,
        "logout_parameters": sent,
        "landed": resp.url,
        "connector_after_logout": steps,
    }


def run_grafana(args, browser):
    base = args.grafana_url.rstrip("/")
    grafana_login(args, browser)
    user = browser.request("GET", base + "/api/user", headers={"Accept": "application/json"})
    if user.status != 200:
        raise FlowError(f"/api/user answered {user.status}: {user.body[:200]!r}")
    orgs = browser.request("GET", base + "/api/user/orgs", headers={"Accept": "application/json"})
    if orgs.status != 200:
        raise FlowError(f"/api/user/orgs answered {orgs.status}: {orgs.body[:200]!r}")
    user_doc, orgs_doc = user.json(), orgs.json()
    result = {
        "login": user_doc.get("login"),
        "email": user_doc.get("email"),
        "name": user_doc.get("name"),
        "role": orgs_doc[0].get("role") if orgs_doc else None,
        "user": user_doc,
        "orgs": orgs_doc,
    }
    if args.logout:
        result["logout"] = grafana_logout(args, browser)
    return result


def check_expectations(args, result):
    problems = []
    for key in ("login", "email", "role"):
        wanted = getattr(args, f"expect_{key}", None)
        if wanted is not None and result.get(key) != wanted:
            problems.append(f"{key} is {result.get(key)!r}, expected {wanted!r}")
    for group in getattr(args, "expect_group", None) or []:
        if group not in result.get("groups", []):
            problems.append(f"group {group!r} missing from {result.get('groups')!r}")
    if problems:
        raise FlowError("; ".join(problems))


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)

    def common(p, credentials=True):
        p.add_argument("--cafile", help="CA bundle for https URLs")
        p.add_argument("--expect-failure", metavar="TEXT", action="append",
                       help="succeed only if the flow fails with an error containing TEXT "
                            "(repeatable: the error must contain every TEXT)")
        p.add_argument("--expect-role")
        p.add_argument("--expect-email")
        p.add_argument("--expect-login")
        if credentials:
            p.add_argument("--username", required=True, help="upstream (Forgejo) login")
            p.add_argument("--password", required=True)
            p.add_argument("--connector", help="connector id to pick when oxidex offers several")

    def relying_party(p):
        p.add_argument("--client-id", required=False)
        p.add_argument("--client-secret")
        p.add_argument("--client-secret-file")
        p.add_argument("--role-map", type=parse_role_map, default=[],
                       help="ordered GROUP=ROLE rules, e.g. 'sso:admins=Admin,sso=Viewer'")
        p.add_argument("--default-role", default="Viewer")
        p.add_argument("--expect-group", action="append", help="a group the user must have (repeatable)")

    g = sub.add_parser("grafana", help="log in to Grafana through oxidex and read /api/user")
    g.add_argument("--grafana-url", required=True, help="Grafana root URL, e.g. http://grafana:3000")
    g.add_argument("--logout", action="store_true",
                   help="then sign out of Grafana (its signout_redirect_url points at oxidex's /logout) "
                        "and check the oxidex session ended; needs --issuer")
    g.add_argument("--issuer", help="oxidex's issuer (for --logout)")
    common(g)

    o = sub.add_parser("oidc", help="play Grafana's generic_oauth client against oxidex")
    o.add_argument("--issuer", required=True)
    o.add_argument("--redirect-uri", required=True)
    o.add_argument("--scopes", default="openid email profile groups offline_access")
    o.add_argument("--no-pkce", action="store_true")
    o.add_argument("--save-tokens", metavar="FILE")
    o.add_argument("--logout-url", metavar="URL",
                   help="after the login, sign out as Grafana does with this signout_redirect_url "
                        "(e.g. ISSUER/logout?post_logout_redirect_uri=RP/login) and check the "
                        "oxidex session ended")
    common(o)
    relying_party(o)

    r = sub.add_parser("refresh", help="refresh the tokens saved by `oidc --save-tokens`")
    r.add_argument("--tokens", required=True, metavar="FILE")
    r.add_argument("--save-tokens", metavar="FILE", help="where to write the rotated tokens (default: --tokens)")
    common(r, credentials=False)
    relying_party(r)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.mode == "oidc" and not args.client_id:
        print("login-driver: --client-id is required", file=sys.stderr)
        return 2
    if args.mode == "grafana" and args.logout and not args.issuer:
        print("login-driver: --logout needs --issuer", file=sys.stderr)
        return 2
    browser = Browser(cafile=args.cafile)
    runner = {"grafana": run_grafana, "oidc": run_oidc, "refresh": run_refresh}[args.mode]
    try:
        result = runner(args, browser)
        check_expectations(args, result)
    except FlowError as err:
        if args.expect_failure and all(text in str(err) for text in args.expect_failure):
            print(json.dumps({"failed_as_expected": str(err)}, indent=2))
            return 0
        # The error last: callers that show the tail of stderr show it.
        for line in browser.trail[-15:]:
            log(f"  {line}")
        log(f"error: {err}")
        return 1
    if args.expect_failure:
        log(f"error: the flow succeeded, but a failure containing {args.expect_failure!r} was expected")
        print(json.dumps(result, indent=2))
        return 1
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
