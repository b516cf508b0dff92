#!/usr/bin/env bash
# docker-entrypoint.sh -- a node of pgstack's PostgreSQL cluster: Patroni and PostgreSQL 17.
# Usage: docker-entrypoint.sh patroni CONFIG_DIR   (any other command is exec'd as given)
# Owns the volume, turns the secret files into Patroni's private configuration on a tmpfs
# (patroni.yml plus 20-secrets.yml), then runs Patroni as postgres under tini. Patroni decides
# what the node does: initialise the cluster, clone the leader, follow, lead or rewind.
set -Eeuo pipefail
# shellcheck source=SCRIPTDIR/../lib/pgstack-lib.sh
source /usr/local/lib/pgstack/pgstack-lib.sh
# shellcheck source=SCRIPTDIR/../lib/pgbackrest-conf.sh
source /usr/local/lib/pgstack/pgbackrest-conf.sh

CONFIG_DIR=/run/pgstack-patroni
# Where a deploy mounts the host's own settings (read-only); see patroni_host_config.
HOST_CONFIG_DIR=${PGSTACK_PATRONI_HOST_DIR:-/etc/pgstack/patroni.d}
VOLUME_ROOT=${PGDATA%/*}

# usage: patroni_setup_dirs
# The volume's root and the socket directory, owned by postgres; the configuration directory
# private to it (it will hold passwords); pgBackRest's spool and repositories.
patroni_setup_dirs() {
	install -d -o postgres -g postgres -m 0700 "$VOLUME_ROOT"
	install -d -o postgres -g postgres -m 2775 "$PGBACKREST_SOCKET_DIR"
	# A volume (the backup service connects through it): a killed container's lock file names
	# a PID another process may hold here, and PostgreSQL would refuse to start. All are stale.
	rm -f "$PGBACKREST_SOCKET_DIR"/.s.PGSQL.*.lock
	install -d -o postgres -g postgres -m 0750 "$PGBACKREST_SPOOL_DIR"
	install -d -o postgres -g postgres -m 0700 "$CONFIG_DIR" "$CONFIG_DIR/secrets"
	# archive-push and restores use the repositories (and the off-site one if posix).
	local repo
	for repo in "${PGBACKREST_REPO1_PATH%/*}" ${BACKUP_REPO2:+/var/lib/pgstack-offsite}; do
		[[ -d $repo ]] && chown postgres:postgres "$repo" && chmod 0700 "$repo"
	done
	return 0
}

# usage: patroni_yaml_secret NAME
# The secret's content as a single-quoted YAML scalar.
patroni_yaml_secret() {
	local value
	value=$(pgstack_secret "$1")
	printf "'%s'" "${value//\'/\'\'}"
}

# usage: patroni_render_config
# 10-patroni.yml: the checked-in settings; 20-secrets.yml: every password Patroni and patronictl
# need, 0600. pgstack-post-bootstrap's secrets (the app roles) go to secrets/, readable by postgres.
patroni_render_config() {
	# Each read on its own line: a missing secret stops the start (inherit_errexit), where a
	# substitution inside the here-document would leave an empty password.
	local name api etcd superuser replication rewind file=$CONFIG_DIR/20-secrets.yml
	api=$(patroni_yaml_secret patroni_api_password)
	etcd=$(patroni_yaml_secret etcd_patroni_password)
	superuser=$(patroni_yaml_secret postgres_password)
	replication=$(patroni_yaml_secret replication_password)
	rewind=$(patroni_yaml_secret rewind_password)
	install -o postgres -g postgres -m 0600 /etc/pgstack/patroni.yml "$CONFIG_DIR/10-patroni.yml"
	(
		umask 077
		cat >"$file" <<-YAML
			restapi:
			  authentication: {username: patroni, password: $api}
			ctl:
			  authentication: {username: patroni, password: $api}
			etcd3:
			  username: patroni
			  password: $etcd
			postgresql:
			  authentication:
			    superuser: {password: $superuser}
			    replication: {password: $replication}
			    rewind: {password: $rewind}
		YAML
		for name in app_owner_password app_password app_backup_password; do
			pgstack_secret "$name" >"$CONFIG_DIR/secrets/$name"
		done
	)
	chown -R postgres:postgres "$CONFIG_DIR"
}

# usage: patroni_host_config
# The settings of the host a node runs on, when a deploy mounts them (ansible's pgstack_db role:
# addresses, TLS files, its pg_hba.conf): each $HOST_CONFIG_DIR/NAME.yml becomes
# 15-NAME.yml, loaded after patroni.yml (its values win) and before the secrets. Patroni reads
# these copies, at start and on a reload (pgstack-patroni-reload), never the mounted files: a
# copy whose file is gone is removed, so a setting taken out of the host's files goes too.
patroni_host_config() {
	local file copy
	for copy in "$CONFIG_DIR"/15-*.yml; do
		[[ -f $copy ]] || continue
		file=${copy##*/15-}
		[[ -f $HOST_CONFIG_DIR/$file ]] || rm -f "$copy"
	done
	for file in "$HOST_CONFIG_DIR"/*.yml; do
		[[ -f $file ]] || continue
		install -o postgres -g postgres -m 0600 "$file" "$CONFIG_DIR/15-${file##*/}"
	done
	return 0
}

# usage: patroni_pitr_config
# make ha-restore (services/backup/ha-pitr-restore.sh) leaves PITR_BOOTSTRAP here -- the target
# time or "previous", and the timeline, one a line -- with the cluster gone from etcd and the
# data set aside in pgdata.previous. Patroni then bootstraps a new cluster with a custom method,
# as its documentation does for a backup tool: `pgbackrest restore`, replay to the target,
# promote. "previous" (a rollback) moves the set-aside data back and promotes it at once, on a
# timeline above the failed recovery's (replicas follow the archive's latest timeline). A failed
# bootstrap's directory becomes pgdata.failed (Patroni's rename, never deleted). Patroni reads a
# bootstrap method only when it initialises a cluster: with data, the file changes nothing.
patroni_pitr_config() {
	local request=$VOLUME_ROOT/PITR_BOOTSTRAP target timeline command recovery_target
	[[ -f $request && ! -s $PGDATA/PG_VERSION ]] || return 0
	{ read -r target && read -r timeline; } <"$request" || pgstack_error "$request: expected two lines (target time, timeline)"
	[[ ($target == previous || $target =~ ^[0-9][0-9:.+\ -]+$) && $timeline =~ ^[0-9]+$ ]] ||
		pgstack_error "$request: target '$target' / timeline '$timeline' malformed; remove it or run make ha-restore again"
	install -d -o postgres -g postgres -m 0700 "$PGDATA"
	if [[ $target == previous ]]; then
		command="bash -c \"rmdir $PGDATA && mv $VOLUME_ROOT/pgdata.previous $PGDATA\""
		# No target: replay to the end of the set-aside data's own timeline (its shutdown
		# checkpoint; "immediate" fails there, as no redo is needed) and promote.
		recovery_target=""
	else
		command="pgbackrest --stanza=pgstack restore --type=time \"--target=$target\" --target-timeline=$timeline --target-action=promote"
		recovery_target="recovery_target_time: '$target'"
	fi
	install -o postgres -g postgres -m 0600 /dev/stdin "$CONFIG_DIR/30-pitr.yml" <<-YAML
		bootstrap:
		  method: pgbackrest_pitr
		  pgbackrest_pitr:
		    command: '$command'
		    no_params: true
		    # Patroni writes the recovery settings below and drops pgBackRest's copies from
		    # postgresql.auto.conf, so none is left behind once the node follows as a replica.
		    keep_existing_recovery_conf: false
		    recovery_conf:
		      restore_command: 'pgbackrest --stanza=pgstack archive-get %f "%p"'
		      $recovery_target
		      recovery_target_timeline: '$timeline'
		      recovery_target_action: promote
	YAML
	pgstack_log pitr_bootstrap target="$target" timeline="$timeline"
}

# usage: patroni_require_identity
# Patroni names the node and tells the others where to reach it from these; without them every
# node would call itself by the container's id.
patroni_require_identity() {
	local var
	for var in PATRONI_NAME PATRONI_RESTAPI_CONNECT_ADDRESS PATRONI_POSTGRESQL_CONNECT_ADDRESS; do
		[[ -n ${!var:-} ]] || pgstack_error "$var is not set; start the nodes with docker-compose.ha.yml (make ha-up)"
	done
}

_main() {
	if [[ ${1:-} == patroni ]]; then
		pgstack_require_root
		patroni_require_identity
		patroni_setup_dirs
		patroni_render_config
		patroni_host_config
		pgbackrest_render_conf postgres
		patroni_pitr_config
		# A data path per node (PGDATA): the backup service mounts all three where they are.
		export PATRONI_POSTGRESQL_DATA_DIR=$PGDATA
		pgstack_drop_privileges postgres tini -- "$@"
	fi
	exec "$@"
}

if ! pgstack_is_sourced; then
	_main "$@"
fi
