"""PATCH semantics: RFC 6902 and RFC 7386 examples, strategic merge patches as kubectl sends them,
server-side apply, and the rule that no input is ever mutated."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from minikube_py.api.errors import ApiError
from minikube_py.api.resources import lookup
from minikube_py.apiserver.merge_keys import merge_key_table
from minikube_py.apiserver.patch import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    PATCH_CONTENT_TYPES,
    STRATEGIC_MERGE_PATCH,
    apply_json_patch,
    apply_merge_patch,
    apply_server_side,
    apply_strategic_merge_patch,
    decode_patch_body,
    fields_v1,
    parse_fields_v1,
    patch_media_type,
)

PODS = lookup("", "v1", "pods")
DEPLOYMENTS = lookup("apps", "v1", "deployments")
CONFIGMAPS = lookup("", "v1", "configmaps")
SERVICES = lookup("", "v1", "services")
NODES = lookup("", "v1", "nodes")
assert PODS and DEPLOYMENTS and CONFIGMAPS and SERVICES and NODES


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "resourceVersion": "7",
            "generation": 2,
            "labels": {"app": "web"},
            "annotations": {"deployment.kubernetes.io/revision": "2"},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "nginx",
                            "image": "nginx:1.25",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "env": [{"name": "MODE", "value": "prod"}, {"name": "LEVEL", "value": "info"}],
                        },
                        {"name": "sidecar", "image": "busybox", "args": ["sleep", "3600"]},
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "tolerations": [{"key": "a", "operator": "Exists"}],
                },
            },
        },
        "status": {
            "replicas": 2,
            "conditions": [
                {"type": "Available", "status": "True"},
                {"type": "Progressing", "status": "True"},
            ],
        },
    }


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj["spec"]["template"]["spec"]["containers"]


def api_error(fn: Any, *args: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args)
    return info.value


# --------------------------------------------------------------------------- RFC 6902


@pytest.mark.parametrize(
    ("doc", "ops", "expected"),
    [
        # RFC 6902 appendix A.1 - A.10, A.14, A.16
        ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"baz": "qux", "foo": "bar"}),
        (
            {"foo": ["bar", "baz"]},
            [{"op": "add", "path": "/foo/1", "value": "qux"}],
            {"foo": ["bar", "qux", "baz"]},
        ),
        ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
        ({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}], {"foo": ["bar", "baz"]}),
        (
            {"baz": "qux", "foo": "bar"},
            [{"op": "replace", "path": "/baz", "value": "boo"}],
            {"baz": "boo", "foo": "bar"},
        ),
        (
            {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
            [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
            {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
        ),
        (
            {"foo": ["all", "grass", "cows", "eat"]},
            [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
            {"foo": ["all", "cows", "eat", "grass"]},
        ),
        (
            {"baz": "qux", "foo": ["a", 2, "c"]},
            [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
            {"baz": "qux", "foo": ["a", 2, "c"]},
        ),
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
            {"foo": "bar", "child": {"grandchild": {}}},
        ),
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
            {"foo": "bar", "baz": "qux"},
        ),
        ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}], {"/": 9, "~1": 10}),
        (
            {"foo": ["bar"]},
            [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
            {"foo": ["bar", ["abc", "def"]]},
        ),
        # copy, and the escaped "/" in a key (label and annotation keys contain it)
        ({"a": {"b": [1]}}, [{"op": "copy", "from": "/a", "path": "/c"}], {"a": {"b": [1]}, "c": {"b": [1]}}),
        (
            {"m": {"labels": {}}},
            [{"op": "add", "path": "/m/labels/app.kubernetes.io~1name", "value": "x"}],
            {"m": {"labels": {"app.kubernetes.io/name": "x"}}},
        ),
        # evanphx/json-patch (which kube-apiserver uses) counts negative indices from the end
        ({"l": [1, 2, 3]}, [{"op": "remove", "path": "/l/-1"}], {"l": [1, 2]}),
        ({"l": [1, 2, 3]}, [{"op": "replace", "path": "/l/0", "value": 9}], {"l": [9, 2, 3]}),
        # the whole document
        ({"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}], {"b": 2}),
        # a missing path tested against null passes, as in evanphx/json-patch v4
        ({"a": 1}, [{"op": "test", "path": "/missing", "value": None}], {"a": 1}),
    ],
)
def test_json_patch_rfc_examples(doc: dict, ops: list, expected: dict) -> None:
    before = copy.deepcopy(doc)
    assert apply_json_patch(doc, ops) == expected
    assert doc == before


@pytest.mark.parametrize(
    ("doc", "ops", "detail"),
    [
        (
            {"baz": "qux"},
            [{"op": "test", "path": "/baz", "value": "bar"}],
            "testing value /baz failed: test failed",
        ),
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/baz/bat", "value": "qux"}],
            'add operation does not apply: doc is missing path: "/baz/bat": missing value',
        ),
        (
            {"/": 9, "~1": 10},
            [{"op": "test", "path": "/~01", "value": "10"}],
            "testing value /~01 failed: test failed",
        ),
        ({"a": 1}, [{"op": "test", "path": "/a", "value": True}], "testing value /a failed: test failed"),
        (
            {"a": 1},
            [{"op": "remove", "path": "/b"}],
            "error in remove for path: '/b': Unable to remove nonexistent key: b: missing value",
        ),
        (
            {"a": 1},
            [{"op": "replace", "path": "/b", "value": 2}],
            "replace operation does not apply: doc is missing key: /b: missing value",
        ),
        (
            {"l": [1]},
            [{"op": "add", "path": "/l/5", "value": 2}],
            "error in add for path: '/l/5': Unable to access invalid index: 5: invalid index referenced",
        ),
        (
            {"l": [1]},
            [{"op": "add", "path": "/l/x", "value": 2}],
            "error in add for path: '/l/x': value was not a proper array index: 'x'",
        ),
        (
            {"a": {"b": 1}},
            [{"op": "move", "from": "/a", "path": "/a/b/c"}],
            "move operation does not apply: cannot move /a into its own child /a/b/c",
        ),
        (
            {"a": 1},
            [{"op": "copy", "from": "/nope", "path": "/b"}],
            "copy operation does not apply: doc is missing from path: /nope: missing value",
        ),
        ({"a": 1}, [{"op": "frobnicate", "path": "/a"}], "Unexpected kind: frobnicate"),
        ({"a": 1}, [{"op": "add", "value": 1}], "add operation failed to decode path: missing value"),
        ({"a": 1}, [{"op": "add", "path": "/b"}], "add operation, missing value field: missing value"),
        (
            {"a": 1},
            [{"op": "replace", "path": "", "value": [1]}],
            "the patched document is not a JSON object",
        ),
    ],
)
def test_json_patch_failures_are_422_with_the_detail_as_cause(doc: dict, ops: list, detail: str) -> None:
    before = copy.deepcopy(doc)
    err = api_error(apply_json_patch, doc, ops)
    assert (err.code, err.reason) == (422, "Invalid")
    assert err.message == "the server rejected our request due to an error in our request"
    assert err.details == {"causes": [{"reason": "UnexpectedServerResponse", "message": detail}]}
    assert doc == before


def test_json_patch_malformed_bodies_are_400_and_too_many_ops_413() -> None:
    assert api_error(apply_json_patch, {}, {"op": "add"}).code == 400
    assert api_error(apply_json_patch, {}, ["add"]).code == 400
    err = api_error(apply_json_patch, {}, [{"op": "test", "path": "", "value": {}}] * 10001)
    assert (err.code, err.reason) == (413, "RequestEntityTooLarge")


def test_json_patch_rollout_undo_and_sharing() -> None:
    live = deployment()
    before = copy.deepcopy(live)
    template = copy.deepcopy(live["spec"]["template"])
    template["spec"]["containers"][0]["image"] = "nginx:1.24"
    ops = [
        {"op": "replace", "path": "/spec/template", "value": template},
        {
            "op": "replace",
            "path": "/metadata/annotations",
            "value": {"deployment.kubernetes.io/revision": "3"},
        },
    ]
    out = apply_json_patch(live, ops)
    assert containers(out)[0]["image"] == "nginx:1.24"
    assert out["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "3"}
    assert live == before
    # The value from the patch is copied, not aliased.
    containers(out)[0]["image"] = "changed"
    assert template["spec"]["containers"][0]["image"] == "nginx:1.24"
    # Untouched subtrees are shared (no deep copy); top level and metadata are fresh.
    assert out["status"] is live["status"]
    assert out is not live and out["metadata"] is not live["metadata"]


def test_json_patch_several_ops_on_one_path_never_touch_the_input() -> None:
    live = deployment()
    before = copy.deepcopy(live)
    ops = [
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": "A", "value": "1"}},
        {"op": "remove", "path": "/spec/template/spec/containers/0/env/0"},
        {
            "op": "move",
            "from": "/spec/template/spec/containers/1",
            "path": "/spec/template/spec/containers/0",
        },
        {"op": "copy", "from": "/spec/template/spec/containers/1/env", "path": "/metadata/envcopy"},
        {"op": "replace", "path": "/metadata/envcopy/0/value", "value": "changed"},
    ]
    out = apply_json_patch(live, ops)
    assert live == before
    assert [c["name"] for c in containers(out)] == ["sidecar", "nginx"]
    assert [e["name"] for e in containers(out)[1]["env"]] == ["LEVEL", "A"]
    assert out["metadata"]["envcopy"][0]["value"] == "changed"
    assert containers(out)[1]["env"][0]["value"] == "info"  # the copy is independent of its source


# --------------------------------------------------------------------------- RFC 7386


@pytest.mark.parametrize(
    ("doc", "patch", "expected"),
    [
        # RFC 7386 appendix A, the cases whose patch is an object
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc_examples(doc: Any, patch: dict, expected: dict) -> None:
    before = copy.deepcopy(doc)
    assert apply_merge_patch(doc, patch) == expected
    assert doc == before


@pytest.mark.parametrize("patch", [None, "bar", ["c"], 3])
def test_merge_patch_that_is_not_an_object_is_400(patch: Any) -> None:
    err = api_error(apply_merge_patch, {"a": "foo"}, patch)
    assert (err.code, err.message) == (400, "Invalid JSON Patch")


def test_merge_patch_as_kubectl_label_and_scale_send_it() -> None:
    live = deployment()
    before = copy.deepcopy(live)
    out = apply_merge_patch(live, {"metadata": {"labels": {"env": "prod", "app": None}}})
    assert out["metadata"]["labels"] == {"env": "prod"}
    assert out["spec"] is live["spec"]
    out = apply_merge_patch(live, {"spec": {"replicas": 3}})
    assert out["spec"]["replicas"] == 3 and out["spec"]["template"] is live["spec"]["template"]
    # Lists are replaced whole by a merge patch, containers included.
    out = apply_merge_patch(
        live, {"spec": {"template": {"spec": {"containers": [{"name": "x", "image": "y"}]}}}}
    )
    assert containers(out) == [{"name": "x", "image": "y"}]
    assert live == before


# --------------------------------------------------------------------------- strategic merge patch


def smp(live: dict, patch: dict, info: Any = DEPLOYMENTS) -> dict:
    live_before, patch_before = copy.deepcopy(live), copy.deepcopy(patch)
    out = apply_strategic_merge_patch(live, patch, info)
    assert live == live_before and patch == patch_before, "an input was mutated"
    return out


def test_smp_set_image_changes_one_container_by_name() -> None:
    live = deployment()
    out = smp(
        live, {"spec": {"template": {"spec": {"containers": [{"image": "nginx:1.26", "name": "nginx"}]}}}}
    )
    nginx, sidecar = containers(out)
    assert nginx["image"] == "nginx:1.26"
    assert nginx["ports"] == [{"containerPort": 80, "protocol": "TCP"}] and len(nginx["env"]) == 2
    assert sidecar == containers(live)[1]
    assert out["spec"]["template"]["spec"]["tolerations"] is live["spec"]["template"]["spec"]["tolerations"]


def test_smp_adds_and_changes_env_vars_by_name() -> None:
    out = smp(
        deployment(),
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "nginx",
                                "env": [{"name": "LEVEL", "value": "debug"}, {"name": "NEW", "value": "1"}],
                            }
                        ]
                    }
                }
            }
        },
    )
    env = containers(out)[0]["env"]
    assert {e["name"]: e["value"] for e in env} == {"MODE": "prod", "LEVEL": "debug", "NEW": "1"}


def test_smp_new_list_elements_go_first_without_set_element_order() -> None:
    # apimachinery's normalizeElementOrder puts elements named only in the patch ahead of live-only ones.
    out = smp(
        deployment(), {"spec": {"template": {"spec": {"containers": [{"name": "redis", "image": "redis"}]}}}}
    )
    assert [c["name"] for c in containers(out)] == ["redis", "nginx", "sidecar"]


def test_smp_three_way_apply_patch_with_set_element_order() -> None:
    # The body kubectl apply sends (see notes/kubectl-wire.md), with a container added at the end.
    patch = {
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}\n"}},
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [
                        {"name": "nginx"},
                        {"name": "sidecar"},
                        {"name": "redis"},
                    ],
                    "containers": [
                        {"image": "nginx:1.26", "name": "nginx"},
                        {"image": "redis", "name": "redis"},
                    ],
                }
            }
        },
    }
    out = smp(deployment(), patch)
    assert [(c["name"], c["image"]) for c in containers(out)] == [
        ("nginx", "nginx:1.26"),
        ("sidecar", "busybox"),
        ("redis", "redis"),
    ]
    assert out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] == "{}\n"
    assert "$setElementOrder/containers" not in out["spec"]["template"]["spec"]


def test_smp_set_element_order_reorders_without_a_patch_list() -> None:
    out = smp(
        deployment(),
        {
            "spec": {
                "template": {
                    "spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "nginx"}]}
                }
            }
        },
    )
    assert [c["name"] for c in containers(out)] == ["sidecar", "nginx"]


def test_smp_patch_delete_removes_a_container_and_an_env_var() -> None:
    out = smp(
        deployment(),
        {
            "spec": {
                "template": {
                    "spec": {
                        "$setElementOrder/containers": [{"name": "nginx"}],
                        "containers": [
                            {"$patch": "delete", "name": "sidecar"},
                            {"name": "nginx", "env": [{"$patch": "delete", "name": "MODE"}]},
                        ],
                    }
                }
            }
        },
    )
    assert [c["name"] for c in containers(out)] == ["nginx"]
    assert containers(out)[0]["env"] == [{"name": "LEVEL", "value": "info"}]


def test_smp_patch_replace_on_a_list_and_on_a_map() -> None:
    out = smp(
        deployment(),
        {
            "spec": {
                "template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}
            }
        },
    )
    assert containers(out) == [{"name": "only", "image": "x"}]
    out = smp(deployment(), {"metadata": {"labels": {"$patch": "replace", "tier": "front"}}})
    assert out["metadata"]["labels"] == {"tier": "front"}
    out = smp(deployment(), {"spec": {"strategy": {"$patch": "delete"}}})
    assert "strategy" not in out["spec"]
    out = smp(deployment(), {"metadata": {"labels": {"$patch": "merge", "tier": "front"}}})
    assert out["metadata"]["labels"] == {"app": "web", "tier": "front"}


def test_smp_rollout_restart_pause_and_resume() -> None:
    live = deployment()
    out = smp(
        live,
        {
            "spec": {
                "template": {
                    "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-23T15:59:19Z"}}
                }
            }
        },
    )
    assert out["spec"]["template"]["metadata"] == {
        "labels": {"app": "web"},
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-23T15:59:19Z"},
    }
    assert out["spec"]["template"]["spec"] is live["spec"]["template"]["spec"]
    paused = smp(live, {"spec": {"paused": True}})
    assert paused["spec"]["paused"] is True
    resumed = smp(paused, {"spec": {"paused": None}})
    assert "paused" not in resumed["spec"]


def test_smp_label_and_annotate_as_kubectl_sends_them() -> None:
    out = smp(
        deployment(), {"metadata": {"labels": {"app": None, "env": "prod"}, "annotations": {"note": "hello"}}}
    )
    assert out["metadata"]["labels"] == {"env": "prod"}
    assert out["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "2", "note": "hello"}


def test_smp_retain_keys_on_strategy_and_volumes() -> None:
    # What kubectl apply sends when the strategy type and a volume's source change.
    out = smp(
        deployment(),
        {
            "spec": {
                "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None},
                "template": {
                    "spec": {
                        "$setElementOrder/volumes": [{"name": "data"}],
                        "volumes": [
                            {
                                "$retainKeys": ["configMap", "name"],
                                "configMap": {"name": "cfg"},
                                "name": "data",
                            }
                        ],
                    }
                },
            }
        },
    )
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    assert out["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "configMap": {"name": "cfg"}}]


def test_smp_retain_keys_must_cover_the_patch() -> None:
    err = api_error(
        apply_strategic_merge_patch,
        deployment(),
        {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "other": 1}}},
        DEPLOYMENTS,
    )
    assert (err.code, err.message) == (400, "invalid patch format of retainKeys")


def test_smp_finalizers_merge_as_a_set_and_delete_from_primitive_list() -> None:
    live = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["a", "b"]}}
    out = smp(live, {"metadata": {"finalizers": ["b", "c"]}}, CONFIGMAPS)
    assert out["metadata"]["finalizers"] == ["a", "b", "c"]
    out = smp(
        live,
        {
            "metadata": {
                "$deleteFromPrimitiveList/finalizers": ["a"],
                "finalizers": ["c"],
                "$setElementOrder/finalizers": ["b", "c"],
            }
        },
        CONFIGMAPS,
    )
    assert out["metadata"]["finalizers"] == ["b", "c"]


def test_smp_atomic_lists_are_replaced() -> None:
    out = smp(
        deployment(),
        {
            "spec": {
                "template": {
                    "spec": {
                        "tolerations": [{"key": "b", "operator": "Exists"}],
                        "containers": [{"name": "sidecar", "args": ["sleep", "1"]}],
                    }
                }
            }
        },
    )
    assert out["spec"]["template"]["spec"]["tolerations"] == [{"key": "b", "operator": "Exists"}]
    assert containers(out)[1]["args"] == ["sleep", "1"]


def test_smp_ports_conditions_owner_references_by_their_keys() -> None:
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]},
    }
    out = smp(svc, {"spec": {"ports": [{"port": 443, "targetPort": 9443}]}}, SERVICES)
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 9443}]

    out = smp(
        deployment(),
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "nginx", "ports": [{"containerPort": 443}]}]}}
            }
        },
    )
    assert [p["containerPort"] for p in containers(out)[0]["ports"]] == [443, 80]

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "ownerReferences": [{"uid": "u1", "name": "rs1"}]},
        "status": {
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}]
        },
    }
    out = smp(
        pod,
        {
            "metadata": {"ownerReferences": [{"uid": "u2", "name": "rs2"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        },
        PODS,
    )
    assert {o["uid"] for o in out["metadata"]["ownerReferences"]} == {"u1", "u2"}
    assert {c["type"]: c["status"] for c in out["status"]["conditions"]} == {
        "Ready": "True",
        "Initialized": "True",
    }

    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]},
    }
    out = smp(node, {"status": {"addresses": [{"type": "Hostname", "address": "n"}]}}, NODES)
    assert len(out["status"]["addresses"]) == 2


def test_smp_new_values_are_cleaned_and_not_aliased() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "new", "image": "x", "resources": {"limits": None, "requests": {"cpu": "1"}}}
                    ]
                }
            }
        },
        "metadata": {"annotations": {"x": "1"}},
    }
    out = smp(deployment(), patch)
    new = containers(out)[0]
    assert new == {"name": "new", "image": "x", "resources": {"requests": {"cpu": "1"}}}
    new["resources"]["requests"]["cpu"] = "2"
    assert patch["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "1"


def test_smp_errors() -> None:
    err = api_error(
        apply_strategic_merge_patch,
        deployment(),
        {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}},
        DEPLOYMENTS,
    )
    assert err.code == 500 and err.message == "map: map[image:x] does not contain declared merge key: name"
    err = api_error(
        apply_strategic_merge_patch,
        deployment(),
        {"spec": {"template": {"spec": {"$setElementOrder/containers": "x"}}}},
        DEPLOYMENTS,
    )
    assert (err.code, err.message) == (400, "invalid patch format of setElementOrder list")
    err = api_error(
        apply_strategic_merge_patch,
        deployment(),
        {"metadata": {"$deleteFromPrimitiveList/": ["a"]}},
        DEPLOYMENTS,
    )
    assert (err.code, err.message) == (400, "invalid patch format of primitive list")
    assert api_error(apply_strategic_merge_patch, deployment(), ["x"], DEPLOYMENTS).code == 400
    err = api_error(apply_strategic_merge_patch, deployment(), {"spec": {"$patch": "bogus"}}, DEPLOYMENTS)
    assert err.code == 500 and "unknown patch type: bogus" in err.message


def test_merge_key_table_covers_pod_templates() -> None:
    table = merge_key_table(DEPLOYMENTS)
    assert table["spec.template.spec.containers"].merge_key == "name"
    assert table["spec.template.spec.containers.ports"].merge_key == "containerPort"
    assert table["spec.template.spec.volumes"].retain_keys
    assert table["spec.strategy"].retain_keys and table["spec.strategy"].merge_key is None
    assert table["metadata.finalizers"].merge and table["metadata.finalizers"].merge_key is None
    assert "spec.template.spec.tolerations" not in table
    assert merge_key_table(PODS)["spec.containers.volumeMounts"].merge_key == "mountPath"
    assert merge_key_table(SERVICES)["spec.ports"].merge_key == "port"


# --------------------------------------------------------------------------- server-side apply


def cm(data: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "cfg", "namespace": "default"}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def ssa(live: dict | None, applied: dict, manager: str, force: bool = False, info: Any = CONFIGMAPS) -> dict:
    live_before, applied_before = copy.deepcopy(live), copy.deepcopy(applied)
    out = apply_server_side(live, applied, info, manager, force)
    assert live == live_before and applied == applied_before, "an input was mutated"
    return out


def entry_of(obj: dict, manager: str) -> dict:
    (entry,) = [e for e in obj["metadata"]["managedFields"] if e["manager"] == manager]
    return entry


def test_ssa_create_records_the_managers_fields() -> None:
    out = ssa(None, cm({"key": "v1"}, {"app": "x"}), "kubectl")
    assert out["data"] == {"key": "v1"} and out["metadata"]["labels"] == {"app": "x"}
    entry = entry_of(out, "kubectl")
    assert entry["operation"] == "Apply" and entry["apiVersion"] == "v1" and entry["fieldsType"] == "FieldsV1"
    assert entry["fieldsV1"] == {"f:data": {"f:key": {}}, "f:metadata": {"f:labels": {"f:app": {}}}}


def test_ssa_update_merges_and_removes_what_the_manager_dropped() -> None:
    live = ssa(None, cm({"a": "1", "b": "2"}, {"app": "x", "tier": "web"}), "kubectl")
    live = {**live, "metadata": {**live["metadata"], "resourceVersion": "5", "uid": "u"}}
    out = ssa(live, cm({"a": "9"}, {"app": "x"}), "kubectl")
    assert out["data"] == {"a": "9"}
    assert out["metadata"]["labels"] == {"app": "x"}
    assert out["metadata"]["resourceVersion"] == "5" and out["metadata"]["uid"] == "u"
    assert entry_of(out, "kubectl")["fieldsV1"] == {
        "f:data": {"f:a": {}},
        "f:metadata": {"f:labels": {"f:app": {}}},
    }
    # Dropping data entirely removes the emptied map.
    out = ssa(out, cm({}, {"app": "x"}) | {"data": None}, "kubectl")
    assert "data" not in out


def test_ssa_keeps_fields_another_manager_owns_and_fields_nobody_applied() -> None:
    live = ssa(None, cm({"shared": "1", "mine": "1"}), "alice")
    live = ssa(live, cm({"shared": "1", "theirs": "2"}), "bob")
    live["status"] = {"set": "by a controller"}
    out = ssa(live, cm({}), "alice")
    assert out["data"] == {"shared": "1", "theirs": "2"}
    assert out["status"] == {"set": "by a controller"}


def test_ssa_conflicts_and_force() -> None:
    live = ssa(None, cm({"key": "1", "other": "x"}), "alice")
    err = api_error(apply_server_side, live, cm({"key": "2"}), CONFIGMAPS, "bob", False)
    assert (err.code, err.reason) == (409, "Conflict")
    assert err.message == 'Apply failed with 1 conflict: conflict with "alice" using v1: .data.key'
    assert err.details == {
        "causes": [
            {
                "reason": "FieldManagerConflict",
                "message": 'conflict with "alice" using v1',
                "field": ".data.key",
            }
        ]
    }
    # The same value is shared ownership, not a conflict.
    assert ssa(live, cm({"key": "1"}), "bob")["data"]["key"] == "1"
    forced = ssa(live, cm({"key": "2"}), "bob", force=True)
    assert forced["data"]["key"] == "2"
    assert entry_of(forced, "alice")["fieldsV1"] == {"f:data": {"f:other": {}}}
    assert entry_of(forced, "bob")["fieldsV1"] == {"f:data": {"f:key": {}}}


def test_ssa_two_conflicts_are_listed_per_manager() -> None:
    live = ssa(None, cm({"a": "1", "b": "1"}), "alice")
    err = api_error(apply_server_side, live, cm({"a": "2", "b": "2"}), CONFIGMAPS, "bob", False)
    assert err.message == (
        'Apply failed with 2 conflicts: conflicts with "alice" using v1:\n- .data.a\n- .data.b'
    )


def test_ssa_merges_keyed_lists_and_removes_dropped_elements() -> None:
    applied = deployment()
    del applied["status"]
    for f in ("resourceVersion", "generation"):
        del applied["metadata"][f]
    live = ssa(None, applied, "kubectl", info=DEPLOYMENTS)
    fields = entry_of(live, "kubectl")["fieldsV1"]
    nginx = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"nginx"}']
    assert nginx["."] == {} and nginx["f:image"] == {} and 'k:{"containerPort":80}' in nginx["f:ports"]
    assert "f:resourceVersion" not in fields["f:metadata"] and "f:name" not in fields["f:metadata"]
    # A controller adds a default to the sidecar; the next apply drops the sidecar and changes nginx.
    live["spec"]["template"]["spec"]["containers"][1]["imagePullPolicy"] = "Always"
    again = copy.deepcopy(applied)
    again["spec"]["template"]["spec"]["containers"] = [{"name": "nginx", "image": "nginx:1.26"}]
    out = ssa(live, again, "kubectl", info=DEPLOYMENTS)
    (nginx_out,) = containers(out)
    assert nginx_out == {"name": "nginx", "image": "nginx:1.26"}


def test_ssa_rejections() -> None:
    err = api_error(apply_server_side, None, cm({}), CONFIGMAPS, "", False)
    assert (err.code, err.reason) == (422, "Invalid")
    assert err.message == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
    )
    err = api_error(apply_server_side, None, {**cm({}), "apiVersion": "v2"}, CONFIGMAPS, "m", False)
    assert err.code == 400 and "Incorrect version specified in apply patch" in err.message
    bad = cm({})
    bad["metadata"]["managedFields"] = []
    assert (
        api_error(apply_server_side, None, bad, CONFIGMAPS, "m", False).message
        == "metadata.managedFields must be nil"
    )
    assert api_error(apply_server_side, None, ["x"], CONFIGMAPS, "m", False).code == 400


def test_fields_v1_round_trip() -> None:
    doc = {
        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
        "f:spec": {"f:containers": {'k:{"name":"a"}': {".": {}, "f:image": {}, "f:name": {}}}},
    }
    paths = parse_fields_v1(doc)
    assert ("f:metadata", "f:labels") in paths  # "." marks a member with children
    assert ("f:spec",) not in paths
    assert parse_fields_v1(fields_v1(paths)) == paths


# --------------------------------------------------------------------------- media types


def test_dispatch_by_media_type() -> None:
    live = cm({"a": "1"})
    assert patch_media_type("application/merge-patch+json; charset=utf-8") == MERGE_PATCH
    assert PATCH_CONTENT_TYPES[JSON_PATCH](
        live, [{"op": "add", "path": "/data/b", "value": "2"}], CONFIGMAPS, "", False
    )["data"] == {"a": "1", "b": "2"}
    assert PATCH_CONTENT_TYPES[MERGE_PATCH](live, {"data": {"a": None}}, CONFIGMAPS, "", False)["data"] == {}
    assert PATCH_CONTENT_TYPES[STRATEGIC_MERGE_PATCH](live, {"data": {"c": "3"}}, CONFIGMAPS, "", False)[
        "data"
    ] == {"a": "1", "c": "3"}
    assert PATCH_CONTENT_TYPES[APPLY_PATCH](None, cm({"z": "1"}), CONFIGMAPS, "m", False)["data"] == {
        "z": "1"
    }
    err = api_error(patch_media_type, "application/json")
    assert (err.code, err.reason) == (415, "UnsupportedMediaType")


def test_decode_patch_body() -> None:
    assert decode_patch_body(MERGE_PATCH, b'{"a": 1}') == {"a": 1}
    assert decode_patch_body(APPLY_PATCH, b"kind: ConfigMap\ndata:\n  a: '1'\n") == {
        "kind": "ConfigMap",
        "data": {"a": "1"},
    }
    assert api_error(decode_patch_body, JSON_PATCH, b"[{").code == 400
    assert api_error(decode_patch_body, APPLY_PATCH, b"a: [").code == 400
