# Stand-in for livekit/sip: the binary scripts/install_deps.sh builds at the pinned version, with
# the libraries its cgo audio code links. Upstream (build/sip/Dockerfile of its sources): binary
# in /bin, WORKDIR /sip, ENTRYPOINT ["livekit-sip", "--config=/sip/config.yaml"], root.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    libopus0 libopusfile0 libsoxr0 \
 && rm -rf /var/lib/apt/lists/*
COPY livekit-sip /bin/livekit-sip
WORKDIR /sip
ENTRYPOINT ["livekit-sip", "--config=/sip/config.yaml"]
