"""Kubernetes' static token file (``--token-auth-file``): one CSV line per bearer token.

    token,user,uid,"group1,group2"

The fourth column is optional. Unlike kube-apiserver, which logs and skips an empty token and lets a
duplicate token silently win, this reader refuses both, naming the line: either one means the file
does not say what its author thinks it says. Blank lines and lines starting with ``#`` are ignored.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from minikube_py.pki import write_private_file


@dataclass(frozen=True)
class UserInfo:
    name: str
    uid: str
    groups: tuple[str, ...] = ()


class TokenFileError(ValueError):
    """A token file that cannot be read or parsed; the message names the file and line."""


class TokenFile:
    """The tokens of one file, looked up without leaking timing about the stored tokens."""

    def __init__(self, entries: Sequence[tuple[str, UserInfo]] = ()) -> None:
        # Keyed by SHA-256 of the token: a dict lookup's timing then depends on the digest of the
        # guess, which tells an attacker nothing about the stored tokens' characters.
        self._by_digest: dict[bytes, tuple[bytes, UserInfo]] = {}
        self._tokens: dict[str, str] = {}
        for token, info in entries:
            digest = _digest(token)
            self._by_digest[digest] = (digest, info)
            self._tokens.setdefault(info.name, token)

    @classmethod
    def load(cls, path: Path) -> TokenFile:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise TokenFileError(f"token file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise TokenFileError(f"cannot read token file {path}: {e}") from None
        return cls.parse(text, source=str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<token file>") -> TokenFile:
        entries: list[tuple[str, UserInfo]] = []
        seen: dict[str, int] = {}
        reader = csv.reader(io.StringIO(text), skipinitialspace=True, strict=True)
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise TokenFileError(f"{source}:{reader.line_num}: not valid CSV: {e}") from None
            line = reader.line_num
            if not record or not "".join(record).strip() or record[0].lstrip().startswith("#"):
                continue
            fields = [f.strip() for f in record]
            if len(fields) < 3:
                raise TokenFileError(
                    f"{source}:{line}: expected token,user,uid[,groups] (at least 3 columns), "
                    f"found {len(fields)}"
                )
            token, name, uid = fields[:3]
            if not token:
                raise TokenFileError(f"{source}:{line}: the token is empty")
            if not name:
                raise TokenFileError(f"{source}:{line}: the user name is empty")
            if token in seen:
                raise TokenFileError(f"{source}:{line}: the same token as line {seen[token]}")
            seen[token] = line
            groups = tuple(g.strip() for g in fields[3].split(",") if g.strip()) if len(fields) > 3 else ()
            entries.append((token, UserInfo(name, uid, groups)))
        return cls(entries)

    def authenticate(self, token: str) -> UserInfo | None:
        """The user a bearer token belongs to, or None."""
        if not token:
            return None
        digest = _digest(token)
        found = self._by_digest.get(digest)
        if found is None or not hmac.compare_digest(found[0], digest):
            return None
        return found[1]

    def token_for(self, user: str) -> str | None:
        """The first token listed for ``user`` (to hand to that user's kubeconfig)."""
        return self._tokens.get(user)

    def __len__(self) -> int:
        return len(self._by_digest)


def ensure_token_file(path: Path, user: str = "admin", groups: Sequence[str] = ("system:masters",)) -> str:
    """Return ``user``'s token from ``path``, adding a random one (file mode 0600) if it has none.

    Existing lines are never changed; a user already in the file keeps its token and groups.
    """
    if not user or any(c in user for c in ',"\r\n'):
        raise TokenFileError(f"user name {user!r} cannot be written to a token file")
    if isinstance(groups, str):
        raise TypeError("groups takes a sequence of group names")
    for g in groups:
        if not g or any(c in g for c in ',"\r\n'):
            raise TokenFileError(f"group name {g!r} cannot be written to a token file")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TokenFileError(f"cannot create {path.parent}: {e.strerror}") from None
    for _ in range(3):
        try:
            existing: str | None = path.read_text()
        except FileNotFoundError:
            existing = None
        except (OSError, UnicodeDecodeError) as e:
            raise TokenFileError(f"cannot read token file {path}: {e}") from None
        if existing is not None:
            tokens = TokenFile.parse(existing, source=str(path))
            token = tokens.token_for(user)
            if token is not None:
                return token
        token = secrets.token_urlsafe(32)  # 256 bits, no characters CSV would need to quote
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow([token, user, str(uuid.uuid4()), ",".join(groups)])
        try:
            if existing is None:
                write_private_file(path, buffer.getvalue().encode(), mode=0o600, overwrite=False)
            else:
                prefix = existing if not existing or existing.endswith("\n") else existing + "\n"
                write_private_file(path, (prefix + buffer.getvalue()).encode(), mode=0o600, overwrite=True)
        except FileExistsError:
            continue  # another process created it first: read theirs
        except OSError as e:
            raise TokenFileError(f"cannot write token file {path}: {e.strerror}") from None
        return token
    raise TokenFileError(f"token file {path} keeps changing while it is being created")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
