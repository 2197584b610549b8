# syntax=docker/dockerfile:1
# aichat in a container: `docker build -t aichat .` then
# `docker run -p 8001:8001 -e APP_SECRET=<a key> aichat`. Configuration comes only from
# environment variables (README: Configuration); nothing secret is baked into the image.

# One pinned base for both stages, so the wheels built below match the interpreter that runs them.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# Stage 1: build aichat's wheel and collect wheels of everything it needs.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY aichat/ aichat/
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[tokens,speed,postgres]"

# Stage 2: only the installed wheels; no source tree, no build tools, no pip cache.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="aichat" \
      org.opencontainers.image.description="OpenAI-compatible gateway for chat services that do not speak the OpenAI API" \
      org.opencontainers.image.licenses="MIT"
# No .pyc writes: the container is meant to run with a read-only root filesystem. The usage
# history (README: Usage history) is a SQLite file on the /var/lib/aichat volume, unless
# DATABASE_URL names a PostgreSQL.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/aichat/bin:$PATH \
    AICHAT_USAGE_DB=/var/lib/aichat/usage.db
# The wheels are bind-mounted from the build stage, so they never become a layer of this image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/aichat \
    && /opt/aichat/bin/pip install --no-cache-dir --no-index --find-links=/wheels \
       "aichat[tokens,speed,postgres]" \
    && useradd --system --user-group --uid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin aichat \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/aichat
# A volume, so the history outlives the container (a named volume copies this directory's
# owner on first use) and stays writable under --read-only.
VOLUME ["/var/lib/aichat"]
# Numeric, so orchestrators that require a non-root user can verify it without /etc/passwd.
USER 10001:10001

EXPOSE 8001
# Slim images have no curl: the probe is a small standard-library module of aichat itself.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "aichat.healthcheck"]

# Exec form, no shell and no tini: the Python process is PID 1 and receives `docker stop`'s
# SIGTERM itself. That is enough here because aichat installs its own SIGTERM/SIGINT handlers
# (PID 1 gets no default signal actions) and starts no child processes (nothing to reap).
# It then stops accepting, lets open requests finish (AICHAT_DRAIN_TIMEOUT, 30 s by default)
# and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["aichat"]
CMD ["serve"]
