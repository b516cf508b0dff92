#!/usr/bin/env bash
# healthcheck.sh -- the image's HEALTHCHECK: the local server answers GET /livez with 200.
# Usage: pgstack-api-healthcheck
#
# bash's /dev/tcp instead of `python3 -c "urllib..."`: a probe every few seconds should not
# start an interpreter (~30 ms of CPU, and on a busy 2-core host slow enough to flap to
# unhealthy). /livez does no I/O, so a database outage never marks the container unhealthy.
set -Eeuo pipefail

api_healthcheck() {
	local status
	exec 3<>/dev/tcp/127.0.0.1/8000
	printf 'GET /livez HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
	IFS= read -r -t 2 status <&3
	[[ $status == "HTTP/1.1 200 "* ]] || {
		echo "GET /livez answered: ${status:-nothing}" >&2
		return 1
	}
}

api_healthcheck
