"""The per-container shim: ``python -m minikube_py.runtime.shim --id ID --bundle B ...``.

The daemon starts one per container in its own session, so the container outlives the daemon (a
restart, an upgrade, a crash) as it outlives containerd with containerd-shim. The shim:

1. becomes a child subreaper, so the container's init is re-parented to it once ``runc create`` exits;
2. runs ``runc create`` with the container's stdout/stderr on pipes it owns (or, for a tty, receives
   the terminal's master over runc's console socket), then ``runc start``;
3. copies the output into the CRI log (``<RFC3339Nano> stdout|stderr F|P <line>``);
4. reaps the init and records its exit code and finish time in the state dir.

The state dir is the only channel back to the daemon: ``shim.pid``, ``started.json`` and, last,
``exit.json`` (written once, atomically). Only the standard library is used: this runs for every
container and must start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

PR_SET_CHILD_SUBREAPER = 36
# containerd's CRI splits lines longer than this into partial (P) entries.
MAX_LINE = 16 * 1024
READ_CHUNK = 64 * 1024
# After the init exits its pid namespace is torn down, so the pipes close at once; a child that
# escaped (a shared pid namespace) must not hold the shim forever.
DRAIN_TIMEOUT = 5.0
EXIT_CANNOT_RUN = 128


def rfc3339nano(ns: int) -> str:
    """Go's time.RFC3339Nano in UTC: trailing zeros of the fraction dropped."""
    secs, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    digits = f"{frac:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class CriLog:
    """The CRI log file; lines from both streams interleave whole, in arrival order."""

    def __init__(self, path: str) -> None:
        self._file: BinaryIO | None = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "ab")  # held for the container's life
        self._lock = threading.Lock()

    def write(self, stream: str, tag: str, line: bytes) -> None:
        if self._file is None:
            return
        entry = f"{rfc3339nano(time.time_ns())} {stream} {tag} ".encode() + line + b"\n"
        with self._lock:
            self._file.write(entry)
            self._file.flush()

    def copy(self, fd: int, stream: str) -> None:
        """Copy ``fd`` to the log until end of file, splitting into lines (P for the parts of long ones)."""
        pending = b""
        while True:
            try:
                chunk = os.read(fd, READ_CHUNK)
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                chunk = b""  # EIO: a terminal whose last slave closed
            if not chunk:
                break
            pending += chunk
            while True:
                nl = pending.find(b"\n")
                if nl < 0:
                    break
                line, pending = pending[:nl], pending[nl + 1:]
                self._write_line(stream, line.removesuffix(b"\r"))
            while len(pending) >= MAX_LINE:
                self.write(stream, "P", pending[:MAX_LINE])
                pending = pending[MAX_LINE:]
        if pending:
            self.write(stream, "F", pending)  # an unterminated last line is still a full one
        with contextlib.suppress(OSError):
            os.close(fd)

    def _write_line(self, stream: str, line: bytes) -> None:
        while len(line) > MAX_LINE:
            self.write(stream, "P", line[:MAX_LINE])
            line = line[MAX_LINE:]
        self.write(stream, "F", line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def runc_error(state_dir: Path, stderr_text: str) -> str:
    """runc's own words for why the container could not start: its last error in its JSON log."""
    message = ""
    with contextlib.suppress(OSError):
        for line in (state_dir / "runc.log").read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                entry = json.loads(line)
                if entry.get("level") in ("error", "fatal") and entry.get("msg"):
                    message = str(entry["msg"])
    return message or stderr_text.strip() or "runc failed without a message"


def oom_killed(cgroup: str) -> bool:
    """Whether the kernel's OOM killer struck in the container's memory cgroup (v1 or v2)."""
    rel = cgroup.strip("/")
    for path, key in ((f"/sys/fs/cgroup/memory/{rel}/memory.oom_control", "oom_kill"),
                      (f"/sys/fs/cgroup/{rel}/memory.events", "oom_kill"),
                      (f"/sys/fs/cgroup/unified/{rel}/memory.events", "oom_kill")):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(path).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key and int(value) > 0:
                    return True
    return False


def exit_code_of(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class ConsoleReceiver:
    """Receives the pty master runc sends over ``--console-socket`` for a tty container."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.master: int | None = None
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
            with conn:
                _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
                if fds:
                    self.master = fds[0]

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def run(args: argparse.Namespace) -> int:
    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    (state / "shim.pid").write_text(str(os.getpid()))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("shim: cannot become a child subreaper", file=sys.stderr)
    runc = [args.runc, "--root", args.root, "--log", str(state / "runc.log"), "--log-format", "json"]
    log = CriLog(args.log_path)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    console = ConsoleReceiver(state / "console.sock") if args.tty else None
    create = [*runc, "create", "--bundle", args.bundle, "--pid-file", str(state / "init.pid")]
    if console is not None:
        create += ["--console-socket", str(console.path)]
    create.append(args.id)
    proc = subprocess.run(create, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, check=False)
    os.close(out_w)
    os.close(err_w)
    if console is not None:
        console.thread.join(timeout=5.0)
        console.close()

    def cannot_run(message: str) -> int:
        subprocess.run([*runc, "delete", "--force", args.id], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        write_json(state / "exit.json", {"exitCode": EXIT_CANNOT_RUN, "finishedAt": time.time_ns(),
                                          "reason": "ContainerCannotRun", "message": message})
        return 0

    if proc.returncode != 0:
        return cannot_run(runc_error(state, _read_available(err_r)))
    init_pid = int((state / "init.pid").read_text().strip())
    readers = [threading.Thread(target=log.copy, args=(out_r, "stdout"), daemon=True),
               threading.Thread(target=log.copy, args=(err_r, "stderr"), daemon=True)]
    if console is not None and console.master is not None:
        readers.append(threading.Thread(target=log.copy, args=(console.master, "stdout"), daemon=True))
    for r in readers:
        r.start()
    started = subprocess.run([*runc, "start", args.id], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, check=False)
    if started.returncode != 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init_pid, signal.SIGKILL)
        return cannot_run(runc_error(state, started.stderr.decode(errors="replace")))
    write_json(state / "started.json", {"pid": init_pid, "startedAt": time.time_ns()})
    status = wait_for(init_pid)
    finished = time.time_ns()
    deadline = time.monotonic() + DRAIN_TIMEOUT
    for r in readers:
        r.join(timeout=max(0.0, deadline - time.monotonic()))
    code = exit_code_of(status)
    if oom_killed(args.cgroup):
        reason = "OOMKilled"
    else:
        reason = "Completed" if code == 0 else "Error"
    write_json(state / "exit.json", {"exitCode": code, "finishedAt": finished, "reason": reason, "message": ""})
    log.close()
    return 0


def _read_available(fd: int) -> str:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, READ_CHUNK).decode(errors="replace")
    except OSError:
        return ""


def wait_for(pid: int) -> int:
    """Reap children (re-parented orphans included) until ``pid`` exits; its wait status."""
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            # Not our child after all (no subreaper support): poll until it is gone.
            while _alive(pid):
                time.sleep(0.1)
            return 255 << 8
        except InterruptedError:
            continue
        if reaped == pid:
            return status


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="minikube_py.runtime.shim", description=__doc__.splitlines()[0])
    p.add_argument("--id", required=True)
    p.add_argument("--bundle", required=True)
    p.add_argument("--state-dir", required=True, help="where shim.pid, started.json and exit.json go")
    p.add_argument("--root", required=True, help="runc's --root")
    p.add_argument("--runc", default="runc")
    p.add_argument("--log-path", default="", help="the CRI log file (none when empty)")
    p.add_argument("--cgroup", default="", help="the container's cgroupsPath, to tell OOM kills")
    p.add_argument("--tty", action="store_true")
    args = p.parse_args(argv)
    # No signal is ignored here: ignored dispositions would be inherited by the container's init.
    # The shim's own session has no terminal, so no SIGHUP/SIGINT reaches it by accident.
    os.chdir("/")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
