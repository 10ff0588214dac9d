#!/usr/bin/env bash
# Two ssegate replicas (127.0.0.1:8001, :8002) behind nginx on http://127.0.0.1:8080, in the foreground, without
# root: nginx runs deploy/nginx.conf with only its listen address and log paths changed. Ctrl-C stops all three.
#
#   deploy/run-local.sh                         # the demo model
#   SSEGATE_API_KEYS=k1 SSEGATE_TOKEN_SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')" deploy/run-local.sh
#   NGINX_PORT=9000 deploy/run-local.sh
#
# Settings (SSEGATE_*) in the environment apply to both replicas; without SSEGATE_TOKEN_SECRET one is drawn for
# this run, so that a stream token works on either replica.
set -euo pipefail
cd "$(dirname "$0")/.."
NGINX_PORT="${NGINX_PORT:-8080}"
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
SSEGATE="${SSEGATE:-.venv/bin/ssegate}"
[ -x "$NGINX" ] || { echo "run-local: nginx is not installed (make system-deps)" >&2; exit 1; }
[ -x "$SSEGATE" ] || { echo "run-local: $SSEGATE not found (make install)" >&2; exit 1; }
export SSEGATE_TOKEN_SECRET="${SSEGATE_TOKEN_SECRET:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')}"

DIR="$(mktemp -d -t ssegate-nginx-XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

sed -e "s|listen 80;|listen 127.0.0.1:${NGINX_PORT};|" \
    -e "s|access_log /var/log/nginx/|access_log ${DIR}/|" deploy/nginx.conf > "$DIR/ssegate.conf"
user=""; [ "$(id -u)" = 0 ] && user="user root;"
cat > "$DIR/nginx.conf" <<CONF
daemon off;
$user
worker_processes auto;
pid $DIR/nginx.pid;
error_log stderr notice;
events { worker_connections 4096; }
http {
    client_body_temp_path $DIR/client_body;
    proxy_temp_path $DIR/proxy;
    fastcgi_temp_path $DIR/fastcgi;
    uwsgi_temp_path $DIR/uwsgi;
    scgi_temp_path $DIR/scgi;
    include $DIR/ssegate.conf;
}
CONF

for port in 8001 8002; do
  "$SSEGATE" serve --host 127.0.0.1 --port "$port" &
  pids+=($!)
done
"$NGINX" -p "$DIR" -c "$DIR/nginx.conf" -e stderr &
pids+=($!)
echo "run-local: http://127.0.0.1:${NGINX_PORT} -> replicas 127.0.0.1:8001, 127.0.0.1:8002 (access log: $DIR/ssegate.access.log)"
wait -n "${pids[@]}"
