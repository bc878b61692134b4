#!/bin/sh
# Usage: visionpool-container worker|proxy [flags]  (the image's entrypoint: `visionpool` itself)
# A worker advertises the container's own address unless told otherwise (VISIONPOOL_ADVERTISE_HOST or
# --advertise-host): its hostname is a container id that proxies and Consul may not resolve.
set -eu
if [ "${1:-}" = worker ] && [ -z "${VISIONPOOL_ADVERTISE_HOST:-}" ]; then
    VISIONPOOL_ADVERTISE_HOST=$(hostname -i | cut -d ' ' -f 1)
    export VISIONPOOL_ADVERTISE_HOST
fi
exec visionpool "$@"
