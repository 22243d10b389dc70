"""The lab substrate: ``lab/lab-up.sh`` on vagrant-lxc, 1 master + 2 workers, before any provisioning.

First the bad input, checked before any machine is touched (no root, missing packages, a missing or
broken box, a busy address, another lab), then the bare machines. The lab comes from the session
fixture ``lab_machines`` (conftest.py); ``test_lifecycle.py`` destroys it at the end and checks what is
left. Runs with ``make test-lab`` (and so ``make test``), as root.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from minikube_py.lab.inventory import LabError, parse_ssh_config, render_inventory
from minikube_py.lab.names import lab_env
from tests.lab.conftest import LAB, REPO, run, timed

pytestmark = pytest.mark.lab

ROOT = REPO
PLAN = {"master1": "192.168.56.10", "worker1": "192.168.56.21", "worker2": "192.168.56.22"}
SSH_CONFIG = ROOT / ".lab" / "ssh-config"
INVENTORY = ROOT / "inventory" / "lab.ini"
ENV = lab_env(ROOT)
VENV_BIN = ROOT / ".venv" / "bin"


def ssh(host: str, command: str) -> str:
    proc = run(["ssh", "-F", str(SSH_CONFIG), host, command], timeout=60)
    assert proc.returncode == 0, f"{host}: {command!r} failed: {proc.stderr}"
    return proc.stdout.strip()


def our_containers() -> list[str]:
    out = run(["lxc-ls", "-1"]).stdout.split()
    return [n for n in out if n.startswith(ENV["LAB_CONTAINER_PREFIX"])]


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("minikube-py lab: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def lab(lab_machines: None) -> None:
    """The machines of the plan, up and not provisioned yet."""
    hosts = parse_ssh_config(SSH_CONFIG.read_text())
    if [h.name for h in hosts] != list(PLAN):
        pytest.fail(f"the substrate tests need the 1 master + 2 workers plan, the lab has {[h.name for h in hosts]}")


# -- inventory generation, no machines needed --------------------------------------------------

SAMPLE = """Host worker1
  HostName 192.168.56.21
  User vagrant
  Port 22
  IdentityFile /k/worker1
Host master1
  HostName 192.168.56.10
  User vagrant
  Port 22
  IdentityFile "/k/master 1"
"""


def test_ssh_config_becomes_groups_masters_first() -> None:
    hosts = parse_ssh_config(SAMPLE)
    assert [(h.name, h.role, h.address) for h in hosts] == [
        ("master1", "masters", "192.168.56.10"),
        ("worker1", "workers", "192.168.56.21"),
    ]
    assert hosts[0].identity_file == "/k/master 1"
    ini = render_inventory(hosts, Path("/x/.lab/ssh-config"))
    sections = [line for line in ini.splitlines() if line.startswith("[")]
    assert sections == ["[masters]", "[workers]", "[etcd]", "[all:vars]"]
    assert "ansible_ssh_common_args='-F /x/.lab/ssh-config'" in ini


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no lab machines"),
        ("Host master1\n  User vagrant\n", "no HostName for master1"),
        ("Host db1\n  HostName 10.0.0.1\n", "neither masterN nor workerN"),
        ("  HostName 10.0.0.1\n", "before any Host"),
        (SAMPLE + SAMPLE, "appears twice"),
    ],
)
def test_bad_ssh_config_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(LabError, match=message):
        parse_ssh_config(text)


# -- bad input, checked before any machine is touched ------------------------------------------


def test_not_root_is_one_line_naming_the_fix() -> None:
    proc = run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(LAB / "lab-up.sh")])
    assert "needs root" in one_line_error(proc)


def test_missing_host_packages_name_the_package_and_the_fix() -> None:
    proc = run([str(LAB / "lab-up.sh")], env={"MINIKUBE_PY_LAB_HOST_PACKAGES": "vagrant mkpy-no-such-pkg"})
    line = one_line_error(proc)
    assert "mkpy-no-such-pkg" in line and "make box" in line


def test_missing_box_names_the_fix(tmp_path: Path) -> None:
    # An empty Vagrant home has no boxes; lab-up must stop before Vagrant looks for one online.
    proc = run([str(LAB / "lab-up.sh")], env={"VAGRANT_HOME": str(tmp_path)})
    line = one_line_error(proc)
    assert "not built" in line and "make box" in line
    assert list(tmp_path.iterdir()) == []


def test_incomplete_box_in_vagrant_names_the_fix(tmp_path: Path) -> None:
    # An interrupted `vagrant box add`: the box directory exists, its root filesystem does not.
    box_dir = Path(lab_env(ROOT, {"VAGRANT_HOME": str(tmp_path)})["BOX_DIR"])
    box_dir.mkdir(parents=True)
    (box_dir / "metadata.json").write_text('{"provider": "lxc"}')
    line = one_line_error(run([str(LAB / "lab-up.sh")], env={"VAGRANT_HOME": str(tmp_path)}))
    assert "incomplete" in line and "make box" in line


def test_damaged_cached_box_is_named_and_rebuilt_by_make_box(tmp_path: Path) -> None:
    """A truncated box file in the cache fails its recorded checksum: reported, never handed to Vagrant."""
    env = {"MINIKUBE_PY_BOX_CACHE": str(tmp_path / "boxes"), "VAGRANT_HOME": str(tmp_path / "vagrant")}
    names = lab_env(ROOT, env)
    Path(names["BOX_CACHE"]).mkdir()
    Path(names["BOX_FILE"]).write_bytes(b"half a box")
    Path(names["BOX_METADATA"]).write_text(json.dumps({"versions": [{"providers": [
        {"checksum_type": "sha256", "checksum": "0" * 64}]}]}))
    line = one_line_error(run([str(LAB / "box" / "build-box.sh"), "--check"], env=env))
    assert "damaged" in line and names["BOX_FILE"] in line and "make box" in line
    assert not (tmp_path / "vagrant").exists()


def test_make_box_removes_the_unused_versions_of_the_box_from_vagrant(tmp_path: Path) -> None:
    """Each version holds ~0.9 GB once unpacked: `make box` keeps only the current one (and any version a
    container's rootfs still sits on)."""
    env = {"MINIKUBE_PY_BOX_CACHE": str(tmp_path / "boxes"), "VAGRANT_HOME": str(tmp_path / "vagrant")}
    names = lab_env(ROOT, env)
    box_dir = Path(names["BOX_DIR"])
    box_dir.mkdir(parents=True)
    for name, text in (("metadata.json", "{}"), ("lxc-config", ""), ("rootfs.tar.gz", "x")):
        (box_dir / name).write_text(text)
    (box_dir / "lxc-template").write_text("")
    (box_dir / "lxc-template").chmod(0o755)
    Path(names["BOX_CACHE"]).mkdir()
    Path(names["BOX_METADATA"]).write_text("{}")
    old = box_dir.parent.parent / "1.0.1"
    (old / "lxc" / "rootfs" / "bin").mkdir(parents=True)
    proc = run([str(LAB / "box" / "build-box.sh")], env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Removed the unused minikube-py/bookworm 1.0.1" in proc.stdout
    assert not old.exists() and (box_dir / "rootfs.tar.gz").exists()


def test_busy_address_names_the_interface() -> None:
    dummy = f"mkpyt{uuid.uuid4().hex[:6]}"
    # A /32 in the lab range: enough to be a conflict, no route that would disturb a running lab.
    assert run(["ip", "link", "add", dummy, "type", "bridge"]).returncode == 0
    try:
        assert run(["ip", "addr", "add", "192.168.56.254/32", "dev", dummy]).returncode == 0
        proc = run([str(LAB / "lab-up.sh")])
        line = one_line_error(proc)
        assert dummy in line and "192.168.56.0/24" in line
    finally:
        run(["ip", "link", "del", dummy])


def fake_lab_bridge(owner: Path) -> tuple[str, Path]:
    """A bridge and registry entry as another checkout's `make lab-up` leaves them."""
    other = uuid.uuid4().hex[:8]
    bridge, entry = f"mkpy-{other}", Path(ENV["LAB_REGISTRY_DIR"]) / other
    assert run(["ip", "link", "add", bridge, "type", "bridge"]).returncode == 0
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text(f"{owner}\n")
    assert run(["ip", "addr", "add", "192.168.56.253/32", "dev", bridge]).returncode == 0
    return bridge, entry


def test_lab_of_a_live_checkout_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "Vagrantfile").write_text("")
    bridge, entry = fake_lab_bridge(tmp_path)
    try:
        line = one_line_error(run([str(LAB / "bridge.sh"), "check"], env={"MINIKUBE_PY_LAB_RECLAIM": "0"}))
        assert bridge in line and str(tmp_path) in line and "make lab-down" in line
        assert run(["ip", "link", "show", "dev", bridge]).returncode == 0
    finally:
        run(["ip", "link", "del", bridge])
        entry.unlink(missing_ok=True)


def test_make_test_replaces_the_lab_of_a_live_checkout(tmp_path: Path) -> None:
    """The CI clone runs right after a session that may have left its lab up: under `make test` a lab the
    registry records is ours by construction, and goes."""
    (tmp_path / "Vagrantfile").write_text("")
    bridge, entry = fake_lab_bridge(tmp_path)
    try:
        proc = run([str(LAB / "bridge.sh"), "check"], env={"MINIKUBE_PY_LAB_RECLAIM": "1"})
        assert proc.returncode == 0, proc.stderr
        assert f"removing the lab of {tmp_path}" in proc.stderr
        assert run(["ip", "link", "show", "dev", bridge]).returncode != 0
        assert not entry.exists()
    finally:
        run(["ip", "link", "del", bridge])
        entry.unlink(missing_ok=True)


def test_unregistered_bridge_is_never_removed() -> None:
    """A mkpy-looking bridge no `make lab-up` recorded is not provably ours: named, left alone."""
    bridge = f"mkpy-{uuid.uuid4().hex[:8]}"
    assert run(["ip", "link", "add", bridge, "type", "bridge"]).returncode == 0
    try:
        assert run(["ip", "addr", "add", "192.168.56.252/32", "dev", bridge]).returncode == 0
        line = one_line_error(run([str(LAB / "bridge.sh"), "check"], env={"MINIKUBE_PY_LAB_RECLAIM": "1"}))
        assert bridge in line and "192.168.56.0/24" in line
        assert run(["ip", "link", "show", "dev", bridge]).returncode == 0
    finally:
        run(["ip", "link", "del", bridge])


def test_lab_of_a_deleted_checkout_is_reclaimed(tmp_path: Path) -> None:
    bridge, entry = fake_lab_bridge(tmp_path / "gone")
    try:
        proc = run([str(LAB / "bridge.sh"), "check"])
        assert proc.returncode == 0, proc.stderr
        assert "orphaned lab" in proc.stderr
        assert run(["ip", "link", "show", "dev", bridge]).returncode != 0
        assert not entry.exists()
    finally:
        run(["ip", "link", "del", bridge])
        entry.unlink(missing_ok=True)


def test_bad_machine_count_is_one_line() -> None:
    proc = run(["vagrant", "status"], env={"MASTERS": "seven"})
    assert proc.returncode != 0
    assert "MASTERS=seven is not a number from 1 to 3" in proc.stderr


# -- the running lab ---------------------------------------------------------------------------


def test_every_machine_answers_ssh_by_name(lab: None) -> None:
    hosts = parse_ssh_config(SSH_CONFIG.read_text())
    assert [h.name for h in hosts] == list(PLAN)
    for name in PLAN:
        assert ssh(name, "hostname") == name


def test_systemd_is_pid_1_and_the_system_is_running(lab: None) -> None:
    for name in PLAN:
        assert ssh(name, "ps -p 1 -o comm=") == "systemd"
        assert ssh(name, "systemctl is-system-running --wait") == "running"


def test_addresses_as_planned(lab: None) -> None:
    hosts = {h.name: h.address for h in parse_ssh_config(SSH_CONFIG.read_text())}
    assert hosts == PLAN
    for name, address in PLAN.items():
        assert f"inet {address}/24 brd 192.168.56.255" in ssh(name, "ip -4 -o addr show dev eth0")
    # The machines reach each other over the bridge.
    ssh("worker2", f"ping -c1 -W5 {PLAN['master1']}")
    ssh("master1", f"ping -c1 -W5 {PLAN['worker1']}")


def test_inventory_groups(lab: None) -> None:
    proc = run([str(VENV_BIN / "ansible-inventory"), "-i", str(INVENTORY), "--list"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    inv = json.loads(proc.stdout)
    assert inv["masters"]["hosts"] == ["master1"]
    assert inv["workers"]["hosts"] == ["worker1", "worker2"]
    assert inv["etcd"]["hosts"] == ["master1"]
    master = inv["_meta"]["hostvars"]["master1"]
    assert master["ansible_host"] == PLAN["master1"]
    assert master["ansible_user"] == "vagrant"
    assert Path(master["ansible_ssh_private_key_file"]).is_file()


def test_no_route_out(lab: None) -> None:
    for name in PLAN:
        assert ssh(name, "ip -4 route show default; ip -6 route show default") == ""
        # Asks the kernel only: no packet leaves for a documentation address.
        out = ssh(name, "ip route get 203.0.113.1 2>&1 || true")
        assert "unreachable" in out, out
    forwarding = Path(f"/proc/sys/net/ipv4/conf/{ENV['LAB_BRIDGE']}/forwarding").read_text().strip()
    assert forwarding == "0"


def test_each_machine_has_its_own_identity(lab: None) -> None:
    ids = {ssh(n, "cat /etc/machine-id") for n in PLAN}
    keys = {ssh(n, "cat /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2") for n in PLAN}
    assert len(ids) == len(PLAN) and "" not in ids
    assert len(keys) == len(PLAN)


def test_role_daemons_are_baked_in_but_not_running(lab: None) -> None:
    for name in PLAN:
        wanted = ["containernetworking-plugins", "docker-registry", "etcd-server", "runc"]
        out = ssh(name, "dpkg-query -W -f='${Package}\\n' " + " ".join(wanted))
        assert sorted(out.split()) == wanted
        active = ssh(name, "systemctl is-active etcd docker-registry || true")
        assert active.split() == ["inactive", "inactive"]


def test_reload_keeps_one_config_block_and_the_address(lab: None) -> None:
    timed(["vagrant", "reload", "worker2"], "vagrant reload worker2")
    config = Path(f"/var/lib/lxc/{ENV['LAB_CONTAINER_PREFIX']}worker2/config").read_text()
    assert config.count("# VAGRANT-BEGIN") == 1
    assert PLAN["worker2"] in ssh("worker2", "ip -4 -o addr show dev eth0")


def test_rerun_reuses_machines_and_removes_stale_containers(lab: None) -> None:
    stale = f"{ENV['LAB_CONTAINER_PREFIX']}worker9"
    assert run(["lxc-create", "-n", stale, "-t", "none"]).returncode == 0
    try:
        before = ssh("master1", "cat /proc/sys/kernel/random/boot_id")
        timed([str(LAB / "lab-up.sh")], "lab-up again (machines running)")
        assert stale not in our_containers()
        assert ssh("master1", "cat /proc/sys/kernel/random/boot_id") == before
    finally:
        if stale in our_containers():
            run(["lxc-destroy", "-n", stale])
