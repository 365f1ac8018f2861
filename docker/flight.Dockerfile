# barecount-flight, built in a builder stage, run as a non-root user.
# Build from the repository root:  docker build -f docker/flight.Dockerfile -t barecount-flight .
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release -p barecount-flight --bin barecount-flight

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home barecount
COPY --from=builder /src/target/release/barecount-flight /usr/local/bin/barecount-flight
USER barecount
EXPOSE 50051
ENTRYPOINT ["barecount-flight", "serve", "--listen", "0.0.0.0:50051"]
