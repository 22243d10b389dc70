"""The node harness's own parts: names and addresses from the data dir, the subnet choice, the root
check, and ``cleanup`` of a crashed run (real namespaces and a bridge, root only)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

import pytest

from minikube_py import localnodes
from minikube_py.cli.main import main
from minikube_py.localnodes import (
    ROOT_ERROR,
    LocalNodes,
    NetworkPlan,
    NodesError,
    choose_subnet,
    cleanup,
    leftovers,
    setup_bridge,
    setup_node_netns,
)
from tests.nodes.conftest import missing_requirements


def test_names_and_addresses_follow_the_data_dir(tmp_path: Path) -> None:
    a = NetworkPlan.for_data_dir(tmp_path / "a")
    again = NetworkPlan.for_data_dir(tmp_path / "x" / ".." / "a")
    b = NetworkPlan.for_data_dir(tmp_path / "b")
    assert a == again
    assert a.tag != b.tag and a.bridge != b.bridge
    assert a.bridge == f"mkpy-{a.tag}" and len(a.tag) == 6
    subnet = a.subnet
    assert subnet.prefixlen == 24 and subnet.subnet_of(ipaddress.ip_network("172.31.0.0/16"))
    assert a.host_ip == str(subnet.network_address + 1)
    n1, n2 = a.node(1), a.node(2)
    assert (n1.name, n2.name) == ("node1", "node2")
    assert (n1.ip, n2.ip) == (str(subnet.network_address + 11), str(subnet.network_address + 12))
    assert n1.netns == f"mkpy-{a.tag}-node1" and n1.cni_bridge == "cni-1"
    assert n1.dir == (tmp_path / "a").resolve() / "nodes" / "node1"
    for name in (a.bridge, n1.host_veth, a.node(200).host_veth, a.node(200).cni_bridge):
        assert len(name) <= 15, name  # Linux interface names
    with pytest.raises(NodesError):
        a.node(0)


def test_subnet_choice_skips_networks_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = NetworkPlan.for_data_dir(tmp_path)
    taken = [plan.subnet, ipaddress.IPv4Network(plan.subnet.network_address + 256, strict=False).supernet(8)]
    monkeypatch.setattr(localnodes, "_used_networks", lambda ignore: [ipaddress.IPv4Network("0.0.0.0/0"), *taken])
    chosen = choose_subnet(plan).subnet
    assert not any(chosen.overlaps(t) for t in taken)
    assert chosen.subnet_of(ipaddress.ip_network("172.31.0.0/16"))
    monkeypatch.setattr(localnodes, "_used_networks", lambda ignore: [ipaddress.IPv4Network("172.31.0.0/16")])
    with pytest.raises(NodesError, match="already in use"):
        choose_subnet(plan)


def test_node_count_is_checked(tmp_path: Path) -> None:
    for bad in (0, -1, localnodes.MAX_NODES + 1):
        with pytest.raises(NodesError, match="--nodes"):
            LocalNodes(tmp_path, bad)


def test_up_nodes_without_root_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["up", "--local", "--data-dir", str(tmp_path / "d"), "--nodes", "2"]) == 2
    assert capsys.readouterr().err.strip() == ROOT_ERROR
    assert not (tmp_path / "d").exists()  # nothing was started or created


async def test_prepare_without_root_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NodesError, match=r"needs root \(network namespaces, runc, iptables\)"):
        await LocalNodes(tmp_path, 1).prepare()


def test_not_ready_reason() -> None:
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert localnodes._not_ready_reason(ready) == ""
    down = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                                       "message": "cni config uninitialized"}]}}
    assert localnodes._not_ready_reason(down) == "KubeletNotReady: cni config uninitialized"
    assert localnodes._not_ready_reason({}) == "no Ready condition yet"


def test_cleanup_removes_a_crashed_runs_network_only(tmp_path: Path) -> None:
    """The bridge and namespaces of a run killed with SIGKILL go; another data dir's stay."""
    if missing_requirements():
        pytest.skip(missing_requirements())
    mine = NetworkPlan.for_data_dir(tmp_path / "mine")
    other = NetworkPlan.for_data_dir(tmp_path / "other")
    # A lookalike of another cluster, and a name that merely starts like ours.
    decoy = f"{mine.netns_prefix}x"
    try:
        setup_bridge(mine)
        for i in (1, 2):
            setup_node_netns(mine, mine.node(i))
        subprocess.run(["ip", "netns", "add", decoy], check=True)
        subprocess.run(["ip", "netns", "add", other.node(1).netns], check=True)
        (mine.nodes_dir / "node1" / "run").mkdir(parents=True)
        before = leftovers(tmp_path / "mine")
        assert f"link {mine.bridge}" in before and f"netns {mine.node(2).netns}" in before

        removed = cleanup(tmp_path / "mine")

        assert sorted(removed) == sorted(before)
        assert leftovers(tmp_path / "mine") == []
        assert not Path("/sys/class/net", mine.bridge).exists()
        assert not Path("/sys/class/net", mine.node(1).host_veth).exists()
        assert Path("/run/netns", decoy).exists() and Path("/run/netns", other.node(1).netns).exists()
        assert not (mine.nodes_dir / "node1" / "run").exists()  # a node's /run-like state goes too
        assert cleanup(tmp_path / "mine") == []  # idempotent
    finally:
        cleanup(tmp_path / "mine")
        for name in (decoy, other.node(1).netns):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_a_dying_node_component_stops_the_cluster_and_cleans_up(tmp_path: Path) -> None:
    """The kubelet killed from outside: ``up`` names it, stops everything and leaves no namespace behind."""
    why = missing_requirements()
    if why:
        pytest.skip(why)
    import json
    import signal
    import sys

    from tests.nodes.conftest import REPO, _wait_started, stop_cluster

    data_dir = tmp_path / "d"
    output = tmp_path / "up.out"
    with output.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "minikube_py", "up", "--local", "--data-dir", str(data_dir),
                                 "--port", "0", "--nodes", "1"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        _wait_started(proc, output, 180)
        state = json.loads((data_dir / "cluster.json").read_text())
        assert leftovers(data_dir) != []  # the node is there while it runs
        os.kill(state["children"]["node1-kubelet"]["pid"], signal.SIGKILL)
        rc = proc.wait(90)
        text = output.read_text()
        assert rc == 1, text
        assert "node1-kubelet" in text and "exited unexpectedly" in text
        assert leftovers(data_dir) == []
        assert not (data_dir / "cluster.json").exists()
    finally:
        stop_cluster(proc)
        cleanup(data_dir)
