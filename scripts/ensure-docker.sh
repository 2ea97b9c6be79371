#!/usr/bin/env bash
# Make a Docker engine answer for the tests, where we may: as root, install Debian's docker.io
# if dockerd is missing and start it in the background. Elsewhere say why Docker tests will
# skip (under CI=true the tests themselves fail on a missing engine).
set -u
engine_up() { timeout 10 docker info >/dev/null 2>&1; }

engine_up && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "ensure-docker: no Docker engine answers and this is not root: Docker tests will skip" >&2
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-docker: no dockerd and no apt-get: install a Docker engine by hand" >&2
    exit 0
  fi
  echo "ensure-docker: installing docker.io (Debian package)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq docker.io >/dev/null \
    || { echo "ensure-docker: apt-get install docker.io failed" >&2; exit 0; }
fi
if ! command -v docker >/dev/null 2>&1; then
  echo "ensure-docker: dockerd is installed but the docker client is not" >&2
fi
log=${TMPDIR:-/tmp}/autoresearch-dockerd.log
echo "ensure-docker: starting dockerd (log: $log)" >&2
nohup dockerd >"$log" 2>&1 </dev/null &
for _ in $(seq 1 60); do
  engine_up && { echo "ensure-docker: engine up" >&2; exit 0; }
  sleep 1
done
echo "ensure-docker: dockerd did not answer within 60 s; see $log" >&2
exit 0
