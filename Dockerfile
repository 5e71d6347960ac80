# closeloop's image: the wheel built from this checkout, installed with the runtime lock
# (requirements.lock: names, versions, hashes) on python:3.11-slim, run as a non-root user.
#   docker build -t closeloop .
#   docker run --rm closeloop --version
#   docker run -v ./closeloop.yaml:/home/closeloop/closeloop.yaml:ro -p 8400:8400 closeloop
# The entry point is `closeloop`; the default command `run` (the hub: intake, workers and the
# HTTP server on port 8400). Configuration: ./closeloop.yaml in the working folder
# /home/closeloop (or `-c FILE`), CLOSELOOP_* variables, and secret files in /run/secrets
# named like the variables (closeloop_database_url, closeloop_http__webhook_secret).
# compose.yaml runs it with PostgreSQL, a migration step, a hub and two workers.

FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src/ src/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11-slim
# CLOSELOOP_SECRETS_DIR names the folder of secret files, it holds none itself
# hadolint ignore=DL3064
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CLOSELOOP_SECRETS_DIR=/run/secrets \
    CLOSELOOP_HTTP__HOST=0.0.0.0 \
    CLOSELOOP_LOG_FORMAT=json
COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes -r /tmp/requirements.lock && rm /tmp/requirements.lock
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && mkdir -p /run/secrets \
    && useradd --create-home --uid 10001 --user-group closeloop
# numeric: Kubernetes' runAsNonRoot can check it
USER 10001:10001
WORKDIR /home/closeloop
EXPOSE 8400
# the hub's /healthz (a `closeloop worker` container serves no HTTP on 8400: compose.yaml
# turns this check off for workers)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CLOSELOOP_HTTP__PORT', '8400'), timeout=4)"]
ENTRYPOINT ["closeloop"]
CMD ["run"]
