"""Developer tool: regenerate :mod:`minikube_py.api.protobuf_fields` from Kubernetes' sources.

Not used at run time. It reads ``generated.proto`` (field numbers, wire types, nested types) and the Go
structs of ``types.go`` (JSON names, ``omitempty``/``omitzero``, pointers, inlined structs) of
kubernetes/api and kubernetes/apimachinery, and prints our compact table for the kinds in ``ROOTS`` and
every message they contain. Both inputs are needed: the .proto has no JSON semantics, the Go tags have
no nested proto type names.

    python -m minikube_py.api.protobuf_tablegen API_GIT_DIR APIMACHINERY_GIT_DIR > protobuf_fields.py

The arguments are git directories (bare or not); the newest commit is read.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass

# Proto package -> (which repository, directory). Our short names drop the "k8s.io.api." prefixes.
PACKAGES: dict[str, tuple[str, str]] = {
    "core.v1": ("api", "core/v1"),
    "apps.v1": ("api", "apps/v1"),
    "coordination.v1": ("api", "coordination/v1"),
    "discovery.v1": ("api", "discovery/v1"),
    "authorization.v1": ("api", "authorization/v1"),
    "authentication.v1": ("api", "authentication/v1"),
    "rbac.v1": ("api", "rbac/v1"),
    "meta.v1": ("apimachinery", "pkg/apis/meta/v1"),
    "resource": ("apimachinery", "pkg/api/resource"),
    "intstr": ("apimachinery", "pkg/util/intstr"),
    "runtime": ("apimachinery", "pkg/runtime"),
}

# Messages whose JSON form is not an object: the decoder handles them by these names.
SPECIAL: dict[str, str] = {
    "meta.v1.Time": "@time",
    "meta.v1.MicroTime": "@microtime",
    "meta.v1.Duration": "@duration",
    "meta.v1.FieldsV1": "@fieldsv1",
    "resource.Quantity": "@quantity",
    "intstr.IntOrString": "@intorstring",
    "runtime.RawExtension": "@rawext",
}

ROOTS: tuple[str, ...] = (
    "core.v1.Namespace", "core.v1.ConfigMap", "core.v1.Secret", "core.v1.Service",
    "core.v1.ServiceAccount", "core.v1.Pod", "core.v1.Endpoints", "core.v1.Event", "core.v1.Node",
    "core.v1.Binding",
    "apps.v1.Deployment", "apps.v1.ReplicaSet", "apps.v1.DaemonSet",
    "coordination.v1.Lease", "discovery.v1.EndpointSlice",
    "authorization.v1.SelfSubjectAccessReview", "authorization.v1.SubjectAccessReview",
    "authorization.v1.LocalSubjectAccessReview", "authorization.v1.SelfSubjectRulesReview",
    "authentication.v1.TokenRequest", "authentication.v1.SelfSubjectReview", "authentication.v1.TokenReview",
    "rbac.v1.Role", "rbac.v1.ClusterRole", "rbac.v1.RoleBinding", "rbac.v1.ClusterRoleBinding",
)

_SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float"}


@dataclass
class ProtoField:
    number: int
    name: str
    type: str  # scalar name or qualified message name
    repeated: bool
    map_value: bool


@dataclass
class GoField:
    json: str
    omitempty: bool
    omitzero: bool
    pointer: bool
    inline: bool


def _git_files(git_dir: str, directory: str) -> dict[str, str]:
    names = subprocess.run(["git", "--git-dir", git_dir, "ls-tree", "--name-only", "HEAD", directory + "/"],
                           check=True, capture_output=True, text=True).stdout.split()
    out = {}
    for name in names:
        if name.endswith((".go", ".proto")):
            out[name] = subprocess.run(["git", "--git-dir", git_dir, "show", f"HEAD:{name}"],
                                       check=True, capture_output=True, text=True).stdout
    return out


def _short(type_name: str, package: str) -> str:
    if type_name in _SCALARS:
        return type_name
    if not type_name.startswith("."):
        return f"{package}.{type_name}"
    for pkg in PACKAGES:
        prefix = f".k8s.io.api.{pkg}." if PACKAGES[pkg][0] == "api" else ""
        if prefix and type_name.startswith(prefix):
            return pkg + "." + type_name[len(prefix):]
    tail = type_name.removeprefix(".k8s.io.apimachinery.pkg.")
    for old, new in (("apis.meta.v1.", "meta.v1."), ("api.resource.", "resource."),
                     ("util.intstr.", "intstr."), ("runtime.", "runtime.")):
        if tail.startswith(old):
            return new + tail[len(old):]
    raise ValueError(f"unknown proto type {type_name}")


_MESSAGE = re.compile(r"^message (\w+) \{\n(.*?)^\}", re.M | re.S)
_FIELD = re.compile(r"^\s*(optional|repeated)\s+(\S+)\s+(\w+)\s*=\s*(\d+)\s*;", re.M)
_MAP = re.compile(r"^\s*map<\s*(\S+)\s*,\s*(\S+)\s*>\s+(\w+)\s*=\s*(\d+)\s*;", re.M)


def parse_proto(text: str, package: str) -> dict[str, list[ProtoField]]:
    messages: dict[str, list[ProtoField]] = {}
    for m in _MESSAGE.finditer(text):
        fields = [ProtoField(int(f[4]), f[3], _short(f[2], package), f[1] == "repeated", False)
                  for f in _FIELD.finditer(m[2])]
        for f in _MAP.finditer(m[2]):
            if f[1] != "string":
                raise ValueError(f"{m[1]}.{f[3]}: map key {f[1]} is not string")
            fields.append(ProtoField(int(f[4]), f[3], _short(f[2], package), False, True))
        messages[f"{package}.{m[1]}"] = fields
    return messages


_STRUCT = re.compile(r"^type (\w+) struct \{\n(.*?)^\}", re.M | re.S)
_GO_FIELD = re.compile(r"^\s*(?:(\w+)\s+)?(\S+)\s+`([^`]*)`", re.M)
_LIST_TYPE = re.compile(r"^type (\w+) \[\](\w+)\s*$", re.M)


def parse_go(text: str) -> tuple[dict[str, dict[int, GoField]], set[str]]:
    """Go structs as {struct: {proto number: GoField}}, and the named slice types."""
    structs: dict[str, dict[int, GoField]] = {}
    for m in _STRUCT.finditer(text):
        fields: dict[int, GoField] = {}
        for line in m[2].splitlines():
            if line.strip().startswith("//"):
                continue
            f = _GO_FIELD.match(line)
            if not f:
                continue
            tags = dict(re.findall(r'(\w+):"([^"]*)"', f[3]))
            if "protobuf" not in tags or tags["protobuf"] == "-":
                continue
            number = int(tags["protobuf"].split(",")[1])
            json_parts = tags.get("json", "").split(",")
            embedded = f[1] is None
            inline = (embedded and json_parts[0] == "") or "inline" in json_parts[1:]
            options = json_parts[1:]
            fields[number] = GoField(json_parts[0], "omitempty" in options, "omitzero" in options,
                                     f[2].startswith("*"), inline)
        structs[m[1]] = fields
    return structs, {n for n, _ in _LIST_TYPE.findall(text)}


Protos = dict[str, list[ProtoField]]
Structs = dict[str, dict[int, GoField]]


def collect(api_git: str, machinery_git: str) -> tuple[Protos, Structs, set[str]]:
    protos: Protos = {}
    structs: Structs = {}
    lists: set[str] = set()
    for package, (repo, directory) in PACKAGES.items():
        files = _git_files(api_git if repo == "api" else machinery_git, directory)
        for name, text in files.items():
            base = name.rsplit("/", 1)[-1]
            if name.endswith("generated.proto"):
                protos.update(parse_proto(text, package))
            elif base.endswith(".go") and not base.endswith("_test.go") and not base.startswith(
                    ("zz_generated", "generated.pb")):
                s, named_lists = parse_go(text)
                structs.update({f"{package}.{k}": v for k, v in s.items()})
                lists.update(f"{package}.{n}" for n in named_lists)
    return protos, structs, lists


def render(protos: Protos, structs: Structs, lists: set[str]) -> str:
    todo = list(ROOTS)
    done: dict[str, str] = {}
    while todo:
        name = todo.pop()
        if name in done or name in SPECIAL:
            continue
        go = structs[name]
        specs = []
        for pf in protos[name]:
            gf = go.get(pf.number)
            if gf is None:
                raise ValueError(f"{name}: proto field {pf.number} {pf.name} has no Go field")
            kind = pf.type
            if kind in SPECIAL:
                kind = SPECIAL[kind]
            elif kind in lists:
                kind = "@strings"
            elif kind not in _SCALARS:
                todo.append(kind)
            flags = "".join(flag for flag, on in (
                ("r", pf.repeated), ("m", pf.map_value), ("o", gf.omitempty), ("z", gf.omitzero),
                ("p", gf.pointer), ("i", gf.inline)) if on)
            specs.append(f"{pf.number}:{gf.json}:{kind}" + (f":{flags}" if flags else ""))
        # Go struct order, which is also the order of Go's JSON output.
        order = list(go)
        specs.sort(key=lambda s: order.index(int(s.split(":", 1)[0])))
        done[name] = " ".join(specs)
    lines = []
    for name in sorted(done):
        chunks: list[str] = []
        for spec in done[name].split(" "):
            if chunks and len(chunks[-1]) + len(spec) < 84:
                chunks[-1] += " " + spec
            else:
                chunks.append(spec)
        body = "\n        ".join(f'"{c} "' if i < len(chunks) - 1 else f'"{c}"' for i, c in enumerate(chunks))
        lines.append(f'    "{name}": (\n        {body}),')
    return "\n".join(lines)


HEADER = '''"""Protobuf field table of the Kubernetes kinds :mod:`minikube_py.api.protobuf` decodes.

Generated by ``python -m minikube_py.api.protobuf_tablegen`` from kubernetes/api {api} and
kubernetes/apimachinery {machinery}; regenerate rather than edit when Kubernetes adds fields.

``MESSAGES`` maps a message (``<package>.<Name>``) to its fields in Go struct order, which is the
order of Go's JSON. Each field is ``number:jsonName:type[:flags]``. ``type`` is a protobuf scalar,
another message of this table, or a special JSON form: ``@time``, ``@microtime``, ``@duration``,
``@fieldsv1``, ``@rawext``, ``@quantity``, ``@intorstring`` or ``@strings`` (a named ``[]string``).
Flags: ``r`` repeated, ``m`` map with string keys (entry key=1, value=2) of ``type``, ``o`` omitempty,
``z`` omitzero, ``p`` a Go pointer (present on the wire means set, even to zero), ``i`` embedded
struct whose fields JSON inlines into the parent.
"""

ROOTS: tuple[str, ...] = {roots}

MESSAGES: dict[str, str] = {{
{body}
}}
'''


def _head(git_dir: str) -> str:
    return subprocess.run(["git", "--git-dir", git_dir, "log", "-1", "--format=%h (%as)"],
                          check=True, capture_output=True, text=True).stdout.strip()


def main(argv: list[str]) -> None:
    protos, structs, lists = collect(argv[1], argv[2])
    roots = "(\n" + "".join(f'    "{r}",\n' for r in ROOTS) + ")"
    sys.stdout.write(HEADER.format(api=_head(argv[1]), machinery=_head(argv[2]), roots=roots,
                                   body=render(protos, structs, lists)))


if __name__ == "__main__":
    main(sys.argv)
