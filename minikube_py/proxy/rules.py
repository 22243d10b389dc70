"""kube-proxy's iptables rules, generated from service ports and their endpoints — pure functions, no
I/O.

The shape (nat table): PREROUTING and OUTPUT jump to KUBE-SERVICES, which matches each cluster IP
(and external IP) and jumps to the service port's KUBE-SVC-<hash> chain; its last rule sends traffic
for local addresses to KUBE-NODEPORTS, which jumps to KUBE-EXT-<hash> (mark for masquerade, then
KUBE-SVC). KUBE-SVC picks an endpoint with ``-m statistic`` (1/n, 1/(n-1), ..., the last one taking
what is left) and jumps to its KUBE-SEP-<hash>, which DNATs. Packets marked 0x4000 by KUBE-MARK-MASQ
are masqueraded in KUBE-POSTROUTING. In the filter table, a port without endpoints is REJECTed
(KUBE-SERVICES for cluster IPs, KUBE-EXTERNAL-SERVICES for node ports and external IPs), so clients
fail fast instead of timing out.

Chain names are kube-proxy's: the first 16 characters of the base32 SHA-256 of the service port name
and protocol (plus the endpoint for KUBE-SEP), so they match what a real kube-proxy would write.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from .iptables import SavedTable, rule_chain, rule_target
from .services import Endpoint, ServicePort

MASQ_MARK = "0x4000"
TABLES = ("filter", "nat")

# The chains every sync writes, per table, in the order they are declared.
FIXED_CHAINS = {
    "filter": ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD"),
    "nat": ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"),
}
# Per-service chains: ones of these that no longer belong to a service are deleted.
DYNAMIC_PREFIXES = ("KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-", "KUBE-SVL-", "KUBE-FW-")
# Chains only a kube-proxy makes, removed by --cleanup too (KUBE-MARK-DROP, KUBE-FIREWALL and
# KUBE-KUBELET-CANARY are the kubelet's, and stay).
CLEANUP_CHAINS = {
    "filter": (*FIXED_CHAINS["filter"], "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL", "KUBE-PROXY-CANARY"),
    "nat": (*FIXED_CHAINS["nat"], "KUBE-PROXY-CANARY"),
}

# (table, built-in chain, match arguments, our chain): the jumps into our chains, as kube-proxy
# installs them. They live in chains we do not own, so they are added once and never flushed.
JUMPS: tuple[tuple[str, str, str, str], ...] = (
    ("filter", "INPUT", '-m conntrack --ctstate NEW -m comment --comment '
     '"kubernetes externally-visible service portals"', "KUBE-EXTERNAL-SERVICES"),
    ("filter", "FORWARD", '-m conntrack --ctstate NEW -m comment --comment '
     '"kubernetes externally-visible service portals"', "KUBE-EXTERNAL-SERVICES"),
    ("filter", "FORWARD", '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals"',
     "KUBE-SERVICES"),
    ("filter", "OUTPUT", '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals"',
     "KUBE-SERVICES"),
    ("filter", "FORWARD", '-m comment --comment "kubernetes forwarding rules"', "KUBE-FORWARD"),
    ("nat", "OUTPUT", '-m comment --comment "kubernetes service portals"', "KUBE-SERVICES"),
    ("nat", "PREROUTING", '-m comment --comment "kubernetes service portals"', "KUBE-SERVICES"),
    ("nat", "POSTROUTING", '-m comment --comment "kubernetes postrouting rules"', "KUBE-POSTROUTING"),
)


@dataclass(frozen=True)
class RulesConfig:
    """What shapes the rules beyond the services: who counts as "inside the cluster"."""

    cluster_cidr: str = ""  # traffic to a cluster IP from outside it is masqueraded; "" = never
    masquerade_all: bool = False  # masquerade all traffic to cluster IPs

    def __post_init__(self) -> None:
        if self.cluster_cidr:
            net = ipaddress.ip_network(self.cluster_cidr, strict=False)  # ValueError for bad input
            if net.version != 4:
                raise ValueError(f"cluster CIDR {self.cluster_cidr} is not IPv4")
            object.__setattr__(self, "cluster_cidr", str(net))


@dataclass
class TableRules:
    chains: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)  # "-A CHAIN ..." lines

    def add(self, chain: str, *args: str) -> None:
        self.rules.append(" ".join(("-A", chain, *args)))

    def rules_of(self, chain: str) -> list[str]:
        prefix = f"-A {chain} "
        return [r for r in self.rules if r.startswith(prefix)]


@dataclass
class RuleSet:
    """Every chain and rule this proxy owns, per table."""

    tables: dict[str, TableRules] = field(default_factory=lambda: {t: TableRules() for t in TABLES})

    @property
    def filter(self) -> TableRules:
        return self.tables["filter"]

    @property
    def nat(self) -> TableRules:
        return self.tables["nat"]

    def rule_count(self, table: str) -> int:
        return len(self.tables[table].rules)


# ---- names -----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=65536)
def _hash(text: str) -> str:
    # 10 bytes are exactly the 16 base32 characters kube-proxy keeps (base32 works in 5-byte groups),
    # and Python's base32 is slow enough per byte to matter at thousands of endpoints.
    return base64.b32encode(hashlib.sha256(text.encode()).digest()[:10]).decode()


def service_chain(sp: ServicePort) -> str:
    return "KUBE-SVC-" + _hash(sp.port_key + sp.protocol.lower())


def external_chain(sp: ServicePort) -> str:
    return "KUBE-EXT-" + _hash(sp.port_key + sp.protocol.lower())


def endpoint_chain(sp: ServicePort, ep: Endpoint) -> str:
    return "KUBE-SEP-" + _hash(sp.port_key + sp.protocol.lower() + ep.address)


def probability(n: int) -> str:
    """The ``--probability`` of picking the first of ``n`` remaining endpoints, written as
    iptables-save prints it: the kernel keeps it as a fraction of 2**31, shown with 11 decimals
    (1/3 -> 0.33333333349), so that what we write reads back unchanged."""
    if n < 1:
        raise ValueError("probability of one of no endpoints")
    return f"{round((1 << 31) / n) / (1 << 31):.11f}"


def _comment(text: str) -> list[str]:
    return ["-m", "comment", "--comment", f'"{text}"' if " " in text else text]


def _proto(sp: ServicePort) -> list[str]:
    p = sp.protocol.lower()
    return ["-p", p, "-m", p]


# ---- generation ------------------------------------------------------------------------------------

def generate(services: Iterable[tuple[ServicePort, list[Endpoint]]], config: RulesConfig) -> RuleSet:
    """The complete rule set for these service ports and their (already chosen) endpoints."""
    rs = RuleSet()
    for table in TABLES:
        rs.tables[table].chains.extend(FIXED_CHAINS[table])
    filt, nat = rs.filter, rs.nat

    nat.add("KUBE-POSTROUTING", "-m", "mark", "!", "--mark", f"{MASQ_MARK}/{MASQ_MARK}", "-j", "RETURN")
    # Clear the mark so a packet re-traversing the chain (e.g. after IPsec) is not masqueraded twice.
    nat.add("KUBE-POSTROUTING", "-j", "MARK", "--xor-mark", MASQ_MARK)
    nat.add("KUBE-POSTROUTING", *_comment("kubernetes service traffic requiring SNAT"),
            "-j", "MASQUERADE", "--random-fully")
    nat.add("KUBE-MARK-MASQ", "-j", "MARK", "--or-mark", MASQ_MARK)
    filt.add("KUBE-FORWARD", *_comment("kubernetes forwarding rules"),
             "-m", "mark", "--mark", f"{MASQ_MARK}/{MASQ_MARK}", "-j", "ACCEPT")
    filt.add("KUBE-FORWARD", *_comment("kubernetes forwarding conntrack rule"),
             "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")

    for sp, endpoints in sorted(services, key=lambda item: item[0]):
        _service_rules(rs, sp, endpoints, config)

    # Must stay last: node ports match any local address, so every cluster IP has to be tried first.
    nat.add("KUBE-SERVICES",
            *_comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain"),
            "-m", "addrtype", "--dst-type", "LOCAL", "-j", "KUBE-NODEPORTS")
    return rs


def _service_rules(rs: RuleSet, sp: ServicePort, endpoints: list[Endpoint], config: RulesConfig) -> None:
    filt, nat = rs.filter, rs.nat
    name = sp.port_key
    proto = _proto(sp)
    if not endpoints:
        no_eps = _comment(f"{name} has no endpoints")
        filt.add("KUBE-SERVICES", *no_eps, *proto, "-d", f"{sp.cluster_ip}/32", "--dport", str(sp.port),
                 "-j", "REJECT")
        for ip in sp.external_ips:
            filt.add("KUBE-EXTERNAL-SERVICES", *no_eps, *proto, "-d", f"{ip}/32", "--dport", str(sp.port),
                     "-j", "REJECT")
        if sp.node_port:
            filt.add("KUBE-EXTERNAL-SERVICES", *no_eps, "-m", "addrtype", "--dst-type", "LOCAL", *proto,
                     "--dport", str(sp.node_port), "-j", "REJECT")
        return

    svc = service_chain(sp)
    nat.chains.append(svc)
    cluster_ip = [*_comment(f"{name} cluster IP"), *proto, "-d", f"{sp.cluster_ip}/32",
                  "--dport", str(sp.port)]
    nat.add("KUBE-SERVICES", *cluster_ip, "-j", svc)
    if config.masquerade_all:
        nat.add(svc, *cluster_ip, "-j", "KUBE-MARK-MASQ")
    elif config.cluster_cidr:
        # Traffic from outside the pod network (the node itself, other hosts) must come back through
        # this node to be un-DNATed, so it is masqueraded; pod-to-service traffic keeps its source.
        nat.add(svc, *cluster_ip, "!", "-s", config.cluster_cidr, "-j", "KUBE-MARK-MASQ")

    if sp.node_port or sp.external_ips:
        ext = external_chain(sp)
        nat.chains.append(ext)
        for ip in sp.external_ips:
            nat.add("KUBE-SERVICES", *_comment(f"{name} external IP"), *proto, "-d", f"{ip}/32",
                    "--dport", str(sp.port), "-j", ext)
        if sp.node_port:
            nat.add("KUBE-NODEPORTS", *_comment(name), *proto, "--dport", str(sp.node_port), "-j", ext)
        nat.add(ext, *_comment(f"masquerade traffic for {name} external destinations"),
                "-j", "KUBE-MARK-MASQ")
        nat.add(ext, "-j", svc)

    chains = [endpoint_chain(sp, ep) for ep in endpoints]
    if sp.affinity_seconds:
        # A client seen recently goes back to the endpoint that served it (the list the SEP chain set).
        for chain in chains:
            nat.add(svc, *_comment(name), "-m", "recent", "--name", chain, "--rcheck",
                    "--seconds", str(sp.affinity_seconds), "--reap", "-j", chain)
    n = len(endpoints)
    for i, (ep, chain) in enumerate(zip(endpoints, chains, strict=True)):
        pick = _comment(f"{name} -> {ep.address}")
        if i < n - 1:
            nat.add(svc, *pick, "-m", "statistic", "--mode", "random", "--probability", probability(n - i),
                    "-j", chain)
        else:
            nat.add(svc, *pick, "-j", chain)
    for ep, chain in zip(endpoints, chains, strict=True):
        nat.chains.append(chain)
        # Hairpin: a pod reaching itself through the service must see the reply come from the
        # service, so its own traffic is masqueraded.
        nat.add(chain, *_comment(name), "-s", f"{ep.ip}/32", "-j", "KUBE-MARK-MASQ")
        affinity = ["-m", "recent", "--name", chain, "--set"] if sp.affinity_seconds else []
        nat.add(chain, *_comment(name), *proto, *affinity, "-j", "DNAT", "--to-destination", ep.address)


# ---- iptables-restore input ------------------------------------------------------------------------

def _is_ours(table: str, chain: str) -> bool:
    return chain.startswith(DYNAMIC_PREFIXES) or chain in CLEANUP_CHAINS.get(table, ())


def stale_chains(rs: RuleSet, saved: dict[str, SavedTable]) -> dict[str, list[str]]:
    """Per table, the per-service chains present in the kernel that the new rule set no longer has."""
    out: dict[str, list[str]] = {}
    for table in TABLES:
        have = set(rs.tables[table].chains)
        existing = saved.get(table, SavedTable()).chains
        out[table] = sorted(c for c in existing if c.startswith(DYNAMIC_PREFIXES) and c not in have)
    return out


def missing_jumps(saved: dict[str, SavedTable]) -> list[tuple[str, str, str, str]]:
    """The jumps into our chains that the built-in chains do not have yet."""
    out = []
    for table, builtin, match, target in JUMPS:
        rules = saved.get(table, SavedTable()).rules_of(builtin)
        if not any(rule_target(r) == target for r in rules):
            out.append((table, builtin, match, target))
    return out


def restore_input(rs: RuleSet, saved: dict[str, SavedTable]) -> str:
    """iptables-restore --noflush input that makes the kernel hold exactly ``rs`` in our chains.

    Declaring a chain flushes it, so every chain we own is rewritten whole; stale per-service chains
    are declared (flushed) then deleted after the rules that referenced them are gone; the jumps
    from the built-in chains are inserted only when missing, because those chains are not ours to
    flush.
    """
    stale = stale_chains(rs, saved)
    jumps = missing_jumps(saved)
    lines: list[str] = []
    for table in TABLES:
        tr = rs.tables[table]
        lines.append(f"*{table}")
        lines += [f":{c} - [0:0]" for c in tr.chains]
        lines += [f":{c} - [0:0]" for c in stale[table]]
        # Inserted at the top in reverse, so they end up in JUMPS order ahead of others' rules.
        for t, builtin, match, target in reversed(jumps):
            if t == table:
                lines.append(f"-I {builtin} 1 {match} -j {target}")
        lines += tr.rules
        lines += [f"-X {c}" for c in stale[table]]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def cleanup_input(saved: dict[str, SavedTable]) -> str:
    """iptables-restore --noflush input removing every chain a kube-proxy makes and every jump to one."""
    lines: list[str] = []
    for table in TABLES:
        st = saved.get(table)
        if st is None:
            continue
        ours = [c for c in st.chains if _is_ours(table, c)]
        if not ours:
            continue
        lines.append(f"*{table}")
        lines += [f":{c} - [0:0]" for c in ours]
        for rule in st.rules:
            if not _is_ours(table, rule_chain(rule)) and _is_ours(table, rule_target(rule) or ""):
                lines.append("-D " + rule[3:])
        lines += [f"-X {c}" for c in ours]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n" if lines else ""
