#!/usr/bin/env bash
# secrets.sh -- generate the stack's secrets once: one file each, mode 0600, in $PGSTACK_SECRETS_DIR
# (default ./secrets, git-ignored). An existing file is never overwritten: rotating a secret is a
# deliberate act (docs/operations.md), not a side effect of `make up`.
# Usage: scripts/secrets.sh [DIR] [ha]
#   ha: also the cluster's own secrets (docker-compose.ha.yml): replication and pg_rewind roles,
#   Patroni's REST API, etcd's root and Patroni's etcd user. The single-node stack needs none.
set -Eeuo pipefail

SECRETS_DIR=${1:-${PGSTACK_SECRETS_DIR:-secrets}}
SECRETS=(postgres_password app_owner_password app_password app_backup_password pgbouncer_stats_password ops_token
	backup_repo2_cipher_pass)
if [[ ${2:-} == ha ]]; then
	SECRETS+=(replication_password rewind_password patroni_api_password etcd_root_password etcd_patroni_password)
elif [[ -n ${2:-} ]]; then
	echo "error: unknown secret set '$2' (known: ha)" >&2
	exit 2
fi

# 32 random bytes, URL-safe base64 without padding: 256 bits, no character that needs quoting in
# a connection string, an auth file or a shell.
secret_value() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }

umask 077
mkdir -p "$SECRETS_DIR"
created=0
for name in "${SECRETS[@]}"; do
	path="$SECRETS_DIR/$name"
	if [[ -e $path ]]; then
		if [[ ! -s $path ]]; then
			echo "error: $path exists but is empty; delete it and run 'make secrets' again" >&2
			exit 1
		fi
		continue
	fi
	secret_value >"$path.tmp"
	chmod 0600 "$path.tmp"
	mv "$path.tmp" "$path"
	created=$((created + 1))
done
if ((created)); then echo "generated $created secret(s) in $SECRETS_DIR/ (mode 0600, git-ignored)"; fi
