# The two set-up commands of the README: `make run` and `make test`.
.PHONY: run test bench

run:
	@scripts/bootstrap
	.venv/bin/hotline serve

test:
	@scripts/bootstrap
	.venv/bin/python -m pytest -q $(PYTEST_ARGS)

bench:
	@scripts/bootstrap
	.venv/bin/python bench/agi_calls.py
