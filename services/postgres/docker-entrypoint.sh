#!/usr/bin/env bash
# docker-entrypoint.sh -- PostgreSQL 17 for pgstack (in the manner of docker-library/postgres).
# Usage: docker-entrypoint.sh postgres [args...]   (any other command is exec'd as given)
# First start on an empty volume: initdb with data checksums and SCRAM, then roles and database from
# the secret files (pgstack-db-init) on a socket-only server. Then the real server, as postgres.
set -Eeuo pipefail

SECRETS_DIR=${PGSTACK_SECRETS_DIR:-/run/secrets}
WAL_ARCHIVE_DIR=${WAL_ARCHIVE_DIR:-/var/lib/pgstack-wal}

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

# postgres_setup_dirs: the named volume arrives owned by root on some engines; own it.
postgres_setup_dirs() {
	install -d -o postgres -g postgres -m 0700 "$PGDATA"
	install -d -o postgres -g postgres -m 2775 /var/run/postgresql
	chown postgres:postgres "$PGDATA"
	# The WAL archive volume: postgres writes, the backup service (gid 10003) reads and prunes.
	install -d -o postgres -g 10003 -m 0770 "$WAL_ARCHIVE_DIR" "$WAL_ARCHIVE_DIR/wal"
}

# postgres_initdb: initialise an empty data directory; the superuser password comes from its file.
postgres_initdb() {
	local pwfile="$SECRETS_DIR/postgres_password"
	if [[ ! -s $pwfile ]]; then
		echo "error: $pwfile is missing or empty: the superuser needs a password. Run 'make secrets'." >&2
		exit 1
	fi
	# initdb reads the password file as postgres and the secret is root-only: a private copy, removed
	# right after (container-local, never on the volume).
	local copy
	copy=$(mktemp -p /var/run/postgresql)
	install -o postgres -g postgres -m 0400 "$pwfile" "$copy"
	as_postgres initdb --pgdata="$PGDATA" --username=postgres --pwfile="$copy" \
		--data-checksums --encoding=UTF8 --locale=C.UTF-8 \
		--auth-local=peer --auth-host=scram-sha-256 >/dev/null
	rm -f "$copy"
	echo '{"event": "initdb", "status": "ok", "data_checksums": true}'
}

# postgres_init_roles: start a server on the socket only (the healthcheck probes TCP, so the
# container stays unhealthy meanwhile), create roles and database, stop it.
postgres_init_roles() {
	as_postgres pg_ctl --pgdata="$PGDATA" --wait --silent \
		-o "-c config_file=/etc/pgstack/postgresql.conf -c listen_addresses=''" start
	pgstack-db-init
	as_postgres pg_ctl --pgdata="$PGDATA" --wait --silent --mode=fast stop
}

if [[ ${1:-} == postgres ]]; then
	if [[ $(id -u) != 0 ]]; then
		echo "error: start this container as root; it drops to the postgres user itself" >&2
		exit 1
	fi
	postgres_setup_dirs
	if [[ ! -s $PGDATA/PG_VERSION ]]; then
		postgres_initdb
		postgres_init_roles
	fi
	exec setpriv --reuid=postgres --regid=postgres --init-groups --inh-caps=-all -- "$@"
fi

exec "$@"
