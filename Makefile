# wasmbed-hil: two commands on a fresh machine, each doing its own set-up, safe to repeat.
#   make hil   the scenario suites on the default backend (virtual) and on qemu, in parallel;
#              one report under reports/
#   make test  every test: lint, the framework's own tests (firmware host tests included), a
#              one-minute fuzz run of the firmware (skipped without clang, unless
#              FUZZ_REQUIRED=1), the scenario suites on the virtual and qemu backends (renode:
#              skipped where Renode is not installed), the enrollment, heartbeat and
#              deployment suites on the board backend (QEMU stand-in boards through labgrid,
#              locally and through a labgrid coordinator) and the robot suites
#   make fuzz  the one-minute fuzz run alone (firmware/fuzz/README.md; long run: fuzz-long)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install
# make hil runs the suites on each of BACKENDS: the default backend (DEFAULT_BACKEND in
# wasmbed_hil/bench/backends/registry.py) and the real firmware's. BACKEND=x: that one alone.
BACKENDS ?= $(if $(BACKEND),$(BACKEND),virtual qemu)
WORKERS ?= 2
# The suites the board backend runs on QEMU stand-in boards (docs/boards.md), and its lab.
BOARD_SUITES := suites/enrollment suites/heartbeat suites/deployment
BOARD_LAB ?= qemu:10

.PHONY: sysdeps setup hil test lint bench clean firmware fuzz fuzz-long

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed")'
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

sysdeps:
	@bash scripts/system-deps.sh

setup: sysdeps $(STAMP)

# BASELINE: a summary.json of an earlier run (e.g. kept by CI from main) to compare against.
BASELINE ?= reports/baseline/summary.json

# One Allure results directory for all BACKENDS (each result has the parameter `backend`, so
# a test run on two backends is two tests), one JUnit file per backend, one report.
hil: setup
	mkdir -p reports
	rm -rf reports/allure-results
	status=0; for backend in $(BACKENDS); do \
		$(BIN)/pytest suites/ -n $(WORKERS) --hil-backend=$$backend \
			--hil-infra-retries=1 --junitxml=reports/junit-suites-$$backend.xml \
			--alluredir=reports/allure-results || status=$$?; \
	done; \
	$(BIN)/wasmbed-hil report --current reports/allure-results --out reports \
		$$(test -f $(BASELINE) && echo --baseline $(BASELINE)) || status=$$?; \
	echo "reports: reports/report.html reports/allure-report/index.html reports/summary.md"; \
	exit $$status

firmware: setup
	$(MAKE) -C firmware PYTHON=$(abspath $(BIN)/python)

# The firmware's libFuzzer harnesses (firmware/fuzz): about a minute in all, one at a time.
FUZZ_MAKE = $(MAKE) --no-print-directory -C firmware/fuzz PY=$(abspath $(BIN)/python)
fuzz: setup
	$(FUZZ_MAKE) fuzz-short
# FUZZ_RUNS executions per harness (default 10 million), FUZZ_SECONDS bounds each (0: none).
fuzz-long: setup
	$(FUZZ_MAKE) fuzz-long

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest tests/ suites/ -n $(WORKERS)
	@if $(FUZZ_MAKE) -s toolchain >/dev/null 2>&1 || [ -n "$(FUZZ_REQUIRED)" ]; then \
		$(MAKE) --no-print-directory fuzz; \
	else echo "fuzz: SKIPPED, no clang with libFuzzer (apt-get install clang-14 libclang-rt-14-dev)"; fi
	$(BIN)/pytest suites/ -n $(WORKERS) --hil-backend=qemu
	$(BIN)/pytest $(BOARD_SUITES) -n $(WORKERS) --hil-backend=board --board-lab=$(BOARD_LAB)
	$(BIN)/pytest $(BOARD_SUITES) -n $(WORKERS) --hil-backend=board \
		--board-lab=$(BOARD_LAB):coordinator
	VENV_BIN=$(BIN) bash scripts/run-robot.sh virtual reports/robot-virtual
	VENV_BIN=$(BIN) bash scripts/run-robot.sh qemu reports/robot-qemu
	$(BIN)/pytest suites/ -n $(WORKERS) --hil-backend=renode -rs -q  # skips without Renode

bench: setup
	$(BIN)/python -m benchmarks.bench_gateway --quick
	$(BIN)/python -m benchmarks.bench_qemu --quick
	$(BIN)/python -m benchmarks.bench_protocol
	$(BIN)/python -m benchmarks.bench_pki
	$(BIN)/python -m benchmarks.bench_runtime
	$(BIN)/python -m benchmarks.bench_kube --quick
	$(BIN)/python benchmarks/bench_mosquitto.py --quick
	$(BIN)/python -m benchmarks.bench_controlplane --quick
	$(BIN)/python -m benchmarks.bench_link --runs 3 --mib 16
	$(BIN)/python -m benchmarks.bench_fuzz --seconds 10

clean:
	rm -rf $(VENV) reports/allure-results reports/*.xml .hypothesis
