#!/usr/bin/env bash
# Checks the SCIM 2.0 API with scim2-tester, an independent compliance
# checker (through scim2-cli's `scim2 test`), against a real `airlock serve`
# on 127.0.0.1 with a provisioning token: discovery (ServiceProviderConfig,
# ResourceTypes, Schemas), create, read, list, search, replace, patch
# add/replace/remove of every attribute, delete, `attributes` and
# `excludedAttributes`, errors on unknown URLs. Fails on any check that does
# not succeed (skipped ones included); stops the server it started.
#
# Usage: .ci/scim.sh [path/to/airlock]   (default target/debug/airlock)
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
cd "$(dirname "$0")/.."
# shellcheck source=.ci/lib.sh
. .ci/lib.sh

AIRLOCK=${1:-target/debug/airlock}
if [ ! -x "$AIRLOCK" ]; then
    echo "no airlock binary at \`$AIRLOCK\` (build it first: cargo build --workspace)" >&2
    exit 1
fi
AIRLOCK=$(realpath "$AIRLOCK")
SCIM2_TESTER_VERSION=0.5.2
SCIM2_CLI_VERSION=0.6.0
VENV=${SCIM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/airlock-scim2-tester-$SCIM2_TESTER_VERSION}
if [ ! -x "$VENV/bin/scim2" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "scim2-tester==$SCIM2_TESTER_VERSION" "scim2-cli==$SCIM2_CLI_VERSION"
fi

work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill "$server"
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

token="al_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
hash=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
cat >"$work/airlock.toml" <<TOML
[server]
listen = "127.0.0.1:0"
data_dir = "$work/data"
scim = { token_sha256 = "$hash" }

[users.admin]
roles = ["admin"]
TOML

"$AIRLOCK" serve --config "$work/airlock.toml" >"$work/server.log" 2>&1 &
server=$!
url=$(airlock_url "$server" "$work/server.log" "Airlock is running at")
echo "airlock serving SCIM at $url/scim/v2"

status=0
# The token goes in the environment, not on a command line others can see.
(cd "$work" && SCIM_CLI_HEADERS="Authorization: Bearer $token" \
    timeout 600 "$VENV/bin/scim2" --url "$url/scim/v2" test) | tee "$work/results.txt" || status=$?
passed=$(grep -c '^SUCCESS' "$work/results.txt" || true)
others=$(grep -vc '^SUCCESS\|^Performing\|^  ' "$work/results.txt" || true)
echo "scim2-tester $SCIM2_TESTER_VERSION: $passed checks succeeded, $others did not"
if ! kill -0 "$server" 2>/dev/null; then
    echo "the server stopped during the run:" >&2
    tail -n 50 "$work/server.log" >&2
    exit 1
fi
if grep -E 'panicked|store failure' "$work/server.log" >&2; then
    echo "the server logged a panic or a store failure (above)" >&2
    status=1
fi
exit "$status"
