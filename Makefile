# pgstack -- the front door. `make` (or `make help`) lists every target.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

# ---- Knobs: command line > environment > .env (see .env.example) > the defaults below ------------
# .env is read like compose reads it: a variable already in the environment wins. Simple KEY=value
# lines only.
ifneq (,$(wildcard .env))
$(foreach key,$(shell sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' .env),\
	$(if $(filter environment command line,$(origin $(key))),,\
		$(eval $(key) := $(shell sed -n 's/^$(key)=//p' .env))))
endif
COMPOSE_PROJECT_NAME ?= pgstack
PGSTACK_HTTP_PORT ?= 8000
PGSTACK_HTTP_BIND ?= 127.0.0.1
PGSTACK_SECRETS_DIR ?= $(CURDIR)/secrets
PGSTACK_IMAGE_TAG ?= local
BASE_IMAGE ?= debian:trixie-slim
# CA bundle handed to image builds as a BuildKit secret (TLS-intercepting proxies); the host's
# bundle by default, which also holds the public CAs. Never copied into an image layer.
PGSTACK_CA_BUNDLE ?= $(firstword $(wildcard /etc/ssl/certs/ca-certificates.crt))
PYTHON ?= python3
TEST_VENV ?= $(CURDIR)/.venv-test
PYTEST_ARGS ?=
CONFIRM ?=
# make db-check JSON=1: the report as one JSON line instead of a table.
JSON ?=
# make db-status HA=1 (or HA=1 in .env): the Database targets act on the cluster of make ha-up
# (project HA_PROJECT_NAME), on its leader, instead of on the single node.
HA ?=

# pgBackRest's off-site repository on S3 needs PostgreSQL to reach it (services/backup/compose.s3.yml).
BACKUP_REPO2 ?=
COMPOSE_FILE ?= docker-compose.yml$(if $(filter s3,$(BACKUP_REPO2)),:services/backup/compose.s3.yml)

export COMPOSE_PROJECT_NAME COMPOSE_FILE PGSTACK_HTTP_PORT PGSTACK_HTTP_BIND PGSTACK_SECRETS_DIR PGSTACK_IMAGE_TAG \
	BASE_IMAGE PGSTACK_CA_BUNDLE
COMPOSE := docker compose

##@ Help
.PHONY: help
# Colour codes only on a terminal: `make help > file` or a pipe gets plain text.
help: ## Show this help.
	@if [[ -t 1 ]]; then bold=$$'\033[1m'; cyan=$$'\033[36m'; off=$$'\033[0m'; else bold=; cyan=; off=; fi; \
	awk -v bold="$$bold" -v cyan="$$cyan" -v off="$$off" 'BEGIN {FS = ":.*## "; printf "Usage: make <target> [KNOB=value]\n"} \
		/^##@/ {printf "\n%s%s%s\n", bold, substr($$0, 5), off} \
		/^[a-zA-Z0-9_-]+:.*## / {printf "  %s%-16s%s %s\n", cyan, $$1, off, $$2}' $(MAKEFILE_LIST)

##@ Stack
.PHONY: up down ps logs build base-image secrets preflight
up: preflight base-image secrets ## Build what is missing, start, migrate, wait until healthy, print the URL.
	@echo "starting pgstack (project $(COMPOSE_PROJECT_NAME)); first run builds the images..."
	@$(COMPOSE) up --detach --wait --wait-timeout 300
	@echo
	@echo "pgstack is up: http://$(PGSTACK_HTTP_BIND):$(PGSTACK_HTTP_PORT)"
	@echo "  readiness  curl http://$(PGSTACK_HTTP_BIND):$(PGSTACK_HTTP_PORT)/readyz"
	@echo "  health     curl http://$(PGSTACK_HTTP_BIND):$(PGSTACK_HTTP_PORT)/api/health"

down: preflight ## Stop and remove the containers (volumes and data are kept).
	@$(COMPOSE) down --remove-orphans

ps: preflight ## Show the services and their health.
	@$(COMPOSE) ps --all

logs: preflight ## Follow the logs of every service (SERVICE=api for one).
	@$(COMPOSE) logs --follow --tail=100 $(SERVICE)

build: preflight base-image secrets ## Build (or rebuild) every image.
	@$(COMPOSE) build

base-image: preflight ## Make sure $(BASE_IMAGE) exists: pull it, or build it with mmdebstrap.
	@scripts/base-image.sh "$(BASE_IMAGE)"

secrets: ## Generate missing secrets in $(PGSTACK_SECRETS_DIR) (0600; never overwrites).
	@scripts/secrets.sh "$(PGSTACK_SECRETS_DIR)"

preflight:
	@scripts/preflight.sh

##@ Database (the original guide's db:* scripts; HA=1: the cluster's leader)
# The CLI runs in a one-off migrate container, connecting to "postgres:5432": the single node, or
# in the cluster HAProxy, which follows the leader. With HA=1 each command first waits (up to
# 60 s, e.g. through a failover) until Patroni names a leader whose PostgreSQL takes writes and
# says which, then until the database answers through HAProxy (it routes to a new leader within
# about 2 s). --no-deps: the cluster runs already, and compose would re-run etcd-auth (~10 s).
DB_CLI_SINGLE := $(COMPOSE) run --rm --no-TTY migrate pgstack-db
DB_CLI_HA = $(HA_CLUSTER) leader --wait 60 >/dev/null && $(HA_COMPOSE) run --rm --no-deps --no-TTY migrate \
	sh -c 'pgstack-db wait --timeout 60 >/dev/null 2>&1; exec pgstack-db "$$@"' pgstack-db
DB_CLI = $(if $(filter 1,$(HA)),$(DB_CLI_HA),$(DB_CLI_SINGLE))
# Roles and passwords are set in the server's own container (the leader's), as the superuser over
# its socket, from the secret files as they are now (rotation).
DB_INIT_HA = leader=$$($(HA_CLUSTER) leader --wait 60) && $(HA_COMPOSE) exec --no-TTY "$$leader" pgstack-db-init
DB_INIT = $(if $(filter 1,$(HA)),$(DB_INIT_HA),$(COMPOSE) exec --no-TTY postgres pgstack-db-init)

.PHONY: db-check db-init db-status db-deploy db-seed db-reset
db-check: preflight ## Connectivity (PgBouncer and direct), versions, pools, table sizes: a table (JSON=1: JSON).
	@$(DB_CLI) check $(if $(JSON),--json)

db-init: preflight ## Create or update roles, grants, extensions and passwords (idempotent).
	@$(DB_INIT)

db-status: preflight ## Current vs head migration, pending migrations.
	@$(DB_CLI) status

db-deploy: preflight ## Apply pending migrations (under an advisory lock).
	@$(DB_CLI) deploy

db-seed: preflight ## Load idempotent demo data.
	@$(DB_CLI) seed

db-reset: preflight ## Drop and recreate the schema: every row is lost. Needs CONFIRM=1.
	@if [[ "$(CONFIRM)" != 1 ]]; then \
		echo "db-reset drops every table and row of $(if $(filter 1,$(HA)),$(HA_PROJECT_NAME),$(COMPOSE_PROJECT_NAME)). Run: make db-reset $(if $(filter 1,$(HA)),HA=1 )CONFIRM=1" >&2; exit 4; fi
	@$(DB_CLI) reset --yes

##@ Backup (services/backup; runbook: docs/operations.md "Backups and restores")
# BACKUP names a dump (make backup-list) or "latest". TARGET_TIME ('2026-11-27 10:15:00+00:00';
# no offset: BACKUP_TZ) makes `make restore` a point-in-time recovery of the whole cluster;
# FORCE=1 skips its window check (a replay that fails then puts the previous cluster back).
BACKUP ?= latest
TARGET_TIME ?=
FORCE ?=
# The running service does the work, as the cluster's owner (the same code path as the schedule).
BACKUP_CLI := $(COMPOSE) exec --no-TTY --user postgres backup pgstack-backup
# Steps that write the data volume, with postgres stopped, in a one-off container.
BACKUP_ONE_OFF = $(COMPOSE) run --rm --no-deps --no-TTY \
	--volume "$(COMPOSE_PROJECT_NAME)_pgdata:/var/lib/postgresql/restore" \
	--env PGDATA=/var/lib/postgresql/restore/pgdata backup pgstack-backup

.PHONY: backup backup-list verify-backup restore restore-rollback backup-stanza-upgrade
backup: preflight ## Back up now: pgBackRest (physical) and a verified dump, retention, off-site.
	@$(BACKUP_CLI) run

backup-list: preflight ## Both kinds of backup, their verification, and the point-in-time window.
	@$(BACKUP_CLI) list

verify-backup: preflight ## Verify dump BACKUP (default latest): checksums, contents, a real test restore.
	@$(BACKUP_CLI) verify $(BACKUP)

restore: preflight ## Restore BACKUP=<dump|latest>, or TARGET_TIME=<time> (point in time); API 503 meanwhile. Needs CONFIRM=1.
	@if [[ "$(CONFIRM)" != 1 ]]; then \
		echo "restore replaces every row of $(COMPOSE_PROJECT_NAME) with $(if $(TARGET_TIME),the data as of $(TARGET_TIME),backup '$(BACKUP)') (a safety backup is taken first)." >&2; \
		echo "Run: make restore $(if $(TARGET_TIME),TARGET_TIME='$(TARGET_TIME)',BACKUP=$(BACKUP)) CONFIRM=1" >&2; exit 4; fi
	@$(MAKE) $(if $(TARGET_TIME),restore-pitr,restore-dump)

restore-rollback: preflight ## After an interrupted point-in-time recovery: put the previous cluster back.
	@$(COMPOSE) stop postgres
	@$(BACKUP_ONE_OFF) pitr-rollback
	@$(COMPOSE) up --detach --wait --wait-timeout 300 --no-deps postgres
	@$(COMPOSE) exec --no-TTY api python3 -c "$$API_READY_WAIT"

backup-stanza-upgrade: preflight ## A re-initialised cluster: start its own history in the repository.
	@$(BACKUP_CLI) stanza-upgrade

# The two kinds of restore behind `make restore` (no help line: call `make restore`).
.PHONY: restore-dump restore-pitr
restore-dump:
	@started=$$(date +%s); \
	$(BACKUP_CLI) restore $(BACKUP) --yes; \
	echo "migrations to head (a no-op when the backup is at head):"; \
	$(COMPOSE) run --rm --no-TTY migrate || { \
		echo "error: migrations failed; the API stays locked out (503). Fix, then: make db-deploy db-init && $(BACKUP_CLI) reopen" >&2; exit 1; }; \
	$(COMPOSE) exec --no-TTY postgres pgstack-db-init; \
	$(BACKUP_CLI) reopen; \
	$(COMPOSE) exec --no-TTY api python3 -c "$$API_READY_WAIT"; \
	echo "restored '$(BACKUP)'; the API was unavailable for $$(( $$(date +%s) - started )) s."; \
	echo "The replaced database is kept (see above) until you drop it."

restore-pitr:
	@services/backup/pitr-restore.sh "$(TARGET_TIME)" $(if $(filter 1,$(FORCE)),force)

# Polls the API's /readyz from inside its container until it is ready (scripts/api_ready_wait.py,
# which the `pgstack` command on a deployed host runs too).
API_READY_WAIT := $(file <scripts/api_ready_wait.py)
export API_READY_WAIT

##@ High availability, in progress (docker-compose.ha.yml; services/patroni/README.md)
# A cluster of its own, beside the single node: three Patroni/PostgreSQL nodes, three etcd
# members, HAProxy to the leader, and the same PgBouncer, migrate and API. Its own project name,
# so `make up` and `make ha-up` never touch each other's containers or volumes (both publish the
# API on PGSTACK_HTTP_PORT: run one at a time, or give one another port).
HA_PROJECT_NAME ?= pgstack-ha
HA_ENV := COMPOSE_PROJECT_NAME=$(HA_PROJECT_NAME) COMPOSE_FILE=docker-compose.ha.yml
HA_COMPOSE := $(HA_ENV) $(COMPOSE)
# The cluster node by node, from the host (scripts/cluster.py: leader, check, reinit).
HA_CLUSTER := $(HA_ENV) $(PYTHON) scripts/cluster.py
HA_NODES := patroni1 patroni2 patroni3
# patronictl ARGS from the first node that answers: every node reads the same state from etcd, so
# a stopped node does not stop it. As postgres, with the node's private configuration; 15 s each,
# as patronictl waits for etcd without end when no member answers.
HA_PATRONICTL = (for node in $(HA_NODES); do \
	$(HA_COMPOSE) exec --no-TTY --user postgres "$$node" timeout 15 patronictl --config-file /run/pgstack-patroni $(1) 2>/dev/null \
		&& exit 0; done; exit 1)

.PHONY: ha-up ha-down ha-ps ha-logs ha-secrets cluster-status cluster-check ha-reinit ha-wait-sync switchover
ha-up: preflight base-image ha-secrets ## Build what is missing, start the cluster and the API on it, wait until healthy, show the cluster.
	@echo "starting the cluster (project $(HA_PROJECT_NAME)); first run builds the images..."
	@$(HA_COMPOSE) up --detach --wait --wait-timeout 400
	@$(MAKE) ha-wait-sync
	@$(MAKE) cluster-status
	@echo "the API on the cluster: http://$(PGSTACK_HTTP_BIND):$(PGSTACK_HTTP_PORT)"

ha-down: preflight ## Stop and remove the cluster's containers (volumes and data are kept).
	@$(HA_COMPOSE) down --remove-orphans

ha-ps: preflight ## The cluster's services and their health.
	@$(HA_COMPOSE) ps --all

ha-logs: preflight ## Follow the cluster's logs (SERVICE=patroni1 for one).
	@$(HA_COMPOSE) logs --follow --tail=100 $(SERVICE)

ha-secrets: ## Generate missing secrets, the cluster's own included (0600; never overwrites).
	@scripts/secrets.sh "$(PGSTACK_SECRETS_DIR)" ha

cluster-status: preflight ## Leader, replicas, lag, timeline and sync state of the cluster, as a table.
	@$(call HA_PATRONICTL,list) || { \
		echo "error: no node of $(HA_PROJECT_NAME) could read the cluster from etcd: are the nodes and etcd up? (make ha-ps; make ha-logs SERVICE=etcd1)" >&2; exit 1; }

cluster-check: preflight ## Split-brain alarm: asks each node if it takes writes; one leader, one timeline, a sync standby? Exit 1 if not.
	@$(HA_CLUSTER) check

# NODE: patroni1, patroni2 or patroni3; never the leader (make switchover first).
NODE ?=
ha-reinit: preflight ## Rebuild NODE=patroniN from the leader (its data erased and cloned again), wait until it streams.
	@$(HA_CLUSTER) reinit "$(NODE)"
	@$(MAKE) ha-wait-sync
	@$(MAKE) cluster-status

# Backups of the cluster: the backup service of docker-compose.ha.yml, the single node's commands
# (services/backup/README.md, "In the cluster").
HA_BACKUP_CLI := $(HA_COMPOSE) exec --no-TTY --user postgres backup pgstack-backup

.PHONY: ha-backup ha-backup-list ha-restore
ha-backup: preflight ## Back up the cluster now: pgBackRest from a standby, a verified dump, retention.
	@$(HA_BACKUP_CLI) run

ha-backup-list: preflight ## The cluster's backups (both kinds) and its point-in-time window.
	@$(HA_BACKUP_CLI) list

ha-restore: preflight ## Recover the whole cluster to TARGET_TIME (Patroni bootstrap from pgBackRest); API 503 meanwhile. Needs CONFIRM=1.
	@if [ -z "$(TARGET_TIME)" ]; then \
		echo "error: set TARGET_TIME, e.g. make ha-restore TARGET_TIME='2026-11-27 10:15:00+00:00' CONFIRM=1 (the window: make ha-backup-list)" >&2; exit 2; fi
	@if [ "$(CONFIRM)" != 1 ]; then \
		echo "ha-restore replaces every row of $(HA_PROJECT_NAME) with the data as of $(TARGET_TIME), on every node (a safety backup is taken first)." >&2; \
		echo "Run: make ha-restore TARGET_TIME='$(TARGET_TIME)' CONFIRM=1" >&2; exit 4; fi
	@$(HA_ENV) services/backup/ha-pitr-restore.sh "$(TARGET_TIME)"

# CANDIDATE=patroniN: the node to hand the leader to; by default the synchronous standby. Patroni
# (synchronous_mode) accepts no other: it is the one node known to have every acknowledged commit.
CANDIDATE ?=
switchover: preflight ## Planned switchover: the leader hands over to the sync standby (or CANDIDATE=patroniN); shows the new table.
	@$(HA_CLUSTER) switchover "$(CANDIDATE)"
	@$(MAKE) ha-wait-sync
	@echo "switchover done: the new leader serves; the old one rejoins as a replica (State streaming when it has):"
	@$(MAKE) cluster-status

# `up --wait` returns once every node's PostgreSQL accepts connections; Patroni names the
# synchronous standby a few seconds later, and until then a commit is on one node only.
ha-wait-sync:
	@for attempt in $$(seq 1 60); do \
		if $(call HA_PATRONICTL,list --format json) | grep -q '"Sync Standby"'; then exit 0; fi; \
		sleep 1; \
	done; \
	echo "error: the cluster has no synchronous standby after 60 s; see make cluster-status, make ha-logs" >&2; exit 1

##@ Deploy (ansible/; guide: ansible/README.md)
# INVENTORY: your inventory (copy ansible/inventory/example), its hosts.yml or its directory.
# VAULT_PASSWORD_FILE: the vault's password file; by default the one `make vault` wrote for this
# inventory, VAULT_PASSWORD_DIR/<inventory name>.vault-pass, when it exists (else ansible asks).
# ANSIBLE_ARGS: e.g. "--check --diff" or "--limit app1".
INVENTORY ?= ansible/inventory/example/hosts.yml
VAULT_PASSWORD_DIR ?= $(HOME)/.config/pgstack
VAULT_PASSWORD_FILE ?=
ANSIBLE_ARGS ?=
INVENTORY_DIR = $(patsubst %/,%,$(if $(filter %.yml %.yaml,$(INVENTORY)),$(dir $(INVENTORY)),$(INVENTORY)))
VAULT_PASSWORD_DEFAULT = $(VAULT_PASSWORD_DIR)/$(notdir $(INVENTORY_DIR)).vault-pass
VAULT_PASSWORD = $(or $(VAULT_PASSWORD_FILE),$(wildcard $(VAULT_PASSWORD_DEFAULT)))
# Images built here and shipped to the hosts as one `docker save` archive (no registry needed).
DEPLOY_ARCHIVE ?= $(CURDIR)/ansible/.artifacts/pgstack-images-$(PGSTACK_IMAGE_TAG).tar
# The cluster layout's images (etcd, Patroni), for inventories with group pgstack_db.
DEPLOY_CLUSTER_ARCHIVE ?= $(CURDIR)/ansible/.artifacts/pgstack-cluster-images-$(PGSTACK_IMAGE_TAG).tar
ANSIBLE_OPTS = --inventory "$(INVENTORY)" \
	$(if $(VAULT_PASSWORD),--vault-password-file "$(VAULT_PASSWORD)",--ask-vault-pass)
ANSIBLE_PLAYBOOK = ANSIBLE_CONFIG="$(CURDIR)/ansible/ansible.cfg" "$(TEST_VENV)/bin/ansible-playbook" $(ANSIBLE_OPTS)
# The `pgstack` command the role installs, run as root on every host of INVENTORY (ANSIBLE_ARGS
# "--limit app1" for one); its output is printed per host.
ON_HOSTS = ANSIBLE_CONFIG="$(CURDIR)/ansible/ansible.cfg" "$(TEST_VENV)/bin/ansible" pgstack $(ANSIBLE_OPTS) \
	--become --module-name ansible.builtin.command $(ANSIBLE_ARGS) --args

.PHONY: vault deploy deploy-check deploy-images
vault: $(TEST_VENV)/.installed ## INVENTORY's vaults, one per layout it has: a random value per secret, encrypted; the password to VAULT_PASSWORD_DIR (never overwrites).
	@"$(TEST_VENV)/bin/python" ansible/scripts/vault.py new --inventory "$(INVENTORY_DIR)" \
		--password-file "$(or $(VAULT_PASSWORD_FILE),$(VAULT_PASSWORD_DEFAULT))"

deploy-images: preflight base-image secrets ha-secrets ## Build the images and save them to DEPLOY_ARCHIVE (and the cluster layout's, API tier included, to DEPLOY_CLUSTER_ARCHIVE) for shipping.
	@$(COMPOSE) build
	@ansible/scripts/save-images.sh "$(DEPLOY_ARCHIVE)"
	@$(HA_COMPOSE) build etcd1 patroni1 haproxy
	@ansible/scripts/save-images.sh "$(DEPLOY_CLUSTER_ARCHIVE)" "pgstack-etcd:$(PGSTACK_IMAGE_TAG)" "pgstack-patroni:$(PGSTACK_IMAGE_TAG)" \
		"pgstack-haproxy:$(PGSTACK_IMAGE_TAG)" "pgstack-pgbouncer:$(PGSTACK_IMAGE_TAG)" "pgstack-api:$(PGSTACK_IMAGE_TAG)"

DEPLOY_VARS = --extra-vars "pgstack_images_source=load" \
	--extra-vars "pgstack_images_archive=$(DEPLOY_ARCHIVE)" --extra-vars "pgstack_image_tag=$(PGSTACK_IMAGE_TAG)" \
	--extra-vars "pgstack_db_images_archive=$(DEPLOY_CLUSTER_ARCHIVE)"

deploy: deploy-images $(TEST_VENV)/.installed ## Deploy to INVENTORY's hosts with Ansible (image tag PGSTACK_IMAGE_TAG).
	@$(ANSIBLE_PLAYBOOK) ansible/site.yml $(DEPLOY_VARS) $(ANSIBLE_ARGS)

# Three whole deploys, each step on every host before the next: a new CA trusted beside the old
# one, then signing every host's new certificate, then the old one dropped. Stopped anywhere, run
# it again: each step finishes what it started.
.PHONY: deploy-ca-rotate
deploy-ca-rotate: deploy-images $(TEST_VENV)/.installed ## Cluster layout: replace the cluster's CA (three deploys; the leader keeps leading).
	@for step in introduce promote retire; do \
		echo "== CA rotation, step $$step (of introduce, promote, retire)"; \
		$(ANSIBLE_PLAYBOOK) ansible/site.yml $(DEPLOY_VARS) --extra-vars "pgstack_db_ca_step=$$step" $(ANSIBLE_ARGS) || exit $$?; \
	done

deploy-check: $(TEST_VENV)/.installed ## On INVENTORY's hosts: every service healthy, /readyz through the edge's HTTPS, backup age; a cluster's members, leader and sync standby.
	@$(ANSIBLE_PLAYBOOK) ansible/check.yml $(ANSIBLE_ARGS)

.PHONY: deploy-switchover
deploy-switchover: $(TEST_VENV)/.installed ## Cluster layout: the leader hands over to the sync standby (or CANDIDATE=<host>); waits until the old leader streams.
	@$(ANSIBLE_PLAYBOOK) ansible/switchover.yml $(if $(CANDIDATE),--extra-vars "pgstack_db_candidate=$(CANDIDATE)") $(ANSIBLE_ARGS)

# The runbook's operations on INVENTORY's hosts (`pgstack ...` there; ansible/README.md,
# "Operations on the host").
.PHONY: deploy-status deploy-backup deploy-backup-list deploy-restore deploy-logs
deploy-status: $(TEST_VENV)/.installed ## On INVENTORY's hosts: services, health, /readyz, last backup (pgstack status).
	@$(ON_HOSTS) "pgstack status"

deploy-backup: $(TEST_VENV)/.installed ## On INVENTORY's hosts: back up now (pgstack backup).
	@$(ON_HOSTS) "pgstack backup"

deploy-backup-list: $(TEST_VENV)/.installed ## On INVENTORY's hosts: the backups and the point-in-time window.
	@$(ON_HOSTS) "pgstack backup-list"

deploy-restore: $(TEST_VENV)/.installed ## On INVENTORY's hosts: restore BACKUP=<dump|latest> or TARGET_TIME=<time>. Needs CONFIRM=1.
	@if [[ "$(CONFIRM)" != 1 ]]; then \
		echo "deploy-restore replaces every row of the stack on $(INVENTORY)'s hosts with $(if $(TARGET_TIME),the data as of $(TARGET_TIME),backup '$(BACKUP)') (a safety backup is taken first)." >&2; \
		echo "Run: make deploy-restore INVENTORY=$(INVENTORY) $(if $(TARGET_TIME),TARGET_TIME='$(TARGET_TIME)',BACKUP=$(BACKUP)) CONFIRM=1" >&2; exit 4; fi
	@$(ON_HOSTS) "pgstack restore $(if $(TARGET_TIME),'TARGET_TIME=$(TARGET_TIME)',BACKUP=$(BACKUP)) $(if $(filter 1,$(FORCE)),FORCE=1) CONFIRM=1"

deploy-logs: $(TEST_VENV)/.installed ## On INVENTORY's hosts: the last 100 log lines of every service (SERVICE=api for one).
	@$(ON_HOSTS) "pgstack logs $(SERVICE)"

##@ Development
.PHONY: dev test test-unit lint bench bench-backup bench-ha
dev: ## Run the API on the host against SQLite, with reload (no Docker needed).
	@$(MAKE) -C services/api dev

$(TEST_VENV)/.installed: tests/requirements.txt services/api/pyproject.toml
	@$(PYTHON) -m venv "$(TEST_VENV)"
	@"$(TEST_VENV)/bin/pip" install --quiet --upgrade pip
	@"$(TEST_VENV)/bin/pip" install --quiet -r tests/requirements.txt -e 'services/api[dev]'
	@touch "$@"

# Without PYTEST_ARGS: tests/run-suite.sh runs the cluster deploy module beside the other tests
# (two pytest processes); with them, one pytest with those arguments.
test: preflight base-image $(TEST_VENV)/.installed ## The whole suite: unit tests, the real stack, the cluster deploy beside them.
ifeq ($(strip $(PYTEST_ARGS)),)
	@tests/run-suite.sh "$(TEST_VENV)/bin/pytest"
else
	@"$(TEST_VENV)/bin/pytest" $(PYTEST_ARGS)
endif

test-unit: $(TEST_VENV)/.installed ## Unit tests only (no Docker).
	@"$(TEST_VENV)/bin/pytest" tests/unit tests/dev $(PYTEST_ARGS)

# Every Python package: each service's with its own pyproject (ruff and mypy config), then the
# repository's tests and benchmarks with the root one.
PYTHON_PACKAGES := services/api services/backup
# Python programs the Patroni image installs without a .py name: ruff and mypy take them by path.
PATRONI_SCRIPTS = services/patroni/pgstack-leader-guard services/patroni/pgstack-rewind

lint: $(TEST_VENV)/.installed ## ruff, mypy (strict), hadolint and shellcheck on every package and script.
	@"$(TEST_VENV)/bin/pytest" -q tests/unit/test_static.py
	@for pkg in $(PYTHON_PACKAGES); do \
		(cd "$$pkg" && "$(TEST_VENV)/bin/ruff" check . && "$(TEST_VENV)/bin/ruff" format --check . \
			&& "$(TEST_VENV)/bin/mypy") || exit 1; \
	done
	@"$(TEST_VENV)/bin/ruff" check tests bench scripts ansible/scripts ansible/filter_plugins $(PATRONI_SCRIPTS)
	@"$(TEST_VENV)/bin/ruff" format --check tests bench scripts ansible/scripts ansible/filter_plugins \
		$(PATRONI_SCRIPTS)
	@"$(TEST_VENV)/bin/mypy" --strict --scripts-are-modules scripts/cluster.py ansible/scripts/edge_servers.py \
		ansible/filter_plugins/compose_plan.py $(PATRONI_SCRIPTS)

bench: preflight base-image secrets $(TEST_VENV)/.installed ## Benchmarks: docs/benchmarks.json, .png and the figures in docs/benchmarks.md.
	@"$(TEST_VENV)/bin/python" -m bench

bench-backup: preflight base-image secrets $(TEST_VENV)/.installed ## Only the backup phase of make bench (~25 min), recorded beside the last run's figures.
	@"$(TEST_VENV)/bin/python" -m bench.backup --record

bench-ha: preflight base-image ha-secrets $(TEST_VENV)/.installed ## The cluster under faults (~6 min, a cluster of its own): failover figures beside the last run's.
	@HA_PROJECT_NAME="$(HA_PROJECT_NAME)" "$(TEST_VENV)/bin/python" -m bench.failover --record
