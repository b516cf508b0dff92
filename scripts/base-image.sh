#!/usr/bin/env bash
# base-image.sh -- make sure the base image (debian:trixie-slim by default) exists locally.
# Usage: scripts/base-image.sh [IMAGE]
# Order: already present -> done; `docker pull` works -> done; otherwise build it with mmdebstrap
# (minbase variant, Debian's archive) and `docker import` it: the official image is made the same way,
# so the stack builds identically on machines that cannot reach a registry.
set -Eeuo pipefail

BASE_IMAGE=${1:-${BASE_IMAGE:-debian:trixie-slim}}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Security updates arrive through apt like every other package (docs/architecture.md).
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

base_image_present() { docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; }

base_image_build() {
	local suite=${BASE_IMAGE#*:}
	suite=${suite%-slim}
	if ! command -v mmdebstrap >/dev/null; then
		echo "error: $BASE_IMAGE cannot be pulled and mmdebstrap is missing; install it: apt-get install mmdebstrap" >&2
		exit 1
	fi
	# global: the EXIT trap runs after this function returns
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	echo "building $BASE_IMAGE with mmdebstrap ($suite, minbase, $DEBIAN_MIRROR)..." >&2
	# Trim docs and locales like the official slim image; keep apt usable for the Dockerfiles.
	mmdebstrap --quiet --variant=minbase \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		"$suite" "$tmp/rootfs.tar" \
		"deb $DEBIAN_MIRROR $suite main" \
		"deb $DEBIAN_MIRROR $suite-updates main" \
		"deb $DEBIAN_SECURITY_MIRROR $suite-security main"
	docker import --change 'CMD ["bash"]' "$tmp/rootfs.tar" "$BASE_IMAGE" >/dev/null
	echo "built $BASE_IMAGE" >&2
}

base_image_present && exit 0
if timeout 60 docker pull --quiet "$BASE_IMAGE" >/dev/null 2>&1; then exit 0; fi
base_image_build
