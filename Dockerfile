# wispbot service image. Easiest: `docker compose up -d` (docker-compose.yml, README "Operator guide").
# By hand:   docker build -t wispbot .
#            docker run --env-file .env -e HTTP_HOST=0.0.0.0 -e HTTP_PORT=8080 -p 8080:8080 wispbot
# (the -e flags win over a .env written for local runs, whose HTTP_HOST=127.0.0.1 would leave the
# published port unreachable).

# --- build stage: a virtualenv with the package and its pinned runtime dependencies -------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
# Dependencies first, read from pyproject (not the dev extras), so this layer is rebuilt only when
# pyproject.toml changes and not on every code change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY README.md ./
COPY bot ./bot
COPY flows ./flows
COPY integrations ./integrations
# A regular (non-editable) install: the runtime stage needs the venv only, not /src.
RUN pip install --no-deps . \
    && python -c "import bot.cli, bot.service, flows.registry, flows.understand, integrations.wisphub.sandbox"

# --- runtime stage: the venv, a non-root user, nothing else ------------------------------------
FROM python:3.11-slim AS runtime

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8080

RUN groupadd --system --gid 10001 wispbot \
    && useradd --system --uid 10001 --gid wispbot --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin wispbot \
    && mkdir /app && chown wispbot:wispbot /app

COPY --from=build /opt/venv /opt/venv

# Settings come from the environment (docker --env-file / compose env_file); no .env in the image.
WORKDIR /app
USER wispbot

EXPOSE 8080

# The slim image has no curl: ask /healthz with the standard library; any error or non-2xx exits 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HTTP_PORT', '8080'), timeout=4)"]

# `run` drains in-flight messages on SIGTERM and exits 0.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot", "run"]
