#!/usr/bin/env bash
# Run the Robot Framework suites (robot/suites) on one device backend, in parallel with pabot.
#
#   scripts/run-robot.sh BACKEND OUTDIR      e.g. scripts/run-robot.sh qemu reports/robot-qemu
#
# Leaves Robot's output.xml, log.html and report.html in OUTDIR and the Allure results in
# OUTDIR/allure-results (both replaced on every run). Exits non-zero when a test failed (pabot's
# exit code: the number of failed tests) or the run itself failed. One pabot process per suite
# file, ROBOT_PROCESSES of them at once (default 2); each has its own loop, CA, ports and
# directories. Uses .venv/bin unless VENV_BIN points elsewhere.
set -euo pipefail

usage="usage: $0 BACKEND OUTDIR (BACKEND: virtual, qemu, ...)"
backend=${1:?$usage}
outdir=${2:?$usage}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$(cd "${VENV_BIN:-$root/.venv/bin}" && pwd)

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
rm -rf "$outdir/allure-results" "$outdir/pabot_results"

# pabot keeps its .pabotsuitenames cache in the working directory: run from OUTDIR.
cd "$outdir"
# --no-pabotlib: the suites need no cross-process locks, and PabotLib would listen on a fixed
# port (8270) that two runs at once would fight over. --command: the venv's robot, whatever PATH.
exec "$bin/pabot" \
    --no-pabotlib \
    --command "$bin/python" -m robot --end-command \
    --processes "${ROBOT_PROCESSES:-2}" \
    --outputdir "$outdir" \
    --name "wasmbed-hil robot suites ($backend)" \
    --variable "BACKEND:$backend" \
    --listener "allure_robotframework:$outdir/allure-results" \
    "$root/robot/suites"
