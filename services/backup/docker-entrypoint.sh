#!/usr/bin/env bash
# docker-entrypoint.sh -- pgstack backup service (in the manner of docker-library/postgres).
# Usage: docker-entrypoint.sh pgstack-backup <command> [args...]   (anything else is exec'd)
# Starts as root for one job: own the backup volumes and render pgBackRest's configuration (0600,
# on a tmpfs), then drop to postgres -- the cluster's owner, which pgBackRest must be to read and
# restore its files. No password is involved: the service reaches PostgreSQL over the shared
# socket as postgres (peer authentication).
set -Eeuo pipefail
# shellcheck source=SCRIPTDIR/../lib/pgstack-lib.sh
source /usr/local/lib/pgstack/pgstack-lib.sh
# shellcheck source=SCRIPTDIR/../lib/pgbackrest-conf.sh
source /usr/local/lib/pgstack/pgbackrest-conf.sh

# usage: backup_own DIR
# Make DIR (a volume's root) postgres's. Volumes of earlier versions belong to uid 10003: their
# contents are handed over once.
backup_own() {
	[[ -d $1 ]] || return 0
	if [[ $(stat -c %u "$1") != "$(id -u postgres)" ]]; then
		pgstack_log ownership_migration path="$1" uid="$(id -u postgres)"
		chown -R postgres:postgres "$1"
	fi
	chmod 0700 "$1"
}

# usage: backup_setup
backup_setup() {
	install -d -o postgres -g postgres -m 0700 /run/pgstack-backup
	backup_own "${BACKUP_DIR:?}"
	backup_own /var/lib/pgstack-offsite
	if [[ -n ${BACKUP_SCRATCH_DIR:-} ]]; then
		install -d -o postgres -g postgres -m 0700 "$BACKUP_SCRATCH_DIR"
	fi
	pgbackrest_render_conf postgres
}

_main() {
	if [[ ${1:-} == pgstack-backup ]]; then
		if [[ $(id -u) == 0 ]]; then
			backup_setup
			pgstack_drop_privileges postgres tini -- "$@"
		fi
		[[ -r ${PGBACKREST_CONFIG:?} ]] || pgstack_error "start this container as root; it drops to postgres itself"
	fi
	exec "$@"
}

if ! pgstack_is_sourced; then
	_main "$@"
fi
