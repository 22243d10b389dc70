"""``minikube-py store``: the debugging command, against an embedded SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minikube_py.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_put_get_list_del_watch_compact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite://{tmp_path / 'store.db'}"
    code, out, _ = run(capsys, "store", "--url", url, "put", "/registry/pods/default/a", '{"kind": "Pod"}')
    assert code == 0
    assert out == [{
        "key": "/registry/pods/default/a", "value": '{"kind": "Pod"}',
        "create_revision": 1, "mod_revision": 1, "version": 1, "lease": 0,
    }]
    code, out, _ = run(capsys, "store", "--url", url, "put", "/registry/pods/default/a", "v2")
    assert (out[0]["value"], out[0]["mod_revision"], out[0]["version"]) == ("v2", 2, 2)
    run(capsys, "store", "--url", url, "put", "/registry/pods/default/b", "b")
    run(capsys, "store", "--url", url, "put", "/registry/services/default/a", "s")

    code, out, _ = run(capsys, "store", "--url", url, "get", "/registry/pods/default/a", "--revision", "1")
    assert out[0]["value"] == '{"kind": "Pod"}'
    code, out, _ = run(capsys, "store", "--url", url, "list", "/registry/pods/")
    assert [kv["key"] for kv in out] == ["/registry/pods/default/a", "/registry/pods/default/b"]
    code, out, _ = run(capsys, "store", "--url", url, "del", "/registry/pods/default/b")
    assert (code, out[0]["value"]) == (0, "b")

    code, out, _ = run(
        capsys, "store", "--url", url, "watch", "/registry/pods/", "--from", "1", "--count", "3"
    )
    assert code == 0
    assert [(e["type"], e["revision"], e["kv"]["key"]) for e in out] == [
        ("PUT", 2, "/registry/pods/default/a"),
        ("PUT", 3, "/registry/pods/default/b"),
        ("DELETE", 5, "/registry/pods/default/b"),
    ]
    assert out[2]["prev_kv"]["value"] == "b"

    code, out, _ = run(capsys, "store", "--url", url, "compact", "4")
    assert (code, out) == (0, [{"compacted_revision": 4}])
    code, out, err = run(capsys, "store", "--url", url, "get", "/registry/pods/default/a", "--revision", "1")
    assert code == 2 and out == [] and "compacted" in err


def test_user_mistakes_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "store", "--url", "mysql://nope", "get", "/a")
    assert code == 2 and "unknown store URL" in err
    url = f"sqlite://{tmp_path / 'store.db'}"
    code, out, err = run(capsys, "store", "--url", url, "get", "/missing")
    assert (code, out) == (2, []) and "not found" in err and err.count("\n") == 1
    code, _, err = run(capsys, "store", "--url", url, "del", "/missing")
    assert code == 2 and "not found" in err
    code, _, err = run(capsys, "store", "--url", url, "get", "/a", "--revision", "99")
    assert code == 2 and "future revision" in err
    missing_dir = tmp_path / "no" / "such" / "dir.db"
    code, _, err = run(capsys, "store", "--url", f"sqlite://{missing_dir}", "get", "/a")
    assert code == 2 and "cannot open" in err
