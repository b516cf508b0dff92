#!/usr/bin/env bash
# pgstack-lib.sh -- the vocabulary every pgstack entrypoint shares (postgres, pgbouncer, api,
# backup), in the manner of docker-library's images: sourced, never run. Functions only; nothing
# happens on source. Each image copies this file to /usr/local/lib/pgstack/pgstack-lib.sh.
#
# Contracts kept here so that no image spells them differently:
#   - secrets are compose secret files under $PGSTACK_SECRETS_DIR (default /run/secrets), mode
#     0600 and root-owned: an entrypoint starts as root to read them, then drops privileges;
#   - the socket group pgsocket (gid 10010) may connect to PgBouncer's socket (pgbouncer, api);
#   - the postgres user is uid/gid 999 in every image that touches the data volume (postgres,
#     backup): physical backups and restores read and write the cluster's files as its owner.

PGSTACK_SECRETS_DIR=${PGSTACK_SECRETS_DIR:-/run/secrets}
# A failure inside $(...) fails the assignment that uses it (bash leaves errexit off there).
shopt -s inherit_errexit

# usage: pgstack_is_sourced
# True when the calling script was sourced (e.g. by a test) rather than executed.
pgstack_is_sourced() {
	[[ ${#FUNCNAME[@]} -ge 2 && ${FUNCNAME[0]} == pgstack_is_sourced && ${FUNCNAME[1]} == source ]]
}

# usage: pgstack_error MESSAGE...
# Print to stderr, prefixed with the entrypoint's name, and exit non-zero.
pgstack_error() {
	printf '%s: error: %s\n' "${0##*/}" "$*" >&2
	exit 1
}

# usage: pgstack_log EVENT [KEY=VALUE]...
# One JSON line on stdout (values are strings; keep them free of quotes).
pgstack_log() {
	local line="{\"event\": \"$1\"" pair
	shift
	for pair in "$@"; do line+=", \"${pair%%=*}\": \"${pair#*=}\""; done
	printf '%s}\n' "$line"
}

# usage: pgstack_secret NAME
# Print the secret file's content; fail with the fix when it is missing, unreadable or empty.
pgstack_secret() {
	local path="$PGSTACK_SECRETS_DIR/$1" value
	[[ -r $path ]] || pgstack_error "secret $path is missing or unreadable; run 'make secrets' and recreate the container"
	value=$(<"$path")
	[[ -n $value ]] || pgstack_error "secret $path is empty; delete it and run 'make secrets'"
	printf '%s' "$value"
}

# usage: file_env VAR [DEFAULT]
# docker-library's convention: VAR may be given directly or as VAR_FILE (a path to read); both
# at once is an error. Exports VAR and unsets VAR_FILE.
file_env() {
	local var=$1 file_var="${1}_FILE" default=${2:-}
	if [[ -n ${!var:-} && -n ${!file_var:-} ]]; then
		pgstack_error "both $var and $file_var are set; they are exclusive"
	fi
	local value=$default
	if [[ -n ${!var:-} ]]; then
		value=${!var}
	elif [[ -n ${!file_var:-} ]]; then
		[[ -r ${!file_var} ]] || pgstack_error "$file_var=${!file_var}: no such readable file"
		value=$(<"${!file_var}")
	fi
	export "$var=$value"
	unset "$file_var"
}

# usage: pgstack_require_root
# Entrypoints start as root only to read secrets and own volumes; say so when started otherwise.
pgstack_require_root() {
	[[ $(id -u) == 0 ]] || pgstack_error "start this container as root; it drops to its service user itself"
}

# usage: pgstack_as USER COMMAND [ARG]...
# Run COMMAND as USER (with USER's groups) and return; for set-up steps.
pgstack_as() {
	local user=$1
	shift
	if [[ $(id -un) == "$user" ]]; then "$@"; else setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"; fi
}

# usage: pgstack_drop_privileges USER COMMAND [ARG]...
# Replace this shell with COMMAND as USER, with no capabilities left to inherit.
pgstack_drop_privileges() {
	local user=$1
	shift
	exec setpriv --reuid="$user" --regid="$user" --init-groups --inh-caps=-all -- "$@"
}
