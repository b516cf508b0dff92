#!/usr/bin/env bash
# Entrypoint of the pgstack API image (docker-library style).
#
# Compose (not swarm) bind-mounts secret files with the host owner and mode 0600, which the
# non-root `app` user cannot read. So the container starts as root for one job only: copy each
# file named by a PGSTACK_*_FILE variable under /run/secrets into /run/pgstack-secrets (a
# tmpfs), owned by app and mode 0400, re-point the variable at the copy, then drop to app for
# good. No service process runs as root.
set -Eeuo pipefail

readonly APP_USER=app
readonly SECRETS_SRC=/run/secrets
readonly SECRETS_DST=/run/pgstack-secrets

# usage: api_error MESSAGE...
# Print to stderr, prefixed, and exit non-zero.
api_error() {
	printf 'docker-entrypoint: error: %s\n' "$*" >&2
	exit 1
}

# usage: api_copy_secrets
# For every PGSTACK_*_FILE under /run/secrets: copy it to the tmpfs for app, export the new path.
api_copy_secrets() {
	local var src dst
	mkdir -p "$SECRETS_DST"
	chown "root:$APP_USER" "$SECRETS_DST"
	chmod 0750 "$SECRETS_DST"
	while IFS= read -r var; do
		src="${!var}"
		case "$src" in
			"$SECRETS_SRC"/*) ;;
			*) continue ;; # not a compose secret: leave it to the app (and its own checks)
		esac
		if [ ! -f "$src" ]; then
			api_error "$var=$src: no such file; add the secret to the service's secrets: list"
		fi
		dst="$SECRETS_DST/$(basename "$src")"
		install -o "$APP_USER" -g "$APP_USER" -m 0400 "$src" "$dst"
		export "$var=$dst"
	done < <(compgen -e | grep -E '^PGSTACK_[A-Z0-9_]+_FILE$' || true)
}

# usage: api_prepare_metrics_dir
# An empty directory for the workers' Prometheus files (PROMETHEUS_MULTIPROC_DIR), owned by app:
# files of a previous run would be summed into this one's counters.
api_prepare_metrics_dir() {
	local dir=${PROMETHEUS_MULTIPROC_DIR:-}
	[ -n "$dir" ] || return 0
	rm -rf "$dir"
	mkdir -p "$dir"
	if [ "$(id -u)" = 0 ]; then
		chown "$APP_USER:$APP_USER" "$dir"
	fi
}

# usage: api_drop_privileges COMMAND [ARG]...
# Replace this shell with COMMAND as app, with no capabilities left to inherit.
api_drop_privileges() {
	exec setpriv --reuid="$APP_USER" --regid="$APP_USER" --init-groups --inh-caps=-all -- "$@"
}

main() {
	if [ "$#" -eq 0 ]; then
		api_error "no command given; the image's CMD runs uvicorn"
	fi
	api_prepare_metrics_dir
	if [ "$(id -u)" = 0 ]; then
		api_copy_secrets
		api_drop_privileges "$@"
	fi
	# Already unprivileged (e.g. `docker run --user`): secrets must be readable as they are.
	exec "$@"
}

main "$@"
