"""The iptables binaries, driven as kube-proxy drives them: ``iptables-save`` to learn which chains
exist, ``iptables-restore --noflush`` to replace ours in one transaction, leaving every other rule
(the CNI's, the firewall's, Docker's) alone.

The parsing is pure (``parse_save``); :class:`IPTables` runs the binaries with a timeout, so a
stuck xtables lock is an error, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from dataclasses import dataclass, field

BACKENDS = ("iptables", "iptables-nft", "iptables-legacy")
# A restore of a few thousand rules takes well under a second; this only bounds a stuck lock.
COMMAND_TIMEOUT = 30.0
_TARGET = re.compile(r"\s-[jg]\s+(\S+)")


class IPTablesError(Exception):
    """An iptables command failed (or could not run)."""


@dataclass
class SavedTable:
    """One table of ``iptables-save`` output: its chains and its rules (each ``-A CHAIN ...``)."""

    chains: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)

    def rules_of(self, chain: str) -> list[str]:
        prefix = f"-A {chain} "
        return [r for r in self.rules if r.startswith(prefix)]


def rule_chain(rule: str) -> str:
    """The chain an ``-A CHAIN ...`` rule is in."""
    parts = rule.split(None, 2)
    return parts[1] if len(parts) >= 2 else ""


def rule_target(rule: str) -> str | None:
    """The chain or target a rule jumps (``-j``) or goes (``-g``) to."""
    m = _TARGET.search(rule)
    return m.group(1) if m else None


def parse_save(text: str) -> dict[str, SavedTable]:
    """``iptables-save`` output -> table name -> chains and rules."""
    tables: dict[str, SavedTable] = {}
    current: SavedTable | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = tables.setdefault(line[1:], SavedTable())
        elif line == "COMMIT":
            current = None
        elif current is None:
            raise IPTablesError(f"iptables-save output has a line outside a table: {line[:200]!r}")
        elif line.startswith(":"):
            current.chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            current.rules.append(line)
    return tables


class IPTables:
    """One iptables backend (``iptables``: Debian's alternative, nft by default; or a named one),
    optionally run inside a network namespace (``ip netns exec``) — for tests."""

    def __init__(self, backend: str = "iptables", *, netns: str | None = None,
                 timeout: float = COMMAND_TIMEOUT) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"iptables backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.backend = backend
        self.netns = netns
        self.timeout = timeout

    def available(self) -> bool:
        return shutil.which(f"{self.backend}-save") is not None and \
            shutil.which(f"{self.backend}-restore") is not None

    def _argv(self, tool: str, *args: str) -> list[str]:
        argv = [f"{self.backend}-{tool}", *args]
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv

    async def _run(self, argv: list[str], stdin: bytes | None = None) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as e:
            raise IPTablesError(f"{argv[0]}: {e.strerror or e}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), self.timeout)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise IPTablesError(f"{' '.join(argv[:4])} failed ({proc.returncode}): "
                                f"{err.decode(errors='replace').strip()[:2000]}")
        return out.decode(errors="replace")

    async def save(self) -> dict[str, SavedTable]:
        try:
            return parse_save(await self._run(self._argv("save")))
        except TimeoutError:
            raise IPTablesError(f"{self.backend}-save did not finish within {self.timeout}s") from None

    async def restore(self, text: str) -> None:
        """Apply ``text`` atomically, without flushing what it does not name."""
        try:
            await self._run(self._argv("restore", "--noflush"), text.encode())
        except TimeoutError:
            raise IPTablesError(f"{self.backend}-restore did not finish within {self.timeout}s") from None
