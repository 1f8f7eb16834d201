#!/usr/bin/env bash
# oxidex's browser pages in headless Chromium:
#   checks/pages/run.sh OXIDEX_BIN
# Installs Debian's chromium when missing (as root) and the locked npm packages
# (puppeteer-core, axe-core), then for the light and the dark theme starts
# `OXIDEX_BIN serve` on examples/config-dev.json (a static client with approval
# screen, the password DB and a mock connector, plus postLogoutRedirectURIs and
# frontend.theme) and walks every page through the real flows with pages.mjs: axe-core
# (WCAG 2.x A/AA, best practices), keyboard order and focus outlines, Enter submits,
# one <h1>, lang, title, no JavaScript needed, reflow at 320 px, and a full-page PNG
# per page under ${OXIDEX_CACHE:-$HOME/.cache/oxidex}/pages/<run>/ that must be a real
# render. Exit status: 0 when every check passed.
set -euo pipefail

oxidex=${1:?usage: $0 OXIDEX_BIN}
oxidex=$(command -v "$oxidex" || true)
[ -x "$oxidex" ] || { echo "pages: not an executable: ${1}" >&2; exit 2; }
oxidex=$(realpath "$oxidex")

# The screenshots use DejaVu Sans (fontconfig's sans-serif on Debian), installed explicitly
# because chromium only recommends a font.
need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "pages: missing ${need_apt[*]} — run as root or apt-get install them" >&2
    exit 2
  fi
  echo "pages: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
for tool in node npm python3; do
  command -v "$tool" >/dev/null || { echo "pages: $tool missing" >&2; exit 2; }
done
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || { echo "pages: Node.js 20 or newer needed, found $(node --version)" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
# shellcheck source=../lib/dev-server.sh
. "$here/../lib/dev-server.sh"

cache=${OXIDEX_CACHE:-$HOME/.cache/oxidex}
out="$cache/pages/$(date -u +%Y%m%dT%H%M%SZ)-$$"
mkdir -p "$out"

echo "pages: npm ci"
# puppeteer-core drives the system chromium and never downloads a browser.
PUPPETEER_SKIP_DOWNLOAD=1 npm_config_cache="$cache/npm" \
  npm ci --no-audit --no-fund --loglevel=error

work=$(mktemp -d)
trap 'stop_dev_server; rm -rf "$work"' EXIT

status=0
for theme in light dark; do
  mkdir -p "$work/$theme"
  python3 - "$here/../../examples/config-dev.json" "$work/$theme/source.json" "$theme" <<'EOF'
import json, sys
source, target, theme = sys.argv[1:4]
with open(source) as f:
    config = json.load(f)
config["frontend"] = {**config.get("frontend", {}), "theme": theme}
config.setdefault("oauth2", {})["skipApprovalScreen"] = False
for client in config["staticClients"]:
    if client["id"] == "example-app":
        client["postLogoutRedirectURIs"] = ["http://127.0.0.1:5555/signed-out"]
with open(target, "w") as f:
    json.dump(config, f, indent=2)
EOF
  echo
  echo "== pages: theme $theme"
  start_dev_server "$oxidex" "$work/$theme" "$work/$theme/source.json"
  if ! node pages.mjs --issuer "$issuer" --theme "$theme" --out "$out" --rp http://127.0.0.1:5555 \
    --chromium "$(command -v chromium)"; then
    status=1
    echo "pages: oxidex log (last 40 lines):"
    tail -n 40 "$oxidex_log"
  fi
  stop_dev_server
done

echo
echo "pages: screenshots in $out"
[ "$status" -eq 0 ] && echo "pages: every check passed" || echo "pages: FAILED"
exit "$status"
