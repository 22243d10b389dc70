"""The logs and exec subresources: the API server relays them to the kubelet of the pod's node."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from minikube_py.api import errors

if TYPE_CHECKING:
    from .server import APIServer


async def proxy_to_kubelet(srv: APIServer, request: web.Request, pod: dict[str, Any], sub: str
                           ) -> web.StreamResponse:
    name = pod["metadata"]["name"]
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        raise errors.bad_request(f"pod {name} does not have a host assigned")
    raise errors.service_unavailable(f"no kubelet answers for node {node!r} yet")
