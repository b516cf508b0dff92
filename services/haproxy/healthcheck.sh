#!/usr/bin/env bash
# healthcheck.sh -- the image's HEALTHCHECK: HAProxy's monitor page answers 200, i.e. HAProxy runs
# and a leader is up behind it (haproxy.cfg: monitor fail if no server of `primary` is up).
# Usage: pgstack-haproxy-healthcheck
set -Eeuo pipefail

haproxy_healthcheck() {
	local status
	exec 3<>/dev/tcp/127.0.0.1/8404
	printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
	IFS= read -r -t 2 status <&3
	[[ $status == "HTTP/1.1 200 "* ]] || {
		echo "GET /healthz answered: ${status:-nothing} (no leader behind HAProxy?)" >&2
		return 1
	}
}

haproxy_healthcheck
