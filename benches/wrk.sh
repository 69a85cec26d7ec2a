#!/usr/bin/env bash
# Throughput of hello-world axum on loopback: no auth, behind the scopegate layer (API key, plaintext allowed so that
# TLS does not swamp the comparison), behind tower-http's bearer check, behind the API-key verifier alone (the floor
# of keys stored only as keyed hashes: parse, keyed hash, lookup, compare, the grant inserted; no gate), and behind a
# layer that does nothing (the control: what one more layer's code layout and the machine's drift alone do to the
# figures), with wrk.
#
# The server runs on one core and wrk on the other (taskset); the variants alternate within each pair so that drift
# on a shared machine hits all of them alike; the script prints each pair's ratios and their medians
# (on this project's 2-core machines a single 10 s run swings by up to 36%; a ratio within a pair does not).
#
#   benches/wrk.sh [pairs] [seconds]      (defaults: 5 pairs of 10 s runs)
#   SERVER_CPU=0 WRK_CPU=1 WRK_CONNECTIONS=64 benches/wrk.sh
#
# Needs wrk (Debian: apt-get install wrk) and taskset (util-linux).
set -euo pipefail

PAIRS=${1:-5}
SECONDS_PER_RUN=${2:-10}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
CONNECTIONS=${WRK_CONNECTIONS:-64}
PORT=${PORT:-18080}
# verifier: the API-key verifier alone; identity: a layer that does nothing, the control for code layout and drift
# (see examples/bench_server.rs).
VARIANTS=(none scopegate tower-http verifier identity)

cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
# The binary cargo reports having built (so that CARGO_TARGET_DIR, or a build directory elsewhere, is honoured).
BIN=$(cargo build --release --features server --example bench_server --message-format=json-render-diagnostics |
    grep -o '"executable":"[^"]*bench_server"' | tail -n1 | cut -d'"' -f4)
[[ -x "$BIN" ]] || { echo "cargo did not report the bench_server binary" >&2; exit 1; }

SERVER_PID=
stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
trap stop_server EXIT

# Runs one variant for one period; prints its requests per second.
run() {
    local variant=$1 out key
    out=$(mktemp)
    taskset -c "$SERVER_CPU" "$BIN" "$variant" "127.0.0.1:$PORT" >"$out" &
    SERVER_PID=$!
    for _ in $(seq 100); do
        [[ $(wc -l <"$out") -ge 2 ]] && break
        sleep 0.1
    done
    key=$(head -n1 "$out")
    rm -f "$out"
    local url="http://127.0.0.1:$PORT/v1/orders/42"
    # Every variant must answer 200 to the request wrk sends, or the comparison is meaningless.
    local status
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "$url" 2>/dev/null || echo "?")
    if [[ "$status" != 200 ]]; then
        echo "variant $variant answered $status" >&2
        exit 1
    fi
    taskset -c "$WRK_CPU" wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" \
        -H "Authorization: Bearer $key" "$url" |
        awk '/^Requests\/sec:/ { print $2 }'
    stop_server
}

median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "pairs=$PAIRS seconds=$SECONDS_PER_RUN connections=$CONNECTIONS server_cpu=$SERVER_CPU wrk_cpu=$WRK_CPU"
printf '%-5s %10s %10s %10s %10s %10s %8s %8s %8s %8s %8s %8s\n' pair none scopegate tower-http verifier identity \
    sg/none th/none sg/th vf/none sg/vf id/none
SG_RATIOS=()
TH_RATIOS=()
SG_TH_RATIOS=()
VF_RATIOS=()
SG_VF_RATIOS=()
ID_RATIOS=()
for pair in $(seq "$PAIRS"); do
    declare -A rps=()
    # Alternate the order from pair to pair so that no variant always runs first.
    if (( pair % 2 )); then order=("${VARIANTS[@]}"); else order=(identity verifier tower-http scopegate none); fi
    for variant in "${order[@]}"; do
        rps[$variant]=$(run "$variant")
    done
    sg=$(awk -v a="${rps[scopegate]}" -v b="${rps[none]}" 'BEGIN { printf "%.3f", a / b }')
    th=$(awk -v a="${rps[tower-http]}" -v b="${rps[none]}" 'BEGIN { printf "%.3f", a / b }')
    sg_th=$(awk -v a="${rps[scopegate]}" -v b="${rps[tower-http]}" 'BEGIN { printf "%.3f", a / b }')
    vf=$(awk -v a="${rps[verifier]}" -v b="${rps[none]}" 'BEGIN { printf "%.3f", a / b }')
    sg_vf=$(awk -v a="${rps[scopegate]}" -v b="${rps[verifier]}" 'BEGIN { printf "%.3f", a / b }')
    id=$(awk -v a="${rps[identity]}" -v b="${rps[none]}" 'BEGIN { printf "%.3f", a / b }')
    SG_RATIOS+=("$sg")
    TH_RATIOS+=("$th")
    SG_TH_RATIOS+=("$sg_th")
    VF_RATIOS+=("$vf")
    SG_VF_RATIOS+=("$sg_vf")
    ID_RATIOS+=("$id")
    printf '%-5s %10.0f %10.0f %10.0f %10.0f %10.0f %8s %8s %8s %8s %8s %8s\n' "$pair" "${rps[none]}" \
        "${rps[scopegate]}" "${rps[tower-http]}" "${rps[verifier]}" "${rps[identity]}" "$sg" "$th" "$sg_th" "$vf" \
        "$sg_vf" "$id"
    unset rps
done
echo "median scopegate/none:       $(printf '%s\n' "${SG_RATIOS[@]}" | median)  (target >= 0.93)"
echo "median tower-http/none:      $(printf '%s\n' "${TH_RATIOS[@]}" | median)"
echo "median scopegate/tower-http: $(printf '%s\n' "${SG_TH_RATIOS[@]}" | median)  (target >= 0.95)"
echo "median verifier/none:        $(printf '%s\n' "${VF_RATIOS[@]}" | median)  (the keyed-hash floor, no gate)"
echo "median scopegate/verifier:   $(printf '%s\n' "${SG_VF_RATIOS[@]}" | median)  (the gate's own share)"
echo "median identity/none:        $(printf '%s\n' "${ID_RATIOS[@]}" | median)  (control: a layer that does nothing)"
