# Two commands do all set-up on a fresh machine:
#   make run    install into .venv, then the whole pipeline on ml-latest-small (configs/ml-latest-small.toml)
#   make test   install into .venv (with dev tools), then lint and the default test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch: the small CPU build unless TORCH_SPEC says otherwise (e.g. TORCH_SPEC=torch on a GPU box)
TORCH_SPEC ?= torch==2.13.0
FAISS_EXTRA ?= cpu
CONFIG ?= configs/ml-latest-small.toml
RUN_DIR ?= runs/ml-latest-small

.PHONY: install run test lint bench clean

$(BIN)/rec: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(FAISS_EXTRA),dev]"
	touch $(BIN)/rec

install: $(BIN)/rec

run: install
	$(BIN)/rec run --config $(CONFIG) --run-dir $(RUN_DIR)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
