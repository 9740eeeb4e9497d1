# zrelay — every entry point a user or CI needs. Run as root on Debian 12.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := zfs-fuse openssh-server openssh-client pv mbuffer tmux python3-venv zstd age systemd
LAB := $(BIN)/python lab/zfslab.py
# The OpenZFS tier (lab/openzfs.py: qemu guests, image built with mmdebstrap); binary:package
OPENZFS_TOOLS := qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils mmdebstrap:mmdebstrap \
  mkfs.ext4:e2fsprogs ssh:openssh-client ssh-keygen:openssh-client
# tests/openzfs (OpenZFS-only features) joins the run once it exists
OPENZFS_TESTS := tests/integration $(wildcard tests/openzfs)
INVENTORY := inventory/lab.yml

.PHONY: help install deps venv lab-up lab-down demo test test-unit test-lab lint bench bench-deps clean \
  openzfs-deps openzfs-image test-openzfs openzfs-down

help:
	@echo "make demo      install, start the 3-host lab and S3, replicate, push offsite, show status"
	@echo "make test      install, start the lab, run every test"
	@echo "make test-openzfs  the integration tests against OpenZFS 2.3 in qemu guests (first run builds the image)"
	@echo "make openzfs-down  power off the OpenZFS guests"
	@echo "make bench     benchmarks (prints ratios against OpenSSH measured in the same run)"
	@echo "make lab-up | lab-down"

install: deps venv

# System packages, only when something is missing (apt is slow even when it has nothing to do).
deps:
	@missing=""; \
	for bin in zfs-fuse:zfs-fuse sshd:openssh-server ssh:openssh-client pv:pv mbuffer:mbuffer tmux:tmux zstd:zstd age:age \
	  systemd-analyze:systemd; do \
	  command -v $${bin%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${bin%%:*} ] || missing="$$missing $${bin##*:}"; \
	done; \
	$(PY) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); } \
	    > /tmp/zrelay-apt.log 2>&1 || { cat /tmp/zrelay-apt.log; exit 1; }; \
	fi

venv: $(VENV)/.installed

# constraints.txt: the exact versions the suite is run with (pyproject.toml has the ranges)
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "installing zrelay and the tested versions of its dependencies into $(VENV)"
	@{ $(BIN)/pip install --upgrade pip && $(BIN)/pip install -c constraints.txt -e '.[test]'; } \
	  > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }   # quiet unless it fails
	touch $@

lab-up: install
	$(LAB) up
	$(BIN)/python lab/seaweed.py up

lab-down:
	-$(PY) lab/seaweed.py down
	$(PY) lab/zfslab.py down

demo: lab-up
	$(BIN)/python lab/demo_data.py
	$(BIN)/zrelay -i $(INVENTORY) sync --dry-run
	$(BIN)/zrelay -i $(INVENTORY) sync --snapshot
	eval "$$($(BIN)/python lab/seaweed.py env)" && $(BIN)/zrelay -i $(INVENTORY) s3-push && \
	  $(BIN)/zrelay -i $(INVENTORY) s3-ls
	eval "$$($(BIN)/python lab/seaweed.py env)" && $(BIN)/zrelay -i $(INVENTORY) status

# Layering (import-linter contracts) and types (mypy: the package at default strictness, the pure
# core with every --strict flag; both configured in pyproject.toml). Either failing fails the target.
lint: venv
	$(BIN)/lint-imports
	$(BIN)/mypy

test: install
	$(BIN)/lint-imports
	$(BIN)/mypy
	ZRELAY_REQUIRE_LAB=1 $(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 tests

# The VM tier: same integration tests (plus tests/openzfs) against OpenZFS 2.3 guests. The image is
# built here, visibly (about 20 minutes the first time, then cached in /var/tmp/zrelay-lab-openzfs);
# the test session boots the guests (1-2 minutes) and powers off the ones it booted.
test-openzfs: install openzfs-deps openzfs-image
	ZRELAY_LAB=openzfs ZRELAY_REQUIRE_LAB=1 $(BIN)/python -m pytest -q -p no:cacheprovider --durations=25 $(OPENZFS_TESTS)

openzfs-deps:
	@missing=""; \
	for bin in $(OPENZFS_TOOLS); do \
	  command -v $${bin%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${bin%%:*} ] || [ -x /sbin/$${bin%%:*} ] || \
	    missing="$$missing $${bin##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

openzfs-image: venv
	$(BIN)/python lab/openzfs.py build

openzfs-down:
	$(PY) lab/openzfs.py down

test-unit: venv
	$(BIN)/python -m pytest -q tests/unit

# syncoid (Debian's sanoid) is the side-by-side baseline of the syncoid benchmark
bench-deps:
	@command -v syncoid >/dev/null 2>&1 || [ -x /usr/sbin/syncoid ] || { echo "installing: sanoid"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sanoid >/dev/null; }

bench: lab-up bench-deps
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
