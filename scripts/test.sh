#!/usr/bin/env bash
# Runs every test tier of vdesk (the list is docs/testing.md): quality gates, unit and
# integration tests (Rust, real webrtcbin under Xvfb), the viewer's unit tests, and the end-to-end
# tests in headless Chromium, and the Debian packages (build, install, start, purge). Installs what is missing first. Exits non-zero on any failure, on
# an unknown tier name, and under CI=true on any skipped test (docs/testing.md, "No skips in CI").
#
#   ./scripts/test.sh            # everything
#   VDESK_TIERS="unit e2e" ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

known_tiers="gates unit e2e package"
tiers=${VDESK_TIERS:-$known_tiers}
read -r -a requested <<<"$tiers"
if [ ${#requested[@]} -eq 0 ]; then
  echo "VDESK_TIERS is empty: name at least one of: $known_tiers" >&2
  exit 2
fi
for t in "${requested[@]}"; do
  if [[ " $known_tiers " != *" $t "* ]]; then
    echo "unknown tier '$t' in VDESK_TIERS='$tiers' (known tiers: $known_tiers)" >&2
    exit 2
  fi
done

# Under CI a skipped test is a failure: a prerequisite CI lacks must not turn into a green run.
ci=false
[[ "${CI:-}" == true || "${CI:-}" == 1 ]] && ci=true

"$(dirname "$0")/deps.sh"

logs=$(mktemp -d "${TMPDIR:-/tmp}/vdesk-test.XXXXXX")
trap 'rm -rf "$logs"' EXIT
skips=()

step() { echo; echo "==> $*"; }
want() { [[ " ${requested[*]} " == *" $1 "* ]]; }
plain() { sed -e 's/\x1b\[[0-9;]*[A-Za-z]//g' "$1"; }

# Skipped and todo tests in a TAP file from `node --test` (a skipped suite counts: node's own
# "# skipped" summary leaves skipped describe() blocks out).
node_skips() {
  local what=$1 tap=$2 lines
  lines=$(grep -E '^[[:space:]]*(not )?ok [0-9]+ - .* # (SKIP|TODO)' "$tap" | sed -e 's/^[[:space:]]*//' || true)
  if [ -n "$lines" ]; then
    while IFS= read -r l; do skips+=("$what: $l"); done <<<"$lines"
  fi
}

# Skipped (nextest: ignored or filtered) or ignored (cargo test) Rust tests in a run's output.
rust_skips() {
  local what=$1 log=$2 n
  n=$(plain "$log" | grep -E '^[[:space:]]*Summary \[' | grep -oE '[0-9]+ skipped' | grep -oE '[0-9]+' || true)
  [ -n "$n" ] && [ "$n" -gt 0 ] && skips+=("$what: nextest reports $n skipped")
  n=$(plain "$log" | grep -E '^test result:' | grep -oE '[0-9]+ ignored' | awk '{ n += $1 } END { print n + 0 }' || true)
  [ -n "$n" ] && [ "$n" -gt 0 ] && skips+=("$what: cargo test reports $n ignored")
  return 0
}

# `node --test` with the usual report on stdout and a TAP copy for node_skips.
node_test() {
  local what=$1 tap=$logs/$2.tap
  shift 2
  local rc=0
  node --test --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap" "$@" || rc=$?
  node_skips "$what" "$tap"
  return $rc
}

if want gates; then
  step "gates: cargo fmt --check"
  cargo fmt --all -- --check
  step "gates: cargo clippy -D warnings"
  cargo clippy --workspace --all-targets --quiet -- -D warnings
fi

if want unit; then
  step "tiers 1+2: Rust unit and integration tests (protocol, relay, controller over HTTP, agent vs in-process webrtcbin under Xvfb)"
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast 2>&1 | tee "$logs/rust.log"
  else
    cargo test --workspace --no-fail-fast 2>&1 | tee "$logs/rust.log"
  fi
  rust_skips "Rust tests" "$logs/rust.log"
  step "tier 1: viewer unit tests (node --test)"
  node_test "viewer unit tests" unit web/test/*.test.mjs bench/report.test.mjs
fi

if want e2e; then
  step "tier 3: end to end in headless Chromium (Xvfb + controller + agent)"
  # badnet.e2e.mjs's link emulator needs /dev/net/tun; as root, make the node if it is missing.
  if [ ! -e /dev/net/tun ] && [ "$(id -u)" -eq 0 ]; then
    mkdir -p /dev/net && mknod -m 666 /dev/net/tun c 10 200 || echo "could not make /dev/net/tun" >&2
  fi
  cargo build --quiet -p vdesk-controller -p vdesk-agent -p vdesk-xpaint
  # The latency smoke (latency-smoke.e2e.mjs) measures the optimised build, as users run it.
  cargo build --release --quiet -p vdesk-controller -p vdesk-agent -p vdesk-xpaint
  VDESK_BIN_DIR="$PWD/target/debug" VDESK_LATENCY_BIN_DIR="$PWD/target/release" \
    node_test "end to end" e2e --test-concurrency=1 web/test/e2e/*.e2e.mjs
  step "tier 3: Schemathesis against a real controller (/api/openapi.json: no 5xx, responses match)"
  # Needs python3 with venv and PyPI; a missing one fails the tier (no skip), as CI wants.
  scripts/schemathesis.sh "$PWD/target/debug"
fi

if want package; then
  step "package: build the .debs with cargo-deb, install, verify the units, start the controller, purge (scripts/package-test.sh)"
  if ! cargo deb --version >/dev/null 2>&1; then
    # Once per machine; about 3 minutes on 2 busy cores (docs/testing.md).
    echo "==> installing cargo-deb (cargo install --locked cargo-deb)"
    cargo install --locked --quiet cargo-deb
  fi
  rc=0
  ./scripts/package-test.sh || rc=$?
  if [ "$rc" -eq 77 ]; then
    skips+=("package test: skipped (see its SKIP line above)")
  elif [ "$rc" -ne 0 ]; then
    exit "$rc"
  fi
fi

echo
if [ ${#skips[@]} -gt 0 ]; then
  echo "==> skipped tests:"
  printf '    %s\n' "${skips[@]}"
  if $ci; then
    echo "==> FAILED: CI=true and ${#skips[@]} skipped test(s); in CI every prerequisite must be there (docs/testing.md)" >&2
    exit 1
  fi
fi
echo "==> all requested tiers passed (${requested[*]})"
