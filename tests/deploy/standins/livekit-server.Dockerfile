# Stand-in for livekit/livekit-server: the binary scripts/install_deps.sh builds at the pinned
# version. Upstream: FROM alpine, ENTRYPOINT ["/livekit-server"], root, /; alpine's busybox
# brings wget, which the compose file's healthcheck uses.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends busybox \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /bin/busybox /usr/local/bin/wget
COPY livekit-server /livekit-server
ENTRYPOINT ["/livekit-server"]
