"""Each component of architecture.md's placement matrix runs where it belongs and nowhere else.

Runs against the provisioned lab (``make lab-up provision``); every check is made on every machine, so
that a component missing from its group and a component leaking onto another group both fail.
"""

from __future__ import annotations

from typing import Any

import pytest

VENV_BIN = "/opt/minikube-py/venv/bin"
PKI_DIR = "/etc/minikube-py/pki"

# (component, systemd unit, port, group that runs it). Ports are checked on 0.0.0.0 and the machine's
# lab address: etcd listens on the lab address and 127.0.0.1 only, the others on 0.0.0.0.
COMPONENTS = [
    ("etcd", "etcd", 2379, "etcd"),
    ("etcd peer", "etcd", 2380, "etcd"),
    ("kube-apiserver", "kube-apiserver", 6443, "masters"),
    ("kube-controller-manager", "kube-controller-manager", 10257, "masters"),
    ("kube-scheduler", "kube-scheduler", 10259, "masters"),
    ("registry", "docker-registry", 5000, "masters"),
    ("kubelet", "kubelet", 10250, "workers"),
    ("kube-proxy", "kube-proxy", 10256, "workers"),
    ("runtime", "minikube-py-runtime", None, "workers"),
    ("apiserver fail-over listener", "minikube-py-apiserver-proxy", None, "workers"),
]

# Loopback-only ports: the kubelet's healthz, kube-proxy's metrics, the workers' API listener.
LOOPBACK_PORTS = [
    ("kubelet healthz", 10248, "workers"),
    ("kube-proxy metrics", 10249, "workers"),
    ("apiserver fail-over listener", 6443, "workers"),
]

# (path, mode, group that has it, owner). Keys, kubeconfigs and the encryption config carry credentials: 0600.
# etcd's files belong to the etcd user (Debian's etcd.service runs as etcd); the rest to root.
FILES = [
    ("/etc/minikube-py/pki/ca.crt", 0o644, "all", "root"),
    ("/etc/minikube-py/pki/apiserver.crt", 0o644, "masters", "root"),
    ("/etc/minikube-py/pki/apiserver.key", 0o600, "masters", "root"),
    ("/etc/minikube-py/pki/apiserver-kubelet-client.key", 0o600, "masters", "root"),
    ("/etc/minikube-py/pki/apiserver-etcd-client.crt", 0o644, "masters", "root"),
    ("/etc/minikube-py/pki/apiserver-etcd-client.key", 0o600, "masters", "root"),
    ("/etc/minikube-py/pki/etcd-ca.crt", 0o644, "masters", "root"),
    ("/etc/minikube-py/pki/sa.key", 0o600, "masters", "root"),
    ("/etc/minikube-py/pki/encryption-config.yaml", 0o600, "masters", "root"),
    ("/etc/minikube-py/admin.conf", 0o600, "masters", "root"),
    ("/etc/minikube-py/controller-manager.conf", 0o600, "masters", "root"),
    ("/etc/minikube-py/scheduler.conf", 0o600, "masters", "root"),
    ("/etc/minikube-py/tokens.csv", 0o600, "masters", "root"),
    ("/etc/minikube-py/pki/etcd/ca.crt", 0o644, "etcd", "etcd"),
    ("/etc/minikube-py/pki/etcd/server.crt", 0o644, "etcd", "etcd"),
    ("/etc/minikube-py/pki/etcd/server.key", 0o600, "etcd", "etcd"),
    ("/etc/minikube-py/pki/etcd/peer.crt", 0o644, "etcd", "etcd"),
    ("/etc/minikube-py/pki/etcd/peer.key", 0o600, "etcd", "etcd"),
    ("/etc/minikube-py/pki/etcd/healthcheck-client.crt", 0o644, "etcd", "etcd"),
    ("/etc/minikube-py/pki/etcd/healthcheck-client.key", 0o600, "etcd", "etcd"),
    ("/etc/minikube-py/kubelet.conf", 0o600, "workers", "root"),
    ("/etc/minikube-py/proxy.conf", 0o600, "workers", "root"),
    ("/etc/minikube-py/pki/kube-proxy.key", 0o600, "workers", "root"),
    ("/etc/minikube-py/pki/kubelet-serving.crt", 0o644, "workers", "root"),
    ("/etc/minikube-py/pki/kubelet-serving.key", 0o600, "workers", "root"),
]

def in_group(groups: dict[str, list[str]], group: str, name: str) -> bool:
    return group == "all" or name in groups[group]


def listening(host: Any, address: str, port: int) -> bool:
    # testinfra's tcp://PORT matches only wildcard listeners; a service bound to one address needs it named.
    return any(host.socket(f"tcp://{a}:{port}").is_listening for a in ("0.0.0.0", address))


@pytest.mark.parametrize(("component", "unit", "port", "group"), COMPONENTS, ids=[c[0] for c in COMPONENTS])
def test_component_runs_only_on_its_group(lab_machine: str, lab_groups: dict[str, list[str]],
                                          lab_addresses: dict[str, str], lab_host: Any, component: str,
                                          unit: str, port: int | None, group: str) -> None:
    host = lab_host(lab_machine)
    expected = in_group(lab_groups, group, lab_machine)
    service = host.service(unit)
    assert service.is_running is expected, f"{unit} running on {lab_machine}: expected {expected}"
    assert service.is_enabled is expected, f"{unit} enabled on {lab_machine}: expected {expected}"
    if port is not None:
        assert listening(host, lab_addresses[lab_machine], port) is expected, (
            f"{component} port {port} on {lab_machine}: expected listening={expected}")


@pytest.mark.parametrize(("what", "port", "group"), LOOPBACK_PORTS, ids=[p[0] for p in LOOPBACK_PORTS])
def test_loopback_port_only_on_its_group(lab_machine: str, lab_groups: dict[str, list[str]], lab_host: Any,
                                         what: str, port: int, group: str) -> None:
    host = lab_host(lab_machine)
    expected = in_group(lab_groups, group, lab_machine)
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening is expected, f"{what} on {lab_machine}"


def test_api_server_is_not_exposed_on_workers(lab_worker: str, lab_addresses: dict[str, str],
                                              lab_host: Any) -> None:
    """The workers' fail-over listener is for local clients only: no control-plane port faces the lab."""
    host = lab_host(lab_worker)
    for port in (2379, 2380, 6443, 10257, 10259, 5000):
        assert not listening(host, lab_addresses[lab_worker], port), f"port {port} open on {lab_worker}"


@pytest.mark.parametrize(("path", "mode", "group", "owner"), FILES, ids=[f[0] for f in FILES])
def test_config_file_placement_and_mode(lab_machine: str, lab_groups: dict[str, list[str]], lab_host: Any,
                                        path: str, mode: int, group: str, owner: str) -> None:
    f = lab_host(lab_machine).file(path)
    if not in_group(lab_groups, group, lab_machine):
        assert not f.exists, f"{path} should not be on {lab_machine}"
        return
    assert f.is_file, f"{path} missing on {lab_machine}"
    assert (f.user, f.group) == (owner, owner), f"{path} on {lab_machine} is {f.user}:{f.group}"
    assert f.mode == mode, f"{path} on {lab_machine} has mode {f.mode:o}, expected {mode:o}"


def test_kubelet_certificate_is_the_nodes_own(lab_machine: str, lab_groups: dict[str, list[str]],
                                              lab_host: Any) -> None:
    host = lab_host(lab_machine)
    key = host.file(f"/etc/minikube-py/pki/kubelet-{lab_machine}.key")
    if lab_machine not in lab_groups["workers"]:
        assert not key.exists
        return
    assert key.mode == 0o600
    subject = host.check_output(f"{VENV_BIN}/minikube-py pki show /etc/minikube-py/pki/kubelet-{lab_machine}.crt")
    assert f"CN=system:node:{lab_machine}" in subject and "O=system:nodes" in subject
    others = [w for w in lab_groups["workers"] if w != lab_machine]
    for other in others:
        assert not host.file(f"/etc/minikube-py/pki/kubelet-{other}.key").exists


def test_no_ca_key_on_any_machine(lab_machine: str, lab_host: Any) -> None:
    """The CA keys stay on the controller: a machine that had one could mint any identity (etcd's: any
    etcd client, i.e. read every Secret's ciphertext and write anything)."""
    # ca.key, etcd/ca.key, or a copy of either under another name ending so.
    found = lab_host(lab_machine).check_output("find /etc/minikube-py -name '*ca.key'")
    assert found == "", f"CA keys on {lab_machine}: {found}"

def test_kubelet_serving_certificate_is_the_nodes(lab_worker: str, lab_addresses: dict[str, str],
                                                  lab_host: Any) -> None:
    """The API server verifies the kubelet it calls against the cluster CA: name and address must be in it."""
    shown = lab_host(lab_worker).check_output(f"{VENV_BIN}/minikube-py pki show {PKI_DIR}/kubelet-serving.crt")
    assert f"CN=system:node:{lab_worker}" in shown and "serverAuth" in shown, shown
    assert lab_worker in shown and lab_addresses[lab_worker] in shown, shown
    assert "CN=minikube-py-ca" in shown, shown


def test_package_installed_offline(lab_machine: str, lab_host: Any) -> None:
    host = lab_host(lab_machine)
    link = host.file("/usr/local/bin/minikube-py")
    assert link.is_symlink and link.linked_to == f"{VENV_BIN}/minikube-py"
    assert "usage: minikube-py" in host.check_output("minikube-py --help")


def test_workers_have_runc_cni_plugins_and_config(lab_worker: str, lab_host: Any) -> None:
    host = lab_host(lab_worker)
    assert host.file("/usr/sbin/runc").is_file
    for plugin in ("bridge", "host-local", "loopback", "portmap"):
        assert host.file(f"/usr/lib/cni/{plugin}").is_file, plugin
    assert host.file("/run/minikube-py/runtime.sock").is_socket
    # The runtime writes the node's network config once the node has a podCIDR.
    configs = host.check_output("ls /etc/cni/net.d").split()
    assert any(c.endswith((".conf", ".conflist")) for c in configs), configs

