#!/usr/bin/env bash
# Runs the glass-to-glass benchmark (bench/latency.mjs) in a network namespace of its own, so
# nothing it sends can leave the machine, against release builds. `--publish` runs the whole
# published set (x11vnc sweep, vdesk against the best x11vnc interleaved, the 10 Mbit/s link, the
# agent variants) into bench/results/latest.{json,md}. Other arguments go to latency.mjs:
# --set main|sweep|link|suspects, --quick, --samples N, --reps N, --vnc VARIANT, --only TEXT,
# --fps 90. See bench/README.md.
# With --viewers 1,2,5,10 it runs the many-viewers benchmark (bench/multi.mjs) instead; its other
# arguments (--samples N, --codec vp8, --window S, --slow-at N) go to multi.mjs.
set -euo pipefail
cd "$(dirname "$0")/.."
script=bench/latency.mjs
args=()
for a in "$@"; do
  case "$a" in
    --viewers | --viewers=*) script=bench/multi.mjs ;;
  esac
  if [ "$a" = --publish ]; then args+=(--set publish); else args+=("$a"); fi
done
set -- "${args[@]}"
if [ "$script" = bench/latency.mjs ]; then
  VDESK_BENCH_DEPS="novnc websockify x11vnc" ./scripts/deps.sh
fi
[ "${VDESK_BENCH_NO_BUILD:-0}" = 1 ] || cargo build --release --quiet -p vdesk-controller -p vdesk-agent -p vdesk-xpaint
# Only loopback in there, plus a veth pair: ICE (libnice, Chromium) skips loopback
# addresses, so both peers need a host address; it lives and dies with this namespace.
exec unshare --net -- bash -c 'ip link set lo up && ip link add vdesk0 type veth peer name vdesk1 && ip addr add 10.200.0.1/24 dev vdesk0 && ip link set vdesk1 up && ip link set vdesk0 up && script=$1 && shift && exec node "$script" "$@"' bench "$script" "$@"
