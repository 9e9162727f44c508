# nova-realtime: one container, one node.
#
#   docker build -t nova-realtime .
#   docker run -p 8000:8000 -e NOVA_JWT_SECRET=... -e NOVA_ADMIN_TOKEN=... \
#              -v "$PWD/configs:/app/configs" -v "$PWD/prompts:/app/prompts" nova-realtime

FROM rust:1-slim-bookworm AS build
# jemalloc (the server's allocator) is built from its C sources.
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /src
ENV CARGO_PROFILE_RELEASE_STRIP=true
# Dependencies first, with stub sources, so code changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY actors/Cargo.toml actors/
RUN mkdir -p src actors/src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs actors/src/lib.rs \
 && echo 'fn main() {}' > benches/nova-bench.rs \
 && cargo build --release --locked --bin nova-realtime \
 && rm -rf src actors/src
COPY src src
COPY actors/src actors/src
# What the binary embeds and serves: the JavaScript client, and the /docs
# page with its vendored Swagger UI.
COPY clients/js/nova-realtime.js clients/js/nova-realtime.d.ts clients/js/
COPY assets assets
RUN touch src/main.rs src/lib.rs actors/src/lib.rs \
 && cargo build --release --locked --bin nova-realtime

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin nova
WORKDIR /app
COPY --from=build /src/target/release/nova-realtime /usr/local/bin/nova-realtime
COPY --chown=nova:nova configs configs
COPY --chown=nova:nova prompts prompts
USER nova
# Production unless told otherwise: a container without real secrets refuses
# to start instead of exposing development credentials on the network.
ENV NOVA_BIND=0.0.0.0:8000 \
    NOVA_PRODUCTION=true \
    RUST_LOG=info
EXPOSE 8000
# Settings the server watches; mount your own.
VOLUME ["/app/configs", "/app/prompts"]
# The binary probes its own /health: no curl in the image.
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
  CMD ["nova-realtime", "--health-check"]
# SIGTERM: stop accepting, close clients with 1012, drain, exit.
STOPSIGNAL SIGTERM
ENTRYPOINT ["nova-realtime"]
