# edgemir — two commands: `make run` (live analysis) and `make test` (the whole suite).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
APT_PACKAGES := libportaudio2 fluidsynth fluid-soundfont-gm avldrums.lv2-soundfont alsa-utils tmux shellcheck jackd2 systemd \
	musescore-general-soundfont-small csound-soundfont
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test setup system venv lint clean

run: setup
	$(VENV)/bin/edgemir run $(ARGS)

test: setup
	$(PY) -m ruff check edgemir train tests
	$(PY) -m pytest -q $(PYTEST_ARGS)

setup: system $(VENV)/.installed

# Debian / Raspberry Pi OS system packages, installed only when missing.
system:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[train,dev]"
	touch $@

lint: setup
	$(PY) -m ruff check edgemir train tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
