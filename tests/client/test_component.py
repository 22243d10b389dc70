"""The component health/metrics server: health endpoints as Kubernetes components answer them, the
Prometheus text format, and the in-memory self-signed serving certificate."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest
from cryptography import x509

from minikube_py.client.component import ComponentServer, MetricsRegistry


def insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=insecure())) as s:
        yield s


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as r:
        return r.status, await r.text()


async def test_health_endpoints_follow_the_checks(http: aiohttp.ClientSession) -> None:
    state = {"informers": True}
    server = ComponentServer(name="kube-scheduler", port=0)
    server.add_check("informer-sync", lambda: state["informers"])

    async def leader() -> bool:
        return True

    server.add_check("leader-election", leader)
    async with server:
        assert server.port > 0 and server.url.startswith("https://127.0.0.1:")
        for path in ("/healthz", "/livez", "/readyz"):
            assert await fetch(http, server.url + path) == (200, "ok")
        status, text = await fetch(http, server.url + "/healthz?verbose")
        assert status == 200 and "[+]informer-sync ok" in text and "[+]leader-election ok" in text

        state["informers"] = False
        status, text = await fetch(http, server.url + "/readyz")
        assert status == 500
        assert "[-]informer-sync failed" in text and "[+]ping ok" in text and "readyz check failed" in text
        assert (await fetch(http, server.url + "/healthz/informer-sync"))[0] == 500
        assert await fetch(http, server.url + "/healthz/leader-election") == (200, "ok")
        assert (await fetch(http, server.url + "/healthz/nope"))[0] == 404

        def broken() -> bool:
            raise RuntimeError("check bug")

        state["informers"] = True
        server.add_check("broken", broken)
        assert (await fetch(http, server.url + "/livez"))[0] == 500  # a raising check fails, not crashes


async def test_self_signed_certificate_names_localhost(http: aiohttp.ClientSession) -> None:
    async with ComponentServer(name="kube-controller-manager", port=0) as server:
        ctx = insecure()
        _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        await writer.wait_closed()
    cert = x509.load_der_x509_certificate(der)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert cert.subject.rfc4514_string().startswith("CN=kube-controller-manager@")


async def test_plain_http_and_metrics(http: aiohttp.ClientSession) -> None:
    server = ComponentServer(name="kube-proxy", port=0, tls=False)
    syncs = server.metrics.counter("kubeproxy_sync_proxy_rules_total", "Rule syncs.", ["result"])
    rules = server.metrics.gauge("kubeproxy_iptables_rules", "Rules programmed.")
    latency = server.metrics.histogram("kubeproxy_sync_proxy_rules_duration_seconds", "Sync latency.",
                                       buckets=(0.1, 1.0))
    syncs.labels(result="ok").inc()
    syncs.labels("ok").inc(2)
    syncs.labels(result='we"ird').inc()
    rules.set(42)
    latency.observe(0.05)
    latency.observe(0.5)
    latency.observe(3)
    async with server:
        assert server.url.startswith("http://")
        async with http.get(server.url + "/metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
    lines = text.splitlines()
    assert "# TYPE kubeproxy_sync_proxy_rules_total counter" in lines
    assert 'kubeproxy_sync_proxy_rules_total{result="ok"} 3' in lines
    assert 'kubeproxy_sync_proxy_rules_total{result="we\\"ird"} 1' in lines
    assert "# TYPE kubeproxy_iptables_rules gauge" in lines and "kubeproxy_iptables_rules 42" in lines
    assert 'kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.1"} 1' in lines
    assert 'kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="1"} 2' in lines
    assert 'kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="+Inf"} 3' in lines
    assert "kubeproxy_sync_proxy_rules_duration_seconds_sum 3.55" in lines
    assert "kubeproxy_sync_proxy_rules_duration_seconds_count 3" in lines


def test_metric_misuse_is_refused() -> None:
    reg = MetricsRegistry()
    c = reg.counter("requests_total", "Requests.", ["code"])
    assert reg.counter("requests_total", "Requests.", ["code"]) is c  # registering again is harmless
    with pytest.raises(ValueError):
        reg.gauge("requests_total", "Requests.")
    with pytest.raises(ValueError):
        c.inc()  # labels declared: which child?
    with pytest.raises(ValueError):
        c.labels(verb="GET")
    with pytest.raises(ValueError):
        c.labels("200").inc(-1)
    with pytest.raises(ValueError):
        reg.counter("bad name", "x")
    with pytest.raises(ValueError):
        reg.histogram("h", "x", ["le"])  # reserved for buckets
    with pytest.raises(ValueError):
        ComponentServer(name="x", port=70000)


async def test_port_in_use_is_a_clear_error() -> None:
    async with ComponentServer(name="a", port=0, tls=False) as first:
        with pytest.raises(OSError):
            await ComponentServer(name="b", port=first.port, tls=False).start()
