#!/usr/bin/env bash
# Run the real Dynamo stack (ZMQ broker + mocker worker + frontend) on loopback.
#
#   scripts/dynamo/stack.sh start|stop|status|restart
#
# Env (defaults):
#   DYNAMO_HTTP_PORT=8000        frontend OpenAI API + /metrics
#   DYNAMO_SYSTEM_PORT=8081      worker system server (/metrics, /health)
#   DYNAMO_XSUB_PORT=15555       broker, publishers connect here
#   DYNAMO_XPUB_PORT=15556       broker, subscribers connect here
#   DYNAMO_MODEL_NAME=tiny-llama
#   DYNAMO_STATE_DIR=<repo>/target/dynamo-stack   pids, logs, discovery dir, caches
#   SPARKHOST_DYNAMO_VENV=<repo>/.venv-dynamo
#   SPARKHOST_DYNAMO_MODEL=<repo>/target/dynamo-model/tiny-llama
#   MOCKER_ARGS=""               e.g. "--max-model-len 4096 --speedup-ratio 1"
#   FRONTEND_ARGS=""             e.g. "--router-mode kv"
#   DYNAMO_READY_TIMEOUT=120     seconds to wait for /v1/models to list the model
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

host=127.0.0.1
http_port="${DYNAMO_HTTP_PORT:-8000}"
system_port="${DYNAMO_SYSTEM_PORT:-8081}"
xsub_port="${DYNAMO_XSUB_PORT:-15555}"
xpub_port="${DYNAMO_XPUB_PORT:-15556}"
model_name="${DYNAMO_MODEL_NAME:-tiny-llama}"
state="${DYNAMO_STATE_DIR:-$repo/target/dynamo-stack}"
venv="${SPARKHOST_DYNAMO_VENV:-$repo/.venv-dynamo}"
model_dir="${SPARKHOST_DYNAMO_MODEL:-$repo/target/dynamo-model/tiny-llama}"
timeout="${DYNAMO_READY_TIMEOUT:-120}"
py="$venv/bin/python"
components=(broker mocker frontend)
endpoint="http://$host:$http_port"

log() { echo "stack: $*" >&2; }

pid_of() { [[ -f "$state/$1.pid" ]] && cat "$state/$1.pid"; }

# Each component leads its own process group (pgid == pid), so signalling the
# group also reaches anything it spawned.
group_alive() { kill -0 -- "-$1" 2>/dev/null; }

tails() {
  for c in "${components[@]}"; do
    [[ -f "$state/$c.log" ]] || continue
    echo "----- $c.log (last 30 lines) -----"
    tail -n 30 "$state/$c.log"
  done
}

port_busy() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

model_listed() {
  "$py" - "$endpoint/v1/models" "$model_name" <<'EOF' 2>/dev/null
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    ids = [m.get("id") for m in json.load(r).get("data", [])]
sys.exit(0 if sys.argv[2] in ids else 1)
EOF
}

launch() {
  local name=$1; shift
  # setsid (without --fork) execs in place: a background child of a
  # non-interactive shell is never a group leader, so $! is the new pgid.
  setsid "$@" >"$state/$name.log" 2>&1 </dev/null &
  echo $! >"$state/$name.pid"
}

stop_all() {
  local pids=() c p
  # Frontend first so it stops taking requests before its worker disappears.
  for c in frontend mocker broker; do
    p="$(pid_of "$c" || true)"
    [[ -n "$p" ]] || continue
    if group_alive "$p"; then
      kill -TERM -- "-$p" 2>/dev/null || true
      pids+=("$p")
    fi
  done
  # SIGTERM shuts each down in ~2 s; give them 10 s before forcing it.
  local deadline=$((SECONDS + 10))
  for p in "${pids[@]}"; do
    while group_alive "$p" && ((SECONDS < deadline)); do sleep 0.2; done
    if group_alive "$p"; then
      log "process group $p ignored SIGTERM; sending SIGKILL"
      kill -KILL -- "-$p" 2>/dev/null || true
    fi
  done
  for c in "${components[@]}"; do rm -f "$state/$c.pid"; done
}

any_running() {
  local c p
  for c in "${components[@]}"; do
    p="$(pid_of "$c" || true)"
    [[ -n "$p" ]] && group_alive "$p" && return 0
  done
  return 1
}

cmd_start() {
  if any_running; then
    log "already running (state dir $state); run '$0 stop' first"
    exit 1
  fi
  if [[ ! -x "$py" ]] || ! "$py" -c 'import dynamo' 2>/dev/null; then
    log "no Dynamo venv at $venv; run 'make dynamo' (or scripts/dynamo/install.sh)"
    exit 1
  fi
  if [[ ! -f "$model_dir/tokenizer_config.json" ]]; then
    log "no model dir at $model_dir; run 'make dynamo' (or $py scripts/dynamo/mkmodel.py)"
    exit 1
  fi
  # Dynamo 1.6.1 parses DYN_SYSTEM_PORT as i16 and the worker dies on start
  # ("expected i16 for key SYSTEM_PORT") for anything above 32767.
  if ((system_port > 32767)); then
    log "DYNAMO_SYSTEM_PORT=$system_port: Dynamo 1.6.1 only accepts system ports <= 32767"
    exit 1
  fi
  local p
  for p in "$http_port" "$system_port" "$xsub_port" "$xpub_port"; do
    if port_busy "$p"; then
      log "port $host:$p is already in use"
      exit 1
    fi
  done

  mkdir -p "$state"
  # Stale registrations of dead workers in the file discovery dir would be
  # routed to; every start gets a clean one.
  rm -rf "$state/kv" "$state"/*.log "$state"/*.pid
  mkdir -p "$state/kv" "$state/cache"

  export DYN_DISCOVERY_BACKEND=file DYN_FILE_KV="$state/kv"
  export DYN_REQUEST_PLANE=tcp DYN_EVENT_PLANE=zmq
  export DYN_ZMQ_BROKER_URL="xsub=tcp://$host:$xsub_port,xpub=tcp://$host:$xpub_port"
  # Every server socket Dynamo opens has its own host knob; all default to 0.0.0.0.
  export DYN_TCP_RPC_HOST=$host DYN_SYSTEM_HOST=$host DYN_TCP_RESPONSE_STREAM_HOST=$host
  export DYN_EVENT_PLANE_HOST=$host DYN_HTTP_RPC_HOST=$host
  # No hub access here, and the frontend's model-card cache must not leak
  # across runs or into $HOME.
  export HF_HUB_OFFLINE=1 HF_HOME="$state/cache/huggingface" XDG_CACHE_HOME="$state/cache"
  # Plain-text logs: they end up in files and in failure messages.
  export PYTHONUNBUFFERED=1 DYN_SDK_DISABLE_ANSI_LOGGING=1 NO_COLOR=1

  local mocker_args frontend_args
  read -r -a mocker_args <<<"${MOCKER_ARGS:-}"
  read -r -a frontend_args <<<"${FRONTEND_ARGS:-}"

  # Only the worker may see DYN_SYSTEM_PORT; an inherited one would make the
  # frontend try to bind the same port.
  launch broker env -u DYN_SYSTEM_PORT "$py" "$here/zmq_broker.py" "tcp://$host:$xsub_port" "tcp://$host:$xpub_port"
  # The worker's /metrics only exists when DYN_SYSTEM_PORT is set.
  launch mocker env DYN_SYSTEM_PORT="$system_port" "$py" -m dynamo.mocker \
    --model-path "$model_dir" --model-name "$model_name" "${mocker_args[@]}"
  launch frontend env -u DYN_SYSTEM_PORT "$py" -m dynamo.frontend --http-host "$host" --http-port "$http_port" "${frontend_args[@]}"

  local t0=$SECONDS c
  while ! model_listed; do
    for c in "${components[@]}"; do
      if ! group_alive "$(pid_of "$c")"; then
        log "$c exited during startup"
        tails >&2
        stop_all
        exit 1
      fi
    done
    if ((SECONDS - t0 >= timeout)); then
      log "model '$model_name' not listed at $endpoint/v1/models after ${timeout}s"
      tails >&2
      stop_all
      exit 1
    fi
    sleep 0.25
  done
  log "ready in $((SECONDS - t0)) s (logs in $state)"
  echo "$endpoint"
}

cmd_status() {
  local c p rc=0
  for c in "${components[@]}"; do
    p="$(pid_of "$c" || true)"
    if [[ -n "$p" ]] && group_alive "$p"; then
      echo "$c: running (pgid $p)"
    else
      echo "$c: stopped"
      rc=1
    fi
  done
  if model_listed; then
    echo "endpoint: $endpoint (model $model_name listed)"
  else
    echo "endpoint: $endpoint (model $model_name not listed)"
    rc=1
  fi
  echo "frontend metrics: $endpoint/metrics"
  echo "worker metrics:   http://$host:$system_port/metrics"
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) stop_all ;;
  status) cmd_status ;;
  restart) stop_all; cmd_start ;;
  *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
