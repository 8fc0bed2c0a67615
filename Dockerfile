# syntax=docker/dockerfile:1.7
# The `settle` node image: a Rust builder stage and a small, non-root Debian runtime.
#
#   docker build -t settle:dev .
#   docker run --rm -p 4433:4433/udp -p 8080:8080 -v settle-data:/var/lib/settle settle:dev
#
# The builder follows shared/notes/build.md: libclang for RocksDB's bindgen, the workspace's own
# release profile (not edited here), --locked against the committed Cargo.lock. A cold build
# compiles RocksDB (10+ minutes on two cores); the cache mounts keep later builds warm.
# The runtime stage is checked by tools/ops/check_dockerfile.py (run by scripts/test.sh).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
# g++ and make build RocksDB's C++; libclang-dev carries the headers bindgen needs.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libclang-dev g++ make binutils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The binary is copied out of the cache-mounted target dir (a cache mount is not part of the
# layer) and stripped of the release profile's line tables (460 MB -> 20 MB).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p settle-node --bin settle \
    && install -D -m 0755 target/release/settle /out/settle \
    && strip --strip-debug /out/settle

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# libstdc++6: RocksDB is C++ (the binary links it dynamically).
# tini: PID 1 that forwards SIGTERM to the node (graceful shutdown) and reaps children.
# curl: the HEALTHCHECK and the chart's hooks (Kubernetes API, health endpoints).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates curl libstdc++6 tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 settle \
    && useradd --system --uid 10001 --gid settle --home-dir /var/lib/settle --shell /usr/sbin/nologin settle \
    && install -d -o settle -g settle -m 0750 /var/lib/settle
COPY --from=builder /out/settle /usr/local/bin/settle

LABEL org.opencontainers.image.title="settle" \
      org.opencontainers.image.description="Settle: a distributed, real-time settlement engine" \
      org.opencontainers.image.licenses="Apache-2.0"

# 4433/udp: client QUIC (--listen); 4434/udp: node-to-node QUIC (--peer-listen);
# 8080/tcp: HTTP API, dashboard, /metrics, /healthz, /readyz (--http).
EXPOSE 4433/udp 4434/udp 8080/tcp
VOLUME ["/var/lib/settle"]
USER 10001:10001
WORKDIR /var/lib/settle

# "Process up" only: readiness (caught up) is for the orchestrator, which probes /readyz.
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/settle"]
# A standalone node by default; the Helm chart replaces this with the clustered command line.
CMD ["node", "--data", "/var/lib/settle/node", "--listen", "0.0.0.0:4433", "--http", "0.0.0.0:8080"]
