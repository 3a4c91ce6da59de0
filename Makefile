# The two commands of the quick start:
#   make book   set up .venv, execute every chapter (quick profile) and build the HTML book
#   make test   set up .venv, run the unit tests, exercise checks and every notebook (smoke profile)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup book test test-fast lab bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# One stamp per extra: re-installs only when pyproject.toml changes.
$(VENV)/.stamp-test: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[test]'
	touch $@

$(VENV)/.stamp-book: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[book]'
	touch $@

setup: $(VENV)/.stamp-test $(VENV)/.stamp-book

test: $(VENV)/.stamp-test
	UNCLIP_LITE_PROFILE=smoke $(PY) -m pytest -q -n auto --dist loadgroup --durations=10 notebooks tests --nbmake --nbmake-timeout=300 -p no:cacheprovider

# The quick set for a developer: no shipped-checkpoint evaluations, training runs or notebooks.
test-fast: $(VENV)/.stamp-test
	UNCLIP_LITE_PROFILE=smoke $(PY) -m pytest -q -n auto -m "not slow and not dist" tests -p no:cacheprovider

book: $(VENV)/.stamp-book
	rm -rf _build/html _build/.doctrees _build/jupyter_execute
	UNCLIP_LITE_PROFILE=quick $(PY) tools/kernel_polling.py jupyter-book build . --warningiserror --keep-going --nitpick

lab: $(VENV)/.stamp-book
	$(VENV)/bin/jupyter lab notebooks/

bench: $(VENV)/.stamp-test
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf _build .pytest_cache
