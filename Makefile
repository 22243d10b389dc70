# Two commands matter to a newcomer: `make test` (the whole suite) and `make lab` (later: the Vagrant lab).
# Every target installs what it needs itself, so a fresh Debian 12 machine needs nothing by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := etcd-server etcd-client runc containernetworking-plugins docker-registry busybox-static iptables iproute2 util-linux procps
PYTEST_ARGS ?=
LAB_PYTEST_ARGS ?=

.PHONY: deps apt-deps test lint bench clean

deps: apt-deps $(VENV)/.installed

# Install the Debian packages only when one is missing: apt-get is slow even as a no-op.
apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,lab]'
	touch $@

lint: deps
	$(BIN)/ruff check .
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ansible-lint -q --offline roles playbooks

# The suite, then the lab end to end (tests/lab: bring-up, placement, smoke, idempotence, reset,
# destroy) as a second pytest run: the lab needs root and boots machines, and runs last so that the
# rest reports even when the lab cannot start. Both always run; either failing fails `make test`.
# (The lab part is test-lab's recipe spelled out: a $(MAKE) line would run even under `make -n`.)
test: deps lint
	@rc=0; $(BIN)/pytest -q $(PYTEST_ARGS) || rc=$$?; \
	  { lab/box/build-box.sh && lab/test-lab.sh $(LAB_PYTEST_ARGS); } || rc=$$?; \
	  exit $$rc

bench: deps
	$(BIN)/python bench/store.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

# The lab (issue #6): Debian machines on vagrant-lxc, see the README's "The lab". These need root.
.PHONY: box lab-up lab-down lab-inventory test-lab

# The box is cached outside the clone, keyed by its recipe (lab/box/): a no-op when it is current.
box: deps
	@lab/box/build-box.sh

lab-up: box
	@lab/lab-up.sh

lab-down:
	@lab/lab-down.sh

lab-inventory:
	@lab/lab-inventory.sh

# The lab end to end, as `make test` runs it (lab/test-lab.sh): the box (cached), then tests/lab/ brings
# a lab of MASTERS=1 WORKERS=2 up, provisions it, checks it and destroys it. It replaces any other
# minikube-py lab on this machine (they share 192.168.56.0/24) and never leaves one behind, even when
# a test fails or it is interrupted. LAB_PYTEST_ARGS go to pytest.
test-lab: deps box
	@lab/test-lab.sh $(LAB_PYTEST_ARGS)

# Provisioning the lab (issue #6): wheelhouse, Ansible roles, placement and smoke tests.
.PHONY: wheelhouse provision

$(BIN)/ansible-playbook: $(VENV)/.installed
	touch $@

# minikube-py's wheel (rebuilt only when its source changed) and its dependencies as one archive of
# wheels (built once per dependency list, shared by clones; the box has them baked in already), for the
# machines' offline install. An unchanged tree gives the same manifest, so a rerun restarts nothing.
wheelhouse: deps
	@lab/wheelhouse.sh

# One Ansible run over the machines `make lab-up` made (inventory/lab.ini); a rerun changes nothing.
# A failed run ends in one line per failed task: the machine, the cause and the fix (lab/provision.sh).
# ANSIBLE_ARGS go to ansible-playbook.
ANSIBLE_ARGS ?=
provision: wheelhouse $(BIN)/ansible-playbook
	@lab/provision.sh $(ANSIBLE_ARGS)

# The whole lab in one command (issue #6): host packages and the box (cached), the machines, one
# provisioning run, the placement tests, then what runs where and how to reach it. Sub-makes keep the
# phases in order even under `make -j` (provision does not depend on lab-up). The summary is printed
# even when a placement test fails (it shows what runs where); the failure is still the exit code.
.PHONY: lab lab-status
lab: deps
	@$(MAKE) --no-print-directory lab-up
	@$(MAKE) --no-print-directory provision
	@rc=0; $(BIN)/pytest -q -p no:cacheprovider tests/lab/test_placement.py $(PYTEST_ARGS) || rc=$$?; \
	  $(BIN)/minikube-py lab status; exit $$rc

lab-status:
	@$(BIN)/minikube-py lab status
