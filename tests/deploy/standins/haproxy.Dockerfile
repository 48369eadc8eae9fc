# Stand-in for haproxy:2.6: Debian bookworm's HAProxy 2.6. Upstream: USER haproxy,
# WORKDIR /var/lib/haproxy, STOPSIGNAL SIGUSR1, ENTRYPOINT docker-entrypoint.sh (master-worker
# in the foreground), CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"].
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/sbin/haproxy /usr/local/sbin/haproxy \
 && mkdir -p /usr/local/etc/haproxy /var/lib/haproxy && chown haproxy:haproxy /var/lib/haproxy
COPY haproxy-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
STOPSIGNAL SIGUSR1
USER haproxy
WORKDIR /var/lib/haproxy
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
