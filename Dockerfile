# One image, one binary: the role is the argument (`all` by default).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cloudpop \
 && install -D -m 0755 target/release/cloudpop /out/cloudpop \
 && install -d -m 0755 /out/var/lib/cloudpop

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/cloudpop /cloudpop
COPY --from=build --chown=65532:65532 /out/var/lib/cloudpop /var/lib/cloudpop
ENV CLOUDPOP_DATA_DIR=/var/lib/cloudpop \
    CLOUDPOP_POP3__LISTEN=0.0.0.0:1110 \
    CLOUDPOP_POP3__LISTEN_TLS=0.0.0.0:1995 \
    CLOUDPOP_LMTP__LISTEN=0.0.0.0:2424 \
    CLOUDPOP_ADMIN__LISTEN=0.0.0.0:9090 \
    CLOUDPOP_AUTH__LISTEN=0.0.0.0:50051
VOLUME ["/var/lib/cloudpop"]
EXPOSE 1110 1995 2424 9090 50051
USER 65532:65532
# Exec form: cloudpop is PID 1 and receives SIGTERM itself, which starts the drain.
ENTRYPOINT ["/cloudpop"]
CMD ["all"]
