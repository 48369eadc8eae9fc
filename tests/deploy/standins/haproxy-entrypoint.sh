#!/bin/sh
# As the upstream image's entrypoint does: options alone mean haproxy's, and haproxy runs as
# master-worker (-W) in the foreground (-db).
set -e
case "$1" in -*) set -- haproxy "$@" ;; esac
if [ "$1" = haproxy ]; then
  shift
  set -- haproxy -W -db "$@"
fi
exec "$@"
