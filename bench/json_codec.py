"""JSON codec benchmark: why the API server encodes and decodes with orjson.

    .venv/bin/python bench/json_codec.py [--seconds 8] [--quick] [--json]

Encodes and decodes a realistic running Pod (about 5 KiB) and a 1,000-pod PodList (about 5 MiB)
with the standard library's json, orjson (the API server's choice), and ujson and msgspec when
installed. Every codec produces and consumes bytes, as the server does (so stdlib json pays for its
``.encode()``), and each result is checked to round-trip to the same object. Each cell is the best
of five timed batches, interleaved across codecs (``--seconds`` in all), printed in microseconds or milliseconds per
operation with the speed-up over stdlib json measured in the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import fmt, pod_as_served, positive_float, print_table, ratio

Encoder = Callable[[Any], bytes]
Decoder = Callable[[bytes], Any]


def codecs() -> tuple[dict[str, tuple[Encoder, Decoder]], list[str]]:
    """The codecs that import here, stdlib first; and a note for each one that does not."""
    found: dict[str, tuple[Encoder, Decoder]] = {
        "json (stdlib)": (lambda o: json.dumps(o, separators=(",", ":")).encode(), json.loads),
    }
    missing: list[str] = []
    try:
        import orjson

        found["orjson"] = (orjson.dumps, orjson.loads)
    except ImportError:
        missing.append("orjson is not installed")
    try:
        import ujson

        found["ujson"] = (lambda o: ujson.dumps(o, ensure_ascii=False).encode(), ujson.loads)
    except ImportError:
        missing.append("ujson is not installed (pip install ujson)")
    try:
        import msgspec

        encoder, decoder = msgspec.json.Encoder(), msgspec.json.Decoder()
        found["msgspec"] = (encoder.encode, decoder.decode)
    except ImportError:
        missing.append("msgspec is not installed (pip install msgspec)")
    return found, missing


def pod_list(n: int) -> dict[str, Any]:
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(5000 + n)},
            "items": [pod_as_served(f"web-7d4b9c8f5d-{i:05d}", "default", i) for i in range(n)]}


def best_times(fns: dict[str, Callable[[], object]], budget: float, rounds: int = 5) -> dict[str, float]:
    """Seconds per call of each function: the fastest of ``rounds`` batches, about ``budget`` in all.

    The batches are interleaved (one batch of each function per round), so a burst of load from
    elsewhere on this shared machine hits every codec alike instead of one codec's whole column.
    The cyclic garbage collector is off while timing, as in ``timeit``: a decoded 1,000-pod list is
    ~150,000 containers, and a full collection triggered by them would be charged to whichever
    codec happened to be running, not to its own work.
    """
    sizes: dict[str, int] = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()  # warm up, and size the batches
        once = max(time.perf_counter() - t0, 1e-7)
        sizes[name] = max(1, int(budget / len(fns) / rounds / once))
    best = dict.fromkeys(fns, float("inf"))
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, fn in fns.items():
                n = sizes[name]
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                best[name] = min(best[name], (time.perf_counter() - start) / n)
    finally:
        gc.enable()
    return best


def measure(seconds: float, list_size: int) -> tuple[dict[str, dict[str, float]], list[str], dict[str, int]]:
    """{codec: {operation: seconds per operation}}, notes, and the payload sizes in bytes."""
    found, notes = codecs()
    payloads = {"pod": pod_as_served("web-7d4b9c8f5d-00001", "default", 1), "list": pod_list(list_size)}
    reference = {name: found["json (stdlib)"][0](obj) for name, obj in payloads.items()}
    sizes = {name: len(data) for name, data in reference.items()}
    for codec, (encode, decode) in found.items():
        for name, obj in payloads.items():
            # A codec that is fast but wrong is no choice: both directions must round-trip.
            if decode(encode(obj)) != obj or decode(reference[name]) != obj:
                raise AssertionError(f"{codec} does not round-trip the {name} payload")
    results: dict[str, dict[str, float]] = {codec: {} for codec in found}
    cell_budget = seconds / 4
    for name, obj in payloads.items():
        encoders = {c: (lambda e=enc, o=obj: e(o)) for c, (enc, _) in found.items()}
        decoders = {c: (lambda d=dec, b=reference[name]: d(b)) for c, (_, dec) in found.items()}
        for op, fns in (("encode", encoders), ("decode", decoders)):
            for codec, t in best_times(fns, cell_budget).items():
                results[codec][f"{op} {name}"] = t
    return results, notes, sizes


def report(results: dict[str, dict[str, float]], notes: list[str], sizes: dict[str, int], list_size: int
           ) -> None:
    base = results["json (stdlib)"]
    ops = list(base)
    header = ["codec"]
    for op in ops:
        unit = "us" if op.endswith("pod") else "ms"
        header += [f"{op} {unit}", "speed-up"]
    rows = []
    for codec, row in results.items():
        cells = [codec]
        for op in ops:
            scale = 1e6 if op.endswith("pod") else 1e3
            cells += [fmt(row[op] * scale, 1), ratio(base[op], row[op])]
        rows.append(cells)
    print_table(f"JSON codecs: a running Pod ({sizes['pod']:,} B) and a {list_size:,}-pod list "
                f"({sizes['list'] / 1e6:.1f} MB); speed-up = stdlib time / codec time",
                header, rows)
    for note in notes:
        print(f"({note})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=positive_float, default=8.0,
                        help="total time budget for the timing loops (default 8)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100-pod list, 1 s budget")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead")
    args = parser.parse_args(argv)
    list_size = 100 if args.quick else 1000
    seconds = 1.0 if args.quick else args.seconds
    results, notes, sizes = measure(seconds, list_size)
    if args.json:
        print(json.dumps({"seconds_per_op": results, "sizes": sizes, "notes": notes}, indent=2))
    else:
        report(results, notes, sizes, list_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
