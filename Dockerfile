# syntax=docker/dockerfile:1
# ccrelay's container image: built with Rust on Debian bookworm, run on debian:bookworm-slim as
# an unprivileged user, with the store in the /data volume. docs/operations.md has more.
#
#   docker build -t ccrelay .
#   docker build -t ccrelay --build-arg FEATURES=otel .     # with OpenTelemetry span export
#   docker run -d --name ccrelay -p 8080:8080 -p 127.0.0.1:9090:9090 -v ccrelay-data:/data \
#     -e CCRELAY_USERNAME=hq -e CCRELAY_PASSWORD=... ccrelay

# The toolchain the project is tested with; Cargo.toml's rust-version is the oldest that builds.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
# The C toolchain, perl, python3 and zlib build the bundled librdkafka (no cmake needed) and
# mimalloc; pkg-config finds zlib.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential perl python3 zlib1g-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cargo features beyond the defaults, comma-separated (e.g. otel).
ARG FEATURES=""
# The caches keep downloaded crates and built dependencies between builds on one machine;
# the binary is copied out because the target cache is not part of the image.
# The release profile keeps line tables for backtraces (40 of the binary's 50 MB); the image drops
# them and keeps the symbols, so a panic's backtrace still names its functions.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --features "${FEATURES}" \
    && objcopy --strip-debug target/release/ccrelay /usr/local/bin/ccrelay

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 ccrelay \
    && useradd --system --uid 10001 --gid ccrelay --home-dir /data --shell /usr/sbin/nologin ccrelay \
    && mkdir -p /data /etc/ccrelay/rules \
    && chown ccrelay:ccrelay /data
# Sinks that speak TLS verify their brokers against the system roots. The bundle is taken from
# the builder (which has ca-certificates) rather than installed, since the package would bring
# the openssl program and library along, which nothing here uses.
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /usr/local/bin/ccrelay /usr/local/bin/ccrelay
COPY deploy/docker/ccrelay.yaml /etc/ccrelay/ccrelay.yaml
USER 10001:10001
VOLUME ["/data"]
# 8080: ingress, for HQ (put TLS in front). 9090: admin page, API, metrics and probes; publish
# it only where operators and Prometheus reach it, never to the internet.
EXPOSE 8080 9090
# The image has no curl or wget, and adding one (and its TLS libraries) only for this would
# grow it; bash, already in the base image, speaks enough HTTP over /dev/tcp. /healthz on the
# admin port answers 200 while the process serves; -m bounds a hung answer.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && timeout 4 head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["ccrelay"]
CMD ["serve", "--config", "/etc/ccrelay/ccrelay.yaml", "--data-dir", "/data"]
