# The two commands of the README:
#   make demo   run the whole system on this machine (web server + worker)
#   make test   run the test suite against the real PostgreSQL and Redis
PYTHON := .venv/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1

# The tests' own services: a PostgreSQL role and database of their own
# (pytest-django creates test_callcenter) and Redis database 15.
# The suite runs in TEST_WORKERS processes (pytest-xdist; 0: in this process): each worker has
# its own test database (test_callcenter_gw0, _gw1, ...) and Redis database (15, 14, ...:
# tests/fixtures/xdist_redis.py); a test file's tests run in one worker.
TEST_DATABASE_URL ?= postgres://callcenter:callcenter@127.0.0.1:5432/callcenter
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_WORKERS ?= 2

.PHONY: demo serve test bootstrap services

demo: bootstrap
	$(PYTHON) -m callcenter.ops.run --demo --host $(HOST) --port $(PORT)

# Only the services (web server + worker), no demo data: make serve PORT=9000
serve: bootstrap
	$(PYTHON) -m callcenter.ops.run --host $(HOST) --port $(PORT)

test: bootstrap services
	DATABASE_URL='$(TEST_DATABASE_URL)' REDIS_URL='$(TEST_REDIS_URL)' $(PYTHON) -m pytest -p tests.fixtures.xdist_redis -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bootstrap:
	bash scripts/bootstrap.sh

services:
	bash scripts/services.sh
