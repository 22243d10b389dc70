"""Writer process for the kill -9 test: creates keys from several tasks and prints each key only
after its write was acknowledged, so every printed key must survive a SIGKILL at any moment.

Usage: python sqlite_writer_proc.py DB_PATH TASKS
"""

from __future__ import annotations

import asyncio
import sys

from minikube_py.store.sqlite import SqliteStore


async def main(path: str, tasks: int) -> None:
    store = await SqliteStore.open(path, compact_interval=None)
    print("ready", flush=True)

    async def writer(task: int) -> None:
        i = 0
        while True:  # until killed
            kv = await store.create(f"/durable/{task}/{i:08}", f"value-{task}-{i}".encode())
            print(f"{kv.key} {kv.mod_revision}", flush=True)
            i += 1

    await asyncio.gather(*(writer(t) for t in range(tasks)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
