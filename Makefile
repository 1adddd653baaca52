# Everything a fresh machine needs goes through these targets; see README.md.
#   make demo   deploy the sample services into a local container and show them answering
#   make test   lint, build, unit tests and every molecule scenario
#   make bench  benchmarks (not part of make test)
#   make sanity ansible-test sanity on the built collection (part of make test)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# ansible-test installs each sanity test's own requirements; it gets a virtualenv of its own so
# that they never mix with the tools of $(VENV).
SANITY_VENV := .venv-sanity
# sslyze (the gateway scenario's TLS scan) pins an older cryptography than $(VENV)'s tools: its own.
SSLYZE_VENV := .venv-sslyze
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Scenarios run by `make test`; override to run a subset: make molecule SCENARIOS=default
SCENARIOS ?= $(patsubst molecule/%/molecule.yml,%,$(wildcard molecule/*/molecule.yml))
# Every scenario runs on Debian 12; the default scenario also on these images (Debian 13).
# When MICROSVC_IMAGE is set (a CI matrix), only that image is used.
EXTRA_IMAGES ?= $(if $(MICROSVC_IMAGE),,microsvc-test/debian:trixie)
# Scenarios run in this many parallel queues (tools/molecule-queues; 1: one after another).
MOLECULE_JOBS ?= 3
VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
TARBALL := dist/microsvc-deploy-$(VERSION).tar.gz

.PHONY: help venv images lint build sanity unit checks molecule test demo demo-clean bench clean

help:
	@sed -n 's/^#   //p' Makefile

$(VENV)/.stamp: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.stamp

images: venv
	tools/ensure-docker
	tools/base-image --suite bookworm
	tools/base-image --suite trixie

lint: venv
	yamllint --strict .
	ansible-lint --profile production
	ruff check plugins roles tools tests molecule samples
	check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	zizmor --offline .github/workflows/
	tools/gen-docs --check

build: venv
	rm -rf dist
	ansible-galaxy collection build --output-path dist .
	$(BIN)/python tests/check_build.py $(TARBALL)

$(SANITY_VENV)/.stamp: requirements-dev.txt
	$(PYTHON) -m venv $(SANITY_VENV)
	$(SANITY_VENV)/bin/pip install --quiet --disable-pip-version-check "$$(grep '^ansible-core==' requirements-dev.txt)"
	touch $@

sanity: build $(SANITY_VENV)/.stamp
	ANSIBLE_TEST=$(CURDIR)/$(SANITY_VENV)/bin/ansible-test tools/sanity $(TARBALL)

unit: venv
	$(BIN)/python -m pytest -q tests/unit tests/integration

$(SSLYZE_VENV)/.stamp: requirements-sslyze.txt
	$(PYTHON) -m venv $(SSLYZE_VENV)
	$(SSLYZE_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-sslyze.txt
	touch $@

molecule: venv images $(SSLYZE_VENV)/.stamp
	tools/molecule-queues --jobs $(MOLECULE_JOBS) --images "$(EXTRA_IMAGES)" $(SCENARIOS)

# Lint and the build first (quick, and they fail fast); then the sanity and unit tests run beside
# the molecule scenarios, which spend most of their time waiting for their containers.
test: lint build
	$(MAKE) --no-print-directory -j2 --output-sync=line molecule checks

# ansible-test sanity, then the unit and integration tests, one after the other.
checks:
	$(MAKE) --no-print-directory -j1 sanity unit

demo: venv
	tools/ensure-docker
	$(BIN)/python tools/demo

demo-clean:
	docker rm -f microsvc-demo >/dev/null 2>&1 || true

# run.py: the containers' benchmarks (benchmarks/results.md); plan_scale.py: the validation play
# at 1 and 100 never-contacted hosts next to a trivial play (benchmarks/plan_scale.md); venv_speed.py:
# virtualenv builds, pip against uv, cold and warm (benchmarks/venv_speed.md); asgi.py: the gateway
# to an ASGI service against the same server directly (benchmarks/asgi.md); add_service.py: a
# Django + Celery service added to a converged host, the whole site.yml run (benchmarks/venv_speed.md).
bench: venv images
	$(BIN)/pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/plan_scale.py
	$(BIN)/python benchmarks/venv_speed.py
	$(BIN)/python benchmarks/asgi.py
	$(BIN)/python benchmarks/add_service.py

clean:
	rm -rf dist .pytest_cache
