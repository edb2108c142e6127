# The commands of the README:
#   make demo   set up, then run the whole pipeline on embedded defaults
#   make test   set up, then run the checks and the whole test suite (what CI runs)
#   make check  set up, then the checks and the fast tier: tests that start no
#               broker or server and are not marked slow (a few minutes)
#   make bench  set up, then a quick form of every benchmark
.PHONY: setup demo test check lint bench clean

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/voipflow demo

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

# Two pytest processes, one per core of the reference machine. Whole test files go
# to one process (--dist loadfile), so a file's module fixtures start once; each
# process starts its own session broker and engines.
PYTEST_PROCESSES ?= 2

# --durations: the slowest tests at the end, to keep the whole suite under 20 minutes.
test: setup lint
	.venv/bin/python -m pytest -n $(PYTEST_PROCESSES) --dist loadfile --durations=25

# pytest exits 5 when it collects nothing, which fails this target too.
check: setup lint
	.venv/bin/python -m pytest -q -m "not kafka and not slow"

bench: setup
	.venv/bin/python -m benchmarks

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
