#!/usr/bin/env python3
"""Start, bootstrap and stop a throw-away Forgejo/Gitea on 127.0.0.1 with SQLite (stdlib only).

  forge.py start --bin BIN --static-root DIR --dir STATE [--port P] --redirect-uri URI...
      Writes STATE/app.ini, migrates, creates the admin with the CLI, starts `BIN web` in the
      background (pid in STATE/forge.pid, log in STATE/forge.log), waits for /api/healthz, then
      through the API creates the users `alice` (in the org) and `bob` (outside it), the org
      `oxorg` with the team `Devs` holding alice, and a confidential OAuth2 application with the
      given redirect URIs, one per oxidex connector (`gitea`, `oidc`). Writes
      STATE/<which>_client_id, STATE/<which>_client_secret (0600) and STATE/forge.json (URL, user
      names, passwords of the test users, app ids and file paths; no client secret).
      Prints the path of forge.json; never prints the client secret.
  forge.py stop --dir STATE        stop the process started by `start`
  forge.py delete-app --dir STATE [--which gitea|oidc]
      delete an OAuth2 application (for the "app deleted" scenario)

Every password here is a throw-away test credential of a forge that lives in a temp dir.
"""

import argparse
import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ADMIN = "forgeadmin"
ORG = "oxorg"
TEAM = "Devs"  # mixed case on purpose: REST keeps it, the OIDC groups claim lower-cases it
APPS = ("gitea", "oidc")  # one OAuth2 application per oxidex connector
USERS = {
    "alice": {"email": "alice@example.test", "full_name": "Alice Liddell"},
    "bob": {"email": "bob@example.test", "full_name": ""},
}


def log(message):
    print(f"forge.py: {message}", file=sys.stderr, flush=True)


class ForgeError(Exception):
    pass


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def app_ini(state, port, static_root, access_token_ttl):
    data = os.path.join(state, "data")
    root_url = f"http://127.0.0.1:{port}/"
    # Random secrets up front: an empty one would be generated and written back into app.ini.
    jwt_secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return f"""APP_NAME = oxidex-e2e-forge
RUN_MODE = prod
WORK_PATH = {state}
RUN_USER = {os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()}
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = {"true" if os.geteuid() == 0 else "false"}

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = {port}
DOMAIN = 127.0.0.1
ROOT_URL = {root_url}
APP_DATA_PATH = {data}
STATIC_ROOT_PATH = {static_root}
DISABLE_SSH = true
START_SSH_SERVER = false
LFS_START_SERVER = false
OFFLINE_MODE = true

[database]
DB_TYPE = sqlite3
PATH = {data}/forge.db

[security]
INSTALL_LOCK = true
SECRET_KEY = {secrets.token_hex(32)}
INTERNAL_TOKEN = {secrets.token_urlsafe(64)}
PASSWORD_HASH_ALGO = pbkdf2

[oauth2]
ENABLED = true
JWT_SECRET = {jwt_secret}
; Forgejo >= 9 defaults to true, Gitea to false: make both rotate refresh tokens.
INVALIDATE_REFRESH_TOKENS = true
; Short-lived access tokens make a Dex-style connector refresh upstream on every refresh.
ACCESS_TOKEN_EXPIRATION_TIME = {access_token_ttl}

[repository]
ROOT = {state}/repos

[service]
DISABLE_REGISTRATION = true
REQUIRE_SIGNIN_VIEW = false
DEFAULT_KEEP_EMAIL_PRIVATE = false

[session]
PROVIDER = memory

[cache]
ADAPTER = memory

[queue]
TYPE = channel

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[mailer]
ENABLED = false

[cron]
ENABLED = false

[log]
MODE = console
LEVEL = Info
"""


def forge_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITEA_", "FORGEJO_"))}
    if os.geteuid() == 0:
        env["GITEA_I_AM_BEING_UNSAFE_RUNNING_AS_ROOT"] = "true"
    return env


def run_cli(binary, ini, *args):
    cmd = [binary, "--config", ini, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=forge_env(), timeout=300)
    if proc.returncode != 0:
        raise ForgeError(f"{' '.join(cmd[:4])} … failed ({proc.returncode}): {proc.stderr[-800:] or proc.stdout[-800:]}")
    return proc.stdout


class Api:
    def __init__(self, base, user, password):
        self.base = base.rstrip("/")
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def call(self, method, path, body=None, expect=(200, 201, 204)):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": self.auth, "Content-Type": "application/json", "Accept": "application/json",
        })
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode()
        if status not in expect:
            raise ForgeError(f"{method} {path} answered {status}: {text[:300]}")
        return json.loads(text) if text.strip() else None


def wait_ready(url, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ForgeError(f"the forge exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + "api/healthz", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise ForgeError(f"{url}api/healthz not ready after {timeout}s")


def port_taken(port):
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start(args):
    if port_taken(args.port):
        raise ForgeError(f"127.0.0.1:{args.port} is already in use (an old forge still running?)")
    state = os.path.abspath(args.dir)
    os.makedirs(os.path.join(state, "data"), exist_ok=True)
    ini = os.path.join(state, "app.ini")
    with open(ini, "w", encoding="utf-8") as handle:
        handle.write(app_ini(state, args.port, os.path.abspath(args.static_root), args.access_token_ttl))
    url = f"http://127.0.0.1:{args.port}/"

    # `admin user create` only opens the database: the schema has to exist first.
    log("migrating the database")
    run_cli(args.bin, ini, "migrate")
    admin_password = secrets.token_urlsafe(18)
    run_cli(args.bin, ini, "admin", "user", "create", "--admin", "--username", ADMIN,
            "--password", admin_password, "--email", "admin@example.test", "--must-change-password=false")

    log(f"starting {args.bin} web on {url}")
    logf = open(os.path.join(state, "forge.log"), "ab")
    proc = subprocess.Popen([args.bin, "--config", ini, "web"], stdout=logf, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=forge_env(), cwd=state, start_new_session=True)
    with open(os.path.join(state, "forge.pid"), "w", encoding="utf-8") as handle:
        handle.write(str(proc.pid))
    wait_ready(url, proc)

    api = Api(url, ADMIN, admin_password)
    passwords = {}
    for name, info in USERS.items():
        passwords[name] = f"{name}-{secrets.token_hex(6)}"
        api.call("POST", "/api/v1/admin/users", {
            "username": name, "email": info["email"], "password": passwords[name],
            "must_change_password": False, "full_name": info["full_name"], "send_notify": False,
        })
    api.call("POST", "/api/v1/orgs", {"username": ORG, "full_name": "oxidex test org", "visibility": "public"})
    team = api.call("POST", f"/api/v1/orgs/{ORG}/teams", {
        "name": TEAM, "permission": "read", "units": ["repo.code"], "description": "alice's team",
    })
    api.call("PUT", f"/api/v1/teams/{team['id']}/members/alice")
    # One application per connector: the forge freezes a grant's scope at the first consent of
    # each (user, application), so a scope-less `gitea` login would leave the `oidc` connector
    # without an id_token if both shared an application.
    apps = {}
    for which in APPS:
        app = api.call("POST", "/api/v1/user/applications/oauth2", {
            "name": f"oxidex-{which}", "redirect_uris": args.redirect_uri, "confidential_client": True,
        })
        if not app.get("confidential_client") or not app.get("client_secret"):
            raise ForgeError(f"the OAuth2 application came back without confidential_client/secret: {sorted(app)}")
        write_private(os.path.join(state, f"{which}_client_id"), app["client_id"])
        write_private(os.path.join(state, f"{which}_client_secret"), app["client_secret"])
        apps[which] = {
            "id": app["id"],
            "client_id": app["client_id"],
            "client_id_file": os.path.join(state, f"{which}_client_id"),
            "client_secret_file": os.path.join(state, f"{which}_client_secret"),
        }
    info = {
        "url": url,
        "pid": proc.pid,
        "version": api.call("GET", "/api/v1/version").get("version"),
        "admin": {"username": ADMIN, "password": admin_password},
        "users": {name: {"password": passwords[name], **USERS[name]} for name in USERS},
        "org": ORG,
        "team": TEAM,
        "team_id": team["id"],
        "apps": apps,
        "access_token_ttl": args.access_token_ttl,
        "redirect_uris": args.redirect_uri,
    }
    write_private(os.path.join(state, "forge.json"), json.dumps(info, indent=2))
    log(f"ready: {info['version']} at {url}, apps {', '.join(a['client_id'] for a in apps.values())}")
    print(os.path.join(state, "forge.json"))


def stop(args):
    pidfile = os.path.join(args.dir, "forge.pid")
    try:
        with open(pidfile, encoding="utf-8") as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        log(f"nothing to stop ({pidfile} missing)")
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        os.remove(pidfile)
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    os.remove(pidfile)
    log(f"stopped pid {pid}")


def resume(args):
    """Starts a stopped forge again on its existing state (same config, data, apps)."""
    state = os.path.abspath(args.dir)
    with open(os.path.join(state, "forge.json"), encoding="utf-8") as handle:
        info = json.load(handle)
    ini = os.path.join(state, "app.ini")
    log(f"resuming {args.bin} web on {info['url']}")
    logf = open(os.path.join(state, "forge.log"), "ab")
    proc = subprocess.Popen([args.bin, "--config", ini, "web"], stdout=logf, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=forge_env(), cwd=state, start_new_session=True)
    with open(os.path.join(state, "forge.pid"), "w", encoding="utf-8") as handle:
        handle.write(str(proc.pid))
    wait_ready(info["url"], proc)


def delete_app(args):
    with open(os.path.join(args.dir, "forge.json"), encoding="utf-8") as handle:
        info = json.load(handle)
    api = Api(info["url"], info["admin"]["username"], info["admin"]["password"])
    app = info["apps"][args.which]
    api.call("DELETE", f"/api/v1/user/applications/oauth2/{app['id']}")
    log(f"deleted OAuth2 application {app['client_id']} ({args.which})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("--bin", required=True)
    s.add_argument("--static-root", required=True)
    s.add_argument("--dir", required=True)
    s.add_argument("--port", type=int, default=3000)
    s.add_argument("--redirect-uri", action="append", required=True)
    s.add_argument("--access-token-ttl", type=int, default=3600, help="[oauth2] ACCESS_TOKEN_EXPIRATION_TIME, seconds")
    sub.add_parser("stop").add_argument("--dir", required=True)
    r = sub.add_parser("resume")
    r.add_argument("--dir", required=True)
    r.add_argument("--bin", required=True)
    d = sub.add_parser("delete-app")
    d.add_argument("--dir", required=True)
    d.add_argument("--which", choices=APPS, default="gitea")
    args = parser.parse_args(argv)
    try:
        {"start": start, "stop": stop, "resume": resume, "delete-app": delete_app}[args.cmd](args)
    except ForgeError as err:
        log(f"error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
