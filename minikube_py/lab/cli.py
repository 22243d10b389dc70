"""The lab end to end, as ``make lab`` and ``minikube-py lab up|status|verify|down`` run it.

``up`` runs the phases of ``make lab`` in order, each timed: the box (``make box``: host packages and
the cached box), the machines (``lab/lab-up.sh``: ``vagrant up --no-provision`` and the inventory),
one provisioning run (``make provision``), the placement tests, then the summary. The shell scripts
stay the one place that knows how to build, start and remove machines; this module sequences them,
keeps their output in ``.lab/logs/`` and turns a failure into one line: the one the script printed,
or the first failed Ansible task with its host and message.

Vagrant is asked through python-vagrant, which forks ``vagrant`` (~2 s) per call: only ``status``
asks it, once. What runs on a machine comes from one ``systemctl is-active`` per machine over ssh.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from minikube_py.lab.failure import error_line, first_ansible_failure
from minikube_py.lab.inventory import LabError, vagrant_env

T = TypeVar("T")

# (component, systemd unit, inventory group that runs it): the placement of architecture.md, as the
# roles install it and tests/lab/test_placement.py checks it.
COMPONENTS: tuple[tuple[str, str, str], ...] = (
    ("etcd", "etcd", "etcd"),
    ("kube-apiserver", "kube-apiserver", "masters"),
    ("kube-controller-manager", "kube-controller-manager", "masters"),
    ("kube-scheduler", "kube-scheduler", "masters"),
    ("registry", "docker-registry", "masters"),
    ("apiserver-proxy", "minikube-py-apiserver-proxy", "workers"),
    ("runtime", "minikube-py-runtime", "workers"),
    ("kubelet", "kubelet", "workers"),
    ("kube-proxy", "kube-proxy", "workers"),
)
UNITS: tuple[str, ...] = tuple(unit for _, unit, _ in COMPONENTS)

KUBECONFIG = Path(".lab/admin.kubeconfig")
KUBECTL_HINT = ".venv/bin/kubectl --kubeconfig .lab/admin.kubeconfig get nodes -o wide"
PLACEMENT_TESTS = "tests/lab/test_placement.py"

# Generous ceilings so that a wedged vagrant or ssh ends in an error instead of a hang: a cold box
# build is ~3 min, a first provisioning run measured 2-5 min on a busy 2-core host.
PHASE_TIMEOUTS = {"box": 1800.0, "machines": 600.0, "provision": 1200.0, "verify": 900.0, "down": 600.0}


def repo_root() -> Path:
    """The checkout holding the Vagrantfile: this package's own (an editable install), else the cwd."""
    for candidate in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (candidate / "Vagrantfile").is_file() and (candidate / "lab" / "labenv.sh").is_file():
            return candidate
    raise LabError("no minikube-py checkout here (no Vagrantfile and lab/): run it from the repository")


# ---- inventory and summary ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Machine:
    """A lab machine as the inventory lists it: name, address and the groups it belongs to."""

    name: str
    address: str
    groups: tuple[str, ...]

    @property
    def expected_units(self) -> tuple[str, ...]:
        return tuple(unit for _, unit, group in COMPONENTS if group in self.groups)


def parse_inventory(text: str) -> list[Machine]:
    """The machines of an Ansible INI inventory in first-seen order (a host may be in several groups)."""
    order: list[str] = []
    groups: dict[str, list[str]] = {}
    addresses: dict[str, str] = {}
    section: str | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise LabError(f"bad inventory section line {raw!r}")
            name = line[1:-1]
            section = None if ":" in name else name  # [all:vars] and [g:children] hold no hosts
            continue
        if section is None:
            continue
        host, *settings = line.split()
        if host not in groups:
            order.append(host)
            groups[host] = []
        groups[host].append(section)
        for setting in settings:
            key, _, value = setting.partition("=")
            if key == "ansible_host":
                addresses[host] = value
    return [Machine(h, addresses.get(h, h), tuple(groups[h])) for h in order]


def read_inventory(root: Path) -> list[Machine]:
    path = root / "inventory" / "lab.ini"
    if not path.is_file():
        raise LabError(f"no lab inventory ({path.relative_to(root)}): run 'minikube-py lab up' or 'make lab-up'")
    machines = parse_inventory(path.read_text())
    if not machines:
        raise LabError(f"{path} lists no machines: run 'make lab-inventory'")
    return machines


def parse_is_active(output: str, units: Sequence[str]) -> dict[str, str]:
    """``systemctl is-active U1 U2 ...`` prints one state per unit, in order; anything else is unknown."""
    states = output.split()
    if len(states) != len(units):
        return {unit: "unknown" for unit in units}
    return dict(zip(units, states, strict=True))


def component_cell(machine: Machine, units: Mapping[str, str] | None) -> str:
    """What runs on a machine: active components; an expected one that is not active shows its state, an
    unexpected active one is flagged. Without unit states (no ssh) the groups say what should run."""
    if units is None:
        names = [name for name, unit, _ in COMPONENTS if unit in machine.expected_units]
        return " ".join(names) + " (from the inventory groups)" if names else "-"
    cells = []
    for name, unit, _ in COMPONENTS:
        state = units.get(unit, "unknown")
        expected = unit in machine.expected_units
        if expected:
            cells.append(name if state == "active" else f"{name}({state})")
        elif state == "active":
            cells.append(f"{name}(unexpected)")
    return " ".join(cells) or "-"


def render_summary(
    machines: Sequence[Machine],
    *,
    root: Path,
    units: Mapping[str, Mapping[str, str] | None] | None = None,
    states: Mapping[str, str] | None = None,
    unreachable: Mapping[str, str] | None = None,
) -> str:
    """The lab in a few lines: each machine with address, groups, state and components; the kubeconfig
    and a kubectl line to try. ``units`` maps machine -> unit -> ``systemctl is-active`` state."""
    units = units or {}
    states = states or {}
    unreachable = unreachable or {}
    masters = sum("masters" in m.groups for m in machines)
    workers = sum("workers" in m.groups for m in machines)
    lines = [f"lab: {masters} master{'s' * (masters != 1)}, {workers} worker{'s' * (workers != 1)} ({root})"]
    name_w = max(len(m.name) for m in machines)
    addr_w = max(len(m.address) for m in machines)
    group_w = max(len(",".join(m.groups)) for m in machines)
    for m in machines:
        state = states.get(m.name, "")
        cell = component_cell(m, units.get(m.name))
        if m.name in unreachable:
            cell += f" [ssh: {unreachable[m.name]}]"
        parts = [f"  {m.name:<{name_w}}", f"{m.address:<{addr_w}}", f"{','.join(m.groups):<{group_w}}"]
        if states:
            parts.append(f"{state or '?':<11}")
        parts.append(cell)
        lines.append("  ".join(parts))
    kubeconfig = root / KUBECONFIG
    if kubeconfig.is_file():
        lines.append(f"kubeconfig: {kubeconfig}")
        lines.append(f"try:        {KUBECTL_HINT}")
    else:
        lines.append(f"kubeconfig: {kubeconfig} is missing: the pki role writes it on 'make provision'")
    return "\n".join(lines)


def _ssh_units(ssh_config: Path, machine: Machine, timeout: float) -> tuple[dict[str, str] | None, str]:
    cmd = ["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", machine.name, "systemctl", "is-active",
           *UNITS]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"no answer in {timeout:.0f} s"
    except FileNotFoundError:
        return None, "ssh is not installed"
    # is-active exits non-zero when any unit is inactive; ssh itself fails with 255.
    if proc.returncode == 255:
        return None, (proc.stderr.strip().splitlines() or ["ssh failed"])[-1]
    return parse_is_active(proc.stdout, UNITS), ""


def unit_states(
    root: Path, machines: Sequence[Machine], timeout: float = 20.0
) -> tuple[dict[str, dict[str, str] | None], dict[str, str]]:
    """machine -> unit -> state, one ssh per machine in parallel; and machine -> why ssh failed."""
    ssh_config = root / ".lab" / "ssh-config"
    if not ssh_config.is_file():
        return {m.name: None for m in machines}, {m.name: "no .lab/ssh-config" for m in machines}
    with ThreadPoolExecutor(max_workers=min(16, len(machines)) or 1) as pool:
        results = list(pool.map(lambda m: _ssh_units(ssh_config, m, timeout), machines))
    units = {m.name: r[0] for m, r in zip(machines, results, strict=True)}
    errors = {m.name: r[1] for m, r in zip(machines, results, strict=True) if r[1]}
    return units, errors


# ---- phases ---------------------------------------------------------------------------------------------

def _say(line: str) -> None:
    print(line, flush=True)  # progress lines must show while a phase runs, even through a pipe


@dataclass
class PhaseTimer:
    """Runs named phases in order, printing a progress line before and the time after each one."""

    total_phases: int
    out: Callable[[str], None] = _say
    clock: Callable[[], float] = time.monotonic
    times: list[tuple[str, float]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # phases that raised; their time is in ``times`` too

    def run(self, name: str, what: str, fn: Callable[[], T]) -> T:
        index = len(self.times) + 1
        self.out(f"[{index}/{self.total_phases}] {name}: {what}")
        start = self.clock()
        try:
            result = fn()
        except BaseException:
            seconds = self.clock() - start
            self.times.append((name, seconds))
            self.failed.append(name)
            self.out(f"      {name} failed after {seconds:.1f} s")
            raise
        seconds = self.clock() - start
        self.times.append((name, seconds))
        self.out(f"      {name} done in {seconds:.1f} s")
        return result

    @property
    def total(self) -> float:
        return sum(s for _, s in self.times)

    def table(self) -> str:
        width = max([len(n) for n, _ in self.times] + [len("total")])
        rows = [f"  {n:<{width}}  {s:7.1f} s{' (failed)' if n in self.failed else ''}" for n, s in self.times]
        rows.append(f"  {'total':<{width}}  {self.total:7.1f} s")
        return "\n".join(rows)


def slowest_tasks(stamped: Sequence[str], count: int = 5) -> list[tuple[str, float]]:
    """The ``count`` slowest ansible tasks in a stamped log, slowest first: each task lasts until the
    next TASK or HANDLER header (or the recap)."""
    marks: list[tuple[float, str]] = []
    for line in stamped:
        if not line.startswith("[") or "] " not in line:
            continue
        stamp, _, text = line[1:].partition("] ")
        try:
            at = float(stamp)
        except ValueError:
            continue
        if text.startswith(("TASK [", "RUNNING HANDLER [")):
            marks.append((at, text.split("[", 1)[1].split("]", 1)[0]))
        elif text.startswith("PLAY RECAP"):
            marks.append((at, ""))
    # A task of a role that several plays pull in (common) runs more than once: its time adds up.
    totals: dict[str, float] = {}
    for (at, name), (nxt, _) in itertools.pairwise(marks):
        if name:
            totals[name] = totals.get(name, 0.0) + nxt - at
    return sorted(((n, round(t, 1)) for n, t in totals.items()), key=lambda span: -span[1])[:count]


def run_logged(
    phase: str,
    cmd: Sequence[str],
    *,
    cwd: Path,
    log: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    echo: IO[str] | None = None,
    stamp: bool = False,
) -> list[str]:
    """Runs ``cmd`` with its output in ``log`` (and on ``echo``); returns the output lines. A failure is a
    LabError carrying the script's own one-line error, else its last line and the log's path. The
    command gets its own process group, killed whole on timeout or interrupt. ``stamp`` starts each
    log line with the seconds since the start ('[  12.3] '), to see where a phase spends its time."""
    log.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    tail: deque[str] = deque(maxlen=1)
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env=dict(env) if env is not None else None, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, start_new_session=True,
        )

        started = time.monotonic()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                log_file.write(f"[{time.monotonic() - started:6.1f}] {line}" if stamp else line)
                log_file.flush()
                if echo is not None:
                    echo.write(line)
                    echo.flush()
                stripped = line.rstrip("\n")
                lines.append(stripped)
                if stripped.strip():
                    tail.append(stripped.strip())

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            reader.join(timeout=5)
            raise LabError(f"{phase} did not finish in {timeout:.0f} s (output in {log})") from None
        except BaseException:
            _kill_group(proc)
            raise
        reader.join(timeout=30)
    if code != 0:
        # The lab scripts' own line is already the whole story; ansible's needs the phase and the log.
        message = error_line(lines)
        failed_task = first_ansible_failure(lines) if message is None else None
        if failed_task is not None:
            message = f"{phase} failed: {failed_task} (output in {log})"
        if message is None:
            last = tail[0] if tail else "no output"
            message = f"{phase} failed (exit {code}): {last} (output in {log})"
        raise LabError(message)
    return lines


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise LabError(
            f"needs root (the LXC machines are privileged containers): run it as root, e.g. "
            f"'sudo minikube-py lab {action}'"
        )


def _python(root: Path) -> str:
    venv = root / ".venv" / "bin" / "python"
    return str(venv) if venv.is_file() else sys.executable


def _make(root: Path, target: str) -> list[str]:
    return ["make", "-C", str(root), "--no-print-directory", target]


def placement_summary(lines: Sequence[str]) -> str:
    """pytest -q's last line ('64 passed in 9.1s'), the part worth printing after a quiet run."""
    for line in reversed(lines):
        text = line.strip().strip("=").strip()
        if " passed" in text or " failed" in text or " error" in text:
            return text
    return "no result line from pytest"


# ---- the commands ---------------------------------------------------------------------------------------

@dataclass
class UpResult:
    timer: PhaseTimer
    verify: str  # pytest's result line
    summary: str
    verified: bool  # the placement tests passed (or were not asked for)


def up(
    root: Path,
    *,
    masters: int | None = None,
    workers: int | None = None,
    verify: bool = True,
    echo: IO[str] | None = None,
    out: Callable[[str], None] = _say,
) -> UpResult:
    """``make lab`` with a timed progress line per phase, ending in the summary."""
    require_root("up")
    if shutil.which("make") is None:
        raise LabError("make is not installed: apt-get install make")
    logs = root / ".lab" / "logs"
    env = vagrant_env()
    if masters is not None:
        env["MASTERS"] = str(masters)
    if workers is not None:
        env["WORKERS"] = str(workers)
    timer = PhaseTimer(4 if verify else 3, out=out)

    def step(phase: str, cmd: Sequence[str]) -> list[str]:
        return run_logged(phase, cmd, cwd=root, log=logs / f"{phase}.log", timeout=PHASE_TIMEOUTS[phase],
                          env=env, echo=echo, stamp=phase == "provision")

    timer.run("box", "host packages and the box (built once, then cached)", lambda: step("box", _make(root, "box")))
    timer.run("machines", "vagrant up --no-provision, ssh config and inventory",
              lambda: step("machines", [str(root / "lab" / "lab-up.sh")]))
    timer.run("provision", "make provision (wheelhouse, ansible-playbook playbooks/site.yml)",
              lambda: step("provision", _make(root, "provision")))
    result, passed = "not run", True
    if verify:
        try:
            lines = timer.run("verify", PLACEMENT_TESTS, lambda: step("verify", _verify_cmd(root)))
            result = placement_summary(lines)
        except LabError as e:
            # The summary still shows what runs where; the caller reports the failure after it.
            passed = False
            result = placement_summary((logs / "verify.log").read_text().splitlines())
            if result == "no result line from pytest":
                result = str(e)
        out(f"      {result}")
    machines = read_inventory(root)
    units, errors = unit_states(root, machines)
    summary = render_summary(machines, root=root, units=units, unreachable=errors)
    return UpResult(timer, result, summary, passed)


def _verify_cmd(root: Path) -> list[str]:
    return [_python(root), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / PLACEMENT_TESTS)]


def vagrant_states(root: Path) -> dict[str, str]:
    """machine -> Vagrant state (running, stopped, not_created, ...): one ``vagrant status`` call."""
    try:
        import vagrant
    except ImportError as e:
        raise LabError("python-vagrant is not installed: pip install -e '.[lab]' "
                       "(make provision does)") from e

    env = vagrant_env()
    env.setdefault("VAGRANT_DEFAULT_PROVIDER", "lxc")
    try:
        statuses = vagrant.Vagrant(str(root), env=env, quiet_stderr=True).status()
    except RuntimeError as e:  # python-vagrant's "vagrant executable not found"
        raise LabError("vagrant is not installed: run 'make box' (it installs the host packages)") from e
    except subprocess.CalledProcessError as e:
        raise LabError(f"vagrant status failed (exit {e.returncode}): run 'vagrant status' for the reason") from e
    return {s.name: str(s.state) for s in statuses}


def status(root: Path, *, ask_vagrant: bool = True) -> str:
    """The machines with address, Vagrant state and the components running on each."""
    require_root("status")  # vagrant-lxc and the 0600 ssh config both need it
    try:
        machines = read_inventory(root)
    except LabError:
        if not ask_vagrant:
            raise
        # No inventory (never up, or torn down): whatever Vagrant knows, state only.
        states = vagrant_states(root)
        return "\n".join(["lab: no inventory (run 'minikube-py lab up')"]
                         + [f"  {name:<10} {state}" for name, state in states.items()])
    # `vagrant status` takes seconds; the ssh queries run meanwhile (a stopped machine refuses at once).
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(vagrant_states, root) if ask_vagrant else None
        units, errors = unit_states(root, machines)
        states = pending.result() if pending is not None else {}
    for name, state in states.items():
        if state != "running":
            units[name], errors[name] = None, f"machine is {state}"
    return render_summary(machines, root=root, units=units, states=states, unreachable=errors)


def verify(root: Path) -> int:
    """The placement tests against the provisioned lab, output on the terminal; pytest's exit code."""
    require_root("verify")
    read_inventory(root)  # one line naming the fix rather than pytest's usage error
    return subprocess.run(_verify_cmd(root), cwd=root, check=False).returncode


def down(root: Path, *, echo: IO[str] | None = None) -> list[str]:
    """``make lab-down``: the machines, the bridge, .lab/ and inventory/lab.ini."""
    require_root("down")
    # The log cannot live in .lab/, which the script removes.
    log = Path("/tmp") / f"minikube-py-lab-down-{os.getpid()}.log"
    lines = run_logged("down", [str(root / "lab" / "lab-down.sh")], cwd=root, log=log,
                       timeout=PHASE_TIMEOUTS["down"], env=vagrant_env(), echo=echo)
    log.unlink(missing_ok=True)  # kept when the script failed: the error names it
    return lines
