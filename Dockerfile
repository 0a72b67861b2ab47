# syntax=docker/dockerfile:1
# Build stage: RocksDB's C++ sources need a C++ compiler and libclang (for bindgen).
FROM rust:1.88-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin eventvault \
 && cp target/release/eventvault /usr/local/bin/eventvault

# Runtime stage: the binary and nothing else (the healthcheck is a subcommand, no curl).
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data eventvault \
 && mkdir -p /data/storage /data/backups /data/restore \
 && chown -R eventvault:eventvault /data
COPY --from=build /usr/local/bin/eventvault /usr/local/bin/eventvault
USER eventvault
WORKDIR /data
ENV LISTEN_ADDR=0.0.0.0:5050 \
    STORAGE_DIR=/data/storage \
    BACKUP_DIR=/data/backups \
    RESTORE_DIR=/data/restore
EXPOSE 5050
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["eventvault", "healthcheck"]
ENTRYPOINT ["eventvault"]
CMD ["serve"]
