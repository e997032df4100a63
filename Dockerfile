# hypernode-host: the node agent as an image (bridge, workers, `up` with its own Redis, the operator commands).
#
#   docker build -t hypernode/host .
#   docker build --network host --build-arg BASE_IMAGE=hypernode/job-python:3.11 \
#       --build-arg EXTRA_CA_CERTS="$(cat /usr/local/share/ca-certificates/*.crt)" -t hypernode/host .
#
# BASE_IMAGE must be a Debian-like image with python3 (>= 3.11), pip and apt; the default is the
# official slim image. Workers start job containers as siblings through the host's Docker socket,
# so they need it mounted and its group (`--group-add "$(stat -c %g /var/run/docker.sock)"`,
# compose's `group_add`): the socket is root-equivalent, so give it only to what starts jobs.
ARG BASE_IMAGE=python:3.11-slim

# --- build: wheels for the agent and its dependencies, installed into a venv ------------------
FROM ${BASE_IMAGE} AS build
# For the build only (none of it reaches the runtime stage): a package index (mirror or proxy), and
# extra CA certificates (PEM) for a TLS-intercepting proxy on the way to it.
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ARG EXTRA_CA_CERTS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Dependencies (and the build backend) first, as wheels, from the lists in pyproject.toml alone, so
# that editing src/ or README.md reuses this layer. Nothing is built here: /src holds no package yet.
COPY pyproject.toml ./
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
         cat /etc/ssl/certs/ca-certificates.crt > /tmp/ca.pem 2>/dev/null || true; \
         printf '%s\n' "$EXTRA_CA_CERTS" >> /tmp/ca.pem; export PIP_CERT=/tmp/ca.pem; \
       fi \
    && python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); \
                   print("\n".join(p["project"]["dependencies"] + p["build-system"]["requires"]))' > /tmp/requirements.txt \
    && python3 -m pip wheel --wheel-dir /wheels \
       ${PIP_INDEX_URL:+--index-url "$PIP_INDEX_URL"} ${PIP_EXTRA_INDEX_URL:+--extra-index-url "$PIP_EXTRA_INDEX_URL"} \
       --requirement /tmp/requirements.txt \
    && rm -f /tmp/ca.pem /tmp/requirements.txt
# The agent's own wheel, offline, from a clean tree (.dockerignore keeps build/ and *.egg-info out),
# then installed with its dependencies into the venv the runtime stage takes.
COPY README.md ./
COPY src ./src
RUN python3 -m pip wheel --no-deps --no-index --find-links /wheels --wheel-dir /dist . \
    && python3 -m venv --without-pip /opt/hypernode \
    && python3 -m pip --python /opt/hypernode/bin/python install --no-index --find-links /wheels /dist/*.whl \
    && /opt/hypernode/bin/hypernode-host --version

# --- runtime: the venv, redis-server for `up`'s own Redis, and a non-root user ----------------
FROM ${BASE_IMAGE} AS runtime
# redis-server: `up` without HN_REDIS_URL runs its own. Compose may run this image as its Redis too
# (REDIS_IMAGE), as the user `redis` with its data in /data, like the official image.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && install -d -o redis -g redis -m 0700 /data \
    && redis-server --version
# The group id of /var/run/docker.sock on the host, baked in as the user's supplementary group.
# It differs from host to host: `--group-add "$(stat -c %g /var/run/docker.sock)"` (compose:
# `group_add`) gives the right one at run time without a rebuild.
ARG DOCKER_GID=999
RUN (getent group "${DOCKER_GID}" >/dev/null || groupadd --gid "${DOCKER_GID}" docker-host) \
    && useradd --uid 10001 --user-group --groups "${DOCKER_GID}" --home-dir /var/lib/hypernode \
       --create-home --shell /usr/sbin/nologin hypernode \
    && chmod 0700 /var/lib/hypernode
COPY --from=build /opt/hypernode /opt/hypernode
ENV PATH=/opt/hypernode/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HN_STATE_DIR=/var/lib/hypernode \
    HN_KEY_FILE=/var/lib/hypernode/node.key
USER hypernode
WORKDIR /var/lib/hypernode
# The node key and the embedded Redis's data live here: mount a named volume so they survive the container.
VOLUME ["/var/lib/hypernode"]
# Healthy only when the bridge heartbeats, Redis and Docker answer and every slot's worker lives;
# compose narrows it per service (`check --bridge`, `check --slot N`).
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 CMD ["hypernode-host", "check"]
ENTRYPOINT ["hypernode-host"]
CMD ["up"]
# Last, so that a new revision reuses every layer above.
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="hypernode-host" \
      org.opencontainers.image.description="Node agent for the Hypernode GPU compute network" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT"
