"""The static token file: parsing, authentication and ensure_token_file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from minikube_py.apiserver import tokens as tokens_module
from minikube_py.apiserver.tokens import TokenFile, TokenFileError, UserInfo, ensure_token_file

KUBERNETES_STYLE = """\
31ada4fd-adec-460c-809a-9e56ceb75269,admin,admin-uid,"system:masters,devs"
f6dcc5c2bb4f4d0b,kubelet-bootstrap,10001,system:bootstrappers

# a comment, then a user without groups
plain-token,alice,alice-uid
  spaced-token ,  bob , bob-uid , " g1 , g2 ,"
"""


def test_parse_kubernetes_style_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text(KUBERNETES_STYLE)
    tf = TokenFile.load(path)
    assert len(tf) == 4
    assert tf.authenticate("31ada4fd-adec-460c-809a-9e56ceb75269") == UserInfo(
        "admin", "admin-uid", ("system:masters", "devs")
    )
    assert tf.authenticate("f6dcc5c2bb4f4d0b") == UserInfo(
        "kubelet-bootstrap", "10001", ("system:bootstrappers",)
    )
    assert tf.authenticate("plain-token") == UserInfo("alice", "alice-uid", ())
    assert tf.authenticate("spaced-token") == UserInfo("bob", "bob-uid", ("g1", "g2"))
    assert tf.token_for("alice") == "plain-token"
    assert tf.token_for("nobody") is None


@pytest.mark.parametrize("guess", ["", "plain-toke", "plain-token ", "PLAIN-TOKEN", "plain-tokenx", "admin"])
def test_wrong_tokens_are_refused(guess: str) -> None:
    assert TokenFile.parse(KUBERNETES_STYLE).authenticate(guess) is None


def test_authentication_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = tokens_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", spy)
    tf = TokenFile.parse("secret,u,1\n")
    assert tf.authenticate("secret") == UserInfo("u", "1")
    assert len(calls) == 1 and b"secret" not in calls[0][0]  # digests are compared, not raw tokens


@pytest.mark.parametrize(
    "text, message",
    [
        ("ok,u,1\nonly-two,columns\n", r"tokens\.csv:2: expected token,user,uid\[,groups\] .*found 2"),
        ("ok,u,1\n\n,user,2\n", r"tokens\.csv:3: the token is empty"),
        ("ok,,1\n", r"tokens\.csv:1: the user name is empty"),
        ("dup,a,1\nother,b,2\ndup,c,3\n", r"tokens\.csv:3: the same token as line 1"),
        ('ok,u,1\nt,u,"unterminated\n', r"tokens\.csv:\d+: not valid CSV"),
        ('t,u,1,"g"x\n', r"tokens\.csv:1: not valid CSV"),
    ],
)
def test_bad_lines_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text(text)
    with pytest.raises(TokenFileError, match=message):
        TokenFile.load(path)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="does not exist"):
        TokenFile.load(tmp_path / "absent.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TokenFileError, match="cannot read"):
        TokenFile.load(tmp_path / "binary.csv")
    with pytest.raises(TokenFileError, match="cannot read"):
        TokenFile.load(tmp_path)  # a directory


def test_ensure_token_file_creates_then_reuses(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "tokens.csv"
    token = ensure_token_file(path)
    assert len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    info = TokenFile.load(path).authenticate(token)
    assert info is not None and info.name == "admin" and info.groups == ("system:masters",)
    assert info.uid  # a unique id, like any Kubernetes user
    before = path.read_bytes()
    assert ensure_token_file(path) == token
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["tokens.csv"]  # no temporary files left


def test_ensure_token_file_adds_a_user_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text("existing,alice,1,devs")  # no trailing newline
    path.chmod(0o600)
    token = ensure_token_file(path, user="system:kube-scheduler", groups=())
    assert token != ensure_token_file(path, user="admin")
    tf = TokenFile.load(path)
    assert tf.authenticate("existing") == UserInfo("alice", "1", ("devs",))
    scheduler = tf.authenticate(token)
    assert scheduler is not None and scheduler.name == "system:kube-scheduler" and scheduler.groups == ()
    assert len(tf) == 3
    assert path.read_text().startswith("existing,alice,1,devs\n")


def test_ensure_token_file_multiple_groups_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    token = ensure_token_file(path, user="ops", groups=("system:masters", "ops"))
    assert '"system:masters,ops"' in path.read_text()
    info = TokenFile.load(path).authenticate(token)
    assert info is not None and (info.name, info.groups) == ("ops", ("system:masters", "ops"))


def test_ensure_token_file_refuses_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text("no,columns\n")
    with pytest.raises(TokenFileError, match=r"tokens\.csv:1"):
        ensure_token_file(path)
    assert path.read_text() == "no,columns\n"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"user": ""}, "user name"),
        ({"user": "a,b"}, "user name"),
        ({"groups": ("ok", 'bad"quote')}, "group name"),
        ({"groups": ("",)}, "group name"),
    ],
)
def test_ensure_token_file_refuses_unwritable_names(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(TokenFileError, match=message):
        ensure_token_file(tmp_path / "tokens.csv", **kwargs)
    assert not (tmp_path / "tokens.csv").exists()


def test_ensure_token_file_in_an_unwritable_place() -> None:
    with pytest.raises(TokenFileError, match="cannot"):
        ensure_token_file(Path("/proc/minikube-py-test/tokens.csv"))
