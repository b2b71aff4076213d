# syntax=docker/dockerfile:1
# Chatee: one image for `chatee api`, `chatee worker [--queue …]` and `chatee migrate`.
#
#   docker build -t chatee .
#   docker run --rm -p 8080:8080 -e CHATEE_JWT_SECRET=… -e CHATEE_DATABASE_URL=… chatee
#   docker run --rm … chatee worker --queue llm
#
# docker-compose.yml runs the whole stack from this image.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: a virtualenv at /opt/venv with the pinned dependencies and the project ----------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv && pip install --upgrade pip

WORKDIR /src

# Dependencies first (pinned by requirements.lock), so a code change does not reinstall them.
# Only the runtime dependencies of pyproject.toml are installed, not the dev extra.
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c requirements.lock -r /tmp/requirements.txt

# Then the project itself (also provides the `chatee` console script).
COPY README.md ./
COPY chatee ./chatee
COPY api ./api
COPY workflows ./workflows
COPY activities ./activities
COPY workers ./workers
RUN pip install -c requirements.lock .

# ---- runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="chatee" \
      org.opencontainers.image.description="Chat backend where people talk to each other and to AI agents, built on Temporal"

# /app comes first on sys.path: `chatee migrate` finds alembic.ini and migrations/ next to the
# chatee package (chatee.config.REPO_ROOT), and configs/config.yaml is read from /app/configs.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CHATEE_DATA_DIR=/var/lib/chatee \
    CHATEE_HTTP_PORT=8080

RUN groupadd --system --gid 10001 chatee \
    && useradd --system --uid 10001 --gid chatee --home-dir /var/lib/chatee --no-create-home \
        --shell /usr/sbin/nologin chatee \
    && install -d -o chatee -g chatee -m 0750 /var/lib/chatee

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# Source is owned by root and read-only for the service user; bytecode is compiled at build time.
COPY alembic.ini pyproject.toml ./
COPY configs ./configs
COPY migrations ./migrations
COPY chatee ./chatee
COPY api ./api
COPY workflows ./workflows
COPY activities ./activities
COPY workers ./workers
RUN python -m compileall -q /app

USER 10001:10001

EXPOSE 8080

# Liveness of the API process. Worker and migrate containers override or disable it
# (docker-compose.yml gives workers a check that they are polling their task queues).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CHATEE_HTTP_PORT', '8080'), timeout=4)"]

ENTRYPOINT ["chatee"]
CMD ["api", "--host", "0.0.0.0"]
