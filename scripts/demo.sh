#!/usr/bin/env bash
# The vdesk demo: installs what is missing, builds, starts an Xvfb desktop (1280x720, openbox,
# an xterm and a clock), the controller and one agent (VM id "demo"), and prints the URL to
# open: a viewer link with a control token (valid for VDESK_DEMO_TTL, default 12h). The agent
# authenticates with the per-VM secret derived from the controller's secret (VDESK_SECRET, made
# up if unset). No secret goes into any process's arguments (environment variables and 0600
# files only), and the only secret printed is the viewer link. Ctrl-C, SIGTERM, SIGHUP (the
# terminal closing) or an error stop everything it started.
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

umask 077 # the run directory holds the secrets' files: this user only
run_dir=$(mktemp -d /tmp/vdesk-demo.XXXXXX)
# The PIDs of what this script started (the programs themselves, never a pipe's last stage: their
# output goes through `> >(sed ...)`, so `$!` is the program's own PID).
pids=()
cleanup() {
  trap - EXIT INT TERM HUP
  echo
  echo "==> stopping"
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  # The agent ends its sessions cleanly within a few seconds; whatever is left after 10 s is killed.
  for _ in $(seq 100); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

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

# Secrets travel in environment variables (readable by this user only, unlike arguments, which
# every local user sees in `ps`) and in 0600 files in $run_dir.
secret=${VDESK_SECRET:-$(openssl rand -hex 32)}
printf '%s' "$secret" >"$run_dir/secret"
export VDESK_SECRET=$secret
agent_secret=$("$bin/vdesk-controller" agent-secret --vm "$vm_id")
base="http://${host/0.0.0.0/127.0.0.1}:$port"
link=$("$bin/vdesk-controller" mint-link --vm "$vm_id" --permission control \
  --ttl "${VDESK_DEMO_TTL:-12h}" --base-url "$base")
token=${link#*token=}
# For curl: a header file instead of -H "Authorization: ..." on its command line.
printf 'Authorization: Bearer %s\n' "$token" >"$run_dir/auth-header"

echo "==> controller on $listen"
# Per-VM agent secrets only: no shared --agent-token, even if one is in the environment.
env -u VDESK_AGENT_TOKEN "$bin/vdesk-controller" --listen "$listen" --vm "$vm_id" \
  > >(sed -u 's/^/[controller] /') 2>&1 &
controller_pid=$!
pids+=($controller_pid)
unset VDESK_SECRET # nothing started after this needs it
for _ in $(seq 100); do curl -fsS "http://${host/0.0.0.0/127.0.0.1}:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

echo "==> agent for VM $vm_id"
VDESK_AGENT_TOKEN=$agent_secret "$bin/vdesk-agent" --controller "$base" --vm-id "$vm_id" \
  --display "$display" > >(sed -u 's/^/[agent] /') 2>&1 &
agent_pid=$!
pids+=($agent_pid)
online=false
for _ in $(seq 100); do
  if curl -fsS -H @"$run_dir/auth-header" "$base/api/vms/$vm_id" 2>/dev/null | grep -q '"online":true'; then
    online=true; break
  fi
  sleep 0.1
done
$online || { echo "error: the agent did not register; see the [agent] lines above" >&2; exit 1; }

echo
echo "    vdesk demo is running. Open: $link"
echo "    (a control link valid for ${VDESK_DEMO_TTL:-12h}; more, while the demo runs, with"
echo "     VDESK_SECRET=\$(cat $run_dir/secret) $bin/vdesk-controller mint-link --vm $vm_id --permission view)"
echo "    (X display $display; Ctrl-C to stop)"
echo
# Until the controller or the agent stops (or a signal arrives): then the trap stops the rest.
wait -n "$controller_pid" "$agent_pid" || true
