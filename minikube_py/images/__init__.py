"""The demo images' recipes (``busybox/``, ``web/``) and the helper that builds and pushes them all.

Everything builds offline from Debian's busybox-static; see minikube_py/runtime/image_build.py for
the recipe format.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class DemoImage:
    recipe: str                    # folder under RECIPES_DIR
    repository: str
    tags: tuple[str, ...]
    build_args: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [f"{self.repository}:{tag}" for tag in self.tags]


# demo/web:2.0 answers "demo/web 2.0: ..." instead of "demo/web 1.0: ...", for rolling updates.
DEMO_IMAGES: tuple[DemoImage, ...] = (
    DemoImage("busybox", "demo/busybox", ("latest", "1.0")),
    DemoImage("web", "demo/web", ("latest", "1.0"), {"VERSION": "1.0"}),
    DemoImage("web", "demo/web", ("2.0",), {"VERSION": "2.0"}),
)


def build_demo_images_offline(output: Path | None = None) -> list[str]:
    """Build every demo image into the OCI layout ``output``; returns the names built."""
    from minikube_py.runtime.image_build import build_image

    names: list[str] = []
    for demo in DEMO_IMAGES:
        build_image(RECIPES_DIR / demo.recipe, demo.names, output=output, build_args=demo.build_args)
        names += demo.names
    return names


async def build_demo_images(registry: str, *, output: Path | None = None) -> list[str]:
    """Build all demo images and push them to ``registry`` (HOST:PORT, plain HTTP).

    Returns the pushed references as ``HOST:PORT/demo/web:1.0@sha256:...``. Raises
    ``ImageBuildError`` with the reason when a build or a push fails.
    """
    from minikube_py.runtime.image_build import push_image

    names = await asyncio.to_thread(build_demo_images_offline, output)
    return [await push_image(name, registry=registry, output=output) for name in names]
