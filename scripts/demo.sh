#!/usr/bin/env bash
# The vdesk demo: installs what is missing, builds, starts an Xvfb desktop (1280x720, openbox,
# an xterm and a clock), the controller and one agent (VM id "demo"), and prints the URL to
# open: a viewer link with a control token (valid for VDESK_DEMO_TTL, default 12h). The agent
# authenticates with the per-VM secret derived from the controller's secret (VDESK_SECRET, made
# up if unset). Ctrl-C stops everything it started.
#
#   ./scripts/demo.sh                 # http://127.0.0.1:8080/vm/demo
#   VDESK_LISTEN=0.0.0.0:9000 ./scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

listen=${VDESK_LISTEN:-127.0.0.1:8080}
vm_id=${VDESK_VM_ID:-demo}
size=${VDESK_DEMO_SIZE:-1280x720}
profile=${VDESK_PROFILE:-release}

"$root/scripts/deps.sh"

echo "==> building ($profile)"
if [ "$profile" = release ]; then
  cargo build --release --quiet -p vdesk-controller -p vdesk-agent
  bin="$root/target/release"
else
  cargo build --quiet -p vdesk-controller -p vdesk-agent
  bin="$root/target/debug"
fi

host=${listen%:*}
port=${listen##*:}
if (exec 3<>"/dev/tcp/${host/0.0.0.0/127.0.0.1}/$port") 2>/dev/null; then
  echo "error: something is already listening on $listen; stop it or set VDESK_LISTEN=127.0.0.1:PORT" >&2
  exit 1
fi

run_dir=$(mktemp -d /tmp/vdesk-demo.XXXXXX)
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "==> stopping"
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free X display number.
n=${VDESK_DEMO_DISPLAY:-99}
while [ -e "/tmp/.X11-unix/X$n" ] || [ -e "/tmp/.X$n-lock" ]; do n=$((n + 1)); done
display=":$n"

echo "==> desktop on $display ($size)"
Xvfb "$display" -screen 0 "${size}x24" -nolisten tcp >"$run_dir/xvfb.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -e "/tmp/.X11-unix/X$n" ] && break; sleep 0.05; done
[ -e "/tmp/.X11-unix/X$n" ] || { echo "error: Xvfb did not start, see $run_dir/xvfb.log" >&2; exit 1; }
export DISPLAY=$display
w=${size%x*}; h=${size#*x}
convert -size "${w}x${h}" gradient:'#3b4252-#1d2230' "$run_dir/bg.png" \
  && { display -window root "$run_dir/bg.png" >/dev/null 2>&1 || true; }
openbox >"$run_dir/openbox.log" 2>&1 &
pids+=($!)
xterm -geometry 80x20+40+40 -fa Monospace -fs 10 -bg '#0f1419' -fg '#d8dee9' \
  -T "vdesk demo" -e bash -c 'echo "This is the VM desktop, streamed by vdesk over WebRTC."; echo; exec bash' \
  >/dev/null 2>&1 &
pids+=($!)
xclock -geometry 220x220-40+40 -update 1 >/dev/null 2>&1 &
pids+=($!)

secret=${VDESK_SECRET:-$(openssl rand -hex 32)}
export VDESK_SECRET=$secret
agent_secret=$("$bin/vdesk-controller" agent-secret --vm "$vm_id")
base="http://${host/0.0.0.0/127.0.0.1}:$port"
link=$("$bin/vdesk-controller" mint-link --vm "$vm_id" --permission control \
  --ttl "${VDESK_DEMO_TTL:-12h}" --base-url "$base")
token=${link#*token=}

echo "==> controller on $listen"
# Per-VM agent secrets only: no shared --agent-token, even if one is in the environment.
env -u VDESK_AGENT_TOKEN "$bin/vdesk-controller" --listen "$listen" --vm "$vm_id" 2>&1 \
  | sed -u 's/^/[controller] /' &
pids+=($!)
for _ in $(seq 100); do curl -fsS "http://${host/0.0.0.0/127.0.0.1}:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

echo "==> agent for VM $vm_id"
VDESK_AGENT_TOKEN=$agent_secret "$bin/vdesk-agent" --controller "$base" --vm-id "$vm_id" \
  --display "$display" 2>&1 | sed -u 's/^/[agent] /' &
pids+=($!)
online=false
for _ in $(seq 100); do
  if curl -fsS -H "Authorization: Bearer $token" "$base/api/vms/$vm_id" 2>/dev/null | grep -q '"online":true'; then
    online=true; break
  fi
  sleep 0.1
done
$online || { echo "error: the agent did not register; see the [agent] lines above" >&2; exit 1; }

echo
echo "    vdesk demo is running. Open: $link"
echo "    (a control link valid for ${VDESK_DEMO_TTL:-12h}; more with"
echo "     VDESK_SECRET=$secret $bin/vdesk-controller mint-link --vm $vm_id --permission view)"
echo "    (X display $display; Ctrl-C to stop)"
echo
wait
