# Shell helpers shared by the CI scripts; source it.

# Prints the URL an `airlock` process announces on a line of its log that
# starts with `prefix` (e.g. "Airlock is running at"), once it has; fails,
# showing the log, if the process stops or says nothing within 10 seconds.
# Usage: url=$(airlock_url PID LOG PREFIX)
airlock_url() {
    local pid=$1 log=$2 prefix=$3 url=""
    for _ in $(seq 1 100); do
        url=$(sed -n "s/^$prefix \(http:[^ ]*\)\$/\1/p" "$log")
        if [ -n "$url" ]; then
            echo "$url"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "the server did not start:" >&2
    cat "$log" >&2
    return 1
}
