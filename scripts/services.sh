#!/usr/bin/env bash
# Bring up what the test suite and the demo need on a development or CI machine:
# Debian's docker engine (no bridge, no iptables), a Redis on 127.0.0.1:6379 and the local
# job image hypernode/job-python:3.11. Idempotent: when everything is up it only checks.
# The engine runs without a bridge network or iptables rules because traffic to private address
# ranges is not allowed on these machines, and jobs run with network none anyway.
set -euo pipefail

IMAGE=hypernode/job-python:3.11
DOCKERD_LOG=/var/log/hypernode-dockerd.log
REDIS_LOG=/tmp/hypernode-redis.log
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { printf 'services: %s\n' "$*"; }
die() { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }

# --- 1. packages -------------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
# For the tests: a loopback registry to pull from, and compose to validate docker-compose.yml.
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1 || [[ ! -e /etc/debian_version ]]; then
        die "missing ${missing[*]}; install them as root (apt-get install ${missing[*]}) and rerun"
    fi
    say "installing ${missing[*]} (apt-get)"
    # Keep the packages' own init scripts from starting daemons with default flags
    # (docker with a bridge and iptables, redis saving to disk): we start them below.
    policy=/usr/sbin/policy-rc.d
    own_policy=
    if [[ ! -e $policy ]]; then
        own_policy=1
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    [[ -z $own_policy ]] || { rm -f "$policy"; trap - EXIT; }
else
    say "packages: docker.io, redis-server, mmdebstrap, docker-registry, docker-compose present"
fi
# For the tests of deploy/prometheus/alerts.yml: promtool, from Debian's prometheus package (about 15 s and
# 100 MB here; only the promtool binary is used: the daemon is never started, its recommends not installed).
if ! command -v promtool >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 && [[ -e /etc/debian_version ]]; then
        say "installing prometheus (for promtool; apt-get)"
        policy=/usr/sbin/policy-rc.d
        own_policy=
        if [[ ! -e $policy ]]; then
            own_policy=1
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
            trap 'rm -f "$policy"' EXIT
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
        [[ -z $own_policy ]] || { rm -f "$policy"; trap - EXIT; }
    else
        say "WARNING: no promtool (package prometheus): the tests of the alert rules will fail"
    fi
fi
command -v docker >/dev/null 2>&1 || die "no docker client on PATH (package docker.io)"
command -v redis-cli >/dev/null 2>&1 || die "no redis-cli on PATH (package redis-tools)"

# --- 2. docker engine --------------------------------------------------------------------
docker_ok() { timeout 10 docker info >/dev/null 2>&1; }
dockerd_running() {
    if command -v pgrep >/dev/null 2>&1; then pgrep -x dockerd >/dev/null 2>&1
    elif command -v pidof >/dev/null 2>&1; then pidof dockerd >/dev/null 2>&1
    else return 1; fi
}
if docker_ok; then
    say "docker: engine answers"
else
    [[ $(id -u) -eq 0 ]] || die "docker engine not answering and not root: start dockerd (sudo) and rerun"
    if dockerd_running; then
        say "docker: dockerd running but not answering yet, waiting"
    else
        if [[ -e /var/run/docker.pid ]]; then
            pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
            if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
                rm -f /var/run/docker.pid
            fi
        fi
        say "docker: starting dockerd (log $DOCKERD_LOG)"
        setsid nohup dockerd --bridge=none --iptables=false --ip6tables=false \
            >>"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
    deadline=$((SECONDS + 60))
    until docker_ok; do
        if ((SECONDS >= deadline)); then
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            die "docker engine did not answer within 60 s (log $DOCKERD_LOG)"
        fi
        sleep 0.5
    done
    say "docker: engine up"
fi

# --- 3. redis ----------------------------------------------------------------------------
redis_ok() { [[ "$(timeout 5 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == PONG ]]; }
if redis_ok; then
    say "redis: 127.0.0.1:6379 answers"
else
    say "redis: starting redis-server on 127.0.0.1:6379 (log $REDIS_LOG)"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir /tmp --logfile "$REDIS_LOG" >/dev/null
    deadline=$((SECONDS + 15))
    until redis_ok; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "$REDIS_LOG" >&2 || true
            die "redis did not answer PING on 127.0.0.1:6379 within 15 s (log $REDIS_LOG)"
        fi
        sleep 0.2
    done
    say "redis: up"
fi

# --- 4. job image ------------------------------------------------------------------------
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "image: $IMAGE present"
else
    say "image: $IMAGE absent, building"
    bash "$HERE/build-job-image.sh" "$IMAGE"
fi
