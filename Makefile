# The two commands of the quick start:
#   make book   set up .venv, execute every chapter (quick profile) and build the HTML book
#   make test   set up .venv, run the unit tests, exercise checks and every notebook (smoke profile)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# The book and the tests run every chapter with the exercises' reference solutions filled in; a
# learner's Run All (without it) reports each unfinished exercise as not done.
export UNCLIP_LITE_SOLUTIONS := 1

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
	$(PY) tools/vendor_js.py
	rm -rf _build/html _build/.doctrees _build/jupyter_execute
	UNCLIP_LITE_PROFILE=quick $(PY) tools/kernel_polling.py jupyter-book build . --warningiserror --keep-going --nitpick

# MathJax, require.js and the ipywidgets embed manager for the book's pages, fetched once with
# `npm pack` (pinned in tools/vendor_js.py) into .cache/vendor/: the book is read offline, no CDN.
.PHONY: vendor-js
vendor-js: | $(PY)
	$(PY) tools/vendor_js.py

lab: $(VENV)/.stamp-book
	$(VENV)/bin/jupyter lab notebooks/

bench: $(VENV)/.stamp-test
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf _build .pytest_cache

# ---- The book seen in a real browser (headless Chromium, driven by Playwright) -------------------
#   make check-book       open every page of _build/html; fail on broken images, empty figures, JS errors
#   make runtimes         after `make book`: write notebooks/runtimes.json (chapter run times)
#   make lab-walkthrough  Run All on chapter 00 in JupyterLab, move its slider, screenshot
CHROMIUM ?= /usr/bin/chromium

.PHONY: check-book runtimes lab-walkthrough chromium

$(VENV)/.stamp-browser: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[browser]'
	touch $@

# Debian's Chromium, installed when absent (as root; otherwise says what to run).
chromium:
	@test -x $(CHROMIUM) || command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else echo "Chromium is missing: sudo apt-get install -y chromium" >&2; exit 2; fi; }

check-book: $(VENV)/.stamp-browser chromium
	$(PY) tools/check_book.py

runtimes: $(VENV)/.stamp-book
	$(PY) tools/record_runtimes.py

lab-walkthrough: $(VENV)/.stamp-book $(VENV)/.stamp-browser chromium
	$(PY) tools/lab_walkthrough.py
