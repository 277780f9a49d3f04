# TaskHub: `make run` starts a development server with a worker; `make test` runs every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test fuzz cluster-test mutation superuser lint venv clean bench messages

$(VENV)/.runtime-installed: requirements.txt
	scripts/ensure-system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.test-installed: $(VENV)/.runtime-installed requirements-test.txt
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

venv: $(VENV)/.runtime-installed

# Compiled translations (.mo) are generated, never committed.
messages: $(VENV)/.runtime-installed
	DEBUG=$${DEBUG:-1} $(PY) manage.py compilemessages --ignore .venv --ignore .venv-django61 --ignore bench >/dev/null

run: $(VENV)/.runtime-installed messages
	scripts/run-dev

test: $(VENV)/.test-installed
	scripts/test

# The schemathesis run alone (it is part of `make test` too): schema and server must agree.
fuzz: $(VENV)/.test-installed
	DATABASE_TYPE=sqlite $(PY) -m pytest -q -m fuzz tasks/tests/test_api_schema.py

# The multi-host tests (docs/SCALING.md): the replica router against a private MariaDB primary and
# replica (scripts/cluster/mariadb-pair), then the network-namespace drills (scripts/cluster/netns-drills,
# root). Never the server on 3306; everything started is stopped, also on failure.
cluster-test: $(VENV)/.test-installed
	DATABASE_TYPE=sqlite $(PY) -m pytest -m cluster tasks/tests/test_replica_live.py
	scripts/cluster/netns-drills

# Mutation testing of the modules that carry the promises (docs/TESTING.md). Local, never CI:
# CPU-heavy. `make mutation MODULES=tasks/worker/held.py` runs one; DATABASE_TYPE=mysql for MariaDB.
$(VENV)/.mutation-installed: $(VENV)/.test-installed requirements-mutation.txt
	$(PY) -m pip install --quiet -r requirements-mutation.txt
	touch $@

mutation: $(VENV)/.mutation-installed
	scripts/mutation $(MODULES)

superuser: $(VENV)/.runtime-installed
	DEBUG=$${DEBUG:-1} $(PY) manage.py createsuperuser

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .venv-django61 var/test bench/.venv

# Benchmarks (bench/README.md): their own venv, so the peers never enter the project's.
BENCH_VENV := bench/.venv
$(BENCH_VENV)/.installed: requirements.txt bench/requirements.txt
	scripts/ensure-system-deps
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -r bench/requirements.txt
	touch $@

bench: $(BENCH_VENV)/.installed
	bench/ensure-wrk
	$(BENCH_VENV)/bin/python -m bench
