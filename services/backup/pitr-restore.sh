#!/usr/bin/env bash
# pitr-restore.sh -- point-in-time recovery of the whole cluster to TARGET_TIME, with pgBackRest.
# Usage: services/backup/pitr-restore.sh 'TARGET_TIME' [force]   (make restore TARGET_TIME=... CONFIRM=1)
# Runs on the host with the compose project's environment and API_READY_WAIT (the Makefile
# exports both). Nothing is
# touched until the target is known to be reachable; once the current cluster is set aside, any
# failure (restore, replay, a crash, Ctrl-C) puts it back and starts it again.
set -Eeuo pipefail

COMPOSE=(docker compose)
# The operator's command in the messages below: make in the repository, the pgstack command on a
# host deployed with Ansible (it sets PGSTACK_OPS=pgstack; the verbs are the same).
OPS=${PGSTACK_OPS:-make}
TARGET=${1:?usage: pitr-restore.sh TARGET_TIME [force]}
FORCE=${2:-}
# No replay progress for this long means recovery is stuck: give up and put the old cluster back.
STALL_S=${PITR_STALL_TIMEOUT:-300}
PGDATA_VOLUME="${COMPOSE_PROJECT_NAME:?}_pgdata"
BACKUP_CLI=("${COMPOSE[@]}" exec --no-TTY --user postgres backup pgstack-backup)
# A one-off backup container with the data volume writable at a path of its own (the service
# mounts it read-only), postgres stopped.
ONE_OFF=("${COMPOSE[@]}" run --rm --no-deps --no-TTY --volume "$PGDATA_VOLUME:/var/lib/postgresql/restore"
	--env PGDATA=/var/lib/postgresql/restore/pgdata backup pgstack-backup)

SECONDS=0
pitr_step() { printf '\n== [%3d s] %s\n' "$SECONDS" "$*"; }
pitr_error() { printf 'error: %s\n' "$*" >&2; }

# The postgres container, straight through docker in the replay loop: compose would add a
# second or more to every probe, and every second here is a second of outage.
pitr_container() { PG=$("${COMPOSE[@]}" ps --all --quiet postgres); }

# usage: pitr_psql SQL [DATABASE]
# One query as the superuser over postgres's own socket; prints the value, fails quietly.
pitr_psql() {
	docker exec --user postgres "$PG" \
		psql --no-psqlrc --quiet --tuples-only --no-align --dbname="${2:-postgres}" --command="$1" 2>/dev/null
}

# usage: pitr_container_state
# "<restart count> <status>" of the postgres container.
pitr_container_state() { docker inspect --format '{{.RestartCount}} {{.State.Status}}' "$PG"; }

# usage: pitr_serve
# Start postgres if it is not running, wait until it accepts connections over TCP (the real
# server, not an init-time one), then until the API -- which kept running -- is ready. Not
# `up --wait`: it waits for a healthcheck interval, and fails at once on PgBouncer, whose health
# is red while postgres was away, instead of waiting for it to recover.
pitr_serve() {
	"${COMPOSE[@]}" up --detach --no-deps postgres
	pitr_container
	local tries
	for tries in $(seq 1 600); do
		docker exec "$PG" pg_isready --quiet --host=127.0.0.1 --port=5432 && break
		((tries < 600)) || { pitr_error "postgres does not accept connections; $OPS logs SERVICE=postgres"; return 1; }
		sleep 0.5
	done
	"${COMPOSE[@]}" exec --no-TTY api python3 -c "$API_READY_WAIT"
}

# usage: pitr_rollback REASON
# Put the set-aside cluster back, start it, and fail with REASON.
pitr_rollback() {
	trap - ERR INT TERM
	pitr_error "point-in-time recovery failed: $1"
	pitr_step "rollback: putting the previous cluster back"
	"${COMPOSE[@]}" stop postgres >/dev/null 2>&1 || true
	"${ONE_OFF[@]}" pitr-rollback
	pitr_serve
	pitr_error "the previous cluster is back and serving; nothing was lost. Its safety dump: '$OPS backup-list' (pre-pitr)."
	exit 1
}

if [[ $FORCE != force ]]; then
	pitr_step "1/6 check the target: archive the current WAL, compare with the recoverable window"
	"${BACKUP_CLI[@]}" pitr-check --target-time "$TARGET"
else
	pitr_step "1/6 FORCE: archive the current WAL; the window is shown, not enforced (a failed replay rolls back)"
	"${BACKUP_CLI[@]}" pitr-check --target-time "$TARGET" --no-refuse || true
fi

pitr_step "2/6 safety dump of the current state (kept whatever retention says; see $OPS backup-list)"
"${BACKUP_CLI[@]}" safety --label pre-pitr

# Read while everything serves, so they cost no outage: the code's newest migration (after the
# recovery the migration job, a container start, runs only when the database is behind it), and
# a checkpoint (the shutdown's own then has almost nothing left to write).
head=$("${COMPOSE[@]}" exec --no-TTY api python3 -c \
	'from pgstack_api.migrations import head_revision; print(head_revision() or "")' 2>/dev/null || true)
pitr_container
API=$("${COMPOSE[@]}" ps --quiet api)
pitr_psql "CHECKPOINT" >/dev/null || true

# From here to the API's readiness every second is outage: postgres and the API are driven
# through docker by id (compose adds about half a second per call), and the clock reads ms.
pitr_step "3/6 stop postgres (the API answers 503 from now on)"
down_since_ms=$(($(date +%s%N) / 1000000))
docker stop "$PG" >/dev/null # waits the stop_grace_period compose gave the container

pitr_step "4/6 restore the newest backup before the target, beside the current cluster"
if ! "${ONE_OFF[@]}" pitr-restore --target-time "$TARGET"; then
	pitr_error "the restore did not complete; the current cluster was not replaced (see above). Starting it again."
	pitr_serve
	exit 1
fi
trap 'pitr_rollback "interrupted"' INT TERM
trap 'pitr_rollback "a step failed (line $LINENO)"' ERR

pitr_step "5/6 start postgres: it replays archived WAL up to the target, then promotes"
# hot_standby is off until then (pgBackRest's recovery options): no client reads a half-replayed
# database; progress comes from the server's log ("restored log file ... from archive").
started_at=$(date -u +%FT%TZ)
docker start "$PG" >/dev/null
# A manual start resets the engine's restart count to 0: any count above that is a crash during
# recovery, however soon after the start it came (reading the count after the start raced it).
restarts=0
last_wal="" last_change=$(date +%s) last_print=0
while :; do
	sleep 0.5
	read -r now_restarts status <<<"$(pitr_container_state)"
	if [[ $status != running || $now_restarts != "$restarts" ]]; then
		docker logs --since "$started_at" "$PG" 2>&1 | grep -E 'FATAL|PANIC' | tail -n 3 >&2 || true
		pitr_rollback "postgres stopped during recovery (status $status, restarts $now_restarts); its log says why (above)"
	fi
	[[ $(pitr_psql "SELECT pg_is_in_recovery()" || true) == f ]] && break
	wal=$(docker logs --since "$started_at" "$PG" 2>&1 |
		sed -n 's/.*restored log file "\([0-9A-F]*\)" from archive.*/\1/p' | tail -n 1)
	if [[ $wal != "$last_wal" ]]; then last_wal=$wal last_change=$(date +%s); fi
	if (($(date +%s) - last_print >= 10)); then
		echo "replaying: WAL ${last_wal:-(starting)}, $((($(date +%s%N) / 1000000 - down_since_ms) / 1000)) s since postgres stopped"
		last_print=$(date +%s)
	fi
	if (($(date +%s) - last_change > STALL_S)); then
		pitr_rollback "no replay progress for ${STALL_S} s (PITR_STALL_TIMEOUT)"
	fi
done
# Promoted: the recovery is done and the cluster serves. From here a failure is reported with its
# fix, never rolled back; the set-aside cluster stays until the end (make restore-rollback).
trap - ERR INT TERM
pitr_after() {
	pitr_error "the recovery is done and postgres serves, but $1 failed (above). Fix it, then" \
		"$2; the previous cluster is kept until then ('$OPS restore-rollback' goes back to it)."
	exit 1
}
pitr_psql "ALTER SYSTEM RESET hot_standby" >/dev/null
pitr_psql "SELECT pg_reload_conf()" >/dev/null
echo "recovered and promoted: $(pitr_psql "SELECT 'timeline ' || timeline_id FROM pg_control_checkpoint()")"

pitr_step "6/6 roles and grants (db-init), migrations to head, then the API"
docker exec "$PG" pgstack-db-init || pitr_after db-init "$OPS db-init"
if [[ -n $head && $(pitr_psql "SELECT version_num FROM alembic_version" pgstack || true) == "$head" ]]; then
	echo "migrations: the recovered database is at the code's head ($head)"
else
	# --no-deps: after a long replay postgres's healthcheck is still red, and migrate depends on it.
	"${COMPOSE[@]}" run --rm --no-deps --no-TTY migrate || pitr_after "the migrations" "$OPS db-deploy"
fi
docker exec "$API" python3 -c "$API_READY_WAIT" || pitr_after "the API's readiness" "$OPS logs SERVICE=api"
down_ms=$(($(date +%s%N) / 1000000 - down_since_ms))
echo "the API was unavailable for $((down_ms / 1000)).$(((down_ms % 1000) / 100)) s"
"${ONE_OFF[@]}" pitr-finish
echo "a backup on the new timeline (no retention runs: nothing older is deleted):"
if ! "${BACKUP_CLI[@]}" run --label post-pitr --no-retention; then
	pitr_error "the recovery succeeded, but the backup after it failed: run '$OPS backup' once the cause is fixed"
fi
echo "point-in-time recovery to $TARGET done"
