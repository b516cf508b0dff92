#!/usr/bin/env bash
# ha-pitr-restore.sh -- point-in-time recovery of the PostgreSQL cluster (docker-compose.ha.yml) to
# TARGET_TIME, the way Patroni documents it for a backup tool: stop every node, remove the
# cluster from etcd, bootstrap a new one on the former leader with a custom method that runs
# `pgbackrest restore` (services/patroni/docker-entrypoint.sh, patroni_pitr_config), then let the
# other nodes clone it again.
# Usage: services/backup/ha-pitr-restore.sh 'TARGET_TIME'   (make ha-restore TARGET_TIME=... CONFIRM=1)
# Runs on the host with the cluster's compose environment and API_READY_WAIT (the Makefile exports
# both). Nothing is touched until the target is known to be reachable; the former leader's data
# is set aside (pgdata.previous on its volume) until the recovered cluster serves, and a failed
# recovery puts it back.
# The scripts handed to pitr_volumes and pitr_forget_cluster run inside containers and expand
# their own arguments there: single quotes on purpose.
# shellcheck disable=SC2016
set -Eeuo pipefail

COMPOSE=(docker compose)
NODES=(patroni1 patroni2 patroni3)
# Replay that has not made the recovered node the leader by then has failed.
STALL_S=${PITR_STALL_TIMEOUT:-300}
BACKUP_CLI=("${COMPOSE[@]}" exec --no-TTY --user postgres backup pgstack-backup)

SECONDS=0
pitr_step() { printf '\n== [%3d s] %s\n' "$SECONDS" "$*"; }
pitr_error() { printf 'error: %s\n' "$*" >&2; }

# usage: pitr_members
# patronictl list as JSON from the first running node that answers ("[]" when none does).
# patronictl waits for etcd without end when no member answers: 15 s bound each call (one takes
# about a second, a lost etcd member adds one).
pitr_members() {
	local node
	for node in "${NODES[@]}"; do
		"${COMPOSE[@]}" exec --no-TTY --user postgres "$node" \
			timeout 15 patronictl --config-file /run/pgstack-patroni list --format json 2>/dev/null && return 0
	done
	echo "[]"
}

# usage: pitr_role ROLE
# The member holding ROLE (Leader, Sync Standby, ...), or nothing.
pitr_role() {
	pitr_members | python3 -c 'import json, sys
print(next((m["Member"] for m in json.load(sys.stdin) if m["Role"] == sys.argv[1]), ""))' "$1"
}

# usage: pitr_volumes SCRIPT [ARGS...]
# SCRIPT in a one-off container of the backup image, as postgres, with every node's data
# volume writable under /restore/<node> (the backup service mounts them read-only).
pitr_volumes() {
	local mounts=() node
	for node in "${NODES[@]}"; do
		mounts+=(--volume "${COMPOSE_PROJECT_NAME:?}_$node-data:/restore/$node")
	done
	"${COMPOSE[@]}" run --rm --no-deps --no-TTY --user postgres --entrypoint bash "${mounts[@]}" \
		backup -euc "$1" pitr-volumes "${@:2}"
}

# usage: pitr_forget_cluster
# Remove the cluster from etcd (patronictl remove, every node stopped), so the next node to
# start bootstraps a new one. Run in a one-off node container that renders its configuration.
pitr_forget_cluster() {
	"${COMPOSE[@]}" run --rm --no-deps --no-TTY --entrypoint bash "${NODES[0]}" -euc '
		source /usr/local/bin/docker-entrypoint.sh
		patroni_require_identity; patroni_setup_dirs; patroni_render_config
		# Every node is stopped, yet etcd may still hold a leader key that a node had no time to
		# delete (killed, or stopped just as it took the key). patronictl remove refuses while it
		# is there (it asks for the leader by name); the key lapses with its lease (ttl, 20 s).
		for ((waited = 0; ; waited += 2)); do
			rc=0
			out=$(printf "pgstack\nYes I am aware\n" | timeout 15 patronictl --config-file /run/pgstack-patroni remove pgstack 2>&1) || rc=$?
			((rc != 0)) || exit 0
			((rc != 124)) || { printf "no answer from etcd in 15 s (patronictl remove):\n%s\n" "$(tail -n 3 <<<"$out")" >&2; exit 1; }
			# Anything else (a refused credential, ...) is said at once, in its words.
			[[ $out == *"specify the leader name"* ]] || { printf "patronictl remove failed:\n%s\n" "$out" >&2; exit 1; }
			((waited < 30)) || { printf "etcd still holds a leader key after 30 s:\n%s\n" "$out" >&2; exit 1; }
			((waited > 0)) || echo "etcd still holds the leader key of a stopped node: waiting up to 30 s for its lease to lapse" >&2
			sleep 2
		done'
}

# usage: pitr_wait_leader NODE TIMEOUT
# Wait until NODE leads a running cluster; fail if it stops or TIMEOUT seconds pass.
pitr_wait_leader() {
	local deadline=$((SECONDS + $2))
	while ((SECONDS < deadline)); do
		[[ $(pitr_role Leader) == "$1" ]] && return 0
		[[ $(docker inspect --format '{{.State.Status}}' "$("${COMPOSE[@]}" ps --all --quiet "$1")") == running ]] ||
			{ pitr_error "$1 stopped during recovery (make ha-logs SERVICE=$1)"; return 1; }
		sleep 2
	done
	pitr_error "$1 is not the leader after $2 s; the end of its log (all of it: make ha-logs SERVICE=$1):"
	"${COMPOSE[@]}" logs --no-log-prefix --tail 40 "$1" >&2 || true
	return 1
}

# usage: pitr_rollback LEADER REASON
# Put LEADER's set-aside data back (as a bootstrap of its own: see patroni_pitr_config,
# "previous"), start the cluster on it, and fail with REASON.
pitr_rollback() {
	trap - ERR INT TERM
	pitr_error "point-in-time recovery failed: $2"
	pitr_step "rollback: putting the previous cluster back on $1"
	"${COMPOSE[@]}" stop "${NODES[@]}" >/dev/null 2>&1 || true
	pitr_forget_cluster || true
	pitr_volumes 'rm -f "/restore/$1/PITR_BOOTSTRAP"
		if [[ -d /restore/$1/pgdata.previous ]]; then
			# What the failed recovery wrote (Patroni renames a failed bootstrap .failed).
			rm -rf "/restore/$1/pgdata" "/restore/$1/pgdata.failed"
			printf "previous\n%s\n" "$2" >"/restore/$1/PITR_BOOTSTRAP"
		fi' "$1" "$TIMELINE"
	"${COMPOSE[@]}" up --detach --no-deps "$1"
	# A cluster that was running minutes ago: it starts without replay, whatever STALL_S is.
	pitr_wait_leader "$1" 300
	pitr_volumes 'rm -f "/restore/$1/PITR_BOOTSTRAP"' "$1"
	"${COMPOSE[@]}" up --detach --no-deps "${NODES[@]}"
	pitr_error "the previous cluster is back on $1 (the other nodes clone it again); nothing was lost."
	exit 1
}

# usage: main TARGET_TIME
main() {
	TARGET=${1:?usage: ha-pitr-restore.sh TARGET_TIME}
	pitr_step "1/7 check the target: archive the current WAL, compare with the recoverable window"
	# The target as the backup service understood it (BACKUP_TZ when it has no offset), in ISO form.
	if ! CHECKED=$("${BACKUP_CLI[@]}" pitr-check --target-time "$TARGET"); then
		printf '%s\n' "$CHECKED" >&2
		exit 3 # refused (or the check failed): nothing was touched
	fi
	echo "$CHECKED"
	TARGET_ISO=$(python3 -c 'import json, sys
print(next(json.loads(line)["target"] for line in sys.stdin
           if line.startswith("{") and json.loads(line).get("event") == "pitr_check").replace("T", " "))' <<<"$CHECKED")

	pitr_step "2/7 safety dump of the current state (kept whatever retention says; see make ha-backup-list)"
	"${BACKUP_CLI[@]}" safety --label pre-pitr

	LEADER=$(pitr_role Leader)
	[[ -n $LEADER ]] || { pitr_error "the cluster has no leader now (make cluster-status); nothing was changed"; exit 1; }
	pitr_step "3/7 stop the cluster: the replicas, then the leader ($LEADER); the API answers 503"
	mapfile -t OTHERS < <(printf '%s\n' "${NODES[@]}" | grep -vx "$LEADER")
	"${COMPOSE[@]}" stop "${OTHERS[@]}"
	"${COMPOSE[@]}" stop "$LEADER"

	pitr_step "4/7 remove the cluster from etcd (patronictl remove)"
	pitr_forget_cluster || {
		pitr_error "the cluster could not be removed from etcd (above); nothing was changed, the nodes are stopped: make ha-up"
		exit 1
	}

	pitr_step "5/7 set $LEADER's data aside, ask it to recover to $TARGET_ISO; the replicas' copies go"
	# The timeline to recover along is the live one (not "latest": a rolled-back recovery may have
	# left a branch in the archive), as for the single node (pitr.py).
	TIMELINE=$(pitr_volumes 'LC_ALL=C pg_controldata "/restore/$1/pgdata" | sed -n "s/^Latest checkpoint.s TimeLineID: *//p"' "$LEADER")
	[[ $TIMELINE =~ ^[0-9]+$ ]] || { pitr_error "no timeline in $LEADER's pg_control; nothing was changed (the nodes are stopped: make ha-up)"; exit 1; }
	trap 'pitr_rollback "$LEADER" "interrupted or failed at line $LINENO"' ERR INT TERM
	pitr_volumes '
		node=$1 target=$2 timeline=$3; shift 3
		mv "/restore/$node/pgdata" "/restore/$node/pgdata.previous"
		printf "%s\n%s\n" "$target" "$timeline" >"/restore/$node/PITR_BOOTSTRAP.tmp"
		mv "/restore/$node/PITR_BOOTSTRAP.tmp" "/restore/$node/PITR_BOOTSTRAP"
		for other; do rm -rf "/restore/$other/pgdata"; done' "$LEADER" "$TARGET_ISO" "$TIMELINE" "${OTHERS[@]}"

	pitr_step "6/7 start $LEADER: pgbackrest restore, replay to the target, promote, lead"
	"${COMPOSE[@]}" up --detach --no-deps "$LEADER"
	pitr_wait_leader "$LEADER" "$STALL_S"
	trap - ERR INT TERM
	"${COMPOSE[@]}" exec --no-TTY --user postgres "$LEADER" psql --no-psqlrc --quiet --tuples-only \
		--dbname=postgres --command="SELECT 'recovered to ' || now()::text || ', timeline ' || timeline_id FROM pg_control_checkpoint()"

	pitr_step "7/7 migrations to head, a backup on the new timeline (replicas restore from it), the replicas, the API"
	# A recovered database may be behind the code; at head this is a no-op (the advisory lock and
	# alembic as always). --no-deps: migrate depends on HAProxy's health, which lags a new leader.
	"${COMPOSE[@]}" run --rm --no-deps --no-TTY migrate
	# Before the replicas start: they restore the newest backup, and one taken after the target on
	# the old timeline could not follow the new one. Retention off: nothing is deleted after a restore.
	"${BACKUP_CLI[@]}" run --label post-pitr --no-retention
	"${COMPOSE[@]}" up --detach --no-deps "${OTHERS[@]}"
	pitr_volumes 'rm -rf "/restore/$1/pgdata.previous" "/restore/$1/PITR_BOOTSTRAP"' "$LEADER"
	"${COMPOSE[@]}" exec --no-TTY api python3 -c "$API_READY_WAIT"
	echo "recovered the cluster to $TARGET_ISO in $SECONDS s; the replicas clone it now (make cluster-status)."
}

# Sourced (the tests call one step on its own), it only defines the functions.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
