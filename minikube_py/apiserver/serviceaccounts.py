"""ServiceAccount tokens: JWTs signed by the API server (``--service-account-signing-key-file``) and
verified with ``--service-account-key-file``, with Kubernetes' claims, and the TokenRequest
subresource (``POST .../serviceaccounts/<name>/token``) that hands them out.

ES256 for an EC P-256 key, RS256 for an RSA key, as kube-apiserver picks. ``kid`` is the base64url
SHA-256 of the public key's DER, so several verification keys can be listed while keys rotate.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from minikube_py.api import errors
from minikube_py.pki import write_private_file

if TYPE_CHECKING:
    from aiohttp import web

    from minikube_py.api.resources import ResourceInfo

    from .registry import Registry
    from .server import APIServer

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600
MAX_EXPIRATION = 1 << 32
# Clock skew tolerated on nbf/exp, as Kubernetes' validator (its "leeway").
LEEWAY = 60


class TokenKeyError(ValueError):
    """A key file that cannot be used for signing or verifying tokens."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(public: PublicKey) -> str:
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64(hashlib.sha256(der).digest())


def _alg(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise TokenKeyError(f"EC keys must be P-256 for ES256, not {key.curve.name}")
        return "ES256"
    return "RS256"


def load_signing_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as e:
        raise TokenKeyError(f"cannot read {path}: {e.strerror}") from None
    except (ValueError, TypeError):
        raise TokenKeyError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TokenKeyError(f"{path}: only RSA and EC P-256 keys can sign tokens")
    _alg(key)
    return key


_PEM = re.compile(rb"-----BEGIN ([A-Z ]+)-----[\s\S]+?-----END \1-----")


def load_public_keys(path: Path) -> list[PublicKey]:
    """Every public key in a PEM file (private keys count by their public half), as kube-apiserver."""
    try:
        text = Path(path).read_bytes()
    except OSError as e:
        raise TokenKeyError(f"cannot read {path}: {e.strerror}") from None
    keys: list[PublicKey] = []
    for m in _PEM.finditer(text):
        label, pem = m.group(1), m.group(0)
        try:
            if label.endswith(b"PRIVATE KEY"):
                key: Any = serialization.load_pem_private_key(pem, password=None).public_key()
            elif label == b"CERTIFICATE":
                from cryptography import x509

                key = x509.load_pem_x509_certificate(pem).public_key()
            else:
                key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError):
            raise TokenKeyError(f"{path}: a PEM block ({label.decode()}) is not a usable key") from None
        if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            keys.append(key)
    if not keys:
        raise TokenKeyError(f"{path}: no RSA or EC public key found")
    return keys


def ensure_signing_key(path: Path) -> Path:
    """Create an EC P-256 signing key (mode 0600) at ``path`` unless one exists."""
    path = Path(path)
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        try:
            write_private_file(path, pem, mode=0o600, overwrite=False)
        except FileExistsError:
            pass
    return path


@dataclass(frozen=True)
class TokenUser:
    name: str
    uid: str
    groups: tuple[str, ...]
    namespace: str = ""
    account: str = ""
    pod: tuple[str, str] | None = None  # (name, uid) of the pod a token is bound to


class TokenInvalid(Exception):
    """Why a token was refused (for the server's debug log; the client only sees 401)."""


class ServiceAccountTokens:
    """Signs tokens with one key and verifies them with any of ``public_keys``."""

    def __init__(self, issuer: str, signing_key: PrivateKey | None = None,
                 public_keys: Sequence[PublicKey] = (), audiences: Sequence[str] = ()) -> None:
        if not issuer:
            raise TokenKeyError("a service account issuer is required")
        self.issuer = issuer
        self.signing_key = signing_key
        keys = list(public_keys)
        if signing_key is not None:
            keys.append(signing_key.public_key())
        self._verify: dict[str, PublicKey] = {key_id(k): k for k in keys}
        self.audiences = tuple(audiences) or (issuer,)

    def sign(self, namespace: str, name: str, sa_uid: str, *, expiration: int = DEFAULT_EXPIRATION,
             audiences: Sequence[str] = (), pod: tuple[str, str] | None = None,
             now: float | None = None) -> tuple[str, int]:
        """A token for ``system:serviceaccount:<namespace>:<name>``; returns (token, exp)."""
        if self.signing_key is None:
            raise errors.ApiError(503, "ServiceUnavailable", "no --service-account-signing-key-file is configured")
        iat = int(now if now is not None else time.time())
        exp = iat + expiration
        k8s: dict[str, Any] = {"namespace": namespace, "serviceaccount": {"name": name, "uid": sa_uid}}
        if pod is not None:
            k8s["pod"] = {"name": pod[0], "uid": pod[1]}
        claims = {"aud": list(audiences) or list(self.audiences), "exp": exp, "iat": iat, "iss": self.issuer,
                  "jti": str(uuid.uuid4()), "kubernetes.io": k8s, "nbf": iat,
                  "sub": f"system:serviceaccount:{namespace}:{name}"}
        public = self.signing_key.public_key()
        header = {"alg": _alg(self.signing_key), "kid": key_id(public)}
        signing_input = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}".encode()
        if isinstance(self.signing_key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(self.signing_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            sig = self.signing_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode()}.{_b64(sig)}", exp

    def verify(self, token: str, now: float | None = None) -> dict[str, Any]:
        """The claims of a valid token; :class:`TokenInvalid` otherwise."""
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenInvalid("not a JWT")
        try:
            header = orjson.loads(_unb64(parts[0]))
            claims = orjson.loads(_unb64(parts[1]))
            sig = _unb64(parts[2])
        except (ValueError, orjson.JSONDecodeError):
            raise TokenInvalid("malformed JWT") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise TokenInvalid("malformed JWT")
        alg = header.get("alg")
        candidates = [self._verify[header["kid"]]] if header.get("kid") in self._verify else list(self._verify.values())
        signing_input = f"{parts[0]}.{parts[1]}".encode()
        if not any(_check(k, alg, signing_input, sig) for k in candidates):
            raise TokenInvalid("invalid signature")
        if claims.get("iss") != self.issuer:
            raise TokenInvalid("wrong issuer")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not set(auds) & set(self.audiences):
            raise TokenInvalid("audience not accepted")
        t = now if now is not None else time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
        if not isinstance(exp, int) or t > exp + LEEWAY:
            raise TokenInvalid("expired")
        if isinstance(nbf, int) and t < nbf - LEEWAY:
            raise TokenInvalid("not yet valid")
        k8s = claims.get("kubernetes.io")
        sub = claims.get("sub")
        if not isinstance(k8s, dict) or not isinstance(sub, str) or not sub.startswith("system:serviceaccount:"):
            raise TokenInvalid("not a service account token")
        return claims

    def authenticate(self, token: str) -> TokenUser | None:
        try:
            claims = self.verify(token)
        except TokenInvalid:
            return None
        k8s = claims["kubernetes.io"]
        ns = str(k8s.get("namespace", ""))
        sa = k8s.get("serviceaccount") if isinstance(k8s.get("serviceaccount"), dict) else {}
        pod = k8s.get("pod") if isinstance(k8s.get("pod"), dict) else None
        name = claims["sub"].rsplit(":", 1)[-1]
        if not ns or claims["sub"] != f"system:serviceaccount:{ns}:{name}" or sa.get("name") != name:
            return None
        return TokenUser(claims["sub"], str(sa.get("uid", "")),
                         ("system:serviceaccounts", f"system:serviceaccounts:{ns}"), ns, name,
                         (str(pod.get("name", "")), str(pod.get("uid", ""))) if pod else None)

    async def still_bound(self, registry: Registry, user: TokenUser) -> bool:
        """Whether the token's ServiceAccount (and pod, for a bound token) still exist with the UIDs
        in its claims, as kube-apiserver checks: a deleted account's tokens stop working at once."""
        from minikube_py.api.resources import lookup

        checks = [("serviceaccounts", user.account, user.uid)]
        if user.pod is not None:
            checks.append(("pods", *user.pod))
        for plural, name, uid in checks:
            info = lookup("", "v1", plural)
            assert info is not None
            try:
                obj = await registry.get(info, user.namespace, name)
            except errors.ApiError:
                return False
            meta = obj["metadata"]
            if uid and meta.get("uid") != uid:
                return False
            if plural == "pods" and _deleted_before(meta.get("deletionTimestamp"), time.time() - LEEWAY):
                return False  # its grace period is over: the pod is as good as gone
        return True


def _deleted_before(timestamp: Any, t: float) -> bool:
    if not isinstance(timestamp, str) or not timestamp:
        return False
    try:
        when = dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return False
    return when.timestamp() < t


def _check(key: PublicKey, alg: Any, data: bytes, sig: bytes) -> bool:
    try:
        if alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
            if len(sig) != 64:
                return False
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            key.verify(der, data, ec.ECDSA(hashes.SHA256()))
            return True
        if alg == "RS256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
            return True
    except InvalidSignature:
        return False
    return False


# ---- the TokenRequest subresource -------------------------------------------------------------------

async def handle_token_request(srv: APIServer, request: web.Request, info: ResourceInfo, namespace: str | None,
                               name: str) -> web.Response:
    from minikube_py.api.resources import lookup

    from .requests import decode_body
    from .server import json_response

    tokens: ServiceAccountTokens | None = getattr(srv, "sa_tokens", None)
    if tokens is None or tokens.signing_key is None:
        raise errors.ApiError(503, "ServiceUnavailable", "no --service-account-signing-key-file is configured")
    body = decode_body(await request.read(), request.headers.get("Content-Type")) if request.can_read_body else {}
    if not isinstance(body, dict) or body.get("kind") not in (None, "TokenRequest"):
        raise errors.bad_request("the body of a token request must be a TokenRequest object")
    spec = body.get("spec") or {}
    if not isinstance(spec, dict):
        raise errors.bad_request("spec must be an object")
    expiration = spec.get("expirationSeconds") or DEFAULT_EXPIRATION
    if isinstance(expiration, bool) or not isinstance(expiration, int):
        raise errors.bad_request("spec.expirationSeconds must be an integer")
    if expiration < MIN_EXPIRATION or expiration > MAX_EXPIRATION:
        msg = "may not specify a duration less than 10 minutes" if expiration < MIN_EXPIRATION \
            else "may not specify a duration larger than 2^32 seconds"
        raise errors.invalid("TokenRequest", name, [errors.Cause("spec.expirationSeconds",
                                                                 f"Invalid value: {expiration}: {msg}")],
                             "authentication.k8s.io")
    audiences = spec.get("audiences") or []
    if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
        raise errors.bad_request("spec.audiences must be a list of strings")
    sa = await srv.registry.get(info, namespace, name)
    pod: tuple[str, str] | None = None
    ref = spec.get("boundObjectRef")
    if ref:
        if not isinstance(ref, dict) or ref.get("kind") != "Pod":
            raise errors.invalid("TokenRequest", name, [errors.Cause(
                "spec.boundObjectRef.kind", f'Unsupported value: "{(ref or {}).get("kind")}": supported values: '
                '"Pod"')], "authentication.k8s.io")
        pods = lookup("", "v1", "pods")
        assert pods is not None
        obj = await srv.registry.get(pods, namespace, str(ref.get("name", "")))
        if ref.get("uid") and ref["uid"] != obj["metadata"].get("uid"):
            raise errors.conflict("pods", str(ref.get("name")), "",
                                  f"the UID in the bound object reference ({ref['uid']}) does not match the UID "
                                  f"in record; the object might have been deleted and then recreated")
        if (obj.get("spec") or {}).get("serviceAccountName", "default") != name:
            raise errors.bad_request(f'pod {obj["metadata"]["name"]} does not use service account "{name}"')
        pod = (obj["metadata"]["name"], obj["metadata"].get("uid", ""))
    _restrict_node(request, name, ref, obj if ref else None)
    token, exp = tokens.sign(namespace or "", name, sa["metadata"].get("uid", ""), expiration=expiration,
                             audiences=audiences, pod=pod)
    out = {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
           "metadata": {"name": name, "namespace": namespace, "creationTimestamp": _rfc3339(time.time())},
           "spec": {"audiences": audiences or list(tokens.audiences), "expirationSeconds": expiration,
                    "boundObjectRef": ref or None},
           "status": {"token": token, "expirationTimestamp": _rfc3339(exp)}}
    return json_response(out, 201)


def _restrict_node(request: web.Request, name: str, ref: Any, pod: dict[str, Any] | None) -> None:
    """NodeRestriction admission: a kubelet gets tokens only bound to a pod scheduled on its own node
    (the Node authorizer already let it ask only for the accounts of pods bound there)."""
    from .nodeauthz import node_name

    user = request.get("user")
    node = node_name(user) if user is not None else None
    if node is None:
        return
    if not ref or pod is None:
        raise errors.forbidden(f'serviceaccounts "{name}" is forbidden: node requested token not bound to a pod')
    if (pod.get("spec") or {}).get("nodeName") != node:
        raise errors.forbidden(f'serviceaccounts "{name}" is forbidden: node requested token bound to a pod '
                               f"scheduled on a different node")


def _rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(int(t), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def review_token(srv: APIServer, body: dict[str, Any]) -> dict[str, Any]:
    """A TokenReview (authentication.k8s.io/v1) answered by the server's own token authenticators."""
    spec = body.get("spec") or {}
    token = spec.get("token") if isinstance(spec, dict) else None
    if not isinstance(token, str) or not token:
        raise errors.invalid("TokenReview", "", [errors.Cause("spec.token", "Required value", "FieldValueRequired")],
                             "authentication.k8s.io")
    user: Any = srv.tokens.authenticate(token) if srv.tokens is not None else None
    sa: ServiceAccountTokens | None = getattr(srv, "sa_tokens", None)
    if user is None and sa is not None:
        user = sa.authenticate(token)
        if user is not None and not await sa.still_bound(srv.registry, user):
            user = None
    status: dict[str, Any] = {"authenticated": user is not None, "user": {}}
    if user is not None:
        status["user"] = {"username": user.name, "uid": user.uid,
                          "groups": [*user.groups, "system:authenticated"]}
        status["audiences"] = list(sa.audiences) if sa is not None else []
    else:
        status["error"] = "invalid bearer token"
    out = {**body, "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "status": status}
    # The token itself is not echoed back: responses can end up in logs.
    out["spec"] = {k: v for k, v in spec.items() if k != "token"}
    out.setdefault("metadata", {})["creationTimestamp"] = None
    return out
