#!/bin/sh
# As the upstream image's entrypoint does: options alone mean redis-server's, and redis-server
# started as root runs as the user redis.
set -e
case "$1" in -*) set -- redis-server "$@" ;; esac
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
  exec setpriv --reuid=redis --regid=redis --init-groups "$@"
fi
exec "$@"
