# The lab's play strategy (playbooks/*.yml: `strategy: lab_free`, found through ansible.cfg's
# strategy_plugins): Mitogen's `mitogen_free` when the `mitogen` package is installed (the `lab`
# extra), else Ansible's own `free`. Mitogen runs every module in one persistent Python per machine
# instead of an ssh round trip and a fresh interpreter per task. MINIKUBE_PY_LAB_MITOGEN=0 forces plain
# Ansible (to compare, or to rule Mitogen out when something misbehaves).
from __future__ import annotations

import os

DOCUMENTATION = """
    name: lab_free
    short_description: mitogen_free when Mitogen is installed, else free
    description:
        - Ansible's free strategy, run through Mitogen for Ansible when the mitogen package is importable
          and MINIKUBE_PY_LAB_MITOGEN is not 0.
    author: minikube-py
"""

StrategyModule = None
if os.environ.get("MINIKUBE_PY_LAB_MITOGEN", "1") != "0":
    try:
        from ansible_mitogen.plugins.strategy.mitogen_free import StrategyModule
    except ImportError:
        StrategyModule = None
if StrategyModule is None:
    from ansible.plugins.strategy.free import StrategyModule
