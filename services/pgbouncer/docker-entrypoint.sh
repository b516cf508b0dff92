#!/usr/bin/env bash
# docker-entrypoint.sh -- PgBouncer for pgstack.
# Usage: docker-entrypoint.sh pgbouncer /etc/pgstack/pgbouncer.ini   (anything else is exec'd)
# Renders auth_file from the secret files (never logged), refuses pool sizes that do not fit
# PostgreSQL's max_connections, then runs PgBouncer as the pgbouncer user.
set -Eeuo pipefail
# shellcheck source=SCRIPTDIR/../lib/pgstack-lib.sh
source /usr/local/lib/pgstack/pgstack-lib.sh

RENDER_DIR=/run/pgbouncer-secrets
# Server connections kept free for direct clients: migrations, backups, the CLI, an admin.
DIRECT_HEADROOM=${PGBOUNCER_DIRECT_HEADROOM:-10}

# usage: pgbouncer_secret NAME
# The secret's content (pgstack_secret), refused if auth_file's quoting cannot hold it.
pgbouncer_secret() {
	local value
	value=$(pgstack_secret "$1")
	[[ $value != *'"'* ]] || pgstack_error "secret $1 contains a double quote, which auth_file cannot hold; regenerate it"
	printf '%s' "$value"
}

# ini_value KEY [DEFAULT]: the value of KEY in the [pgbouncer] section of the config in use.
ini_value() {
	awk -F= -v key="$1" '
		/^\[/ { in_section = ($0 ~ /^\[pgbouncer\]/) }
		in_section && $1 ~ "^[ \t]*" key "[ \t]*$" { gsub(/[ \t]/, "", $2); value = $2 }
		END { print value }' "$CONFIG"
}

# pgbouncer_render_auth: "app" in plaintext -- PgBouncer needs it for its own (rare, pooled) SCRAM
# logins to PostgreSQL, since clients authenticate by the socket's group; the stats user likewise (console logins are
# rare, so the per-login SCRAM cost of a plaintext entry does not matter there).
pgbouncer_render_auth() {
	install -d -o pgbouncer -g pgbouncer -m 0700 "$RENDER_DIR"
	local file="$RENDER_DIR/userlist.txt" app stats
	app=$(pgbouncer_secret app_password)
	stats=$(pgbouncer_secret pgbouncer_stats_password)
	(
		umask 077
		printf '"app" "%s"\n"pgbouncer_stats" "%s"\n' "$app" "$stats" >"$file"
	)
	chown pgbouncer:pgbouncer "$file"
}

# pgbouncer_check_pools: fail loudly when PgBouncer could open more server connections than
# PostgreSQL admits (plus headroom for direct clients), instead of failing under load later.
pgbouncer_check_pools() {
	local pool reserve max_db need server_max
	pool=$(ini_value default_pool_size); pool=${pool:-20}
	reserve=$(ini_value reserve_pool_size); reserve=${reserve:-0}
	max_db=$(ini_value max_db_connections); max_db=${max_db:-0}
	need=$((pool + reserve))
	if ((max_db > 0 && max_db < need)); then need=$max_db; fi
	local host port
	host=${PGBOUNCER_CHECK_HOST:-postgres}
	port=${PGBOUNCER_CHECK_PORT:-5432}
	local query="SELECT current_setting('max_connections')::int
		- current_setting('superuser_reserved_connections')::int
		- current_setting('reserved_connections')::int"
	local attempt app_password
	app_password=$(pgbouncer_secret app_password)
	for attempt in $(seq 1 30); do
		if server_max=$(PGPASSWORD=$app_password psql --no-psqlrc --tuples-only --no-align \
			"host=$host port=$port dbname=pgstack user=app connect_timeout=3" --command="$query" 2>/dev/null); then
			break
		fi
		echo "{\"event\": \"pool_check\", \"status\": \"waiting\", \"attempt\": $attempt, \"server\": \"$host:$port\"}"
		sleep 1
	done
	if [[ -z ${server_max:-} ]]; then
		pgstack_error "cannot reach PostgreSQL at $host:$port as app to check pool sizes; is postgres healthy and is the app password right?"
	fi
	if ((need + DIRECT_HEADROOM > server_max)); then
		pgstack_error "PgBouncer may open $need server connections (default_pool_size=$pool + reserve_pool_size=$reserve, max_db_connections=$max_db)" \
			"plus $DIRECT_HEADROOM kept for direct clients, but PostgreSQL admits only $server_max." \
			"Lower default_pool_size/max_db_connections in pgbouncer.ini or raise max_connections in postgresql.conf."
	fi
	echo "{\"event\": \"pool_check\", \"status\": \"ok\", \"server_connections\": $need, \"headroom\": $DIRECT_HEADROOM, \"server_max\": $server_max}"
}

# pgbouncer_check_socket_mode: the socket is the API path's authentication (hba trusts it), so
# a mode that lets "other" connect would open the app role to anyone who can reach the volume.
pgbouncer_check_socket_mode() {
	local mode
	mode=$(ini_value unix_socket_mode)
	mode=${mode:-0777}
	if (((8#$mode & 8#007) != 0)); then
		pgstack_error "unix_socket_mode = $mode lets any local user connect as the app role;" \
			"use 0660 with unix_socket_group = pgsocket (see pgbouncer_hba.conf)"
	fi
}

_main() {
	if [[ ${1:-} == pgbouncer ]]; then
		CONFIG=${*: -1}
		pgstack_require_root
		pgbouncer_check_socket_mode
		pgbouncer_render_auth
		pgbouncer_check_pools
		pgstack_drop_privileges pgbouncer "$@"
	fi
	exec "$@"
}

if ! pgstack_is_sourced; then
	_main "$@"
fi
