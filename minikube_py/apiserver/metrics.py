"""Prometheus metrics in the text exposition format, named as kube-apiserver names them."""

from __future__ import annotations

import bisect
from collections import defaultdict

# kube-apiserver's request-duration buckets (seconds), trimmed of the longest ones.
_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, str], int] = defaultdict(int)
        self.durations: dict[tuple[str, str], list[float]] = {}
        self.inflight = 0
        self.watchers: dict[str, int] = defaultdict(int)

    def observe(self, verb: str, resource: str, subresource: str, code: int, seconds: float) -> None:
        self.requests[(verb, resource, subresource, str(code))] += 1
        key = (verb, resource)
        h = self.durations.get(key)
        if h is None:
            # counts per bucket, then +Inf count, then the sum
            h = self.durations[key] = [0.0] * (len(_BUCKETS) + 2)
        h[bisect.bisect_left(_BUCKETS, seconds)] += 1
        h[-1] += seconds

    def render(self) -> bytes:
        out = [
            "# HELP apiserver_request_total Counter of apiserver requests broken out by verb, resource and code.",
            "# TYPE apiserver_request_total counter",
        ]
        for (verb, res, sub, code), n in sorted(self.requests.items()):
            out.append(f'apiserver_request_total{{verb="{verb}",resource="{res}",subresource="{sub}",'
                       f'code="{code}"}} {n}')
        out += [
            "# HELP apiserver_request_duration_seconds Response latency distribution by verb and resource.",
            "# TYPE apiserver_request_duration_seconds histogram",
        ]
        for (verb, res), h in sorted(self.durations.items()):
            labels = f'verb="{verb}",resource="{res}"'
            cumulative = 0.0
            for le, count in zip(_BUCKETS, h, strict=False):
                cumulative += count
                out.append(f'apiserver_request_duration_seconds_bucket{{{labels},le="{le}"}} {int(cumulative)}')
            cumulative += h[len(_BUCKETS)]
            out.append(f'apiserver_request_duration_seconds_bucket{{{labels},le="+Inf"}} {int(cumulative)}')
            out.append(f"apiserver_request_duration_seconds_sum{{{labels}}} {h[-1]:.6f}")
            out.append(f"apiserver_request_duration_seconds_count{{{labels}}} {int(cumulative)}")
        out += [
            "# HELP apiserver_current_inflight_requests Requests being served right now.",
            "# TYPE apiserver_current_inflight_requests gauge",
            f"apiserver_current_inflight_requests {self.inflight}",
            "# HELP apiserver_registered_watchers Open watches by resource.",
            "# TYPE apiserver_registered_watchers gauge",
        ]
        for res, n in sorted(self.watchers.items()):
            out.append(f'apiserver_registered_watchers{{resource="{res}"}} {n}')
        return ("\n".join(out) + "\n").encode()
