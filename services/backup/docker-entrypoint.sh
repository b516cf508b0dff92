#!/usr/bin/env bash
# docker-entrypoint.sh -- pgstack backup service (in the manner of docker-library/postgres).
# Usage: docker-entrypoint.sh pgstack-backup <command> [args...]   (anything else is exec'd)
# Compose bind-mounts secret files root-owned and 0600, so the container starts as root for one
# job: write a libpq password file (pgpass) on a tmpfs, owned by pgbackup, then drop to pgbackup.
# The owner role's password (needed by restore only) goes in only for the restore commands, so
# the long-running scheduler never holds a credential that can write to the database.
set -Eeuo pipefail

SECRETS_DIR=${PGSTACK_SECRETS_DIR:-/run/secrets}
RUN_DIR=/run/pgstack-backup
BACKUP_USER=pgbackup

# backup_error MESSAGE...: print to stderr and exit non-zero.
backup_error() {
	printf 'docker-entrypoint: error: %s\n' "$*" >&2
	exit 1
}

# backup_pgpass_line ROLE SECRET: one pgpass line; ':' and '\' escaped as libpq wants.
backup_pgpass_line() {
	local path="$SECRETS_DIR/$2" value
	[[ -s $path ]] || backup_error "secret $path is missing or empty; run 'make secrets' and recreate the container"
	value=$(<"$path")
	value=${value//\\/\\\\}
	value=${value//:/\\:}
	printf '*:*:*:%s:%s\n' "$1" "$value"
}

# backup_setup COMMAND: own the backup directory, render the pgpass file.
backup_setup() {
	install -d -o "$BACKUP_USER" -g "$BACKUP_USER" -m 0700 "$RUN_DIR"
	install -d -o "$BACKUP_USER" -g "$BACKUP_USER" -m 0700 "${BACKUP_DIR:?}"
	if [[ -d ${BACKUP_WAL_DIR:-/var/lib/pgstack-wal} ]]; then
		# postgres's entrypoint makes it 2770 postgres:10003; base/ is ours.
		install -d -o "$BACKUP_USER" -g "$BACKUP_USER" -m 0750 "${BACKUP_WAL_DIR:-/var/lib/pgstack-wal}/base"
	fi
	if [[ -n ${BACKUP_OFFSITE_DIR:-} && -d ${BACKUP_OFFSITE_DIR} ]]; then
		chown "$BACKUP_USER:$BACKUP_USER" "$BACKUP_OFFSITE_DIR"
	fi
	(
		umask 077
		{
			backup_pgpass_line "${BACKUP_DB_USER:-app_backup}" app_backup_password
			case "$1" in
				restore | reopen) backup_pgpass_line "${BACKUP_ADMIN_USER:-app_owner}" app_owner_password ;;
			esac
		} >"$RUN_DIR/pgpass"
	)
	chown "$BACKUP_USER:$BACKUP_USER" "$RUN_DIR/pgpass"
}

if [[ ${1:-} == pgstack-backup ]]; then
	if [[ $(id -u) == 0 ]]; then
		backup_setup "${2:-}"
		# Point-in-time recovery writes postgres's data directory as its owner: stays root
		# (a one-off container that `make restore TARGET_TIME=...` starts with postgres stopped).
		if [[ ${2:-} == pitr-prepare ]]; then exec "$@"; fi
		exec setpriv --reuid="$BACKUP_USER" --regid="$BACKUP_USER" --init-groups --inh-caps=-all -- "$@"
	fi
	[[ -r $RUN_DIR/pgpass ]] || backup_error "start this container as root; it drops to $BACKUP_USER itself"
fi

exec "$@"
