"""User impersonation (``kubectl --as``, ``--as-group``, ``--as-uid``): the ``Impersonate-*`` headers.

As kube-apiserver's impersonation filter: the authenticated user must be allowed the ``impersonate``
verb on every part it asks for — ``users`` (or ``serviceaccounts`` in the account's namespace for
``system:serviceaccount:NS:NAME``), ``groups``, ``uids`` and ``userextras/<key>`` in
authentication.k8s.io — and the request then runs as the impersonated user alone. Asking for groups,
a uid or extras without a user is a bad request. Extras are checked but not carried: nothing here
reads them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from minikube_py.api import errors

from .requests import RequestInfo

if TYPE_CHECKING:
    from .server import User

AUTHENTICATED = "system:authenticated"
ANONYMOUS_USER = "system:anonymous"
SA_PREFIX = "system:serviceaccount:"
HEADER_USER = "Impersonate-User"
HEADER_GROUP = "Impersonate-Group"
HEADER_UID = "Impersonate-Uid"
HEADER_EXTRA = "impersonate-extra-"

Decide = Callable[["User", RequestInfo], Awaitable[tuple[bool, str]]]


def requested(headers: Mapping[str, str]) -> bool:
    """Whether the request carries any impersonation header (cheap: the common case has none)."""
    return any(k.lower().startswith("impersonate-") for k in headers)


async def impersonate(user: User, headers: Mapping[str, str], decide: Decide) -> User:
    """The user the request runs as; raises 400 for a malformed request and 403 for one not allowed."""
    from .server import User

    getall = getattr(headers, "getall", None)
    name = (headers.get(HEADER_USER) or "").strip()
    groups = [g.strip() for g in (getall(HEADER_GROUP, []) if getall else [headers.get(HEADER_GROUP, "")])
              if g.strip()]
    uid = (headers.get(HEADER_UID) or "").strip()
    extras = sorted({k[len(HEADER_EXTRA):].lower() for k in headers if k.lower().startswith(HEADER_EXTRA)})
    if not name:
        asked = [f"{HEADER_GROUP}: {g}" for g in groups] + ([f"{HEADER_UID}: {uid}"] if uid else [])
        asked += [f"extra {e}" for e in extras]
        raise errors.bad_request(f"requested [{', '.join(asked) or 'impersonation'}] without impersonating a user")

    checks: list[RequestInfo] = []
    sa_groups: list[str] = []
    if name.startswith(SA_PREFIX) and name.count(":") == 3:
        ns, sa = name[len(SA_PREFIX):].split(":", 1)
        checks.append(_check("serviceaccounts", sa, namespace=ns))
        sa_groups = ["system:serviceaccounts", f"system:serviceaccounts:{ns}"]
    else:
        checks.append(_check("users", name))
    checks += [_check("groups", g) for g in groups]
    if uid:
        checks.append(_check("uids", uid, group="authentication.k8s.io"))
    checks += [_check("userextras", "", group="authentication.k8s.io", subresource=e) for e in extras]
    for ri in checks:
        allowed, _ = await decide(user, ri)
        if not allowed:
            kind = ri.resource + (f"/{ri.subresource}" if ri.subresource else "")
            target = f' "{ri.name}"' if ri.name else ""
            where = f' in the namespace "{ri.namespace}"' if ri.namespace else " at the cluster scope"
            raise errors.forbidden(f'{kind}{target} is forbidden: User "{user.name}" cannot impersonate resource '
                                   f'"{kind}" in API group "{ri.group}"{where}')

    out = groups or sa_groups
    if name != ANONYMOUS_USER and AUTHENTICATED not in out:
        out = [*out, AUTHENTICATED]
    return User(name, uid, tuple(out))


def _check(resource: str, name: str, *, namespace: str | None = None, group: str = "",
           subresource: str = "") -> RequestInfo:
    return RequestInfo(path="", verb="impersonate", is_resource=True, api_prefix="apis" if group else "api",
                       group=group, version="v1", resource=resource, namespace=namespace, name=name or None,
                       subresource=subresource)
