# Two commands do all set-up on a fresh machine:
#   make demo   - install into .venv, prepare the default model, process the sample emails
#   make test   - install into .venv plus the test servers' packages, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is needed only to convert and train models; this pin is the CPU build.
TORCH  ?= torch==2.13.0

.PHONY: demo test install models lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -c constraints.txt -e '.[convert,dev]'
	touch $@

install: $(VENV)/.installed

models: install
	$(BIN)/mailbot model prepare

demo: models
	$(BIN)/mailbot demo

test: install
	scripts/test-deps.sh
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check mailbot tests bench migrations
	$(BIN)/mypy mailbot

clean:
	rm -rf $(VENV) var .pytest_cache
