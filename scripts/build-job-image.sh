#!/usr/bin/env bash
# Build the local job image from Debian packages (no registry is reachable here):
#   scripts/build-job-image.sh [TAG]      default TAG: hypernode/job-python:3.11
# mmdebstrap uses the machine's own apt sources; about 35 s and 245 MB.
set -euo pipefail

TAG="${1:-hypernode/job-python:3.11}"
SUITE="${HN_IMAGE_SUITE:-bookworm}"

for tool in mmdebstrap docker; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "build-job-image: ERROR: $tool not found (apt-get install mmdebstrap docker.io)" >&2
        exit 1
    }
done

start=$SECONDS
tmp="$(mktemp -d "${TMPDIR:-/tmp}/hypernode-image.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

echo "build-job-image: mmdebstrap $SUITE (minbase + python3) -> $tmp/rootfs.tar"
mmdebstrap --variant=minbase \
    --include=python3,python3-pip,python-is-python3,ca-certificates \
    "$SUITE" "$tmp/rootfs.tar"

echo "build-job-image: docker import -> $TAG"
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$tmp/rootfs.tar" "$TAG" >/dev/null

echo "build-job-image: verifying $TAG"
if ! out="$(docker run --rm --network none "$TAG" python -c 'import json, ssl, sqlite3; print("ok")' 2>&1)" \
    || [[ "$out" != ok ]]; then
    echo "build-job-image: ERROR: verification failed: $out" >&2
    docker rmi "$TAG" >/dev/null 2>&1 || true
    exit 1
fi

echo "build-job-image: built $TAG in $((SECONDS - start)) s"
