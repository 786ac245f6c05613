# The otel-audit receiver image: OTLP gRPC :4317, OTLP/HTTP :4318 (also /healthz, /readyz,
# /metrics) and the query API :8080. docker-compose.yml builds it; it also runs the
# one-shot setup jobs (`otel-audit templates install`, `otel-audit kibana import`).
#
#   docker build -t otel-audit .
#   docker run -v ./receiver.yaml:/etc/otel-audit/receiver.yaml:ro \
#     -e OTEL_AUDIT_ES_URL=http://elasticsearch:9200 otel-audit

# The native protobuf decoder (native/) as an abi3 wheel, built where the Rust toolchain is,
# so the image itself carries no compiler. Bookworm's glibc is no newer than the runtime's.
FROM rust:1-slim-bookworm AS native
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /native
COPY native ./
RUN python3 -m venv /opt/maturin \
 && /opt/maturin/bin/pip install --no-cache-dir "maturin>=1.9.4,<2" \
 && /opt/maturin/bin/maturin build --release --out /wheels

FROM python:3.11-slim

# EXTRAS=demo adds the OTLP exporters the demo traffic generator needs.
ARG EXTRAS=server

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid, so files on mounted volumes keep their owner across rebuilds.
RUN groupadd --system --gid 10001 otel-audit \
 && useradd --system --uid 10001 --gid otel-audit --home-dir /var/lib/otel-audit \
      --shell /usr/sbin/nologin otel-audit

WORKDIR /build
COPY pyproject.toml README.md LICENSE ./
COPY otel_audit ./otel_audit
COPY receiver ./receiver
COPY indexer ./indexer
COPY demo ./demo
COPY --from=native /wheels /wheels
RUN pip install ".[${EXTRAS}]" /wheels/*.whl && rm -rf /build /wheels

# State lives under /var/lib/otel-audit (spool, integrity chain, keys); a named volume
# mounted there starts with this ownership.
RUN mkdir -p /var/lib/otel-audit/spool /var/lib/otel-audit/integrity /var/lib/otel-audit/keys \
      /etc/otel-audit \
 && chown -R otel-audit:otel-audit /var/lib/otel-audit
WORKDIR /var/lib/otel-audit
USER otel-audit

EXPOSE 4317 4318 8080

# /healthz is served on the OTLP/HTTP listener (http_endpoint). The slim image has no
# curl, so the check uses Python.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=5 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:4318/healthz', timeout=4).status == 200 else 1)"]

CMD ["otel-audit", "serve", "--config", "/etc/otel-audit/receiver.yaml"]
