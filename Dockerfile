# The voipflow image: one image for the collector, the Faust worker and the
# sinks; docker-compose.yml picks the subcommand. Settings come only from
# VOIPFLOW_* variables (`voipflow settings` lists them).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
# A regular (not editable) install: the source folder is not needed at run time.
RUN pip install . \
 && rm -rf /src \
 && useradd --system --uid 10001 --home-dir /var/lib/voipflow --create-home voipflow

USER voipflow
WORKDIR /var/lib/voipflow
ENV VOIPFLOW_DATA_DIR=/var/lib/voipflow \
    VOIPFLOW_LOG_FORMAT=json

# NetFlow v5/v9 and IPFIX in; Prometheus /metrics of collector, worker, sink,
# policy evaluator, ledger and enforcement point out.
EXPOSE 2055/udp 4739/udp 9464 9465 9466 9467 9468 9469
ENTRYPOINT ["voipflow"]
CMD ["--help"]
