#!/usr/bin/env bash
# docker-entrypoint.sh -- the pgstack API image (uvicorn, the pgstack-db CLI, migrations).
# Usage: docker-entrypoint.sh COMMAND [ARG]...   (the image's CMD runs uvicorn)
#
# Compose (not swarm) bind-mounts secret files with the host owner and mode 0600, which the
# non-root `app` user cannot read. So the container starts as root for one job only: copy each
# file named by a PGSTACK_*_FILE variable under /run/secrets into /run/pgstack-secrets (a
# tmpfs), owned by app and mode 0400, re-point the variable at the copy, then drop to app for
# good. No service process runs as root.
set -Eeuo pipefail
# shellcheck source=SCRIPTDIR/../lib/pgstack-lib.sh
source /usr/local/lib/pgstack/pgstack-lib.sh

readonly APP_USER=app
readonly SECRETS_DST=/run/pgstack-secrets

# usage: api_copy_secrets
# For every PGSTACK_*_FILE under the secrets directory: copy it to the tmpfs for app, export
# the new path.
api_copy_secrets() {
	local var src dst
	install -d -o root -g "$APP_USER" -m 0750 "$SECRETS_DST"
	while IFS= read -r var; do
		src="${!var}"
		case "$src" in
			"$PGSTACK_SECRETS_DIR"/*) ;;
			*) continue ;; # not a compose secret: leave it to the app (and its own checks)
		esac
		[[ -f $src ]] || pgstack_error "$var=$src: no such file; add the secret to the service's secrets: list"
		dst="$SECRETS_DST/${src##*/}"
		install -o "$APP_USER" -g "$APP_USER" -m 0400 "$src" "$dst"
		export "$var=$dst"
	done < <(compgen -e | grep -E '^PGSTACK_[A-Z0-9_]+_FILE$' || true)
}

# usage: api_prepare_metrics_dir
# An empty directory for the workers' Prometheus files (PROMETHEUS_MULTIPROC_DIR), owned by app:
# files of a previous run would be summed into this one's counters.
api_prepare_metrics_dir() {
	local dir=${PROMETHEUS_MULTIPROC_DIR:-}
	[[ -n $dir ]] || return 0
	rm -rf "$dir"
	mkdir -p "$dir"
	if [[ $(id -u) == 0 ]]; then chown "$APP_USER:$APP_USER" "$dir"; fi
}

_main() {
	(($#)) || pgstack_error "no command given; the image's CMD runs uvicorn"
	api_prepare_metrics_dir
	if [[ $(id -u) == 0 ]]; then
		api_copy_secrets
		pgstack_drop_privileges "$APP_USER" "$@"
	fi
	# Already unprivileged (e.g. `docker run --user`): secrets must be readable as they are.
	exec "$@"
}

if ! pgstack_is_sourced; then
	_main "$@"
fi
