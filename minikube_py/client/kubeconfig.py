"""kubeconfig files: writing the ones components and users need, reading them the way kubectl does.

The reader understands the subset this project writes and what users typically hand it: one or more
files (``KUBECONFIG`` joined with ``:``, the first file to define a name wins, as in kubectl),
inline ``*-data`` fields in base64 and file paths relative to the kubeconfig that names them,
bearer tokens (``token``, ``tokenFile``) and client certificates. Credential plugins (``exec``,
``auth-provider``) are refused with a clear error rather than silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography import x509

from minikube_py.pki import write_private_file

DEFAULT_PATH = Path("~/.kube/config")


@dataclass
class KubeConfig:
    """How to reach and authenticate to one API server (one resolved context)."""

    server: str
    ca_pem: bytes | None = None
    token: str | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    namespace: str = "default"
    insecure: bool = False

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context for ``server`` (None for plain http)."""
        if urlsplit(self.server).scheme != "https":
            return None
        ctx = ssl.create_default_context(cadata=self.ca_pem.decode() if self.ca_pem else None)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.client_cert_pem and self.client_key_pem:
            # Python's ssl reads a client certificate only from files; they live for this call only,
            # in a directory only we can read.
            with tempfile.TemporaryDirectory(prefix="minikube-py-tls-") as tmp:
                cert_file, key_file = Path(tmp) / "client.crt", Path(tmp) / "client.key"
                write_private_file(cert_file, self.client_cert_pem)
                write_private_file(key_file, self.client_key_pem)
                ctx.load_cert_chain(cert_file, key_file)
        return ctx

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header for a bearer token, if this config has one."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_pem: bytes,
    user: str = "admin",
    token: str | None = None,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    cluster_name: str = "minikube-py",
    context_name: str = "minikube-py",
    namespace: str | None = None,
) -> None:
    """Write a self-contained kubeconfig (everything inline) with mode 0600, replacing ``path``."""
    _check_server(server)
    try:
        x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise ValueError("ca_pem is not a PEM certificate") from None
    if (client_cert_pem is None) != (client_key_pem is None):
        raise ValueError("client_cert_pem and client_key_pem go together: give both or neither")
    if token is not None and (not token or any(c.isspace() for c in token)):
        raise ValueError("token must be non-empty and contain no whitespace")

    credentials: dict[str, str] = {}
    if token is not None:
        credentials["token"] = token
    if client_cert_pem is not None and client_key_pem is not None:
        credentials["client-certificate-data"] = _b64(client_cert_pem)
        credentials["client-key-data"] = _b64(client_key_pem)
    context: dict[str, str] = {"cluster": cluster_name, "user": user}
    if namespace:
        context["namespace"] = namespace
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster_name, "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": context_name, "context": context}],
        "current-context": context_name,
        "preferences": {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    write_private_file(path, text.encode(), mode=0o600, overwrite=True)


def load_kubeconfig(path: Path | None = None, context: str | None = None) -> KubeConfig:
    """Resolve ``context`` (default: current-context) from ``path``, else $KUBECONFIG, else ~/.kube/config.

    Raises ValueError with the file and the field at fault for anything missing or malformed.
    """
    files = _config_files(path)
    clusters: dict[str, tuple[dict[str, Any], Path]] = {}
    users: dict[str, tuple[dict[str, Any], Path]] = {}
    contexts: dict[str, tuple[dict[str, Any], Path]] = {}
    current = ""
    for file in files:
        doc = _read_yaml(file)
        current = current or str(doc.get("current-context") or "")
        for section, key, into in (
            ("clusters", "cluster", clusters),
            ("users", "user", users),
            ("contexts", "context", contexts),
        ):
            for name, body in _named_entries(doc, section, key, file):
                into.setdefault(name, (body, file))  # the first file to name an entry wins

    where = files[0] if len(files) == 1 else "+".join(str(f) for f in files)
    name = context or current
    if not name:
        raise ValueError(f"{where}: no current-context is set and no context was given")
    if name not in contexts:
        raise ValueError(f"{where}: context {name!r} is not defined")
    ctx, ctx_file = contexts[name]
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if not cluster_name or cluster_name not in clusters:
        raise ValueError(f"{ctx_file}: context {name!r} names cluster {cluster_name!r}, which is not defined")
    cluster, cluster_file = clusters[cluster_name]

    server = cluster.get("server")
    if not isinstance(server, str):
        raise ValueError(f"{cluster_file}: cluster {cluster_name!r} has no server")
    _check_server(server, f"{cluster_file}: cluster {cluster_name!r}: ")
    label = f"cluster {cluster_name!r}"
    ca_pem = _data_or_file(cluster, "certificate-authority", cluster_file, label)
    config = KubeConfig(
        server=server.rstrip("/"),
        ca_pem=ca_pem,
        namespace=str(ctx.get("namespace") or "default"),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
    )

    if user_name:
        if user_name not in users:
            raise ValueError(f"{ctx_file}: context {name!r} names user {user_name!r}, which is not defined")
        user, user_file = users[user_name]
        label = f"user {user_name!r}"
        for unsupported in ("exec", "auth-provider", "username", "password"):
            if user.get(unsupported):
                raise ValueError(
                    f"{user_file}: {label} uses {unsupported!r}, which minikube-py does not support"
                )
        config.token = _token(user, user_file, label)
        config.client_cert_pem = _data_or_file(user, "client-certificate", user_file, label)
        config.client_key_pem = _data_or_file(user, "client-key", user_file, label)
        if (config.client_cert_pem is None) != (config.client_key_pem is None):
            raise ValueError(f"{user_file}: {label} has a client certificate or key without the other")
    return config


def _config_files(path: Path | None) -> list[Path]:
    if path is not None:
        files = [Path(path).expanduser()]
    elif os.environ.get("KUBECONFIG"):
        listed = [Path(p).expanduser() for p in os.environ["KUBECONFIG"].split(os.pathsep) if p]
        # kubectl skips the missing files of a KUBECONFIG list, but not a list with none at all.
        files = [p for p in listed if p.exists()]
        if not files:
            raise ValueError(f"none of the files in KUBECONFIG exist: {os.environ['KUBECONFIG']}")
    else:
        files = [DEFAULT_PATH.expanduser()]
    for f in files:
        if not f.is_file():
            raise ValueError(f"kubeconfig {f} does not exist" if not f.exists() else f"{f} is not a file")
    return files


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read kubeconfig {file}: {e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{file}: not valid YAML: {' '.join(str(e).split())}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"{file}: a kubeconfig must be a YAML mapping, found {type(doc).__name__}")
    return doc


def _named_entries(
    doc: dict[str, Any], section: str, key: str, file: Path
) -> list[tuple[str, dict[str, Any]]]:
    entries = doc.get(section)
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ValueError(f"{file}: {section} must be a list")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"{file}: {section}[{i}] needs a name")
        body = entry.get(key) or {}
        if not isinstance(body, dict):
            raise ValueError(f"{file}: {section}[{i}] ({entry['name']}): {key} must be a mapping")
        out.append((entry["name"], body))
    return out


def _data_or_file(section: dict[str, Any], field: str, file: Path, label: str) -> bytes | None:
    """``<field>-data`` (base64, preferred as kubectl does) or the file ``<field>`` names."""
    data = section.get(f"{field}-data")
    if data:
        try:
            return base64.b64decode(str(data), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{file}: {label}: {field}-data is not valid base64") from None
    named = section.get(field)
    if not named:
        return None
    target = _relative_to(file, str(named))
    try:
        return target.read_bytes()
    except OSError as e:
        raise ValueError(f"{file}: {label}: cannot read {field} {target}: {e.strerror}") from None


def _token(user: dict[str, Any], file: Path, label: str) -> str | None:
    if user.get("token"):
        return str(user["token"]).strip()
    if user.get("tokenFile"):
        target = _relative_to(file, str(user["tokenFile"]))
        try:
            return target.read_text().strip() or None
        except OSError as e:
            raise ValueError(f"{file}: {label}: cannot read tokenFile {target}: {e.strerror}") from None
    return None


def _relative_to(file: Path, named: str) -> Path:
    target = Path(named).expanduser()
    return target if target.is_absolute() else file.parent / target


def _check_server(server: str, prefix: str = "") -> None:
    parts = urlsplit(server)
    try:
        parts.port  # noqa: B018 -- raises on a port that is not a number in range
    except ValueError:
        raise ValueError(f"{prefix}server has a bad port: {server!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{prefix}server must be an http(s) URL with a host, got {server!r}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
