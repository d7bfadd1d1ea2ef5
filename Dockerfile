# fleetwatch: one image for every flow. The container runs `python -m bytewax.run <args>`,
# so a pod's args name the flow: ["dataflows.alerts"]. Ports: 9999 Bytewax workers (set in
# BYTEWAX_ADDRESSES), 3030 the Bytewax API with Prometheus metrics at /metrics.
#
#   docker build -t fleetwatch:0.1.0 .
#   docker run --rm -e FLEET_KAFKA_BROKERS=kafka:9092 fleetwatch:0.1.0 dataflows.alerts

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/fleetwatch
COPY pyproject.toml constraints.txt README.md ./
COPY domain domain
COPY connectors connectors
COPY dataflows dataflows
COPY runtime runtime
COPY fleetwatch fleetwatch
# Runtime dependencies only, every version pinned by the lock the suite passed with.
RUN /opt/fleetwatch/bin/pip install -c constraints.txt . \
    && /opt/fleetwatch/bin/pip check

FROM python:3.11-slim-bookworm
ENV PATH=/opt/fleetwatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BYTEWAX_DATAFLOW_API_ENABLED=true
RUN groupadd --system --gid 10001 fleetwatch \
    && useradd --system --uid 10001 --gid fleetwatch --home-dir /var/lib/fleetwatch \
       --create-home --shell /usr/sbin/nologin fleetwatch
COPY --from=build /opt/fleetwatch /opt/fleetwatch
USER 10001:10001
WORKDIR /var/lib/fleetwatch
EXPOSE 9999 3030
ENTRYPOINT ["python", "-m", "bytewax.run"]
CMD ["dataflows.alerts"]
