#!/usr/bin/env bash
# Installs what vdesk needs on Debian 12, skipping what is already there: GStreamer 1.22 with
# the WebRTC plugins, Xvfb and a small desktop, Chromium for the browser tests, coturn and
# iproute2 (ip netns, tc) for the TURN and network-fault tests, and the npm
# packages of web/. Safe to run again. Used by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-nice gstreamer1.0-x gstreamer1.0-tools
  xvfb x11-utils x11-xserver-utils x11-xkb-utils xclip openbox xterm x11-apps
  chromium imagemagick openssl curl
  coturn iproute2
  # the package tier (scripts/package-test.sh): dpkg-shlibdeps for cargo-deb, systemd-analyze
  dpkg-dev systemd adduser
  # network e2e: namespaces (iproute2) and the user-space link emulator (python3); iptables
  # inside a namespace for wsfallback.e2e.mjs (only TCP to the controller gets through)
  python3 iptables
  # Schemathesis (scripts/schemathesis.sh) goes in a venv under target/
  python3-venv
  # admin.e2e.mjs decodes the admin page's QR code with zbarimg
  zbar-tools
  # the controller cluster (--cluster, tests/cluster.rs, cluster.e2e.mjs): NATS with JetStream,
  # and nginx as the load balancer in front
  nats-server nginx-light
  # the VM's sound (agent --audio) and its e2e test (web/test/e2e/audio.e2e.mjs)
  pulseaudio pulseaudio-utils gstreamer1.0-pulseaudio
)
# Extra packages a caller needs (bench/run.sh adds the noVNC side of the benchmark).
read -r -a extra <<<"${VDESK_BENCH_DEPS:-}"
packages+=("${extra[@]}" iproute2)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
  # The tests start their own turnserver on loopback; the system-wide one the package may enable
  # is not wanted on a test machine.
  if [[ " ${missing[*]} " == *" coturn "* ]] && command -v systemctl >/dev/null \
    && systemctl is-enabled coturn >/dev/null 2>&1; then
    echo "==> coturn is for the tests only: disabling its system service"
    $sudo_cmd systemctl disable --now coturn || true
  fi
fi

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi

if [ "${VDESK_SKIP_NPM:-0}" != 1 ]; then
  if ! command -v npm >/dev/null; then
    echo "npm not found: apt-get install nodejs npm (Node 18+), then run this again" >&2
    exit 1
  fi
  if [ ! -d web/node_modules ] || [ web/package-lock.json -nt web/node_modules ]; then
    echo "==> npm ci (web/)"
    (cd web && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
