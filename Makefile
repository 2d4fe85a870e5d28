# teegate — two set-up commands: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit integration bench venv apt clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# Debian packages the tests and the demo drive for real (PostgreSQL, cryptsetup, clevis, …).
apt:
	@bash .ci/apt-install

lint: venv
	$(VENV)/bin/ruff check teegate tests bench
	$(VENV)/bin/ruff format --check teegate tests bench

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest -q tests/unit

integration: venv apt
	$(VENV)/bin/pytest -q tests/integration

test: apt venv
	$(VENV)/bin/ruff check teegate tests bench
	$(VENV)/bin/ruff format --check teegate tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

demo: apt venv
	$(PY) -m teegate.demo

bench: venv
	$(PY) bench/verify.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache

# Boot storm: N simulated TDX VMs against R KBS replicas over PostgreSQL (bench/storm.py --help).
STORM_VMS ?= 2000
STORM_REPLICAS ?= 2
.PHONY: storm fuzz
storm: venv apt
	$(PY) bench/storm.py --vms $(STORM_VMS) --replicas $(STORM_REPLICAS)

# Coverage-guided fuzzing (atheris), FUZZ_SECONDS per target; seeds in tests/fuzz/corpus/.
FUZZ_SECONDS ?= 60
fuzz: venv
	@status=0; for target in quote jwe attestation policy; do \
	  echo "== fuzz $$target ($(FUZZ_SECONDS)s)"; \
	  $(PY) -m tests.fuzz.run $$target --seconds $(FUZZ_SECONDS) || status=1; \
	done; exit $$status
