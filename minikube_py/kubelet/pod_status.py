"""A pod's status from what the runtime reports, as the kubelet's ``generateAPIPodStatus`` computes it:
container statuses (state, lastState, restartCount, ready, started, image, imageID, containerID), the
phase (``getPhase``) and the conditions. Pure functions over plain data, so they are tested alone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

CONTAINER_ID_SCHEME = "minikube-py://"
CREATED, RUNNING, EXITED, UNKNOWN = ("CONTAINER_CREATED", "CONTAINER_RUNNING", "CONTAINER_EXITED",
                                     "CONTAINER_UNKNOWN")
# The conditions the kubelet owns, in the order it writes them.
KUBELET_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")


@dataclass(frozen=True)
class RuntimeContainer:
    """One run (attempt) of a container, from the runtime's ContainerStatus."""

    id: str
    name: str
    attempt: int
    state: str
    created_at: int = 0     # ns
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    image_ref: str = ""

    @classmethod
    def from_status(cls, status: dict[str, Any]) -> RuntimeContainer:
        meta = status.get("metadata") or {}
        return cls(id=str(status.get("id") or ""), name=str(meta.get("name") or ""),
                   attempt=int(meta.get("attempt") or 0), state=str(status.get("state") or UNKNOWN),
                   created_at=int(status.get("createdAt") or 0), started_at=int(status.get("startedAt") or 0),
                   finished_at=int(status.get("finishedAt") or 0), exit_code=int(status.get("exitCode") or 0),
                   reason=str(status.get("reason") or ""), message=str(status.get("message") or ""),
                   image_ref=str(status.get("imageRef") or ""))

    @property
    def exited(self) -> bool:
        return self.state in (EXITED, UNKNOWN)

    @property
    def succeeded(self) -> bool:
        return self.state == EXITED and self.exit_code == 0


@dataclass(frozen=True)
class ContainerView:
    """What the pod worker knows of one container of the spec."""

    spec: dict[str, Any]
    latest: RuntimeContainer | None = None
    previous: RuntimeContainer | None = None
    # Why it is not running although it should (ErrImagePull, CrashLoopBackOff, ...): (reason, message).
    waiting: tuple[str, str] | None = None
    ready: bool = False
    started: bool = False


def rfc3339(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def terminated_state(c: RuntimeContainer) -> dict[str, Any]:
    if c.state == UNKNOWN:
        # The kubelet's wording for a container whose end nobody saw.
        return {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                               "message": "The container could not be located when the pod was terminated",
                               "containerID": CONTAINER_ID_SCHEME + c.id}}
    reason = c.reason or ("Completed" if c.exit_code == 0 else "Error")
    term: dict[str, Any] = {"exitCode": c.exit_code, "reason": reason, "containerID": CONTAINER_ID_SCHEME + c.id}
    if c.message:
        term["message"] = c.message
    # A container that never started has no start time; the API wants one, Kubernetes shows the epoch.
    term["startedAt"] = rfc3339(c.started_at) if c.started_at else "1970-01-01T00:00:00Z"
    term["finishedAt"] = rfc3339(c.finished_at) if c.finished_at else term["startedAt"]
    return {"terminated": term}


def container_status(view: ContainerView, *, default_waiting: str = "ContainerCreating",
                     init: bool = False) -> dict[str, Any]:
    spec, latest, previous = view.spec, view.latest, view.previous
    status: dict[str, Any] = {"name": spec.get("name"), "image": spec.get("image"), "imageID": "",
                              "restartCount": latest.attempt if latest is not None else 0,
                              "ready": False, "started": False, "lastState": {}}
    if latest is not None:
        status["imageID"] = latest.image_ref
        status["containerID"] = CONTAINER_ID_SCHEME + latest.id
    running = latest is not None and latest.state == RUNNING
    if view.waiting is not None and not running:
        reason, message = view.waiting
        status["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        if latest is not None and latest.exited:
            status["lastState"] = terminated_state(latest)
        return status
    if latest is None or latest.state == CREATED:
        status["state"] = {"waiting": {"reason": default_waiting}}
    elif running:
        status["state"] = {"running": {"startedAt": rfc3339(latest.started_at or latest.created_at)}}
        status["ready"] = view.ready
        status["started"] = view.started
    else:
        status["state"] = terminated_state(latest)
        if init and latest.succeeded:
            status["ready"] = True
    if previous is not None and previous.exited:
        status["lastState"] = terminated_state(previous)
    return status


def init_done(views: list[ContainerView]) -> bool:
    return all(v.latest is not None and v.latest.succeeded for v in views)


def init_failed(views: list[ContainerView], restart_policy: str) -> bool:
    """With restartPolicy Never a failed init container fails the pod."""
    return restart_policy == "Never" and any(v.latest is not None and v.latest.exited and not v.latest.succeeded
                                             for v in views)


def pod_phase(spec: dict[str, Any], inits: list[ContainerView], containers: list[ContainerView]) -> str:
    """The kubelet's ``getPhase``."""
    policy = str(spec.get("restartPolicy") or "Always")
    if init_failed(inits, policy):
        return "Failed"
    if not init_done(inits):
        return "Pending"
    running = waiting = stopped = succeeded = unknown = 0
    for v in containers:
        c = v.latest
        if c is None or c.state == CREATED:
            waiting += 1
        elif c.state == RUNNING:
            running += 1
        elif v.waiting is not None:
            stopped += 1   # waiting to restart after a run (back-off) counts as stopped, as in getPhase
        else:
            stopped += 1
            if c.succeeded:
                succeeded += 1
    if waiting > 0:
        return "Pending"
    if running > 0 and unknown == 0:
        return "Running"
    if running == 0 and stopped > 0 and unknown == 0:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _condition(ctype: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    cond: dict[str, Any] = {"type": ctype, "status": "True" if ok else "False"}
    if not ok and reason:
        cond["reason"] = reason
    if not ok and message:
        cond["message"] = message
    return cond


def pod_conditions(pod: dict[str, Any], phase: str, sandbox_ready: bool, inits: list[ContainerView],
                   containers: list[ContainerView]) -> list[dict[str, Any]]:
    """The kubelet's conditions, transition times kept where the status did not change; conditions of
    other writers (readiness gates, the scheduler's PodScheduled) kept."""
    now = now_rfc3339()
    pending_inits = [str(v.spec.get("name")) for v in inits if not (v.latest is not None and v.latest.succeeded)]
    unready = [str(v.spec.get("name")) for v in containers
               if not (v.latest is not None and v.latest.state == RUNNING and v.ready)]
    done = phase in ("Succeeded", "Failed")
    if done:
        initialized = _condition("Initialized", True) if not pending_inits or phase == "Succeeded" else \
            _condition("Initialized", False, "PodCompleted")
        ready_reason = "PodCompleted"
    else:
        initialized = _condition("Initialized", not pending_inits, "ContainersNotInitialized",
                                 f"containers with incomplete status: [{' '.join(pending_inits)}]")
        ready_reason = "ContainersNotReady"
    message = f"containers with unready status: [{' '.join(unready)}]"
    if done:
        containers_ready = _condition("ContainersReady", False, ready_reason)
        ready = _condition("Ready", False, ready_reason)
    else:
        containers_ready = _condition("ContainersReady", not unready, ready_reason, message)
        ready = _condition("Ready", not unready, ready_reason, message)
        gates = _readiness_gates_message(pod)
        if not unready and gates:
            ready = _condition("Ready", False, "ReadinessGatesNotReady", gates)
    wanted = [_condition("PodReadyToStartContainers", sandbox_ready and not done), initialized, ready,
              containers_ready, _condition("PodScheduled", True)]
    before = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or () if isinstance(c, dict)}
    out = []
    for cond in wanted:
        old = before.pop(cond["type"], None)
        if cond["type"] == "PodScheduled" and old is not None:
            out.append(old)
            continue
        same = old is not None and old.get("status") == cond["status"]
        cond["lastProbeTime"] = None
        cond["lastTransitionTime"] = old.get("lastTransitionTime", now) if same and old else now
        out.append(cond)
    out.extend(before.values())
    return out


def _readiness_gates_message(pod: dict[str, Any]) -> str | None:
    conditions = {c.get("type"): c.get("status") for c in (pod.get("status") or {}).get("conditions") or ()
                  if isinstance(c, dict)}
    for gate in (pod.get("spec") or {}).get("readinessGates") or ():
        ctype = gate.get("conditionType") if isinstance(gate, dict) else None
        if ctype and conditions.get(ctype) != "True":
            return f'corresponding condition of pod readiness gate "{ctype}" does not exist.' \
                if ctype not in conditions else \
                f'the status of pod readiness gate "{ctype}" is not "True", but {conditions[ctype]}'
    return None


def pod_status(pod: dict[str, Any], *, sandbox_ready: bool, pod_ip: str, host_ip: str,
               inits: list[ContainerView], containers: list[ContainerView]) -> dict[str, Any]:
    """The whole ``status`` the kubelet PUTs (fields it does not own, such as qosClass, are kept)."""
    old = pod.get("status") or {}
    spec = pod.get("spec") or {}
    phase = pod_phase(spec, inits, containers)
    if old.get("phase") in ("Succeeded", "Failed"):
        phase = old["phase"]  # a terminal phase never changes back
    status: dict[str, Any] = {k: v for k, v in old.items()
                              if k in ("qosClass", "nominatedNodeName", "resize", "resourceClaimStatuses")}
    status["phase"] = phase
    status["conditions"] = pod_conditions(pod, phase, sandbox_ready, inits, containers)
    if host_ip:
        status["hostIP"], status["hostIPs"] = host_ip, [{"ip": host_ip}]
    if pod_ip:
        status["podIP"], status["podIPs"] = pod_ip, [{"ip": pod_ip}]
    elif old.get("podIP"):
        status["podIP"], status["podIPs"] = old["podIP"], old.get("podIPs") or [{"ip": old["podIP"]}]
    status["startTime"] = old.get("startTime") or now_rfc3339()
    init_wait = "PodInitializing"
    if inits:
        status["initContainerStatuses"] = [container_status(v, default_waiting=init_wait, init=True)
                                           for v in inits]
    status["containerStatuses"] = [container_status(v, default_waiting="ContainerCreating" if init_done(inits)
                                                    else init_wait) for v in containers]
    if phase == "Failed" and old.get("reason"):
        status["reason"] = old["reason"]
    return status


def status_differs(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether ``new`` says anything ``old`` does not (the kubelet writes only then)."""
    return _comparable(old) != _comparable(new)


def _comparable(status: dict[str, Any]) -> Any:
    def strip(cond: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in cond.items() if k not in ("lastProbeTime", "lastHeartbeatTime")}

    out = dict(status)
    out["conditions"] = sorted((strip(c) for c in status.get("conditions") or ()), key=lambda c: str(c.get("type")))
    return out
