#!/usr/bin/env bash
# preflight.sh -- say clearly what is missing before anything tries to use it.
set -Eeuo pipefail

if ! command -v docker >/dev/null; then
	cat >&2 <<'MSG'
error: docker is not installed.
  Debian/Ubuntu:  sudo apt-get install docker.io docker-compose   (or Docker's own packages)
  Other systems:  https://docs.docker.com/engine/install/
MSG
	exit 1
fi
if ! docker compose version >/dev/null 2>&1; then
	cat >&2 <<'MSG'
error: Docker Compose v2 (the `docker compose` plugin) is missing.
  Debian 13/Ubuntu 24.04+:  sudo apt-get install docker-compose
  Debian 12:  see .ci/provision.sh, which installs trixie's docker-compose package (it depends only on libc6)
MSG
	exit 1
fi
if ! docker info >/dev/null 2>&1; then
	echo "error: the Docker engine does not answer ('docker info' failed). Start it (sudo systemctl start docker) and check that your user may use it (group docker)." >&2
	exit 1
fi
