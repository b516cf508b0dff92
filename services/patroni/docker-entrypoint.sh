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
VOLUME_ROOT=${PGDATA%/*}

# usage: patroni_setup_dirs
# The volume's root and the socket directory, owned by postgres; the configuration directory
# private to it (it will hold passwords); pgBackRest's spool and repositories.
patroni_setup_dirs() {
	install -d -o postgres -g postgres -m 0700 "$VOLUME_ROOT"
	install -d -o postgres -g postgres -m 2775 "$PGBACKREST_SOCKET_DIR"
	# The socket directory is a volume (the backup service reaches this node's PostgreSQL
	# through it): a lock file left by a killed container names a process id that another
	# process may hold in this one, and PostgreSQL would refuse to start. Nothing of this
	# container runs yet, so every lock file there is stale.
	rm -f "$PGBACKREST_SOCKET_DIR"/.s.PGSQL.*.lock
	install -d -o postgres -g postgres -m 0750 "$PGBACKREST_SPOOL_DIR"
	install -d -o postgres -g postgres -m 0700 "$CONFIG_DIR" "$CONFIG_DIR/secrets"
	# archive-push (the leader) and restores (a new replica) use the repositories: the shared
	# backups volume, and the off-site one when BACKUP_REPO2=posix.
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
		pgbackrest_render_conf postgres
		# Each node's data directory has a path of its own (the compose file sets PGDATA), so
		# the backup service can mount all three where their servers say they are.
		export PATRONI_POSTGRESQL_DATA_DIR=$PGDATA
		pgstack_drop_privileges postgres tini -- "$@"
	fi
	exec "$@"
}

if ! pgstack_is_sourced; then
	_main "$@"
fi
