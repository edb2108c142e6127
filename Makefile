# The two commands of the README:
#   make demo   set up, then run the whole pipeline on embedded defaults
#   make test   set up, then run the checks and the test suite
.PHONY: setup demo test lint bench clean

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/voipflow demo

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

test: setup lint
	.venv/bin/python -m pytest

bench: setup
	.venv/bin/python -m benchmarks

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
