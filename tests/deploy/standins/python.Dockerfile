# Stand-in for python:3.11-slim: Debian's Python 3.11 as a virtual environment at /usr/local, so
# that python, pip and the console scripts pip installs live in /usr/local/bin and `pip install`
# as root works, as in the upstream image. Upstream: no entrypoint, CMD ["python3"], root, /.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /usr/local \
 && ln -sf python3 /usr/local/bin/python
# This machine's CA bundle at Debian's standard location: pip reaches PyPI the way the host does.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["python3"]
