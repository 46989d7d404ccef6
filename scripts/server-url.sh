# Sourced by scripts that start `signaldesk serve --addr 127.0.0.1:0` in the background.
#
#   server_url PID LOG [TENTHS]  prints the URL the server logs once it listens ("signaldesk API
#                                on URL"); fails with the log if it exits or is not up within
#                                TENTHS tenths of a second (default 600).
server_url() {
  local pid="$1" log="$2" tenths="${3:-600}" url=""
  for _ in $(seq 1 "$tenths"); do
    url="$(sed -n 's/^signaldesk API on //p' "$log")"
    [ -n "$url" ] && { echo "$url"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "the server did not start" >&2
  cat "$log" >&2
  return 1
}
