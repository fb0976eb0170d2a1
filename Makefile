# edgemir — two commands: `make run` (live analysis) and `make test` (the whole suite).
# `make run` installs the runtime only (what a Pi needs); `make test` adds training and test tools.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# one place decides the torch build per architecture (a CPU build; see the script)
TORCH_VERSION ?= $(shell bash deploy/torch-version.sh)
RUN_APT := libportaudio2 python3-venv
TEST_APT := $(RUN_APT) fluidsynth fluid-soundfont-gm avldrums.lv2-soundfont hydrogen-drumkits alsa-utils tmux shellcheck jackd2 systemd \
	musescore-general-soundfont-small csound-soundfont python3-seccomp \
	festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test setup setup-run system-run system-test lint clean

run: setup-run
	$(VENV)/bin/edgemir run $(ARGS)

test: setup
	$(PY) -m ruff check edgemir train tests
	$(PY) -m pytest -q $(PYTEST_ARGS)

setup-run: system-run $(VENV)/.installed-run
setup: system-test $(VENV)/.installed-run $(VENV)/.installed-test

# Debian / Raspberry Pi OS system packages, installed only when missing.
define apt_missing
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef
system-run:
	$(call apt_missing,$(RUN_APT))
system-test:
	$(call apt_missing,$(TEST_APT))

$(VENV)/.installed-run: pyproject.toml Makefile deploy/torch-version.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(PY) -m pip install -q -e ".[train,dev]"
	touch $@

lint: setup
	$(PY) -m ruff check edgemir train tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
