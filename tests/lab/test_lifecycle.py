"""The rest of a lab's life, after placement and smoke: a second provisioning run changes nothing, the reset
playbook leaves the machines as the box made them, and destroying the lab leaves nothing on the host.

Runs last (conftest.py orders the files), end to end only: it resets and destroys the lab.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from minikube_py.lab.names import lab_env
from tests.lab.conftest import E2E, LAB, REPO, record_phase, run, timed

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not E2E, reason="resets and destroys the lab: end to end only (make test-lab)"),
]

ENV = lab_env(REPO)
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")

# What provisioning adds to a machine, each as a shell test that prints a line when it is still there.
# Reset must leave none of it; the box's own parts (Debian packages, the dependency venv) stay.
LEFTOVER_CHECKS = r"""
for u in kubelet kube-proxy minikube-py-runtime minikube-py-apiserver-proxy kube-scheduler \
         kube-controller-manager kube-apiserver; do
  [ -e /etc/systemd/system/$u.service ] && echo "unit file $u.service"
done
for u in kubelet kube-proxy minikube-py-runtime minikube-py-apiserver-proxy kube-scheduler \
         kube-controller-manager kube-apiserver etcd docker-registry; do
  [ "$(systemctl is-active $u)" = inactive ] || echo "unit $u is $(systemctl is-active $u)"
  [ "$(systemctl is-enabled $u 2>/dev/null)" = enabled ] && echo "unit $u is enabled"
done
for p in /etc/minikube-py /var/lib/minikube-py /run/minikube-py /var/log/pods /var/lib/cni /etc/cni/net.d \
         /var/cache/minikube-py /usr/local/bin/minikube-py /usr/local/bin/kubectl \
         /etc/sysctl.d/90-minikube-py.conf /opt/minikube-py/installed.sha256 /opt/minikube-py/venv/bin/minikube-py \
         /var/lib/etcd/minikube-py /var/lib/docker-registry/docker /etc/default/etcd.dpkg-minikube-py \
         /etc/docker/registry/config.yml.dpkg-minikube-py; do
  [ -e "$p" ] || [ -L "$p" ] && echo "path $p"
done
for save in iptables-legacy-save iptables-nft-save; do
  command -v $save >/dev/null && $save 2>/dev/null | grep -q 'KUBE-' && echo "KUBE- rules in $save"
done
[ -n "$(ip netns list)" ] && echo "network namespaces: $(ip netns list | tr '\n' ' ')"
ip link show cni0 >/dev/null 2>&1 && echo "bridge cni0"
[ -n "$(ip -4 route show root 10.244.0.0/16)" ] && echo "pod network routes"
[ -n "$(ip -4 route show exact 10.96.0.0/12)" ] && echo "service range route"
grep -q 'minikube-py lab machines' /etc/hosts && echo "/etc/hosts block"
awk '$5 ~ "minikube-py" {print "mount " $5}' /proc/self/mountinfo
ss -Hltn | awk '{print $4}' | grep -E ':(2379|2380|5000|6443|10248|10249|10250|10256|10257|10259)$' \
  | sed 's/^/listening /'
pgrep -a -x minikube-py | sed 's/^/process /'
[ -f /opt/minikube-py/venv/minikube-py-deps ] || echo "the box's dependency venv is gone"
true
"""


def recap(lines: list[str]) -> dict[str, dict[str, int]]:
    """host -> ok/changed/unreachable/failed from ansible-playbook's PLAY RECAP."""
    out = {}
    for line in lines:
        m = RECAP.match(line.strip())
        if m:
            out[m.group(1)] = dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups()[1:]),
                                       strict=True))
    return out


def test_second_provisioning_changes_nothing(lab_groups: dict[str, list[str]]) -> None:
    # The playbook itself, as the issue says, on the wheelhouse of the first run: `make provision` would
    # also rebuild the wheel, and a source tree edited meanwhile is a real change, not a failure of the roles.
    start = time.monotonic()
    proc = run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "playbooks/site.yml"], timeout=900)
    record_phase("second provision", time.monotonic() - start)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    result = recap(proc.stdout.splitlines())
    machines = {h for g in lab_groups.values() for h in g}
    assert set(result) == machines, proc.stdout[-3000:]
    changed = {h: r for h, r in result.items() if r["changed"] or r["failed"] or r["unreachable"]}
    assert not changed, f"the second run changed something: {changed}\n{proc.stdout[-6000:]}"


def test_reset_leaves_the_machines_as_the_box_made_them(lab_groups: dict[str, list[str]], lab_host: Any) -> None:
    timed([str(REPO / ".venv" / "bin" / "ansible-playbook"), "playbooks/reset.yml"], "reset")
    leftovers = {}
    for name in dict.fromkeys(h for g in lab_groups.values() for h in g):
        result = lab_host(name).run(LEFTOVER_CHECKS)
        assert result.rc == 0, f"{name}: {result.stderr}"
        if result.stdout.strip():
            leftovers[name] = result.stdout.strip().splitlines()
    assert not leftovers, f"reset left: {leftovers}"


def test_destroy_leaves_nothing_on_the_host(lab_groups: dict[str, list[str]]) -> None:
    prefix, bridge = ENV["LAB_CONTAINER_PREFIX"], ENV["LAB_BRIDGE"]
    timed([str(LAB / "lab-down.sh")], "destroy", timeout=600)
    containers = [n for n in run(["lxc-ls", "-1"]).stdout.split() if n.startswith(prefix)]
    assert containers == []
    assert not list(Path("/var/lib/lxc").glob(f"{prefix}*"))
    assert run(["ip", "link", "show", "dev", bridge]).returncode != 0, f"bridge {bridge} is still there"
    assert not (Path(ENV["LAB_REGISTRY_DIR"]) / ENV["LAB_ID"]).exists()
    for path in (REPO / ".lab", REPO / ".vagrant", REPO / "inventory" / "lab.ini"):
        assert not path.exists(), f"{path} is still there"
    # No LXC monitor, vagrant or ssh master of this lab lives on.
    processes = subprocess.run(["pgrep", "-a", "-f", f"{prefix}|{REPO}/.lab/"], capture_output=True,
                               text=True, check=False).stdout
    assert processes.strip() == "", processes
    for save in ("iptables-save", "ip6tables-save"):
        rules = subprocess.run([save], capture_output=True, text=True, check=False).stdout
        assert bridge not in rules, f"{save} mentions {bridge}"
