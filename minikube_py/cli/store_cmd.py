"""``minikube-py store``: look into (and poke at) a cluster store, one JSON object per output line.

    minikube-py store --url sqlite:///var/lib/minikube-py/store.db list /registry/pods/
    minikube-py store --url etcd://127.0.0.1:2379 watch /registry/ --from 120
    minikube-py store --url etcd://https://10.0.0.1:2379 --cacert etcd/ca.crt \
        --cert etcd/healthcheck-client.crt --key etcd/healthcheck-client.key list /registry/

Values print as text when they are UTF-8 (Kubernetes stores JSON), else as ``value_base64``.
An embedded SQLite store is locked by the process that has it open: stop the API server first.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from minikube_py.cli.main import UserError
from minikube_py.store import Event, KeyValue, Store, StoreError, open_store


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "store",
        help="read and write the cluster store (debugging)",
        description="Read, write and watch keys of a cluster store; prints JSON lines.",
    )
    parser.add_argument(
        "--url", required=True,
        help="sqlite:///path/to/store.db or etcd://[http[s]://]host:port[,...] (https: see --cacert)",
    )
    # etcdctl's names: an etcd with --client-cert-auth needs --cert/--key (e.g. healthcheck-client).
    parser.add_argument("--cacert", dest="tls_cacert", type=Path, metavar="FILE",
                        help="CA of etcd's serving certificates (TLS)")
    parser.add_argument("--cert", dest="tls_cert", type=Path, metavar="FILE", help="client certificate for etcd (TLS)")
    parser.add_argument("--key", dest="tls_key", type=Path, metavar="FILE", help="its key")
    actions = parser.add_subparsers(dest="store_action", metavar="ACTION")
    actions.required = True

    get = actions.add_parser("get", help="print one key")
    get.add_argument("key", metavar="KEY")
    get.add_argument("--revision", type=int, default=None, help="as of this revision")
    get.set_defaults(run=_runner(_get))

    ls = actions.add_parser("list", help="print every key under a prefix")
    ls.add_argument("prefix", metavar="PREFIX")
    ls.add_argument("--limit", type=int, default=0, help="at most this many keys (default: all)")
    ls.add_argument("--revision", type=int, default=None, help="as of this revision")
    ls.set_defaults(run=_runner(_list))

    put = actions.add_parser("put", help="create or overwrite a key")
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", help="the value, as UTF-8 text")
    put.set_defaults(run=_runner(_put))

    delete = actions.add_parser("del", help="delete a key; prints the value it had")
    delete.add_argument("key", metavar="KEY")
    delete.set_defaults(run=_runner(_del))

    watch = actions.add_parser("watch", help="print changes under a prefix until interrupted")
    watch.add_argument("prefix", metavar="PREFIX")
    watch.add_argument(
        "--from", dest="from_revision", type=int, default=0,
        help="replay changes after this revision first (default 0: only new changes)",
    )
    watch.add_argument("--count", type=int, default=0, help="stop after this many events (default: never)")
    watch.set_defaults(run=_runner(_watch))

    compact = actions.add_parser("compact", help="forget history up to and including a revision")
    compact.add_argument("revision", type=int, metavar="REV")
    compact.set_defaults(run=_runner(_compact))


def kv_json(kv: KeyValue) -> dict[str, Any]:
    out: dict[str, Any] = {"key": kv.key}
    try:
        out["value"] = kv.value.decode()
    except UnicodeDecodeError:
        out["value_base64"] = base64.b64encode(kv.value).decode()
    out |= {
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    }
    return out


def event_json(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"type": event.type.value, "revision": event.revision, "kv": kv_json(event.kv)}
    if event.prev_kv is not None:
        out["prev_kv"] = kv_json(event.prev_kv)
    return out


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=False), flush=True)


Action = Callable[[Store, argparse.Namespace], Awaitable[int]]


def _runner(action: Action) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(_with_store(action, args))

    return run


async def _with_store(action: Action, args: argparse.Namespace) -> int:
    tls = None
    if args.tls_cacert or args.tls_cert or args.tls_key:
        from minikube_py.store.etcd_tls import EtcdTLS

        if (args.tls_cert is None) != (args.tls_key is None):
            raise UserError("--cert and --key go together")
        tls = EtcdTLS(args.tls_cacert, args.tls_cert, args.tls_key)
    try:
        store = await open_store(args.url, etcd_tls=tls)
    except (ValueError, StoreError) as e:
        raise UserError(str(e)) from None
    except ImportError as e:
        raise UserError(f"this store backend is not available: {e}") from None
    try:
        return await action(store, args)
    except (StoreError, ValueError, TypeError) as e:
        raise UserError(str(e)) from None
    finally:
        await store.close()


async def _get(store: Store, args: argparse.Namespace) -> int:
    kv = await store.get(args.key, revision=args.revision)
    if kv is None:
        raise UserError(f"key {args.key!r} not found")
    _emit(kv_json(kv))
    return 0


async def _list(store: Store, args: argparse.Namespace) -> int:
    result = await store.range(args.prefix, limit=args.limit, revision=args.revision)
    for kv in result.items:
        _emit(kv_json(kv))
    return 0


async def _put(store: Store, args: argparse.Namespace) -> int:
    value = args.value.encode()
    kv = await store.guaranteed_update(args.key, lambda _current: value, create_if_missing=True)
    assert kv is not None
    _emit(kv_json(kv))
    return 0


async def _del(store: Store, args: argparse.Namespace) -> int:
    _emit(kv_json(await store.delete(args.key)))
    return 0


async def _watch(store: Store, args: argparse.Namespace) -> int:
    if args.count < 0:
        raise UserError("--count must not be negative")
    seen = 0
    async with store.watch(args.prefix, args.from_revision) as watch:
        async for event in watch:
            _emit(event_json(event))
            seen += 1
            if seen == args.count:
                break
    return 0


async def _compact(store: Store, args: argparse.Namespace) -> int:
    await store.compact(args.revision)
    _emit({"compacted_revision": await store.compacted_revision()})
    return 0
