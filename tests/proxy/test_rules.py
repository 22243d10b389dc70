"""Rule generation, checked against what kube-proxy writes for the same services."""

from __future__ import annotations

import pytest

from minikube_py.proxy.iptables import parse_save
from minikube_py.proxy.rules import (
    RulesConfig,
    cleanup_input,
    endpoint_chain,
    external_chain,
    generate,
    probability,
    restore_input,
    service_chain,
)
from minikube_py.proxy.services import Endpoint, ServicePort

CFG = RulesConfig(cluster_cidr="10.244.0.0/16")
WEB = ServicePort("default", "web", "http", "TCP", "10.96.0.50", 80)
EPS = [Endpoint("10.244.1.5", 8080), Endpoint("10.244.2.7", 8080)]


def test_chain_names_are_kube_proxys() -> None:
    # The names a real kube-proxy gives these well-known service ports.
    assert service_chain(ServicePort("default", "kubernetes", "https", "TCP", "10.96.0.1", 443)) \
        == "KUBE-SVC-NPX46M4PTMTKRN6Y"
    dns = ServicePort("kube-system", "kube-dns", "dns", "UDP", "10.96.0.10", 53)
    assert service_chain(dns) == "KUBE-SVC-TCOU7JCQXEZGVUNU"
    assert external_chain(dns) == "KUBE-EXT-TCOU7JCQXEZGVUNU"
    sep = endpoint_chain(WEB, EPS[0])
    assert sep.startswith("KUBE-SEP-") and len(sep) == len("KUBE-SEP-") + 16
    assert sep != endpoint_chain(WEB, EPS[1])
    # The protocol is part of the name: TCP and UDP on the same port are different chains.
    assert service_chain(WEB) != service_chain(ServicePort("default", "web", "http", "UDP", "10.96.0.50", 80))


def test_probability_is_printed_as_iptables_save_prints_it() -> None:
    assert probability(2) == "0.50000000000"
    assert probability(3) == "0.33333333349"
    assert probability(4) == "0.25000000000"
    assert probability(1) == "1.00000000000"
    with pytest.raises(ValueError):
        probability(0)


def test_two_endpoints_are_balanced_in_order() -> None:
    rs = generate([(WEB, EPS)], CFG)
    svc = service_chain(WEB)
    seps = [endpoint_chain(WEB, ep) for ep in EPS]
    assert [svc, *seps] == rs.nat.chains[-3:]
    assert rs.nat.rules_of("KUBE-SERVICES")[0] == (
        f'-A KUBE-SERVICES -m comment --comment "default/web:http cluster IP" -p tcp -m tcp '
        f'-d 10.96.0.50/32 --dport 80 -j {svc}')
    rules = rs.nat.rules_of(svc)
    assert rules == [
        f'-A {svc} -m comment --comment "default/web:http cluster IP" -p tcp -m tcp -d 10.96.0.50/32 '
        f'--dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ',
        f'-A {svc} -m comment --comment "default/web:http -> 10.244.1.5:8080" -m statistic --mode random '
        f'--probability 0.50000000000 -j {seps[0]}',
        f'-A {svc} -m comment --comment "default/web:http -> 10.244.2.7:8080" -j {seps[1]}',
    ]
    assert rs.nat.rules_of(seps[1]) == [
        f"-A {seps[1]} -m comment --comment default/web:http -s 10.244.2.7/32 -j KUBE-MARK-MASQ",
        f"-A {seps[1]} -m comment --comment default/web:http -p tcp -m tcp "
        f"-j DNAT --to-destination 10.244.2.7:8080",
    ]
    assert rs.filter.rules_of("KUBE-SERVICES") == []  # it has endpoints: nothing rejected


def test_three_endpoints_take_a_third_then_a_half_then_the_rest() -> None:
    eps = [Endpoint(f"10.244.1.{i}", 80) for i in (2, 3, 4)]
    rules = generate([(WEB, eps)], CFG).nat.rules_of(service_chain(WEB))[1:]
    assert "--probability 0.33333333349" in rules[0]
    assert "--probability 0.50000000000" in rules[1]
    assert "statistic" not in rules[2]
    assert [r.rsplit(" ", 1)[1] for r in rules] == [endpoint_chain(WEB, ep) for ep in eps]


def test_fixed_chains_and_the_nodeports_rule_last() -> None:
    rs = generate([(WEB, EPS)], CFG)
    assert rs.nat.chains[:4] == ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    assert rs.filter.chains == ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD"]
    assert rs.nat.rules_of("KUBE-SERVICES")[-1].endswith("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
    assert rs.nat.rules_of("KUBE-MARK-MASQ") == ["-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"]
    post = rs.nat.rules_of("KUBE-POSTROUTING")
    assert post[0] == "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN"
    assert post[-1].endswith("-j MASQUERADE --random-fully")


def test_node_port_goes_through_the_external_chain() -> None:
    sp = ServicePort("default", "web", "http", "TCP", "10.96.0.50", 80, node_port=30080)
    rs = generate([(sp, EPS)], CFG)
    ext, svc = external_chain(sp), service_chain(sp)
    assert rs.nat.rules_of("KUBE-NODEPORTS") == [
        f"-A KUBE-NODEPORTS -m comment --comment default/web:http -p tcp -m tcp --dport 30080 -j {ext}"]
    assert rs.nat.rules_of(ext) == [
        f'-A {ext} -m comment --comment "masquerade traffic for default/web:http external destinations" '
        f'-j KUBE-MARK-MASQ',
        f"-A {ext} -j {svc}",
    ]
    # Still last, after the cluster IP rule.
    assert rs.nat.rules_of("KUBE-SERVICES")[-1].endswith("-j KUBE-NODEPORTS")


def test_no_endpoints_rejects_in_the_filter_table_and_makes_no_nat_chains() -> None:
    sp = ServicePort("default", "web", "", "TCP", "10.96.0.50", 80, node_port=30080,
                     external_ips=("192.0.2.9",))
    rs = generate([(sp, [])], CFG)
    assert service_chain(sp) not in rs.nat.chains and external_chain(sp) not in rs.nat.chains
    assert rs.filter.rules_of("KUBE-SERVICES") == [
        '-A KUBE-SERVICES -m comment --comment "default/web has no endpoints" -p tcp -m tcp '
        '-d 10.96.0.50/32 --dport 80 -j REJECT']
    external = rs.filter.rules_of("KUBE-EXTERNAL-SERVICES")
    assert len(external) == 2
    assert "-d 192.0.2.9/32 --dport 80 -j REJECT" in external[0]
    assert "-m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30080 -j REJECT" in external[1]
    assert not rs.nat.rules_of("KUBE-NODEPORTS")


def test_masquerade_settings() -> None:
    svc = service_chain(WEB)
    everything = generate([(WEB, EPS)], RulesConfig(cluster_cidr="10.244.0.0/16", masquerade_all=True))
    assert everything.nat.rules_of(svc)[0].endswith("--dport 80 -j KUBE-MARK-MASQ")
    assert "! -s" not in everything.nat.rules_of(svc)[0]
    nothing = generate([(WEB, EPS)], RulesConfig(cluster_cidr=""))
    assert not any("KUBE-MARK-MASQ" in r for r in nothing.nat.rules_of(svc))
    assert RulesConfig(cluster_cidr="10.244.3.1/16").cluster_cidr == "10.244.0.0/16"
    for bad in ("10.244.0.0/33", "fd00::/64", "nonsense"):
        with pytest.raises(ValueError):
            RulesConfig(cluster_cidr=bad)


def test_client_ip_affinity_uses_recent() -> None:
    sp = ServicePort("default", "web", "http", "TCP", "10.96.0.50", 80, affinity_seconds=600)
    rs = generate([(sp, EPS)], CFG)
    svc, seps = service_chain(sp), [endpoint_chain(sp, ep) for ep in EPS]
    rules = rs.nat.rules_of(svc)
    # The sticky checks come before the random pick.
    assert rules[1] == (f"-A {svc} -m comment --comment default/web:http -m recent --name {seps[0]} "
                        f"--rcheck --seconds 600 --reap -j {seps[0]}")
    assert "--rcheck" in rules[2] and "statistic" in rules[3]
    assert f"-m recent --name {seps[0]} --set -j DNAT" in rs.nat.rules_of(seps[0])[1]


def test_output_does_not_depend_on_input_order() -> None:
    other = ServicePort("kube-system", "dns", "dns", "UDP", "10.96.0.10", 53)
    a = generate([(WEB, EPS), (other, [Endpoint("10.244.1.9", 53)])], CFG)
    b = generate([(other, [Endpoint("10.244.1.9", 53)]), (WEB, EPS)], CFG)
    assert a.nat.rules == b.nat.rules and a.filter.rules == b.filter.rules


EXT_JUMP = ('-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" '
            '-j KUBE-EXTERNAL-SERVICES')
SAVED = f"""# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
-A INPUT {EXT_JUMP}
-A OUTPUT -j KUBE-FIREWALL
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:KUBE-MARK-DROP - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-OLDOLDOLDOLDOLD1 - [0:0]
:KUBE-SEP-OLDOLDOLDOLDOLD2 - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.99/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-OLDOLDOLDOLDOLD1
-A KUBE-SVC-OLDOLDOLDOLDOLD1 -j KUBE-SEP-OLDOLDOLDOLDOLD2
COMMIT
"""


def test_restore_input_rewrites_our_chains_and_deletes_stale_ones() -> None:
    rs = generate([(WEB, EPS)], CFG)
    text = restore_input(rs, parse_save(SAVED))
    filt, nat = text.split("*nat\n")
    assert filt.startswith("*filter\n") and filt.endswith("COMMIT\n") and nat.endswith("COMMIT\n")
    # Every chain we own is declared (which flushes it) and refilled.
    for chain in rs.nat.chains:
        assert f"\n:{chain} - [0:0]\n" in "\n" + nat
    assert all(rule in nat for rule in rs.nat.rules)
    # The stale service chains are flushed, then deleted after the rules that used them are rewritten.
    for stale in ("KUBE-SVC-OLDOLDOLDOLDOLD1", "KUBE-SEP-OLDOLDOLDOLDOLD2"):
        assert f":{stale} - [0:0]" in nat
        assert nat.index(f"-X {stale}") > nat.index(rs.nat.rules[-1])
    # Chains that are not ours are never named, so --noflush leaves them alone.
    for foreign in ("CNI-HOSTPORT-DNAT", "KUBE-MARK-DROP", "KUBE-FIREWALL", "PREROUTING"):
        assert f":{foreign} " not in text and f"-X {foreign}" not in text
    # Only the missing jumps are inserted.
    assert "-I PREROUTING" not in nat and "-I OUTPUT" not in nat
    assert "-I POSTROUTING 1 -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING" in nat
    assert "-I INPUT" not in filt
    assert '-I OUTPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" ' \
           '-j KUBE-SERVICES' in filt
    assert filt.count("-I FORWARD 1") == 3


def test_restore_input_from_nothing_declares_tables() -> None:
    text = restore_input(generate([], CFG), {})
    assert text.count("COMMIT") == 2 and "-X" not in text
    assert text.count("-I ") == 8  # every jump


def test_cleanup_removes_our_chains_and_jumps_only() -> None:
    text = cleanup_input(parse_save(SAVED))
    assert '-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in text
    assert f"-D INPUT {EXT_JUMP}" in text
    for chain in ("KUBE-SERVICES", "KUBE-SVC-OLDOLDOLDOLDOLD1", "KUBE-SEP-OLDOLDOLDOLDOLD2"):
        assert f"-X {chain}" in text
    for kept in ("KUBE-MARK-DROP", "KUBE-FIREWALL", "CNI-HOSTPORT-DNAT"):
        assert kept not in text
    # The jumps are deleted before the chains they point to.
    nat = text.split("*nat\n")[1]
    assert nat.index("-D PREROUTING") < nat.index("-X KUBE-SERVICES")
    assert cleanup_input(parse_save("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")) == ""
