#!/usr/bin/env bash
# pgbackrest-conf.sh -- render pgBackRest's configuration from the environment, the same way in
# every container that runs pgBackRest (postgres: archive-push/archive-get; backup: backup,
# expire, verify, info, restore). Sourced after pgstack-lib.sh; nothing happens on source.
#
# Why rendered and not a file in the image: the off-site repository (repo2) exists only when
# configured, its secrets come from compose secret files, and both images must agree exactly.
# One function, one environment block in docker-compose.yml (x-pgbackrest-env), same result.
#
# Environment (defaults in docker-compose.yml; meaning in services/backup/README.md):
#   PGBACKREST_CONFIG          where to write (a tmpfs path; pgBackRest reads this variable too)
#   PGDATA                     the cluster's data directory
#   BACKUP_CLUSTER_NODES       "" (one server: PGDATA and the socket above) or the cluster's nodes,
#                              "patroni1 patroni2 patroni3" (the backup service of
#                              docker-compose.ha.yml, which mounts each node's data volume and
#                              socket volume under PGBACKREST_CLUSTER_DATA/<node> and
#                              PGBACKREST_CLUSTER_RUN/<node>);
#                              backups then come from a standby. Not PGBACKREST_*: pgBackRest
#                              reads those variables as its own options.
#   WAL_ARCHIVE_QUEUE_MAX      bytes of WAL that may wait for a failing archive before pgBackRest
#                              drops it rather than fill pg_wal
#   BACKUP_REPO1_RETENTION_FULL, BACKUP_PROCESS_MAX
#   BACKUP_REPO2               "" (none), posix (a mounted directory) or s3
#   BACKUP_REPO2_PATH, BACKUP_REPO2_RETENTION_FULL
#   BACKUP_REPO2_S3_ENDPOINT, _BUCKET, _REGION, _URI_STYLE, _VERIFY_TLS, _CA_FILE
#   secrets: backup_repo2_cipher_pass (always, for repo2), backup_repo2_s3_key and
#   backup_repo2_s3_key_secret (s3 only)

PGBACKREST_STANZA=pgstack
# The repositories' places inside the containers (volumes in docker-compose.yml).
PGBACKREST_REPO1_PATH=/var/lib/pgstack-backup/pgbackrest
PGBACKREST_SOCKET_DIR=/var/run/postgresql
PGBACKREST_SPOOL_DIR=/var/run/postgresql/pgbackrest-spool
# Where the cluster's backup service mounts each node's volumes (docker-compose.ha.yml).
PGBACKREST_CLUSTER_DATA=/var/lib/pgstack-nodes
PGBACKREST_CLUSTER_RUN=/var/run/pgstack-nodes

# usage: _pgbackrest_uint KEY DEFAULT
# The value of environment variable KEY (or DEFAULT); fail naming KEY unless a whole number.
_pgbackrest_uint() {
	local value=${!1:-$2}
	[[ $value =~ ^[0-9]+$ ]] || pgstack_error "$1=$value: expected a whole number"
	printf '%s' "$value"
}

# usage: _pgbackrest_repo2
# The [global] lines of the off-site repository, or nothing when BACKUP_REPO2 is empty.
_pgbackrest_repo2() {
	local type=${BACKUP_REPO2:-}
	case "$type" in
		"") return 0 ;;
		posix | s3) ;;
		*) pgstack_error "BACKUP_REPO2=$type: expected empty (no off-site repository), posix or s3" ;;
	esac
	local default_path=/var/lib/pgstack-offsite/pgbackrest
	[[ $type == s3 ]] && default_path=/pgstack
	printf 'repo2-type=%s\n' "$type"
	printf 'repo2-path=%s\n' "${BACKUP_REPO2_PATH:-$default_path}"
	printf 'repo2-retention-full=%s\n' "$(_pgbackrest_uint BACKUP_REPO2_RETENTION_FULL 4)"
	printf 'repo2-bundle=y\nrepo2-block=y\n'
	# Whatever leaves the host is encrypted; the passphrase is a generated secret (make secrets).
	local pass
	pass=$(pgstack_secret backup_repo2_cipher_pass)
	printf 'repo2-cipher-type=aes-256-cbc\nrepo2-cipher-pass=%s\n' "$pass"
	[[ $type == s3 ]] || return 0
	local key
	for key in ENDPOINT BUCKET REGION; do
		local var="BACKUP_REPO2_S3_$key"
		[[ -n ${!var:-} ]] || pgstack_error "BACKUP_REPO2=s3 needs $var (see services/backup/README.md)"
	done
	printf 'repo2-s3-endpoint=%s\nrepo2-s3-bucket=%s\nrepo2-s3-region=%s\n' \
		"$BACKUP_REPO2_S3_ENDPOINT" "$BACKUP_REPO2_S3_BUCKET" "$BACKUP_REPO2_S3_REGION"
	printf 'repo2-s3-uri-style=%s\n' "${BACKUP_REPO2_S3_URI_STYLE:-host}"
	printf 'repo2-storage-verify-tls=%s\n' "${BACKUP_REPO2_S3_VERIFY_TLS:-y}"
	if [[ -n ${BACKUP_REPO2_S3_CA_FILE:-} ]]; then
		printf 'repo2-storage-ca-file=%s\n' "$BACKUP_REPO2_S3_CA_FILE"
	fi
	local key_id key_secret
	key_id=$(pgstack_secret backup_repo2_s3_key)
	key_secret=$(pgstack_secret backup_repo2_s3_key_secret)
	printf 'repo2-s3-key=%s\nrepo2-s3-key-secret=%s\n' "$key_id" "$key_secret"
}

# usage: _pgbackrest_pg_hosts
# The stanza's database lines: pg1 (PGDATA, this container's socket), or one pgN per node of
# BACKUP_CLUSTER_NODES, all local paths (the nodes' volumes, mounted into the backup service).
# pgBackRest finds the primary among them itself (it asks each one pg_is_in_recovery()), so a
# failover changes nothing here. Local mounts rather than pgBackRest's TLS server on every node:
# the cluster runs on one Docker engine, so this needs no certificates, no extra port and no
# pgBackRest process in the nodes beyond archive-push; a cluster spread over several hosts
# would need the TLS server (pgN-host-type=tls) instead.
_pgbackrest_pg_hosts() {
	local nodes=${BACKUP_CLUSTER_NODES:-}
	if [[ -z $nodes ]]; then
		printf 'pg1-path=%s\npg1-socket-path=%s\npg1-port=5432\npg1-user=postgres\n' \
			"$PGDATA" "$PGBACKREST_SOCKET_DIR"
		return 0
	fi
	local node n=0
	for node in $nodes; do
		[[ $node =~ ^[a-z0-9-]+$ ]] ||
			pgstack_error "BACKUP_CLUSTER_NODES=$nodes: expected node names such as 'patroni1 patroni2 patroni3'"
		n=$((n + 1))
		printf 'pg%d-path=%s/%s/pgdata\n' "$n" "$PGBACKREST_CLUSTER_DATA" "$node"
		printf 'pg%d-socket-path=%s/%s\npg%d-port=5432\npg%d-user=postgres\n' \
			"$n" "$PGBACKREST_CLUSTER_RUN" "$node" "$n" "$n"
	done
	# Files come from a standby (the primary only starts and stops the backup and gives the few
	# files that are not replicated); "prefer": with no standby running, from the primary
	# rather than no backup at all.
	printf 'backup-standby=prefer\n'
}

# usage: pgbackrest_render_conf OWNER
# Write $PGBACKREST_CONFIG (mode 0600, owned by OWNER): it may hold repo2's secrets.
# Every value is computed first, so a bad setting stops here instead of rendering half a file.
pgbackrest_render_conf() {
	local owner=$1 path=${PGBACKREST_CONFIG:?PGBACKREST_CONFIG must name the file to write}
	local queue_max retention process_max repo2 pg_hosts
	queue_max=$(_pgbackrest_uint WAL_ARCHIVE_QUEUE_MAX 1073741824)
	retention=$(_pgbackrest_uint BACKUP_REPO1_RETENTION_FULL 2)
	process_max=$(_pgbackrest_uint BACKUP_PROCESS_MAX 2)
	repo2=$(_pgbackrest_repo2)
	pg_hosts=$(_pgbackrest_pg_hosts)
	install -d -o "$owner" -g "$owner" -m 0700 "${path%/*}"
	(
		umask 077
		cat >"$path" <<-CONF
			# Rendered at container start by pgbackrest-conf.sh; edits are lost.
			[global]
			repo1-path=$PGBACKREST_REPO1_PATH
			repo1-retention-full=$retention
			# Bundles of small files and block-level incremental backups: an incremental copies
			# the changed blocks of a large table, not the whole file.
			repo1-bundle=y
			repo1-block=y
			compress-type=zst
			compress-level=3
			process-max=$process_max
			# archive-push returns as soon as WAL is queued; a failing archive never fills pg_wal:
			# beyond the queue limit WAL is dropped (recovery across the gap becomes impossible,
			# the backup service reports it) instead of stopping the database.
			archive-async=y
			archive-push-queue-max=$queue_max
			spool-path=$PGBACKREST_SPOOL_DIR
			# Backups start at once (a checkpoint), and retention runs only when the scheduled
			# run asks for it: never inside a safety backup taken before a restore.
			start-fast=y
			expire-auto=n
			log-level-console=info
			log-level-stderr=warn
			log-level-file=off
			$repo2

			# PostgreSQL runs these for every WAL file: only problems reach its log.
			[global:archive-push]
			log-level-console=warn
			[global:archive-get]
			log-level-console=warn

			[$PGBACKREST_STANZA]
			$pg_hosts
		CONF
	)
	chown "$owner:$owner" "$path"
}
