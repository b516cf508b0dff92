-- Roles, database, grants and extensions for pgstack. Idempotent: the entrypoint runs it on the
-- first start and `make db-init` runs it again at any time (it also re-applies the passwords from the
-- secret files, which is how a password is rotated). Run by psql as the postgres superuser;
-- pgstack-db-init sets these psql variables first (on stdin), each a SCRAM verifier computed on
-- the client side, never a password:
--   app_owner_password, app_password, app_backup_password
\set ON_ERROR_STOP on
-- Not even the verifiers go into pg_stat_statements' query texts (which base backups copy).
SET pg_stat_statements.track_utility = off;

-- Roles. Least privilege (docs/architecture.md, "Roles"):
--   app_owner  owns the schema and runs migrations (direct connection, never through PgBouncer);
--   app        the API: DML only, through PgBouncer;
--   app_backup reads everything (pg_read_all_data), for pg_dump.
SELECT format('CREATE ROLE %I', r) FROM unnest(ARRAY['app_owner', 'app', 'app_backup']) AS r
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r)
\gexec

ALTER ROLE app_owner  WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'app_owner_password';
ALTER ROLE app        WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'app_password';
ALTER ROLE app_backup WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'app_backup_password';
GRANT pg_read_all_data TO app_backup;
-- Backups (services/backup) run as the postgres user over the shared socket: pgBackRest reads the
-- cluster's files as their owner anyway. The logical dump still works as app_backup (SET ROLE:
-- pg_read_all_data, read-only transactions), and a restore as app_owner (pg_restore --role), so
-- each does only what its role may. What earlier versions granted for the old scheme goes:
-- base backups over replication, scratch databases in this cluster, ending sessions as app_owner.
SELECT 'REVOKE pg_signal_backend FROM app_owner'
WHERE pg_has_role('app_owner', 'pg_signal_backend', 'MEMBER')
\gexec

-- Guard rails that hold for every session of the role, pooled or not. 5 s is the API's budget
-- for a statement: its autocommit reads rely on this default, its transactions SET LOCAL their own.
ALTER ROLE app SET statement_timeout = '5s';
ALTER ROLE app SET idle_in_transaction_session_timeout = '15s';
ALTER ROLE app_backup SET default_transaction_read_only = on;

SELECT 'CREATE DATABASE pgstack OWNER app_owner'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'pgstack')
\gexec

REVOKE ALL ON DATABASE pgstack FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE pgstack TO app_owner;
GRANT CONNECT ON DATABASE pgstack TO app, app_backup;

\connect pgstack
-- pg_stat_statements lives in the postgres database (its statistics cover every database):
-- here, its view would be swept into `GRANT ... ON ALL TABLES` below, and every dump would then
-- carry a grant that no non-superuser restore can apply. Earlier versions created it here.
DROP EXTENSION IF EXISTS pg_stat_statements;
ALTER SCHEMA public OWNER TO app_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO app, app_backup;

-- The app role may read the tables the owner creates later (migrations); what it may write is
-- granted table by table by the migration that creates the table (services/api/alembic), so it
-- gets exactly what the API does: no DELETE it never issues, no write on alembic_version.
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public
	REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON TABLES FROM app;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public
	GRANT SELECT ON TABLES TO app;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public
	GRANT USAGE, SELECT ON SEQUENCES TO app;
-- ...and the same for what already exists (db-init on a populated database): reads only, the
-- migrations' writes stay as they granted them.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO app;

\connect postgres
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
-- Statements of earlier versions that carried a password in clear: forget them.
SELECT count(pg_stat_statements_reset(userid, dbid, queryid)) AS forgotten
FROM pg_stat_statements WHERE query ILIKE '%password%' \gset
