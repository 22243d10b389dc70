"""Everything a component needs to talk to the API server: one client, informers, work queues,
leader election, and the health/metrics port components serve."""

from .component import ComponentServer, MetricsRegistry
from .informer import Informer, key_of, split_key
from .leaderelection import LeaderElector
from .rest import APIClient, APIConnectionError, ApiStatusError, resource
from .workqueue import ExponentialBackoff, WorkQueue, run_workers

__all__ = [
    "APIClient",
    "APIConnectionError",
    "ApiStatusError",
    "ComponentServer",
    "ExponentialBackoff",
    "Informer",
    "LeaderElector",
    "MetricsRegistry",
    "WorkQueue",
    "key_of",
    "resource",
    "run_workers",
    "split_key",
]
