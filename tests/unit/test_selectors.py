"""Label and field selectors: every operator, any term order, malformed input, unknown fields."""

from __future__ import annotations

from typing import Any

import pytest

from minikube_py.api.errors import ApiError
from minikube_py.api.resources import lookup
from minikube_py.apiserver.selectors import (
    LabelSelector,
    label_key_errors,
    label_selector_from_dict,
    label_selector_from_set,
    label_value_errors,
    parse_field_selector,
    parse_label_selector,
    selectable_fields,
)

PODS = lookup("", "v1", "pods")
EVENTS = lookup("", "v1", "events")
NODES = lookup("", "v1", "nodes")
SECRETS = lookup("", "v1", "secrets")
NAMESPACES = lookup("", "v1", "namespaces")
REPLICASETS = lookup("apps", "v1", "replicasets")
CONFIGMAPS = lookup("", "v1", "configmaps")
DEPLOYMENTS = lookup("apps", "v1", "deployments")
assert PODS and EVENTS and NODES and SECRETS and NAMESPACES and REPLICASETS and CONFIGMAPS and DEPLOYMENTS

WEB = {"app": "web", "tier": "front", "version": "3"}
DB = {"app": "db", "tier": "back"}
BARE: dict[str, str] = {}


def bad_request(fn: Any, *args: Any) -> str:
    with pytest.raises(ApiError) as info:
        fn(*args)
    assert (info.value.code, info.value.reason) == (400, "BadRequest")
    return info.value.message


# --------------------------------------------------------------------------- label selectors


@pytest.mark.parametrize(
    ("text", "web", "db", "bare"),
    [
        ("app=web", True, False, False),
        ("app==web", True, False, False),
        ("app!=web", False, True, True),
        ("app in (web,db)", True, True, False),
        ("app notin (web)", False, True, True),
        ("tier", True, True, False),
        ("!tier", False, False, True),
        ("version>2", True, False, False),
        ("version<3", False, False, False),
        ("app=web,tier=front", True, False, False),
        ("app=web,tier=back", False, False, False),
        ("app in (web, db), !version", False, True, False),
        ("", True, True, True),
        ("  app  =  web  ", True, False, False),
        ("app=", False, False, False),
    ],
)
def test_label_operators(text: str, web: bool, db: bool, bare: bool) -> None:
    sel = parse_label_selector(text)
    assert (sel.matches(WEB), sel.matches(DB), sel.matches(BARE)) == (web, db, bare)
    assert sel.matches(None) == bare


def test_label_empty_value_and_keywords_as_values() -> None:
    assert parse_label_selector("app=").matches({"app": ""})
    assert parse_label_selector("x in (a,,b)").matches({"x": ""})
    assert parse_label_selector("x in ()").matches({"x": ""})
    sel = parse_label_selector("x in (in, notin)")
    assert sel.matches({"x": "in"}) and sel.matches({"x": "notin"}) and not sel.matches({"x": "a"})
    assert parse_label_selector("in=notin").matches({"in": "notin"})


def test_label_term_order_does_not_matter_and_str_is_canonical() -> None:
    a = parse_label_selector("tier in (front,back),app=web,!gone")
    b = parse_label_selector("!gone, app=web, tier in (back,front)")
    assert a == b
    assert str(a) == "app=web,!gone,tier in (back,front)"
    assert parse_label_selector(str(a)) == a
    assert str(parse_label_selector("x==1,y!=2,z>3,w<4,k")) == "k,w<4,x==1,y!=2,z>3"


def test_label_selector_helpers() -> None:
    assert parse_label_selector("").empty()
    assert not parse_label_selector("a").empty()
    sel = parse_label_selector("app=web,tier in (front)")
    assert sel.requires_exact_match("app") == "web"
    assert sel.requires_exact_match("tier") == "front"
    assert sel.requires_exact_match("nope") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ("=a", "found '=', expected: !, identifier, or 'end of string'"),
        ("a,", "found '', expected: identifier after ','"),
        (",a", "found ',', expected: !, identifier, or 'end of string'"),
        ("a=b=c", "found '=', expected: ',' or 'end of string'"),
        ("!a=b", "found '=', expected: ',' or 'end of string'"),
        ("a in b", "unable to parse requirement: found 'b' expected: '('"),
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
        ("a=(b)", "unable to parse requirement: found '(', expected: identifier"),
        (
            "a>x",
            'unable to parse requirement: values[0]: Invalid value: "x": '
            "for 'Gt', 'Lt' operators, the value must be an integer",
        ),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
    ],
)
def test_label_syntax_errors(text: str, message: str) -> None:
    assert bad_request(parse_label_selector, text) == message


def test_label_keys_and_values_are_validated_like_kubernetes() -> None:
    message = bad_request(parse_label_selector, "bad_key_!=x")
    assert message.startswith("unable to parse requirement: ")
    message = bad_request(parse_label_selector, "-bad=x")
    assert message.startswith(
        'unable to parse requirement: <nil>: Invalid value: "-bad": name part must consist'
    )
    message = bad_request(parse_label_selector, "app=-web")
    assert message.startswith(
        'unable to parse requirement: values[0][app]: Invalid value: "-web": a valid label'
    )
    assert "must be no more than 63 characters" in bad_request(parse_label_selector, "a=" + "v" * 64)
    assert "name part must be no more than 63 characters" in bad_request(parse_label_selector, "k" * 64)
    assert parse_label_selector("example.com/app=web").matches({"example.com/app": "web"})
    assert "prefix part a lowercase RFC 1123 subdomain" in bad_request(parse_label_selector, "Ex.com/app")
    assert label_key_errors("a/b/c") and label_key_errors("/a") and not label_key_errors("k8s.io/x")
    assert not label_value_errors("") and label_value_errors("a b")


def test_label_selector_from_dict() -> None:
    sel = label_selector_from_dict(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front"]},
                {"key": "gone", "operator": "DoesNotExist"},
                {"key": "version", "operator": "Exists"},
                {"key": "track", "operator": "NotIn", "values": ["canary"]},
            ],
        }
    )
    assert sel.matches(WEB) and not sel.matches(DB)
    assert not sel.matches({**WEB, "gone": "x"}) and not sel.matches({**WEB, "track": "canary"})
    assert str(sel) == "app=web,!gone,tier in (front),track notin (canary),version"
    assert label_selector_from_dict({}).matches(BARE) and label_selector_from_dict({}).empty()
    nothing = label_selector_from_dict(None)
    assert not nothing.matches(WEB) and not nothing.empty() and nothing == LabelSelector.nothing()
    assert str(nothing) == ""


@pytest.mark.parametrize(
    ("sel", "message"),
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]},
            '"Gt" is not a valid label selector operator',
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            'values: Invalid value: []string{"x"}: values set must be empty for exists and does not exist',
        ),
        ({"matchLabels": {"a b": "c"}}, 'key: Invalid value: "a b": name part must consist'),
    ],
)
def test_label_selector_from_dict_errors(sel: dict, message: str) -> None:
    assert bad_request(label_selector_from_dict, sel).startswith(message)


def test_label_selector_from_set() -> None:
    sel = label_selector_from_set({"app": "web"})
    assert sel.matches(WEB) and not sel.matches(DB)
    assert label_selector_from_set(None).matches(BARE)


# --------------------------------------------------------------------------- field selectors

POD = {
    "metadata": {"name": "nginx", "namespace": "default"},
    "spec": {"nodeName": "node-1", "restartPolicy": "Never", "serviceAccountName": "default"},
    "status": {"phase": "Running", "podIP": "10.244.0.5"},
}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("metadata.name=nginx", True),
        ("metadata.name==nginx", True),
        ("metadata.name!=nginx", False),
        ("metadata.namespace=default,spec.nodeName=node-1", True),
        ("spec.nodeName=node-2", False),
        ("spec.nodeName!=", True),
        ("spec.host=node-1", True),
        ("status.phase=Running,spec.restartPolicy=Never", True),
        ("spec.schedulerName=default-scheduler", True),  # defaulted when absent
        ("spec.serviceAccountName=default", True),
        ("status.podIP=10.244.0.5", True),
        ("status.nominatedNodeName=", True),
        ("spec.hostNetwork=false", True),
        ("", True),
    ],
)
def test_pod_field_selectors(text: str, matches: bool) -> None:
    assert parse_field_selector(text, PODS).matches(POD) is matches


def test_event_field_selector_in_any_term_order() -> None:
    event = {
        "metadata": {"name": "web.1", "namespace": "default"},
        "reason": "ScalingReplicaSet",
        "type": "Normal",
        "source": {"component": "deployment-controller"},
        "reportingComponent": "deployment-controller",
        "involvedObject": {
            "kind": "Deployment",
            "namespace": "default",
            "name": "web",
            "uid": "u-1",
            "apiVersion": "apps/v1",
            "resourceVersion": "10",
            "fieldPath": "",
        },
    }
    terms = [
        "involvedObject.name=web",
        "involvedObject.namespace=default",
        "involvedObject.kind=Deployment",
        "involvedObject.uid=u-1",
    ]
    first = parse_field_selector(",".join(terms), EVENTS)
    second = parse_field_selector(",".join(reversed(terms)), EVENTS)
    assert first.matches(event) and second.matches(event)
    assert str(first) == str(second)
    assert not parse_field_selector(",".join([*terms[:3], "involvedObject.uid=u-2"]), EVENTS).matches(event)
    for text in (
        "reason=ScalingReplicaSet",
        "type=Normal",
        "source=deployment-controller",
        "reportingComponent=deployment-controller",
        "involvedObject.apiVersion=apps/v1",
        "involvedObject.resourceVersion=10",
        "involvedObject.fieldPath=",
    ):
        assert parse_field_selector(text, EVENTS).matches(event), text


def test_other_kinds_fields() -> None:
    node = {"metadata": {"name": "n1"}, "spec": {"unschedulable": True}}
    assert parse_field_selector("spec.unschedulable=true", NODES).matches(node)
    assert parse_field_selector("spec.unschedulable=false", NODES).matches({"metadata": {"name": "n2"}})
    assert parse_field_selector("metadata.namespace=", NODES).matches(node)
    assert parse_field_selector("type=kubernetes.io/tls", SECRETS).matches({"type": "kubernetes.io/tls"})
    assert parse_field_selector("type=Opaque", SECRETS).matches({"metadata": {}})
    assert parse_field_selector("status.phase=Terminating", NAMESPACES).matches(
        {"status": {"phase": "Terminating"}}
    )
    assert parse_field_selector("status.replicas=0", REPLICASETS).matches({"status": {}})
    assert parse_field_selector("status.replicas!=0", REPLICASETS).matches({"status": {"replicas": 2}})
    assert selectable_fields(CONFIGMAPS) == ("metadata.name", "metadata.namespace")


def test_field_selector_escapes_and_helpers() -> None:
    sel = parse_field_selector(r"metadata.name=a\,b\=c\\d", CONFIGMAPS)
    assert sel.matches({"metadata": {"name": "a,b=c\\d"}})
    assert str(sel) == r"metadata.name=a\,b\=c\\d"
    sel = parse_field_selector("metadata.namespace=default,metadata.name=web", DEPLOYMENTS)
    assert sel.requires_exact_match("metadata.name") == "web"
    assert (
        parse_field_selector("metadata.name!=web", DEPLOYMENTS).requires_exact_match("metadata.name") is None
    )
    assert parse_field_selector("", DEPLOYMENTS).empty()
    assert [t.field for t in parse_field_selector("metadata.name=a,metadata.namespace=b", PODS).terms] == [
        "metadata.name",
        "metadata.namespace",
    ]


@pytest.mark.parametrize(
    ("info", "text", "message"),
    [
        (
            CONFIGMAPS,
            "foo=bar",
            '"foo" is not a known field selector: only "metadata.name", "metadata.namespace"',
        ),
        (
            DEPLOYMENTS,
            "spec.replicas=1",
            '"spec.replicas" is not a known field selector: only "metadata.name", "metadata.namespace"',
        ),
        (PODS, "spec.containers=x", "field label not supported: spec.containers"),
        (EVENTS, "message=x", "field label not supported: message"),
        (PODS, "metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
        (
            PODS,
            "metadata.name=a,bogus",
            "invalid selector: 'metadata.name=a,bogus'; can't understand 'bogus'",
        ),
        (PODS, r"metadata.name=a\x", r"invalid field selector: invalid escape sequence: \x"),
        (PODS, "metadata.name=a\\", "invalid field selector: invalid escape sequence: \\"),
        (PODS, "metadata.name=a=b", "invalid field selector: unescaped character in value: 61"),
    ],
)
def test_field_selector_errors(info: Any, text: str, message: str) -> None:
    assert bad_request(parse_field_selector, text, info) == message
