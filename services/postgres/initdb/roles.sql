-- Roles, database, grants and extensions for pgstack. Idempotent: the entrypoint runs it on the
-- first start and `make db-init` runs it again at any time (it also re-applies the passwords from the
-- secret files, which is how a password is rotated). Run by psql as the postgres superuser;
-- pgstack-db-init sets these psql variables first (on stdin):
--   app_owner_password, app_password, app_backup_password
\set ON_ERROR_STOP on

-- Roles. Least privilege (DESIGN decision 5):
--   app_owner  owns the schema and runs migrations (direct connection, never through PgBouncer);
--   app        the API: DML only, through PgBouncer;
--   app_backup reads everything (pg_read_all_data), for pg_dump.
SELECT format('CREATE ROLE %I', r) FROM unnest(ARRAY['app_owner', 'app', 'app_backup']) AS r
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r)
\gexec

ALTER ROLE app_owner  WITH LOGIN NOSUPERUSER CREATEDB   NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'app_owner_password';
ALTER ROLE app        WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'app_password';
ALTER ROLE app_backup WITH LOGIN NOSUPERUSER CREATEDB   NOCREATEROLE REPLICATION   NOBYPASSRLS PASSWORD :'app_backup_password';
GRANT pg_read_all_data TO app_backup;
-- Backups (services/backup): app_backup creates, fills and drops a scratch database to test-restore
-- each backup (elsewhere it only reads: pg_read_all_data is its one privilege on data).
-- REPLICATION lets it take base backups (pg_basebackup) for point-in-time recovery: it then
-- reads the cluster's files, password verifiers included -- the price of physical backups.
-- app_owner runs `make restore`: a new database, then a rename swap, after ending the app's
-- sessions (pg_signal_backend: non-superuser backends only). Neither gets write access to data
-- it did not have; the superuser stays local-only.
GRANT pg_signal_backend TO app_owner;

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

CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
