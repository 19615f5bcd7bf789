# The two commands of the README: `make demo` and `make test`.
.PHONY: demo test down status lint format typecheck bench clean

demo:
	bash scripts/setup.sh
	.venv/bin/backend.ai server up
	bash -c 'source ./env-local-user-api.sh && .venv/bin/backend.ai run --rm python -c "print(\"hello world from a container\")"'

down:
	.venv/bin/backend.ai server down

status:
	.venv/bin/backend.ai server status

test:
	bash scripts/setup.sh --test
	bash scripts/run-tests.sh

lint:
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks

format:
	.venv/bin/ruff format src tests benchmarks

typecheck:
	.venv/bin/mypy src

bench:
	bash scripts/setup.sh --test
	.venv/bin/python benchmarks/run_all.py
