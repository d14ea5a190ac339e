#!/usr/bin/env bash
# Runs the glass-to-glass benchmark (bench/latency.mjs) in a network namespace of its own, so
# nothing it sends can leave the machine, against release builds. Extra arguments go to
# latency.mjs: --quick, --samples N, --only vdesk-h264-720p, --fps 90. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
VDESK_BENCH_DEPS="novnc websockify x11vnc" ./scripts/deps.sh
cargo build --release --quiet -p vdesk-controller -p vdesk-agent -p vdesk-xpaint
# Only loopback in there, plus a veth pair: ICE (libnice, Chromium) skips loopback
# addresses, so both peers need a host address; it lives and dies with this namespace.
exec unshare --net -- bash -c 'ip link set lo up && ip link add vdesk0 type veth peer name vdesk1 && ip addr add 10.200.0.1/24 dev vdesk0 && ip link set vdesk1 up && ip link set vdesk0 up && exec node bench/latency.mjs "$@"' bench "$@"
