#!/usr/bin/env bash
# Drives the served OpenAPI document with schemathesis against a real demo
# server on 127.0.0.1: no response may be a 5xx, and every status, header,
# content type and body must be one the document describes. Bounded in time
# (each role's run is killed after ROLE_TIMEOUT seconds); stops the server it
# started; fails on any finding.
#
# Usage: .ci/schemathesis.sh [path/to/airlock]   (default target/debug/airlock)
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
SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-60}
ROLE_TIMEOUT=${SCHEMATHESIS_ROLE_TIMEOUT:-180}
# positive_data_acceptance is left out: the document cannot say which
# entitlement names exist or which strings are calendar-valid times, so
# schema-valid requests are rightly refused with 400 naming the field.
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,missing_required_header,unsupported_method,allow_header_conformance,use_after_free,ensure_resource_availability,ignored_auth

if ! command -v schemathesis >/dev/null \
    || [ "$(schemathesis --version | awk '{print $NF}')" != "$SCHEMATHESIS_VERSION" ]; then
    python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
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

"$AIRLOCK" demo --listen 127.0.0.1:0 --data-dir "$work/demo" >"$work/server.log" 2>&1 &
server=$!
url=$(airlock_url "$server" "$work/server.log" "Airlock demo is running at")
echo "demo server at $url"

token() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/demo/tokens.json" "$1"; }

# Requests in every reachable state, so the `{id}` routes are exercised
# beyond 404: active (auto-approved), pending, pending break-glass.
create() {
    curl -sS --max-time 10 -X POST "$url/v1/requests" \
        -H "Authorization: Bearer $(token "$1")" -H 'Content-Type: application/json' -d "$2" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
ids=(
    "$(create alice '{"entitlement":"staging-shell","duration":"30m","reason":"deploy check"}')"
    "$(create alice '{"entitlement":"prod-db-admin","duration":"1h","reason":"migration","ticket":"CHG-1"}')"
    "$(create bob '{"entitlement":"prod-db-admin","duration":"1h","reason":"outage","break_glass":true}')"
    "$(create bob '{"entitlement":"staging-shell","duration":"15m","reason":"check"}')"
)
id_list=$(printf '"%s", ' "${ids[@]}")

cat >"$work/schemathesis.toml" <<EOF
[dictionaries.request-ids]
values = [${id_list%, }]

[dictionaries.entitlements]
values = ["staging-shell", "prod-db-admin"]

[[operations]]
include-path-regex = "^/v1/requests/"
parameters = { "path.id" = { dictionary = "request-ids", probability = 0.8 } }

[[operations]]
include-path = "/v1/requests"
include-method = "POST"
parameters = { "body.entitlement" = { dictionary = "entitlements", probability = 0.8 } }
EOF

status=0
for role in admin alice carol; do
    echo "== schemathesis as $role"
    # From the temporary folder: schemathesis leaves a `.schemathesis` cache
    # in the folder it runs in.
    (cd "$work" && timeout "$ROLE_TIMEOUT" schemathesis --config-file "$work/schemathesis.toml" --no-color \
        run "$url/openapi.json" -H "Authorization: Bearer $(token "$role")" \
        --checks "$CHECKS" --max-examples "$MAX_EXAMPLES" --workers 2 \
        --generation-database none --output-truncate false) \
        || status=$?
    if ! kill -0 "$server" 2>/dev/null; then
        echo "the server stopped during the run:" >&2
        tail -n 50 "$work/server.log" >&2
        exit 1
    fi
done
# A 5xx is already a finding; a panic in a handler or a store failure the
# answers hid is one too.
if grep -E 'panicked|store failure' "$work/server.log" >&2; then
    echo "the server logged a panic or a store failure (above)" >&2
    status=1
fi
exit "$status"
