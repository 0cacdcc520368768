#!/usr/bin/env bash
# Installs Label Studio into its own virtual environment and runs it headless
# on this machine only (127.0.0.1), with analytics, Sentry and version checks
# off and local files served.
#
#   export LABEL_STUDIO_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
#   export LABEL_STUDIO_PASSWORD=...          # the admin's password for the web page
#   scripts/label_studio.sh start             # installs on first use, then starts
#   scripts/label_studio.sh status | stop | install
#
# Settings (environment):
#   LABEL_STUDIO_TOKEN        the admin's API token (at most 40 characters); required
#   LABEL_STUDIO_PASSWORD     the admin's password; required by start
#   LABEL_STUDIO_USERNAME     the admin's e-mail (default admin@localhost.local)
#   LS_VENV                   its virtual environment (default .ls-venv)
#   LS_DATA_DIR               its database, uploads and log (default .ls-data)
#   LS_PORT                   the first port to try (default 8080; the next free one is taken)
#   LOCAL_FILES_DOCUMENT_ROOT the folder under which images may be served (default $HOME)
#
# Measured on a 2-core machine: install about 3 minutes and 1 GB; the first
# start on a new database 2.5-3 minutes, a restart 10-20 seconds.
# The token is passed to Label Studio through the environment only; this script
# never prints it or writes it to a file.
set -euo pipefail
cd "$(dirname "$0")/.."

LS_VERSION="1.23.*"
LS_VENV="${LS_VENV:-.ls-venv}"
LS_DATA_DIR="${LS_DATA_DIR:-.ls-data}"
LS_PORT="${LS_PORT:-8080}"
PID_FILE="$LS_DATA_DIR/server.pid"
URL_FILE="$LS_DATA_DIR/server.url"
LOG_FILE="$LS_DATA_DIR/server.log"

die() { echo "error: $*" >&2; exit 1; }

install() {
  if [[ -x "$LS_VENV/bin/label-studio" ]]; then
    echo "Label Studio is installed in $LS_VENV"
    return
  fi
  echo "installing Label Studio $LS_VERSION into $LS_VENV (about 3 minutes, 1 GB)"
  python3 -m venv "$LS_VENV"
  "$LS_VENV/bin/python" -m pip install --quiet --upgrade pip
  "$LS_VENV/bin/python" -m pip install --quiet "label-studio==$LS_VERSION"
  echo "installed $("$LS_VENV/bin/python" -m pip show label-studio | grep ^Version)"
}

running() {
  [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null
}

free_port() {  # the first port from $1 on that nothing listens to on 127.0.0.1
  python3 - "$1" <<'PY'
import socket, sys
port = int(sys.argv[1])
for p in range(port, port + 100):
  with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
    try:
      s.bind(('127.0.0.1', p))
    except OSError:
      continue
    print(p)
    break
else:
  sys.exit(f'error: no free port in {port}..{port + 99}; set LS_PORT to another one')
PY
}

answers() {  # HTTP status of the API at $1 with the token
  python3 - "$1" <<'PY'
import os, sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1] + '/api/projects?page_size=1',
                             headers={'Authorization': 'Token ' + os.environ['LABEL_STUDIO_TOKEN']})
try:
  with urllib.request.urlopen(req, timeout=5) as r:
    print(r.status)
except urllib.error.HTTPError as e:
  print(e.code)
except Exception:
  print(0)
PY
}

start() {
  [[ -n "${LABEL_STUDIO_TOKEN:-}" ]] || die "LABEL_STUDIO_TOKEN is not set; export LABEL_STUDIO_TOKEN=\$(python3 -c 'import secrets; print(secrets.token_hex(20))') first"
  (( ${#LABEL_STUDIO_TOKEN} <= 40 )) || die "LABEL_STUDIO_TOKEN is longer than 40 characters; use a shorter one"
  [[ -n "${LABEL_STUDIO_PASSWORD:-}" ]] || die "LABEL_STUDIO_PASSWORD is not set; export the admin's password first"
  if running; then
    echo "Label Studio is already running (pid $(cat "$PID_FILE")) at $(cat "$URL_FILE")"
    return
  fi
  install
  mkdir -p "$LS_DATA_DIR"
  local data root port url t0
  data="$(cd "$LS_DATA_DIR" && pwd)"
  root="${LOCAL_FILES_DOCUMENT_ROOT:-$HOME}"
  port="$(free_port "$LS_PORT")"
  t0=$(date +%s)
  # Label Studio takes the next port when its own is busy, so the port it
  # really got is read back from its log below.
  # The admin and the token are exported, not passed as arguments, so that
  # neither shows in the process list.
  (
    export LABEL_STUDIO_USERNAME="${LABEL_STUDIO_USERNAME:-admin@localhost.local}"
    export LABEL_STUDIO_PASSWORD LABEL_STUDIO_USER_TOKEN="$LABEL_STUDIO_TOKEN"
    export LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK=true
    export SENTRY_DSN= FRONTEND_SENTRY_DSN= COLLECT_ANALYTICS=false LATEST_VERSION_CHECK=false
    export LOCAL_FILES_SERVING_ENABLED=true LOCAL_FILES_DOCUMENT_ROOT="$root"
    exec nohup "$LS_VENV/bin/label-studio" start --no-browser --data-dir "$data" \
      --internal-host 127.0.0.1 --port "$port" > "$LOG_FILE" 2>&1
  ) &
  echo $! > "$PID_FILE"
  echo "starting Label Studio (pid $!, log $LOG_FILE; about 3 minutes on a new database, 10-20 s after)"
  while :; do
    running || die "Label Studio stopped while starting; see $LOG_FILE"
    local got
    got="$(grep -oE 'http://127\.0\.0\.1:[0-9]+' "$LOG_FILE" | tail -1 | grep -oE '[0-9]+$' || true)"
    url="http://127.0.0.1:${got:-$port}"
    case "$(answers "$url")" in
      200) break ;;
      401|403) stop > /dev/null
               die "Label Studio's database in $LS_DATA_DIR has another token; export the token it was first started with, or remove $LS_DATA_DIR to start afresh" ;;
    esac
    if (( $(date +%s) - t0 >= 600 )); then
      stop > /dev/null
      die "Label Studio did not answer within 10 minutes; see $LOG_FILE"
    fi
    sleep 3
  done
  echo "$url" > "$URL_FILE"
  echo "Label Studio answers at $url after $(( $(date +%s) - t0 )) s (data $data, files under $root)"
  echo "export LABEL_STUDIO_URL=$url"
}

stop() {
  if running; then
    kill "$(cat "$PID_FILE")"
    echo "stopped Label Studio (pid $(cat "$PID_FILE"))"
  else
    echo "Label Studio is not running"
  fi
  rm -f "$PID_FILE" "$URL_FILE"
}

status() {
  if running; then
    echo "Label Studio is running (pid $(cat "$PID_FILE")) at $(cat "$URL_FILE" 2>/dev/null || echo '(still starting)')"
  else
    echo "Label Studio is not running"; exit 1
  fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: scripts/label_studio.sh install|start|stop|status" ;;
esac
