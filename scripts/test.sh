#!/usr/bin/env bash
# Runs every test tier of vdesk (the list is docs/testing.md): quality gates, unit and
# integration tests (Rust, real webrtcbin under Xvfb), the viewer's unit tests, and the end-to-end
# tests in headless Chromium. Installs what is missing first. Exits non-zero on any failure.
#
#   ./scripts/test.sh            # everything
#   VDESK_TIERS="unit e2e" ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tiers=${VDESK_TIERS:-"gates unit e2e"}

"$(dirname "$0")/deps.sh"

step() { echo; echo "==> $*"; }
want() { [[ " $tiers " == *" $1 "* ]]; }

if want gates; then
  step "gates: cargo fmt --check"
  cargo fmt --all -- --check
  step "gates: cargo clippy -D warnings"
  cargo clippy --workspace --all-targets --quiet -- -D warnings
fi

if want unit; then
  step "tiers 1+2: Rust unit and integration tests (protocol, relay, controller over HTTP, agent vs in-process webrtcbin under Xvfb)"
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
  else
    cargo test --workspace --no-fail-fast
  fi
  step "tier 1: viewer unit tests (node --test)"
  node --test web/test/*.test.mjs
fi

if want e2e; then
  step "tier 3: end to end in headless Chromium (Xvfb + controller + agent)"
  cargo build --quiet -p vdesk-controller -p vdesk-agent -p vdesk-xpaint
  VDESK_BIN_DIR="$PWD/target/debug" node --test --test-concurrency=1 web/test/e2e/*.e2e.mjs
fi

echo
echo "==> all requested tiers passed ($tiers)"
