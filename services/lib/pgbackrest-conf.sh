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

# usage: pgbackrest_render_conf OWNER
# Write $PGBACKREST_CONFIG (mode 0600, owned by OWNER): it may hold repo2's secrets.
# Every value is computed first, so a bad setting stops here instead of rendering half a file.
pgbackrest_render_conf() {
	local owner=$1 path=${PGBACKREST_CONFIG:?PGBACKREST_CONFIG must name the file to write}
	local queue_max retention process_max repo2
	queue_max=$(_pgbackrest_uint WAL_ARCHIVE_QUEUE_MAX 1073741824)
	retention=$(_pgbackrest_uint BACKUP_REPO1_RETENTION_FULL 2)
	process_max=$(_pgbackrest_uint BACKUP_PROCESS_MAX 2)
	repo2=$(_pgbackrest_repo2)
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
			pg1-path=$PGDATA
			pg1-socket-path=$PGBACKREST_SOCKET_DIR
			pg1-port=5432
			pg1-user=postgres
		CONF
	)
	chown "$owner:$owner" "$path"
}
