# Strata broker image: `docker build -t strata .` (compose.yaml builds it too).
# Settings come from STRATA_* variables (see `strata serve --help`), S3 credentials from
# the standard AWS_* ones.
FROM python:3.11-slim

WORKDIR /opt/strata
COPY pyproject.toml README.md LICENSE ./
COPY protocol protocol
COPY broker broker
COPY wal wal
COPY s3stream s3stream
COPY aio aio
COPY devkit devkit
RUN pip install --no-cache-dir . \
    && useradd --system --home-dir /var/lib/strata --create-home strata

USER strata
ENV STRATA_DATA_DIR=/var/lib/strata \
    STRATA_LISTEN=0.0.0.0:9092 \
    STRATA_METRICS_LISTEN=0.0.0.0:9100
VOLUME /var/lib/strata
EXPOSE 9092 9100
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/readyz', timeout=2)"]
ENTRYPOINT ["strata", "serve"]
