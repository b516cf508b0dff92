#!/usr/bin/env bash
# Provision a fresh Debian 12 machine (as root) with what the stack's tests need:
# a Docker engine (Debian's docker.io), Compose v2 (trixie's docker-compose package: it depends
# only on libc6, so it installs on bookworm), and mmdebstrap for `make base-image`.
# Idempotent: each step probes before it acts. Starts dockerd only when none answers, and records
# its pid in $DOCKERD_PIDFILE so the caller can stop exactly what was started.
set -Eeuo pipefail

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DOCKERD_PIDFILE=${DOCKERD_PIDFILE:-/run/pgstack-ci-dockerd.pid}
COMPOSE_SUITE=${COMPOSE_SUITE:-trixie}

log() { printf '[provision] %s\n' "$*" >&2; }

provision_apt() {
	local missing=()
	command -v dockerd >/dev/null || missing+=(docker.io)
	command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
	command -v zstd >/dev/null || missing+=(zstd)
	dpkg -s iptables >/dev/null 2>&1 || missing+=(iptables)
	((${#missing[@]})) || return 0
	log "installing ${missing[*]} from the Debian archive"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Compose v2: the plugin from trixie's pool (Packages index -> .deb), installed with dpkg.
provision_compose() {
	if docker compose version >/dev/null 2>&1; then return 0; fi
	local tmp index path
	tmp=$(mktemp -d)
	log "fetching docker-compose (Compose v2) from ${COMPOSE_SUITE}"
	curl -fsSL "$DEBIAN_MIRROR/dists/$COMPOSE_SUITE/main/binary-amd64/Packages.xz" -o "$tmp/Packages.xz"
	index=$(xz -dc "$tmp/Packages.xz")
	path=$(awk '/^Package: docker-compose$/{p=1} p&&/^Filename:/{print $2; exit}' <<<"$index")
	[[ -n $path ]] || { log "docker-compose not found in $COMPOSE_SUITE's Packages index"; exit 1; }
	curl -fsSL "$DEBIAN_MIRROR/$path" -o "$tmp/docker-compose.deb"
	dpkg -i "$tmp/docker-compose.deb" >/dev/null
	rm -rf "$tmp"
	docker compose version >/dev/null
}

provision_dockerd() {
	if docker info >/dev/null 2>&1; then return 0; fi
	log "starting dockerd (log: /var/log/pgstack-ci-dockerd.log)"
	nohup dockerd --storage-driver=overlay2 >/var/log/pgstack-ci-dockerd.log 2>&1 &
	echo $! >"$DOCKERD_PIDFILE"
	for _ in $(seq 1 60); do
		docker info >/dev/null 2>&1 && return 0
		sleep 1
	done
	log "dockerd did not answer within 60 s; its log:"
	tail -n 40 /var/log/pgstack-ci-dockerd.log >&2
	exit 1
}

provision_apt
provision_compose
provision_dockerd
log "docker $(docker version --format '{{.Server.Version}}'), $(docker compose version --short)"
