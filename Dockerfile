# syntax=docker/dockerfile:1.7
# Strata: the API + watcher (`strata serve`) or the executor (`strata executor`) from one image.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/strata
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
RUN /opt/strata/bin/pip install --no-compile .

FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/strata/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STRATA_HOST=0.0.0.0 \
    STRATA_PORT=8000 \
    STRATA_LANDING_DIR=/data/landing \
    STRATA_WAREHOUSE_DIR=/data/warehouse \
    STRATA_DATABASE_URL=sqlite+aiosqlite:////data/strata.db
RUN groupadd --system --gid 10001 strata \
    && useradd --system --uid 10001 --gid strata --home-dir /data --shell /usr/sbin/nologin strata \
    && mkdir -p /data/landing /data/warehouse \
    && chown -R strata:strata /data
COPY --from=build /opt/strata /opt/strata
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('STRATA_PORT','8000')}/healthz\", timeout=2)"]
# migrations run on every start; they are idempotent
ENTRYPOINT ["/bin/sh", "-c", "strata migrate && exec strata \"$@\"", "strata"]
CMD ["serve"]
