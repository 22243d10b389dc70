"""The ``minikube-py proxy`` command line: its parsing and the errors a user can cause."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from minikube_py.cli.main import build_parser, main
from minikube_py.cli.proxy_cmd import bind_address


def test_durations_are_go_style() -> None:
    args = build_parser().parse_args(["proxy", "--sync-period", "1m30s",
                                      "--iptables-min-sync-period", "500ms"])
    assert (args.sync_period, args.iptables_min_sync_period) == (90.0, 0.5)
    defaults = build_parser().parse_args(["proxy"])
    assert (defaults.sync_period, defaults.iptables_min_sync_period) == (30.0, 1.0)
    assert defaults.healthz_bind_address == ("0.0.0.0", 10256)
    assert defaults.metrics_bind_address == ("127.0.0.1", 10249)


def test_bind_addresses() -> None:
    parse = bind_address(10256)
    assert parse("0.0.0.0:10256") == ("0.0.0.0", 10256)
    assert parse("127.0.0.1") == ("127.0.0.1", 10256)
    assert parse("[::1]:9") == ("::1", 9)
    assert parse(":1234") == ("0.0.0.0", 1234)
    assert parse("") is None
    for bad in ("localhost:1", "1.2.3.4:70000", "1.2.3.4:x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["proxy"]) == 2
    assert "--kubeconfig FILE is required" in capsys.readouterr().err
    assert main(["proxy", "--kubeconfig", str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    assert main(["proxy", "--kubeconfig", str(kubeconfig), "--sync-period", "0s"]) == 2
    assert "--sync-period must be positive" in capsys.readouterr().err
    assert main(["proxy", "--kubeconfig", str(kubeconfig), "--cluster-cidr", "10.0.0.0/99"]) == 2
    assert "--cluster-cidr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["proxy", "--sync-period", "soon"])
