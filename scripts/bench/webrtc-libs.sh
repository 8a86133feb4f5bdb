#!/usr/bin/env bash
# Measures the two candidate Rust WebRTC libraries for the browser leg
# (decision 0022): str0m 0.25.0 and webrtc-rs (the sans-IO `rtc` 0.21.1 core
# of `webrtc` 0.21.1), each as two in-process peers over real UDP on
# 127.0.0.1: an ICE-lite answerer on one shared UDP socket ("gateway") and a
# full-ICE offerer ("browser").
#
#   scripts/bench/webrtc-libs.sh [--quick]
#
# Builds scripts/bench/webrtc-libs (its own Cargo workspace) in release mode
# into $CARGO_TARGET_DIR (default <repo>/target-webrtc-libs), runs every
# measurement in a process of its own and prints the markdown tables.
# Each figure: setup over 50 sequential sessions, CPU over 200,000 RTP
# packets (three runs, the lowest kept), memory with 300 connected pairs
# (--quick: 10 / 20,000 / 50).
# Set CARGO_BUILD_JOBS=1 on a busy machine.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
project="$repo_root/scripts/bench/webrtc-libs"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo_root/target-webrtc-libs}"

sessions=50 packets=200000 pairs=300
if [[ "${1:-}" == "--quick" ]]; then
    sessions=10 packets=20000 pairs=50
fi

(cd "$project" && cargo build --release --locked --quiet)
bin="$CARGO_TARGET_DIR/release/webrtc-libs-bench"

results="$(mktemp)"
trap 'rm -f "$results"' EXIT
run() {
    printf '==> %s\n' "$*" >&2
    "$bin" "$@" | tee -a "$results" >&2
}
for lib in str0m webrtc-rs; do
    run "$lib" cert
    run "$lib" setup "$sessions"
    run "$lib" restart
    run "$lib" dtmf
    run "$lib" mem "$pairs"
done
# webrtc-rs again with its ICE agent ticking every 20 ms (see the report).
WEBRTC_RS_CHECK_MS=20 run webrtc-rs setup "$sessions"
# CPU three times each, interleaved; the report keeps the lowest of each.
for _ in 1 2 3; do
    for lib in str0m webrtc-rs udp; do
        run "$lib" cpu "$packets"
    done
done

echo
"$bin" report "$results"
