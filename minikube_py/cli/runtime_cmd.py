"""``minikube-py runtime``: the node's container runtime daemon, in the foreground until SIGTERM/SIGINT.

Stopping the daemon leaves its containers running (each has its own shim); the next start finds
them again. Every path is a flag, so several nodes can share one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from minikube_py.cli.main import UserError

log = logging.getLogger("minikube_py.runtime")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runtime", help="run the container runtime (CRI-shaped, on runc and CNI)",
                       description="Serve the CRI runtime and image services on a unix socket.")
    p.add_argument("--root-dir", type=Path, default=Path("/var/lib/minikube-py/runtime"),
                   help="images, container bundles and sandbox records (kept across reboots)")
    p.add_argument("--state-dir", type=Path, default=Path("/run/minikube-py/runtime"),
                   help="runc state, shim reports and IPAM leases (gone at reboot, with the containers)")
    p.add_argument("--socket", type=Path, default=Path("/run/minikube-py/runtime.sock"))
    p.add_argument("--cni-conf-dir", type=Path, default=Path("/etc/cni/net.d"))
    p.add_argument("--cni-bin-dir", type=Path, default=Path("/usr/lib/cni"))
    p.add_argument("--cni-bridge", default="cni0", help="the bridge the node's pods attach to (cni0)")
    p.add_argument("--cni-network", default="minikube-py", help="the CNI network name in the written config")
    p.add_argument("--cgroup-parent", default="minikube-py", help="cgroup under which containers get theirs")
    p.add_argument("--runc", default="runc", help="the runc binary (name in PATH or path)")
    p.add_argument("--default-registry", default="127.0.0.1:5000", metavar="HOST:PORT",
                   help="where unqualified image names (demo/web) are pulled from")
    p.add_argument("--registry-mirror", action="append", default=[], metavar="HOST:PORT",
                   help="another endpoint serving the default registry's images, tried in turn when one "
                        "cannot be reached (repeatable; e.g. the registry of every master of an HA lab)")
    p.add_argument("--insecure-registry", action="append", default=None, metavar="PATTERN",
                   help="registries to reach over plain HTTP (glob; default: all)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(run=run)


def open_images(args: argparse.Namespace) -> object:
    """The image store, or a stand-in that fails each image call with the reason it could not load."""
    from minikube_py.runtime.server import UnavailableImages

    try:
        from minikube_py.runtime.images import ImageStore
    except ImportError as e:
        return UnavailableImages(f"the image store cannot be loaded: {e}")
    insecure = tuple(args.insecure_registry) if args.insecure_registry else ("*",)
    try:
        return ImageStore(args.root_dir / "images", default_registry=args.default_registry,
                          insecure_registries=insecure, registry_mirrors=args.registry_mirror)
    except OSError as e:
        raise UserError(f"--root-dir {args.root_dir}: {e}") from None


async def serve(args: argparse.Namespace) -> int:
    from minikube_py.runtime.server import RuntimeConfig
    from minikube_py.runtime.server import serve as serve_runtime

    config = RuntimeConfig(root_dir=args.root_dir, state_dir=args.state_dir, socket=args.socket,
                           cni_conf_dir=args.cni_conf_dir, cni_bin_dir=args.cni_bin_dir,
                           cni_bridge=args.cni_bridge, cni_network=args.cni_network, runc=args.runc,
                           cgroup_parent=args.cgroup_parent)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def ready() -> None:
        print(f"minikube-py runtime: serving on {args.socket}", flush=True)

    try:
        await serve_runtime(config, open_images(args), stop, ready)  # type: ignore[arg-type]
    except OSError as e:
        raise UserError(str(e)) from None
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.geteuid() != 0:
        raise UserError("the runtime needs root (network namespaces, mounts, cgroups)")
    return asyncio.run(serve(args))
