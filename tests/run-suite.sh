#!/usr/bin/env bash
# run-suite.sh -- the whole suite (make test without PYTEST_ARGS) as two pytest processes at once.
# Usage: tests/run-suite.sh PYTEST
#
# The cluster deploy module (tests/deploy/test_cluster_deploy.py: four hosts, each with an
# engine of its own) spends most of its time waiting: on SSH round trips, on the hosts' engines
# loading images, on Patroni's loops. Run after the rest, it made the suite last 70 minutes
# before the CA rotation test (about 20 minutes more) joined it. Beside the rest, the two share
# the machine's cores: in the CI run with the CA rotation, the rest took 61 minutes and the
# module 57, tests/ha running during the rotation's load. More
# modules can join the background list when the foreground is much the longer one. Each
# process builds what it needs (the engine's cache shares the layers) and removes only its own
# compose projects. The background's output goes to .test-artifacts/background.log and is
# printed when both have finished.
# Exit status: non-zero when either failed.
set -Euo pipefail
cd "$(dirname "$0")/.." || exit

pytest=$1
background=(tests/deploy/test_cluster_deploy.py)
log=.test-artifacts/background.log
mkdir -p .test-artifacts

# The cache plugin off in the background: both processes would write .pytest_cache at the end.
"$pytest" -p no:cacheprovider "${background[@]}" >"$log" 2>&1 &
background_pid=$!
# On SIGINT or SIGTERM the background run gets SIGTERM (a background job of a script ignores
# SIGINT); what it leaves, the next run removes (tests/conftest.py). Not exercised by a test.
trap 'kill "$background_pid" 2>/dev/null; exit 130' INT TERM
echo "[test] in the background (pid $background_pid): ${background[*]}; output in $log"

"$pytest" "${background[@]/#/--ignore=}"
rest=$?

if kill -0 "$background_pid" 2>/dev/null; then
	echo "[test] the other tests are done ($rest); waiting for ${background[*]}"
fi
wait "$background_pid"
background_rc=$?
echo "[test] ---- ${background[*]} ($log) ----"
cat "$log"
echo "[test] the other tests: exit $rest; ${background[*]}: exit $background_rc"
((rest == 0 && background_rc == 0))
