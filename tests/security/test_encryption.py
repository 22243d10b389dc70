"""Secrets encrypted at rest: the raw store value is `k8s:enc:aescbc:v1:<key>:...` with no plaintext,
reads through the API decrypt, and keys rotate (new key first, old still readable, rewritten
objects move to the new key). Plus aesgcm and bad configurations, in process."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minikube_py.apiserver import encryption
from minikube_py.store import open_store
from tests.apiserver.conftest import REPO, LocalAPIServer, running_apiserver

from .conftest import admin, ok

PLAINTEXT = "top-secret-plaintext-4711"
SECRET_KEY = "/registry/secrets/default/"


def raw_value(data_dir: Path, key: str) -> bytes:
    """The stored bytes, read with `minikube-py store get` while no server runs."""
    res = subprocess.run([sys.executable, "-m", "minikube_py", "store", "--url", f"sqlite://{data_dir / 'store.db'}",
                          "get", key], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    # The CLI prints text values as "value" and others (ciphertext) as "value_base64".
    return out["value"].encode() if "value" in out else base64.b64decode(out["value_base64"])


def make_secret(server: LocalAPIServer, name: str) -> None:
    with admin(server) as c:
        ok(c.post("/api/v1/namespaces/default/secrets", json={
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {"password": base64.b64encode(PLAINTEXT.encode()).decode()}}), 201)


def read_secret(server: LocalAPIServer, name: str) -> str:
    with admin(server) as c:
        return base64.b64decode(ok(c.get(f"/api/v1/namespaces/default/secrets/{name}"))["data"]["password"]).decode()


def assert_encrypted(raw: bytes, key_name: str) -> None:
    assert raw.startswith(f"k8s:enc:aescbc:v1:{key_name}:".encode()), raw[:40]
    assert PLAINTEXT.encode() not in raw
    assert base64.b64encode(PLAINTEXT.encode()) not in raw
    assert b'"kind"' not in raw  # the whole object is encrypted, not only its data


def test_encrypted_at_rest_and_rotation(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_apiserver(data_dir) as server:
        make_secret(server, "first")
        assert read_secret(server, "first") == PLAINTEXT
        with admin(server) as c:  # other kinds stay plain JSON
            ok(c.post("/api/v1/namespaces/default/configmaps",
                      json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plain"}}), 201)
    assert_encrypted(raw_value(data_dir, SECRET_KEY + "first"), "key1")
    assert raw_value(data_dir, "/registry/configmaps/default/plain").startswith(b"{")

    # Rotation step 1: the new key first, the old one still listed.
    config = data_dir / "encryption-config.yaml"
    old_key = base64.b64decode(
        next(line.split("secret:")[1].strip() for line in config.read_text().splitlines() if "secret:" in line))
    new_key = os.urandom(32)
    config.write_text(encryption.config_yaml([("key2", new_key), ("key1", old_key)]))
    with running_apiserver(data_dir) as server:
        assert read_secret(server, "first") == PLAINTEXT
        make_secret(server, "second")
    assert_encrypted(raw_value(data_dir, SECRET_KEY + "first"), "key1")
    assert_encrypted(raw_value(data_dir, SECRET_KEY + "second"), "key2")

    # Step 2: rewrite every secret (`kubectl get secrets -o json | kubectl replace -f -`): an unchanged
    # object read with an old key is still written, now with the new key.
    with running_apiserver(data_dir) as server, admin(server) as c:
        for item in ok(c.get("/api/v1/secrets"))["items"]:
            m = item["metadata"]
            ok(c.put(f"/api/v1/namespaces/{m['namespace']}/secrets/{m['name']}", json=item))
    assert_encrypted(raw_value(data_dir, SECRET_KEY + "first"), "key2")

    # Step 3: the old key can go.
    config.write_text(encryption.config_yaml([("key2", new_key)]))
    with running_apiserver(data_dir) as server:
        assert read_secret(server, "first") == PLAINTEXT
        assert read_secret(server, "second") == PLAINTEXT
    log = (data_dir.parent / f"{data_dir.name}.log").read_text()
    assert PLAINTEXT not in log


async def test_aesgcm_and_missing_keys(tmp_path: Path) -> None:
    store = await open_store(f"sqlite://{tmp_path / 's.db'}")
    try:
        gcm = tmp_path / "gcm.yaml"
        gcm.write_text(encryption.config_yaml([("g1", os.urandom(16))], provider="aesgcm"))
        secure = encryption.EncryptingStore(store, encryption.load_config(gcm))
        await secure.create(SECRET_KEY + "a", b'{"data":"x"}')
        await store.create("/registry/secrets/default/legacy", b'{"data":"old"}')  # before encryption
        raw = await store.get(SECRET_KEY + "a")
        assert raw is not None and raw.value.startswith(b"k8s:enc:aesgcm:v1:g1:") and b'"x"' not in raw.value
        got = await secure.get(SECRET_KEY + "a")
        assert got is not None and got.value == b'{"data":"x"}'
        listed = await secure.range(SECRET_KEY)
        assert [kv.value for kv in listed.items] == [b'{"data":"x"}', b'{"data":"old"}']
        assert getattr(listed.items[1], "stale", False)  # plaintext under an encrypting config
        # A tampered value or one under a key no longer configured is an error, not garbage.
        tampered = raw.value[:-1] + bytes([raw.value[-1] ^ 1])
        await store.update(SECRET_KEY + "a", tampered, raw.mod_revision)
        with pytest.raises(encryption.DecryptionError, match="cannot decrypt"):
            await secure.get(SECRET_KEY + "a")
        other = tmp_path / "other.yaml"
        other.write_text(encryption.config_yaml([("g2", os.urandom(32))], provider="aesgcm").replace(
            "  - identity: {}\n", ""))
        strict = encryption.EncryptingStore(store, encryption.load_config(other))
        with pytest.raises(encryption.DecryptionError, match="not configured"):
            await strict.get(SECRET_KEY + "a")
        with pytest.raises(encryption.DecryptionError, match="no identity provider"):
            await strict.get(SECRET_KEY + "legacy")
    finally:
        await store.close()


@pytest.mark.parametrize("text, message", [
    ("kind: Nope\n", "expected kind EncryptionConfiguration"),
    ("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n"
     "  providers:\n  - aescbc:\n      keys:\n      - name: k\n        secret: c2hvcnQ=\n",
     "must be 16, 24 or 32 bytes"),
    ("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n"
     "  providers:\n  - kms: {}\n", "unsupported provider 'kms'"),
])
def test_bad_configuration_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "enc.yaml"
    path.write_text(text)
    with pytest.raises(encryption.EncryptionConfigError, match=message):
        encryption.load_config(path)


def test_apiserver_refuses_bad_configuration(tmp_path: Path) -> None:
    path = tmp_path / "enc.yaml"
    path.write_text("kind: Nope\n")
    res = subprocess.run([sys.executable, "-m", "minikube_py", "apiserver", "--local", "--data-dir",
                          str(tmp_path / "d"), "--port", "0", "--encryption-provider-config", str(path)],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode != 0
    assert "expected kind EncryptionConfiguration" in res.stderr
