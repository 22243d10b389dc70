# Two commands matter to a newcomer: `make test` (the whole suite) and `make lab` (later: the Vagrant lab).
# Every target installs what it needs itself, so a fresh Debian 12 machine needs nothing by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := etcd-server etcd-client runc containernetworking-plugins docker-registry busybox-static iptables iproute2 util-linux procps
PYTEST_ARGS ?=

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

test: deps lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: deps
	$(BIN)/python bench/store.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

# The lab (issue #6): Debian machines on vagrant-lxc, see the README's "The lab". These need root.
.PHONY: box lab-up lab-down lab-inventory test-lab

# The box is cached outside the clone, keyed by its recipe (lab/box/): a no-op when it is current.
box:
	@lab/box/build-box.sh

lab-up: box
	@lab/lab-up.sh

lab-down:
	@lab/lab-down.sh

lab-inventory:
	@lab/lab-inventory.sh

# Not part of `make test` (it boots machines); tests/lab/ collects only when named explicitly. The
# placement and smoke tests need the provisioned lab; test_substrate.py runs last and tears it down.
test-lab: deps lab-up provision
	$(BIN)/pytest -q tests/lab $(PYTEST_ARGS)

# Provisioning the lab (issue #6): wheelhouse, Ansible roles, placement and smoke tests.
.PHONY: wheelhouse provision
LAB_WHEELHOUSE := .lab/wheelhouse

$(BIN)/ansible-playbook: $(VENV)/.installed
	touch $@

# minikube-py and every dependency as wheels, for the machines' offline install. A fixed
# SOURCE_DATE_EPOCH makes an unchanged tree give a byte-identical wheel, so a rerun restarts nothing.
wheelhouse: deps
	mkdir -p $(LAB_WHEELHOUSE)
	rm -rf build
	SOURCE_DATE_EPOCH=315532800 $(BIN)/pip wheel -q --find-links $(LAB_WHEELHOUSE) -w $(LAB_WHEELHOUSE) .
	cd $(LAB_WHEELHOUSE) && sha256sum *.whl > ../wheelhouse.sha256

# One Ansible run over the machines `make lab-up` made (inventory/lab.ini); a rerun changes nothing.
provision: wheelhouse $(BIN)/ansible-playbook
	@test -f inventory/lab.ini || { echo "minikube-py lab: no inventory/lab.ini: run 'make lab-up' first" >&2; exit 1; }
	$(BIN)/ansible-playbook playbooks/site.yml

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
