"""core/v1 Events as Kubernetes' event recorder writes them: repeats of the same event bump
``count`` and ``lastTimestamp`` instead of piling up new objects."""

from __future__ import annotations

import hashlib
import logging
import socket
from typing import Any

from minikube_py.client.rest import APIClient, ApiStatusError

log = logging.getLogger("minikube_py.events")


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(self, client: APIClient, component: str, host: str | None = None) -> None:
        self.client = client
        self.component = component
        self.host = host or socket.gethostname()
        # (involved uid, reason, message) -> (namespace, event name); dedups repeats like the
        # event correlator does, without a read per event.
        self._seen: dict[tuple[str, str, str], tuple[str, str]] = {}

    async def record(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Record an event about ``obj``; never raises (events are best-effort, as in Kubernetes)."""
        m = obj.get("metadata", {})
        namespace = m.get("namespace") or "default"
        uid = m.get("uid", "")
        key = (uid, reason, message)
        try:
            seen = self._seen.get(key)
            if seen is not None:
                ns, name = seen
                current = await self.client.get_or_none("events", name, ns)
                if current is not None:
                    await self.client.patch("events", name, {"count": int(current.get("count") or 1) + 1,
                                                             "lastTimestamp": _now()}, ns)
                    return
            digest = hashlib.sha1(f"{uid}{reason}{message}".encode()).hexdigest()[:8]
            name = f"{m.get('name', 'unknown')}.{digest}"
            now = _now()
            event = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {"kind": obj.get("kind"), "namespace": m.get("namespace"), "name": m.get("name"),
                                   "uid": uid, "apiVersion": obj.get("apiVersion"),
                                   "resourceVersion": m.get("resourceVersion")},
                "reason": reason, "message": message, "type": type_,
                "source": {"component": self.component, "host": self.host},
                "firstTimestamp": now, "lastTimestamp": now, "count": 1,
                "reportingComponent": self.component, "reportingInstance": self.host,
            }
            try:
                await self.client.create("events", event, namespace)
            except ApiStatusError as e:
                if e.code != 409:
                    raise
                await self.client.patch("events", name, {"lastTimestamp": now}, namespace)
            self._seen[key] = (namespace, name)
            if len(self._seen) > 4096:
                self._seen.pop(next(iter(self._seen)))
        except Exception as e:  # events must never break the caller's work
            log.debug("could not record event %s/%s: %s", reason, m.get("name"), e)
