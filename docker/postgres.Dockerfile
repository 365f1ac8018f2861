# Postgres 15 with the barecount extension. Mirrors scripts/setup.sh and the install step of
# scripts/test.sh: build with cargo-pgrx in a builder stage, copy the installed files over.
# Build from the repository root:  docker build -f docker/postgres.Dockerfile -t barecount-postgres .
FROM rust:1.95-bookworm AS builder
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      postgresql-15 postgresql-server-dev-15 libclang-dev clang pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-pgrx --version 0.18.0 --locked \
 && cargo pgrx init --pg15 /usr/lib/postgresql/15/bin/pg_config
WORKDIR /src
COPY . .
RUN cd pg_extension \
 && cargo pgrx package --pg-config /usr/lib/postgresql/15/bin/pg_config --out-dir /out

FROM postgres:15-bookworm
COPY --from=builder /out/usr/share/postgresql/15/extension/ /usr/share/postgresql/15/extension/
COPY --from=builder /out/usr/lib/postgresql/15/lib/ /usr/lib/postgresql/15/lib/
COPY docker/initdb/ /docker-entrypoint-initdb.d/
