# fmnist: `make run` trains and evaluates the default model; `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
RUN    ?= runs/default
# Debian packages: the dataset (when missing) and, for the report's browser test, Chromium.
APT_DATA    = dataset-fashion-mnist
APT_BROWSER = chromium

.PHONY: run test install data system-deps lint format bench clean

$(BIN)/fmnist: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/fmnist

# The dataset: already found somewhere (see `fmnist data`)? Else Debian's package when we
# are root with apt; else `fmnist data` downloads it from the official mirrors.
data: install
	@$(BIN)/python -c "import fmnist.data as d; d.locate(download_missing=False)" 2>/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && { apt-get update -qq && apt-get install -y -qq $(APT_DATA); } || true; }
	$(BIN)/fmnist data

run: data
	$(BIN)/fmnist train --out $(RUN)
	@echo "results: $(RUN)/ (open $(RUN)/report.html)"

# What the tests need beyond Python packages: the real dataset and a headless browser.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  [ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing $(APT_DATA)"; \
	  command -v chromium >/dev/null || missing="$$missing $(APT_BROWSER)"; \
	  if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing; fi; \
	fi

test: install system-deps
	$(BIN)/ruff check src tests benchmarks examples docs
	$(BIN)/ruff format --check src tests benchmarks examples docs
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests benchmarks examples docs

format: install
	$(BIN)/ruff format src tests benchmarks examples docs
	$(BIN)/ruff check --fix src tests benchmarks examples docs

# The speed benchmarks against PyTorch need the bench extra (torch; only its CPU threads are used).
bench: install
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/conv_speed.py
	$(BIN)/python benchmarks/time_to_accuracy.py --torch

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
