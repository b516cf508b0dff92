#!/usr/bin/env bash
# docker-entrypoint.sh -- an etcd member of pgstack's PostgreSQL cluster (Patroni's consensus store).
# Usage: docker-entrypoint.sh etcd [args...]   (any other command is exec'd as given)
# etcd takes its settings from ETCD_* variables (docker-compose.ha.yml sets them per member); this
# checks that the ones a member cannot guess are there, owns the data directory and drops to etcd.
set -Eeuo pipefail
# shellcheck source=SCRIPTDIR/../lib/pgstack-lib.sh
source /usr/local/lib/pgstack/pgstack-lib.sh

# usage: etcd_require_settings
# A member started without its name or its peers would form a cluster of its own: refuse.
etcd_require_settings() {
	local var
	for var in ETCD_NAME ETCD_INITIAL_CLUSTER ETCD_INITIAL_ADVERTISE_PEER_URLS ETCD_ADVERTISE_CLIENT_URLS; do
		[[ -n ${!var:-} ]] || pgstack_error "$var is not set; start the members with docker-compose.ha.yml (make ha-up)"
	done
}

# usage: etcd_initial_state
# A member that replaces a lost one joins the running cluster ("existing") instead of forming a
# new one. Whoever added it to the cluster (etcdctl member add) leaves that word in the volume's
# initial-cluster-state file, which goes with the volume: a new volume starts without it, so the
# compose file stays the same for every member. etcd reads the state only while the data
# directory is empty.
etcd_initial_state() {
	local file=/var/lib/etcd/initial-cluster-state state
	[[ -f $file ]] || return 0
	state=$(<"$file")
	[[ $state == existing || $state == new ]] ||
		pgstack_error "$file says '$state'; it may say only existing or new (or be removed)"
	pgstack_log etcd_initial_cluster_state "state=$state" "from=$file"
	export ETCD_INITIAL_CLUSTER_STATE=$state
}

# usage: etcd_setup_dirs
# The data directory, owned by etcd; a fresh volume's root belongs to root.
etcd_setup_dirs() {
	install -d -o etcd -g etcd -m 0700 "$ETCD_DATA_DIR"
}

_main() {
	if [[ ${1:-} == etcd ]]; then
		pgstack_require_root
		etcd_require_settings
		etcd_initial_state
		etcd_setup_dirs
		pgstack_drop_privileges etcd "$@"
	fi
	exec "$@"
}

if ! pgstack_is_sourced; then
	_main "$@"
fi
