#!/usr/bin/env bash
# Build (or reuse) the upstream forge that the end-to-end check logs in through, from the Go
# module proxy with the ordinary `go` client, cached outside the repository and keyed by version.
#
# Prints three lines on stdout (everything else goes to stderr):
#   UPSTREAM_BIN=<binary>  UPSTREAM_STATIC_ROOT=<dir with templates/ options/ public/>  UPSTREAM_VERSION=<v>
#
# Which forge: Forgejo is the target, but this workplace's module proxy refuses the `forgejo.org`
# module host ("Go module host not permitted", a final no), so the pinned default is Gitea, which
# Forgejo forked from and which the Dex `gitea` connector was written for. The e2e app.ini turns
# on INVALIDATE_REFRESH_TOKENS so Gitea rotates refresh tokens exactly like Forgejo >= 9 does.
# On a machine whose proxy serves Forgejo: UPSTREAM_MODULE=forgejo.org UPSTREAM_VERSION=<v>.
set -euo pipefail

UPSTREAM_MODULE=${UPSTREAM_MODULE:-code.gitea.io/gitea}
UPSTREAM_VERSION=${UPSTREAM_VERSION:-v1.26.0}
case "$UPSTREAM_MODULE" in
  forgejo.org) name=forgejo ;;
  *) name=gitea ;;
esac
# SQLite support is behind build tags (mattn/go-sqlite3, so cgo); without them the binary
# refuses DB_TYPE=sqlite3 at `migrate` with "this Gitea binary was not built with SQLite3 support".
tags="sqlite sqlite_unlock_notify"
cgo=1

cache=${OXIDEX_CACHE:-$HOME/.cache/oxidex}/$name-$UPSTREAM_VERSION
bin=$cache/bin/$name
src=$cache/src

say() { echo "build.sh: $*" >&2; }

if [[ -x $bin && -f $cache/built.stamp ]]; then
  say "reusing $name $UPSTREAM_VERSION from $cache ($(cat "$cache/built.stamp"))"
else
  command -v go >/dev/null || { say "go is not on PATH"; exit 1; }
  start=$(date +%s)
  say "downloading $UPSTREAM_MODULE@$UPSTREAM_VERSION"
  info=$(go mod download -json "$UPSTREAM_MODULE@$UPSTREAM_VERSION")
  dir=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit("go mod download: " + d.get("Error", "no Dir")))' <<<"$info")
  rm -rf "$cache"
  mkdir -p "$cache/bin"
  # The module cache is read-only and `go install mod@v` refuses modules with replace
  # directives: build inside a writable copy, which is also the static root at run time.
  cp -r "$dir" "$src"
  chmod -R u+w "$src"
  say "compiling in $src (tags: ${tags:-none}); this takes several minutes"
  (cd "$src" && CGO_ENABLED=$cgo nice -n 10 go build -trimpath -buildvcs=false \
     -tags "$tags" \
     -ldflags "-s -w -X main.Version=${UPSTREAM_VERSION#v} -X 'main.Tags=$tags'" \
     -o "$bin" .)
  secs=$(( $(date +%s) - start ))
  echo "built in ${secs}s on $(date -u +%Y-%m-%dT%H:%M:%SZ) with $(go version | cut -d' ' -f3)" >"$cache/built.stamp"
  say "built $name $UPSTREAM_VERSION in ${secs}s"
fi

say "$("$bin" --version 2>/dev/null || true)"
echo "UPSTREAM_BIN=$bin"
echo "UPSTREAM_STATIC_ROOT=$src"
echo "UPSTREAM_VERSION=$UPSTREAM_VERSION"
