"""The scheduler (kube-scheduler): pure placement algorithm plus the component that runs it.

- ``podinfo`` / ``nodeinfo``: pods and nodes parsed once, and the cache with per-node totals;
- ``filters`` / ``scores`` / ``framework``: one scheduling cycle, with Kubernetes' messages;
- ``queue``: active / backoff / unschedulable sub-queues;
- ``events``: core/v1 Events with repeat counting;
- ``scheduler``: informers, assumed pods, bindings, metrics.
"""

from .framework import FitError, fit_error_message, schedule
from .nodeinfo import ClusterState, NodeInfo
from .podinfo import InvalidPod, PodInfo, pod_info

__all__ = ["ClusterState", "FitError", "InvalidPod", "NodeInfo", "PodInfo", "fit_error_message", "pod_info",
           "schedule"]
