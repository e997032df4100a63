# hypernode-host: the node agent as an image (bridge, workers, `up`, and the operator commands).
#
#   docker build -t hypernode/host .
#   docker build --network host --build-arg BASE_IMAGE=hypernode/job-python:3.11 \
#       --build-arg EXTRA_CA_CERTS="$(cat /usr/local/share/ca-certificates/*.crt)" -t hypernode/host .
#
# BASE_IMAGE must be a Debian-like image with python3 (>= 3.11) and pip; the default is the
# official slim image. Workers start job containers as siblings through the host's Docker
# socket, so they need it mounted and its group (see docker-compose.yml, `group_add`): the
# socket is root-equivalent, so give it only to the services that start jobs.
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
# Dependencies (and the build backend) first, as wheels, with a placeholder package, so that
# editing src/ reuses this layer; the agent's own wheel is then built from them offline.
COPY pyproject.toml README.md ./
RUN mkdir -p src/hypernode_host && touch src/hypernode_host/__init__.py \
    && if [ -n "$EXTRA_CA_CERTS" ]; then \
         cat /etc/ssl/certs/ca-certificates.crt > /tmp/ca.pem 2>/dev/null || true; \
         printf '%s\n' "$EXTRA_CA_CERTS" >> /tmp/ca.pem; export PIP_CERT=/tmp/ca.pem; \
       fi \
    && backend="$(python3 -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')" \
    && python3 -m pip wheel --wheel-dir /wheels \
       ${PIP_INDEX_URL:+--index-url "$PIP_INDEX_URL"} ${PIP_EXTRA_INDEX_URL:+--extra-index-url "$PIP_EXTRA_INDEX_URL"} \
       . $backend \
    && rm -rf src /wheels/hypernode_host-*.whl /tmp/ca.pem
COPY src ./src
RUN python3 -m pip wheel --no-deps --no-index --find-links /wheels --wheel-dir /wheels . \
    && python3 -m venv --without-pip /opt/hypernode \
    && python3 -m pip --python /opt/hypernode/bin/python install --no-index --find-links /wheels hypernode-host

# --- runtime: the venv and a non-root user ---------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
# The group id of /var/run/docker.sock on the host (stat -c %g /var/run/docker.sock). Baked in as
# the user's supplementary group; compose's `group_add` does the same at run time without a rebuild.
ARG DOCKER_GID=999
LABEL org.opencontainers.image.title="hypernode-host" \
      org.opencontainers.image.description="Node agent for the Hypernode GPU compute network" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT"
RUN (getent group "${DOCKER_GID}" >/dev/null || groupadd --gid "${DOCKER_GID}" docker-host) \
    && useradd --uid 10001 --user-group --groups "${DOCKER_GID}" --home-dir /var/lib/hypernode \
       --create-home --shell /usr/sbin/nologin hypernode
COPY --from=build /opt/hypernode /opt/hypernode
ENV PATH=/opt/hypernode/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HN_KEY_FILE=/var/lib/hypernode/node.key
USER hypernode
WORKDIR /var/lib/hypernode
# The node key lives here: mount a volume so it survives the container.
VOLUME ["/var/lib/hypernode"]
# Healthy only when the bridge heartbeats, Redis and Docker answer and every slot's worker lives;
# compose narrows it per service (`check --bridge`, `check --slot N`).
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 CMD ["hypernode-host", "check"]
ENTRYPOINT ["hypernode-host"]
CMD ["up"]
