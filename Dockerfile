# One image for every pdftasks process: api, worker, beat, flower, metrics.
#   docker build -t pdftasks .
#   docker run pdftasks worker -c 2        (the argument after the image is the pdftasks command)
# docs/operations.md explains every line.
FROM python:3.11-slim-bookworm

# WeasyPrint's native libraries (Pango, HarfBuzz with its subsetter: without
# libharfbuzz-subset0 renders are ~3.5x slower), a font, MIME data; tini as PID 1.
# Unpinned on purpose: bookworm's current packages, with their security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b libharfbuzz-subset0 \
        fonts-dejavu-core shared-mime-info tini \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 pdftasks \
    && useradd --system --uid 10001 --gid pdftasks --home-dir /app --shell /usr/sbin/nologin \
        pdftasks

WORKDIR /app

# The package with the extras every process needs (documents: Factur-X and signatures);
# add sqs for Amazon SQS:
#   docker build --build-arg EXTRAS=redis,sqs,api,ops,documents .
ARG EXTRAS=redis,api,ops,documents
COPY pyproject.toml README.md constraints.txt /tmp/src/
COPY pdftasks /tmp/src/pdftasks
# The sample templates are packaged too (pdftasks.sample_templates, for `pdftasks demo`).
COPY templates /tmp/src/templates
# Versions come from the lock file (constraints.txt), the versions the tests ran with.
# hadolint ignore=DL3013
RUN pip install -c /tmp/src/constraints.txt "/tmp/src[${EXTRAS}]" && rm -rf /tmp/src

COPY templates ./templates
COPY beat_schedule.py ./

# Writable places; everything else may be mounted read-only.
RUN mkdir -p /app/output /app/state /tmp/pdftasks \
    && chown pdftasks:pdftasks /app/output /app/state /tmp/pdftasks

ENV PDFTASKS_TEMPLATES_DIR=/app/templates \
    PDFTASKS_OUTPUT_DIR=/app/output \
    PDFTASKS_HOME=/app/state \
    PDFTASKS_HEARTBEAT_FILE=/tmp/pdftasks/heartbeat

USER 10001:10001

# api, flower, metrics
EXPOSE 8000 5555 9808

# The worker's heartbeat (the default command is the worker): written every
# PDFTASKS_HEARTBEAT_INTERVAL_S (10 s) by the worker's event loop; stale after 60 s.
# docker-compose.yml gives api, beat, flower and metrics their own checks.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os,sys,time; sys.exit(time.time() - os.stat(os.environ['PDFTASKS_HEARTBEAT_FILE']).st_mtime > 60)"]

# Exec form: tini is PID 1 and forwards SIGTERM to pdftasks (Celery's warm shutdown).
ENTRYPOINT ["tini", "--", "pdftasks"]
CMD ["worker"]
