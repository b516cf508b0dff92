#!/usr/bin/env bash
# docker-entrypoint.sh -- PostgreSQL 17 for pgstack (in the manner of docker-library/postgres).
# Usage: docker-entrypoint.sh postgres [args...]   (any other command is exec'd as given)
# First start on an empty volume: initdb with data checksums and SCRAM, then roles and database from
# the secret files (pgstack-db-init) on a socket-only server. Then the real server, as postgres.
set -Eeuo pipefail
# shellcheck source=SCRIPTDIR/../lib/pgstack-lib.sh
source /usr/local/lib/pgstack/pgstack-lib.sh
# shellcheck source=SCRIPTDIR/../lib/pgbackrest-conf.sh
source /usr/local/lib/pgstack/pgbackrest-conf.sh

# The data volume's root; the cluster is $PGDATA inside it (see the Dockerfile).
VOLUME_ROOT=${PGDATA%/*}
# Written by a point-in-time recovery (services/backup) while it replaces the cluster.
RESTORE_MARKER=$VOLUME_ROOT/RESTORE_IN_PROGRESS

# usage: postgres_migrate_layout
# Volumes of earlier versions hold the cluster at their root: move it into $PGDATA (renames on
# one filesystem, PG_VERSION last, so an interrupted move resumes at the next start).
postgres_migrate_layout() {
	[[ -e $VOLUME_ROOT/PG_VERSION ]] || return 0
	pgstack_log layout_migration from="$VOLUME_ROOT" to="$PGDATA"
	install -d -m 0700 "$PGDATA"
	local entry
	for entry in "$VOLUME_ROOT"/* "$VOLUME_ROOT"/.[!.]*; do
		[[ -e $entry && $entry != "$PGDATA" && $entry != "$VOLUME_ROOT/PG_VERSION" ]] || continue
		mv "$entry" "$PGDATA/"
	done
	mv "$VOLUME_ROOT/PG_VERSION" "$PGDATA/"
}

# usage: postgres_setup_dirs
# Own the volumes as postgres (uid 999). Earlier images gave postgres another uid: a cluster
# owned by it is handed over once, with a log line.
postgres_setup_dirs() {
	install -d -o postgres -g postgres -m 0700 "$VOLUME_ROOT"
	postgres_migrate_layout
	if [[ -e $PGDATA/PG_VERSION && $(stat -c %u "$PGDATA/PG_VERSION") != "$(id -u postgres)" ]]; then
		pgstack_log ownership_migration path="$VOLUME_ROOT" uid="$(id -u postgres)"
		chown -R postgres:postgres "$VOLUME_ROOT"
	fi
	install -d -o postgres -g postgres -m 0700 "$PGDATA"
	# The socket's volume, shared with the backup service; pgBackRest's spool (the async archive
	# queue's status) beside it.
	install -d -o postgres -g postgres -m 2775 "$PGBACKREST_SOCKET_DIR"
	install -d -o postgres -g postgres -m 0750 "$PGBACKREST_SPOOL_DIR"
	# archive-push writes the repositories: the backups volume, and the off-site one if posix.
	local repo
	for repo in "${PGBACKREST_REPO1_PATH%/*}" ${BACKUP_REPO2:+/var/lib/pgstack-offsite}; do
		[[ -d $repo ]] && chown postgres:postgres "$repo" && chmod 0700 "$repo"
	done
	return 0
}

# usage: postgres_refuse_half_restored
# A point-in-time recovery that was stopped while it copied files leaves no startable cluster:
# never initdb an empty one over it (the API would serve an empty database). Say how to recover.
postgres_refuse_half_restored() {
	[[ -e $RESTORE_MARKER && $(<"$RESTORE_MARKER") == restoring ]] || return 0
	pgstack_error "a point-in-time recovery was interrupted while it restored files into $PGDATA;" \
		"the previous cluster is kept beside it. Put it back with 'make restore-rollback'" \
		"(docs/operations.md, 'A restore was interrupted')."
}

# usage: postgres_initdb
# Initialise an empty data directory; the superuser password comes from its secret file.
postgres_initdb() {
	# initdb reads the password file as postgres and the secret is root-only: a private copy,
	# removed right after (container-local tmpfs, never on the volume).
	local copy
	copy=$(mktemp -p /tmp)
	pgstack_secret postgres_password >"$copy"
	chown postgres:postgres "$copy"
	chmod 0400 "$copy"
	pgstack_as postgres initdb --pgdata="$PGDATA" --username=postgres --pwfile="$copy" \
		--data-checksums --encoding=UTF8 --locale=C.UTF-8 \
		--auth-local=peer --auth-host=scram-sha-256 >/dev/null
	rm -f "$copy"
	pgstack_log initdb status=ok data_checksums=true
}

# usage: postgres_init_roles
# A server on the socket only (the healthcheck probes TCP, so the container stays unhealthy
# meanwhile) creates roles and database, then stops. No WAL archiving yet: the backup service
# creates pgBackRest's stanza once the real server runs.
postgres_init_roles() {
	pgstack_as postgres pg_ctl --pgdata="$PGDATA" --wait --silent -o "-c config_file=/etc/pgstack/postgresql.conf \
		-c listen_addresses='' -c archive_mode=off" start
	pgstack-db-init
	pgstack_as postgres pg_ctl --pgdata="$PGDATA" --wait --silent --mode=fast stop
}

_main() {
	if [[ ${1:-} == postgres ]]; then
		pgstack_require_root
		postgres_setup_dirs
		pgbackrest_render_conf postgres
		postgres_refuse_half_restored
		if [[ ! -s $PGDATA/PG_VERSION ]]; then
			postgres_initdb
			postgres_init_roles
		fi
		# tini: see the Dockerfile (orphaned pgBackRest processes must not reach the postmaster).
		pgstack_drop_privileges postgres tini -- "$@"
	fi
	exec "$@"
}

if ! pgstack_is_sourced; then
	_main "$@"
fi
