# dvn node image: multi-stage, small non-root runtime.
#   docker build -t dvn-node:latest .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p dvn --bin dvn

FROM debian:bookworm-slim
# ca-certificates: HTTPS RPC and KMS endpoints. The PKCS#11 library of the region's HSM
# (CloudHSM's libcloudhsm_pkcs11.so, Google's libkmsp11.so) is mounted or layered on top.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin dvn \
 && mkdir -p /app/data && chown dvn /app/data
COPY --from=build /src/target/release/dvn /usr/local/bin/dvn
USER dvn
WORKDIR /app
EXPOSE 8080 8443
HEALTHCHECK --interval=15s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["/usr/local/bin/dvn"]
CMD ["run", "--config", "/app/config.yaml"]
