"""``minikube-py image build|push|pull|list``: images without Docker.

``build`` and ``push`` work on a local OCI layout (default ~/.local/share/minikube-py/images);
``pull`` and ``list --store`` work on a node's image store, for debugging what the runtime sees.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from minikube_py.cli.main import UserError

if TYPE_CHECKING:
    from minikube_py.runtime.images import ImageStore


def _build_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("image", help="build, push and pull OCI images (no Docker needed)",
                       description="Build images from an image.yaml recipe into a local OCI layout, push "
                                   "them to a registry, pull them into a node's image store.")
    cmds = p.add_subparsers(dest="image_command", metavar="ACTION")
    cmds.required = True
    output_help = "the local OCI layout (default: ~/.local/share/minikube-py/images)"

    b = cmds.add_parser("build", help="build DIR/image.yaml into an image",
                        description="Build DIR/image.yaml (format: minikube_py/runtime/image_build.py).")
    b.add_argument("context", type=Path, metavar="DIR")
    b.add_argument("-t", "--tag", action="append", required=True, metavar="NAME:TAG",
                   help="name the image (repeatable)")
    b.add_argument("--build-arg", action="append", type=_build_arg, default=[], metavar="KEY=VALUE",
                   help="override an arg the recipe declares (repeatable)")
    b.add_argument("--output", type=Path, metavar="DIR", help=output_help)
    b.set_defaults(run=run_build)

    u = cmds.add_parser("push", help="push a built image to a registry",
                        description="Upload the blobs the registry lacks, then the manifest.")
    u.add_argument("name", metavar="NAME:TAG")
    u.add_argument("--registry", metavar="HOST:PORT", help="where to push (default: the registry in NAME)")
    u.add_argument("--output", type=Path, metavar="DIR", help=output_help)
    u.add_argument("--https", action="store_true", help="use HTTPS (default: plain HTTP)")
    u.set_defaults(run=run_push)

    g = cmds.add_parser("pull", help="pull an image into a node's image store",
                        description="Pull over the distribution API, verify and unpack the layers.")
    g.add_argument("image", metavar="IMAGE")
    g.add_argument("--store", type=Path, default=None, metavar="DIR",
                   help="image store root (default: /var/lib/minikube-py/runtime/images)")
    g.add_argument("--default-registry", default="127.0.0.1:5000", metavar="HOST:PORT",
                   help="registry for names without one (127.0.0.1:5000)")
    g.set_defaults(run=run_pull)

    ls = cmds.add_parser("list", help="list built images, or those in an image store",
                         description="Without --store: images in the local OCI layout.")
    ls.add_argument("--output", type=Path, metavar="DIR", help=output_help)
    ls.add_argument("--store", type=Path, metavar="DIR", help="list this image store instead")
    ls.set_defaults(run=run_list)


def run_build(args: argparse.Namespace) -> int:
    from minikube_py.runtime.image_build import ImageBuildError, build_image

    try:
        built = build_image(args.context, args.tag, output=args.output, build_args=dict(args.build_arg))
    except (ImageBuildError, OSError) as e:
        raise UserError(str(e)) from None
    for name in built.tags:
        print(f"{name} {built.manifest_digest}")
    return 0


def run_push(args: argparse.Namespace) -> int:
    from minikube_py.runtime.image_build import ImageBuildError, push_image

    try:
        pushed = asyncio.run(push_image(args.name, registry=args.registry, output=args.output,
                                        insecure=not args.https))
    except (ImageBuildError, OSError) as e:
        raise UserError(str(e)) from None
    print(pushed)
    return 0


def _store(root: Path | None, default_registry: str = "127.0.0.1:5000") -> ImageStore:
    from minikube_py.runtime.images import DEFAULT_STORE_ROOT, ImageStore

    try:
        return ImageStore(root or DEFAULT_STORE_ROOT, default_registry=default_registry)
    except OSError as e:
        raise UserError(f"image store {root or DEFAULT_STORE_ROOT}: {e}") from None


def run_pull(args: argparse.Namespace) -> int:
    from minikube_py.runtime.images import ImagePullError

    store = _store(args.store, args.default_registry)
    try:
        info = asyncio.run(store.pull(args.image))
    except ImagePullError as e:
        raise UserError(str(e)) from None
    layers = len(store.layer_dirs(info))
    print(f"{store.normalize(args.image)} {info.id} ({info.size} bytes, {layers} layers)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from minikube_py.runtime.image_build import OCILayout, default_output_dir
    if args.store:
        store = _store(args.store)
        print(f"{'IMAGE':<50} {'ID':<19} SIZE")
        for info in sorted(store.list(), key=lambda i: i.repo_tags):
            for name in info.repo_tags or ["<none>"]:
                print(f"{name:<50} {info.id[:19]:<19} {info.size}")
        return 0
    layout_dir = args.output or default_output_dir()
    if not (layout_dir / "index.json").exists():
        print(f"no images built yet in {layout_dir}")
        return 0
    print(f"{'IMAGE':<40} DIGEST")
    for name, digest in OCILayout(layout_dir).names():
        print(f"{name:<40} {digest}")
    return 0
