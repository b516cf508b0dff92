#!/usr/bin/env bash
# run-suite.sh -- the whole suite (make test without PYTEST_ARGS) as two pytest processes at once.
# Usage: tests/run-suite.sh PYTEST
#
# The cluster deploy module (tests/deploy/test_cluster_deploy.py: four hosts, each with an
# engine of its own, about 28 minutes) spends most of its time waiting: on SSH round trips, on
# the hosts' engines loading images, on Patroni's loops. Run after the rest, it made the suite
# last 70 minutes; beside it, the two share the machine's cores. Each process builds what it
# needs under tags of its own (the image layers are shared by the engine's cache) and removes
# only its own compose projects. The other tests run in the foreground; the cluster module's
# output goes to .test-artifacts/cluster-deploy.log and is printed when both have finished.
# Exit status: non-zero when either failed.
set -Euo pipefail
cd "$(dirname "$0")/.." || exit

pytest=$1
module=tests/deploy/test_cluster_deploy.py
log=.test-artifacts/cluster-deploy.log
mkdir -p .test-artifacts

# The cache plugin off in the background: both processes would write .pytest_cache at the end.
"$pytest" -p no:cacheprovider "$module" >"$log" 2>&1 &
cluster=$!
# Ctrl-C or a CI timeout stops the background run too (a background job of a script ignores
# SIGINT, so it gets SIGTERM); what it leaves, the next run removes (tests/conftest.py).
trap 'kill "$cluster" 2>/dev/null; exit 130' INT TERM
echo "[test] $module runs in the background (pid $cluster), its output in $log"

"$pytest" --ignore="$module"
rest=$?

if kill -0 "$cluster" 2>/dev/null; then
	echo "[test] the other tests are done ($rest); waiting for $module"
fi
wait "$cluster"
fleet=$?
echo "[test] ---- $module ($log) ----"
cat "$log"
echo "[test] the other tests: exit $rest; $module: exit $fleet"
((rest == 0 && fleet == 0))
