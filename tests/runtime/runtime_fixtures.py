"""A real runtime daemon for the runtime tests, on private dirs, socket, bridge and pod CIDR, with
images made from /bin/busybox (no registry needed), and a sweep that leaves nothing behind.

The daemon runs as its own process (``python -m tests.runtime.runtime_fixtures serve ...``) so that a
test can restart it while containers keep running. It serves ``DirImages`` instead of the registry-
backed ImageStore: same interface, images unpacked from directories this module writes.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUSYBOX = Path("/bin/busybox")
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
# Never routed anywhere: the pods of these tests only talk to each other over the test bridge.
POD_CIDR = "10.244.250.0/24"
APPLETS = ("sh", "ls", "cat", "echo", "sleep", "ping", "nc", "ip", "id", "hostname", "pwd", "tty", "head",
           "tr", "printf", "true", "false", "env", "wc", "grep", "kill", "ps", "mount", "dd")


def missing_requirements() -> str | None:
    """Why the runtime tests cannot run here (skip reason), or None."""
    if os.geteuid() != 0:
        return "the runtime tests need root (netns, mounts, cgroups)"
    for binary in ("runc", "ip", "iptables"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed"
    if not BUSYBOX.exists():
        return "/bin/busybox (busybox-static) is not installed"
    missing = [p for p in CNI_PLUGINS if not (CNI_BIN_DIR / p).exists()]
    if missing:
        return f"CNI plugins missing in {CNI_BIN_DIR}: {', '.join(missing)}"
    return None


# ---- images from directories ----------------------------------------------------------------------------

@dataclass
class DirImage:
    id: str
    repo_tags: list[str]
    repo_digests: list[str]
    size: int
    config: dict[str, Any]
    layers: list[str] = field(default_factory=list)


class DirImages:
    """ImageStore's interface over images described in ``<root>/images.json`` (layers are directories)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images = [DirImage(**d) for d in json.loads((root / "images.json").read_text())]

    def normalize(self, image: str) -> str:
        return image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest"

    def get(self, image: str) -> DirImage | None:
        ref = self.normalize(image)
        return next((i for i in self.images if i.id == image or ref in i.repo_tags), None)

    async def pull(self, image: str) -> DirImage:
        info = self.get(image)
        if info is None:
            raise ValueError(f"image {image!r} is not in this test store")
        return info

    def list(self) -> list[DirImage]:
        return list(self.images)

    def remove(self, image: str) -> None:
        self.images = [i for i in self.images if i is not self.get(image)]

    def layer_dirs(self, info: DirImage) -> list[Path]:
        return [Path(p) for p in info.layers]


def _busybox_layer(d: Path) -> None:
    for sub in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "home"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX, d / "bin" / "busybox")
    for applet in APPLETS:
        (d / "bin" / applet).symlink_to("busybox")
    (d / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
                                      "nobody:x:65534:65534:nobody:/:/bin/false\n")
    (d / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n")


def write_images(root: Path) -> None:
    """test/busybox (one layer, Cmd sh), test/app (a second layer, Entrypoint/Cmd/Env/User/WorkingDir) and
    test/empty (no config at all)."""
    base, app = root / "layers" / "busybox", root / "layers" / "app"
    _busybox_layer(base)
    (app / "home" / "app").mkdir(parents=True)
    os.chown(app / "home" / "app", 1000, 1000)
    (app / "home" / "app" / "greeting").write_text("hello from the app layer\n")
    images = [
        DirImage("sha256:" + "b" * 64, ["test/busybox:latest"], [], 1, {"Cmd": ["sh"]}, [str(base)]),
        DirImage("sha256:" + "a" * 64, ["test/app:latest"], [], 2,
                 {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo from-image-cmd"], "Env": ["FROM_IMAGE=yes"],
                  "User": "app", "WorkingDir": "/home/app"}, [str(base), str(app)]),
        DirImage("sha256:" + "e" * 64, ["test/empty:latest"], [], 1, {}, [str(base)]),
    ]
    (root / "images.json").write_text(json.dumps([i.__dict__ for i in images]))


# ---- the daemon -----------------------------------------------------------------------------------------

@dataclass
class RuntimeDaemon:
    base: Path
    bridge: str = field(default_factory=lambda: f"mkt{secrets.token_hex(3)}")
    network: str = field(default_factory=lambda: f"mkpy-test-{secrets.token_hex(3)}")
    cgroup_parent: str = field(default_factory=lambda: f"minikube-py-test-{secrets.token_hex(3)}")
    runc: str = "runc"
    # Set: run the real ``minikube-py runtime`` (its ImageStore pulls from this registry) instead of DirImages.
    default_registry: str | None = None
    proc: subprocess.Popen[str] | None = None

    @property
    def root_dir(self) -> Path:
        return self.base / "root"

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    @property
    def socket(self) -> Path:
        return self.base / "runtime.sock"

    @property
    def conf_dir(self) -> Path:
        return self.base / "net.d"

    @property
    def images_dir(self) -> Path:
        return self.base / "images"

    @property
    def log_path(self) -> Path:
        return self.base / "daemon.log"

    def command(self) -> list[str]:
        args = ["--root-dir", str(self.root_dir), "--state-dir", str(self.state_dir), "--socket", str(self.socket),
                "--cni-conf-dir", str(self.conf_dir), "--cni-bin-dir", str(CNI_BIN_DIR),
                "--cni-bridge", self.bridge, "--cni-network", self.network, "--cgroup-parent", self.cgroup_parent,
                "--runc", self.runc]
        if self.default_registry:
            return [sys.executable, "-m", "minikube_py", "runtime", "-v", *args,
                    "--default-registry", self.default_registry]
        return [sys.executable, "-m", "tests.runtime.runtime_fixtures", "serve", *args,
                "--images-dir", str(self.images_dir)]

    def start(self, timeout: float = 20.0) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if not self.default_registry and not (self.images_dir / "images.json").exists():
            write_images(self.images_dir)
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=log,
                                         stdin=subprocess.DEVNULL, text=True, cwd=REPO)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if "serving on" in line or not line:
                break
        if "serving on" not in line:
            self.stop()
            raise RuntimeError(f"runtime daemon did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- what the runtime left on the machine (the tests assert these are empty) ----------------

    def sandbox_ids(self) -> list[str]:
        d = self.root_dir / "sandboxes"
        return sorted(p.name for p in d.iterdir()) if d.exists() else []

    def runc_containers(self) -> list[str]:
        out = subprocess.run(["runc", "--root", str(self.state_dir / "runc"), "list", "--format", "json"],
                             capture_output=True, text=True, check=False).stdout.strip()
        return [c["id"] for c in json.loads(out or "null") or []]

    def mounts(self) -> list[str]:
        return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.split()[4].startswith(str(self.base))]

    def netns_names(self) -> list[str]:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def bridge_ports(self) -> list[str]:
        out = subprocess.run(["ip", "-o", "link", "show", "master", self.bridge], capture_output=True, text=True,
                             check=False).stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]

    def iptables_rules(self, needle: str) -> list[tuple[str, str]]:
        rules = []
        for table in ("nat", "filter"):
            out = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True, check=False).stdout
            rules += [(table, line) for line in out.splitlines() if needle in line]
        return rules

    @staticmethod
    def cni_chains() -> set[str]:
        """The per-pod CNI chains in the nat table (CNI-<hash>, CNI-DN-<hash>)."""
        out = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True, check=False).stdout
        return {line.split()[1] for line in out.splitlines()
                if line.startswith("-N CNI-") and "HOSTPORT" not in line}

    def sweep(self) -> None:
        """Remove whatever a failed test left: pods through the daemon, then by hand what remains."""
        with contextlib.suppress(Exception):
            if self.proc is None:
                self.start()
            # In a thread: the caller may be inside a running event loop (an async test's finally).
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, _remove_all_sandboxes(self.socket)).result(timeout=120)
        self.stop()
        for cid in self.runc_containers():
            subprocess.run(["runc", "--root", str(self.state_dir / "runc"), "delete", "--force", cid],
                           capture_output=True, check=False)
        for pid_file in self.state_dir.glob("containers/*/shim.pid"):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        for sid in self.sandbox_ids():
            subprocess.run(["ip", "netns", "delete", sid], capture_output=True, check=False)
        for mnt in sorted(self.mounts(), reverse=True):
            subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
        chains = set()
        for table, rule in self.iptables_rules(self.network):
            if rule.startswith("-A "):
                args = _split_rule(rule[3:])
                subprocess.run(["iptables", "-t", table, "-D", *args], capture_output=True, check=False)
                if "-j" in args and args[args.index("-j") + 1].startswith("CNI-"):
                    chains.add((table, args[args.index("-j") + 1]))
        for table, chain in chains:  # the per-pod chains those rules jumped to
            if "HOSTPORT" not in chain:
                subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True, check=False)
                subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True, check=False)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, check=False)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            parent = hierarchy / self.cgroup_parent
            if parent.is_dir():
                for child in parent.iterdir():
                    if child.is_dir():
                        with contextlib.suppress(OSError):
                            child.rmdir()
                with contextlib.suppress(OSError):
                    parent.rmdir()


def _split_rule(rule: str) -> list[str]:
    import shlex

    return shlex.split(rule)


async def _remove_all_sandboxes(socket_path: Path) -> None:
    from minikube_py.runtime.client import RuntimeClient

    async with RuntimeClient(socket_path) as rt:
        for sb in await rt.list_pod_sandbox():
            await rt.remove_pod_sandbox(sb["id"])
        for c in await rt.list_containers():
            await rt.remove_container(c["id"])


# ---- ``python -m tests.runtime.runtime_fixtures serve``: the daemon with DirImages --------------------

def _serve(argv: list[str]) -> int:
    import logging

    from minikube_py.runtime.server import RuntimeConfig, serve

    p = argparse.ArgumentParser()
    for flag in ("--root-dir", "--state-dir", "--socket", "--cni-conf-dir", "--cni-bin-dir", "--images-dir"):
        p.add_argument(flag, type=Path, required=True)
    for flag in ("--cni-bridge", "--cni-network", "--cgroup-parent", "--runc"):
        p.add_argument(flag, required=True)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = RuntimeConfig(root_dir=a.root_dir, state_dir=a.state_dir, socket=a.socket, cni_conf_dir=a.cni_conf_dir,
                           cni_bin_dir=a.cni_bin_dir, cni_bridge=a.cni_bridge, cni_network=a.cni_network,
                           runc=a.runc, cgroup_parent=a.cgroup_parent)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, DirImages(a.images_dir), stop, lambda: print(f"serving on {a.socket}", flush=True))

    asyncio.run(main())
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        sys.exit(_serve(sys.argv[2:]))
    sys.exit("usage: python -m tests.runtime.runtime_fixtures serve ARGS")
