#!/usr/bin/env bash
# Builds Dex (a pinned release) from the Go module proxy, or reuses an earlier build.
# Prints the path of the dex binary on its last line.
#
#   bench/peers/build-dex.sh [VERSION]        (default v2.45.1; DEX_VERSION works too)
#
# The build lives in ${OXIDEX_CACHE:-$HOME/.cache/oxidex}/dex-<version>/, never in the repo.
# Dex's module path has no /v2 suffix, so the module proxy serves its v2 tags only as the
# pseudo-version of the tagged commit (`git rev-parse v2.45.1^{commit}` and its commit time);
# DEX_MODULE_VERSION overrides the table below. `go install` refuses Dex because its go.mod
# replaces the api/v2 module with a local directory: download the module, drop that replace so
# the published api/v2 is used, build.
set -euo pipefail

version=${1:-${DEX_VERSION:-v2.45.1}}
case "$version" in
  v2.45.1) module_version=v0.0.0-20260303133905-11d2eeb52b42 ;;
  *) module_version=${DEX_MODULE_VERSION:?"no pseudo-version known for $version: set DEX_MODULE_VERSION"} ;;
esac
module_version=${DEX_MODULE_VERSION:-$module_version}
cache=${OXIDEX_CACHE:-$HOME/.cache/oxidex}
dir="$cache/dex-$version"
bin="$dir/bin/dex"

if [ -x "$bin" ] && [ -f "$dir/built.stamp" ]; then
  echo "dex $version: reusing $bin" >&2
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build-dex.sh: go is not installed" >&2; exit 1; }
mkdir -p "$dir"
echo "dex $version: downloading github.com/dexidp/dex@$module_version" >&2
src_json=$(cd "$dir" && GOFLAGS=-mod=mod go mod download -json "github.com/dexidp/dex@$module_version")
src=$(printf '%s\n' "$src_json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || { echo "build-dex.sh: no module directory in: $src_json" >&2; exit 1; }

rm -rf "$dir/src"
cp -r "$src" "$dir/src"
chmod -R u+w "$dir/src"
cd "$dir/src"
go mod edit -dropreplace github.com/dexidp/dex/api/v2
echo "dex $version: building (this takes minutes on 2 cores)" >&2
# The sqlite3 storage needs cgo.
CGO_ENABLED=1 go build -mod=mod -trimpath -ldflags "-s -w -X main.version=$version" -o "$bin" ./cmd/dex
date -u +%FT%TZ >"$dir/built.stamp"
echo "$bin"
