"""The rest of a lab's life, after placement and smoke: a second provisioning run changes nothing, the reset
playbook leaves the machines as the box made them, provisioning those clean machines again with a fault
injected fails halfway with one line naming the cause and the fix and a rerun then finishes the cluster,
and destroying the lab leaves nothing on the host.

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


# The fault: another server holds the kubelet's health port on one worker (it hangs up on every caller).
FAULT_UNIT = "mkpy-lab-fault"
FAULT_PORT = 10248
# SO_REUSEADDR: the kubelet's last health checks before the reset leave the port in TIME_WAIT for a minute.
SQUATTER = ("import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
            f"s.bind(('127.0.0.1', {FAULT_PORT})); s.listen()\nwhile True: s.accept()[0].close()")


def test_a_task_failing_halfway_names_the_cause_and_a_rerun_picks_up(lab_groups: dict[str, list[str]],
                                                                      lab_host: Any) -> None:
    """On the machines the reset left clean, provisioning stops on the faulty worker at its kubelet (its
    earlier roles done, the other machines finished) with one line naming the machine, the unit, the cause
    from the unit's journal and the fix. With the fault gone, a rerun finishes: every node is Ready."""
    worker = lab_groups["workers"][0]
    host = lab_host(worker)
    started = host.run(f"systemd-run --quiet --collect --unit {FAULT_UNIT} /usr/bin/python3 -c %s", SQUATTER)
    assert started.rc == 0, started.stderr
    try:
        deadline = time.monotonic() + 30
        while not host.run(f"ss -Hltn 'sport = :{FAULT_PORT}' | grep -q LISTEN").rc == 0:
            assert time.monotonic() < deadline, (f"the squatter never listened on {worker}:{FAULT_PORT}: "
                                                 + host.run(f"journalctl -u {FAULT_UNIT} | tail -5").stdout)
            time.sleep(0.2)
        # A short wait for the kubelet's health (60 s by default) keeps the test quick; the message is the same.
        start = time.monotonic()
        failed = run(["make", "--no-print-directory", "provision", "ANSIBLE_ARGS=-e kubelet_health_retries=5"],
                     timeout=900)
        record_phase("provision with a fault", time.monotonic() - start)
    finally:
        host.run(f"systemctl stop {FAULT_UNIT}")
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, output[-4000:]
    result = recap(failed.stdout.splitlines())
    assert result[worker]["failed"] == 1, output[-4000:]
    others = {h: r for h, r in result.items() if h != worker and (r["failed"] or r["unreachable"])}
    assert not others, f"only {worker} should fail: {others}"
    said = [line for line in failed.stderr.splitlines() if line.startswith("minikube-py lab: ")]
    assert len(said) == 1, failed.stderr[-4000:]
    line = said[0]
    for part in (worker, "kubelet", "address already in use", "make provision", "picks up"):
        assert part in line, f"{part!r} missing from: {line}"
    # Halfway: the worker's roles before the kubelet ran (the runtime is up), the ones after it did not.
    assert host.run("systemctl is-active minikube-py-runtime").stdout.strip() == "active"
    assert not host.file("/etc/systemd/system/kube-proxy.service").exists

    start = time.monotonic()
    rerun = run(["make", "--no-print-directory", "provision"], timeout=900)
    record_phase("provision again", time.monotonic() - start)
    assert rerun.returncode == 0, rerun.stdout[-4000:] + rerun.stderr[-2000:]
    assert all(r["failed"] == 0 for r in recap(rerun.stdout.splitlines()).values())
    kubectl = [str(REPO / ".venv" / "bin" / "kubectl"), "--kubeconfig", str(REPO / ".lab" / "admin.kubeconfig")]
    ready = run([*kubectl, "wait", "--for=condition=Ready", "node", "--all", "--timeout=120s"], timeout=180)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    nodes = run([*kubectl, "get", "nodes", "-o", "name"]).stdout.split()
    assert sorted(nodes) == sorted(f"node/{w}" for w in lab_groups["workers"])


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
