#!/usr/bin/env bash
# pitr-restore.sh -- point-in-time recovery of the whole PostgreSQL cluster to TARGET_TIME.
# Usage: services/backup/pitr-restore.sh 'TARGET_TIME'      (make restore TARGET_TIME=... CONFIRM=1)
# Runs on the host with the compose project's environment (the Makefile exports it).
# The API answers 503 while postgres is down, from step 3 until step 6.
set -Eeuo pipefail

COMPOSE=(docker compose)
TARGET=${1:?usage: pitr-restore.sh TARGET_TIME}
PGDATA_VOLUME="${COMPOSE_PROJECT_NAME:?}_pgdata"

pitr_step() { printf '\n== %s\n' "$*"; }

# pitr_psql SQL...: queries as the superuser over postgres's own socket (peer auth, local only);
# each argument is a transaction of its own.
pitr_psql() {
	local commands=() sql
	for sql in "$@"; do commands+=("--command=$sql"); done
	"${COMPOSE[@]}" exec --no-TTY --user postgres postgres \
		psql --no-psqlrc --quiet --tuples-only --no-align --dbname=postgres "${commands[@]}"
}

pitr_step "1/7 safety backup of the current state (logical dump + a base backup)"
"${COMPOSE[@]}" exec --no-TTY --user pgbackup backup pgstack-backup run --label pre-pitr

pitr_step "2/7 close the current WAL file and wait until it is archived"
# A commit after the target (txid_current, committed before the switch) gives recovery a point to
# stop at, and puts WAL into the file the switch closes -- else it would wait for archive_timeout.
wal=$(pitr_psql "SELECT txid_current()" "SELECT pg_walfile_name(pg_switch_wal())" | tail -n 1)
for _ in $(seq 1 60); do
	archived=$(pitr_psql "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
	[[ $archived > $wal || $archived == "$wal" ]] && break
	sleep 1
done
if [[ ! ( $archived > $wal || $archived == "$wal" ) ]]; then
	echo "error: $wal was not archived within 60 s; see make logs SERVICE=postgres. Nothing was changed." >&2
	exit 1
fi
echo "archived up to $archived"

pitr_step "3/7 stop postgres (the API answers 503 from now on)"
"${COMPOSE[@]}" stop postgres

pitr_step "4/7 unpack the base backup and configure recovery to $TARGET"
if ! "${COMPOSE[@]}" run --rm --no-deps --no-TTY --volume "$PGDATA_VOLUME:/var/lib/postgresql/data" \
	backup pgstack-backup pitr-prepare --target-time "$TARGET"; then
	# Unpacking happens beside the live files; they are replaced only once it succeeded.
	echo "error: preparing the recovery failed; the current data is untouched, starting postgres again." \
		"See the error above (is TARGET_TIME after the oldest base backup? 'pgstack-backup base-list')." >&2
	"${COMPOSE[@]}" start postgres
	exit 1
fi

pitr_step "5/7 start postgres: it replays archived WAL up to the target, then promotes"
"${COMPOSE[@]}" start postgres
for _ in $(seq 1 300); do
	state=$(pitr_psql "SELECT pg_is_in_recovery()" 2>/dev/null || true)
	[[ $state == f ]] && break
	sleep 1
done
if [[ $state != f ]]; then
	echo "error: postgres did not finish recovery within 300 s; see make logs SERVICE=postgres" >&2
	exit 1
fi

pitr_step "6/7 migrations to head, roles and grants (db-init)"
"${COMPOSE[@]}" run --rm --no-TTY migrate
"${COMPOSE[@]}" exec --no-TTY postgres pgstack-db-init

pitr_step "7/7 a fresh backup on the new timeline"
"${COMPOSE[@]}" exec --no-TTY --user pgbackup backup pgstack-backup run --label post-pitr
echo "point-in-time recovery to $TARGET done"
