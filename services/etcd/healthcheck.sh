#!/usr/bin/env bash
# healthcheck.sh -- the image's HEALTHCHECK: this member's GET /health says {"health":"true"}, i.e.
# it has a leader, no alarm, and a linearizable read went through consensus.
# Usage: pgstack-etcd-healthcheck
#
# /health over bash's /dev/tcp rather than `etcdctl endpoint health`: once authentication is on
# (pgstack-etcd-auth), etcdctl's probe without credentials fails with "user name is empty", while
# /health counts that refusal as healthy (the read reached consensus before the auth check).
set -Eeuo pipefail
# With TLS on the client port (ansible's pgstack_db role) /health is asked on the plain-HTTP
# metrics listener on loopback instead (ETCD_LISTEN_METRICS_URLS): PGSTACK_ETCD_HEALTH_PORT.
HEALTH_PORT=${PGSTACK_ETCD_HEALTH_PORT:-2379}

etcd_healthcheck() {
	local response
	exec 3<>/dev/tcp/127.0.0.1/"$HEALTH_PORT"
	printf 'GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
	response=$(timeout 3 cat <&3)
	[[ $response == *'"health":"true"'* ]] || {
		echo "GET /health answered: ${response##*$'\r\n'}" >&2
		return 1
	}
}

etcd_healthcheck
