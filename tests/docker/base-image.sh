#!/usr/bin/env bash
# A stand-in for python:3.11-slim where no registry answers: Debian bookworm
# (Python 3.11) from Debian's packages, imported as local/python:3.11-slim.
# Then: PYTHON_IMAGE=local/python:3.11-slim tests/docker/smoke.sh
# Needs root, debootstrap and a Docker engine.
set -euo pipefail

tag="${1:-local/python:3.11-slim}"
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT

debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
# The host's trust store: where egress goes through a TLS-inspecting proxy,
# pip in the build needs its certificate.
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  - "$tag" >/dev/null
echo "$tag"
