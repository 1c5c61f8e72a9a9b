"""Helm, built once from its Go module into the cache, and kubectl's client-side dry run
without a cluster: what tests/test_helm.py needs to render and check the chart.

Why built from source: helm is not a Debian package here, and the Go module proxy is the
one place it can come from; `go install` of a pinned version is reproducible and, cached
in ~/.cache/strata (or $STRATA_CACHE_DIR) like Kafka's jars, happens once per machine.
`python -m devkit.helm` fetches it ahead of the tests (.ci/run does).

kubectl's `apply --dry-run=client` still asks an API server which kinds exist (discovery)
and whether each object is there already; `kubectl_dry_run` answers those from a stub on
loopback that knows the chart's kinds and holds no objects, so every object is checked
for what kubectl checks on the client and reported as "created (dry run)".

That check does not look inside the objects; `schema_errors` does, offline, against the
Kubernetes API's structural schema (every built-in kind's fields and their types, as
server-side apply uses it), which client-go carries in its Go module at the version
helm is built with: a misspelled or misplaced field, or a string where a number goes,
is reported with its path. It knows nothing of required fields or value formats.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from devkit.maven import cache_root

HELM_MODULE = "helm.sh/helm/v4/cmd/helm"
HELM_VERSION = "v4.3.2"
CLIENT_GO = "k8s.io/client-go@v0.37.2"  # what helm v4.3.2 is built with: bump them together


class HelmUnavailable(RuntimeError):
    """helm could not be built (no Go toolchain, no module proxy)."""


def _go() -> str | None:
    """go on PATH, else where the official tarball puts it."""
    if found := shutil.which("go"):
        return found
    return "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None


def helm_binary() -> Path:
    """The pinned helm, built with `go install` into the cache the first time (under a
    file lock, into a temp dir renamed at the end, so concurrent callers build once and
    an interrupted build leaves nothing half-made). Raises HelmUnavailable."""
    home = cache_root() / f"helm-{HELM_VERSION}"
    binary = home / "bin" / "helm"
    if binary.is_file():
        return binary
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file():
            return binary
        go = _go()
        if go is None:
            raise HelmUnavailable("cannot build helm: no `go` on PATH or in /usr/local/go")
        tmp = Path(tempfile.mkdtemp(prefix="bin-", dir=home))
        try:
            # GOTOOLCHAIN=local: build with this machine's Go, never download another
            env = {**os.environ, "GOBIN": str(tmp), "GOTOOLCHAIN": "local", "GOFLAGS": ""}
            try:
                proc = subprocess.run(
                    [go, "install", f"{HELM_MODULE}@{HELM_VERSION}"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=1500,
                )
            except subprocess.TimeoutExpired as e:
                raise HelmUnavailable("go install of helm timed out") from e
            if proc.returncode != 0 or not (tmp / "helm").is_file():
                out = (proc.stdout + proc.stderr)[-4000:]
                raise HelmUnavailable(f"go install of helm failed (rc={proc.returncode}):\n{out}")
            tmp.chmod(0o755)
            tmp.rename(home / "bin")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return binary


def helm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm; its stdout and stderr as text, whatever its exit code."""
    env = {**os.environ, "HELM_CACHE_HOME": str(cache_root() / "helm-home" / "cache")}
    env["HELM_CONFIG_HOME"] = str(cache_root() / "helm-home" / "config")
    env["HELM_DATA_HOME"] = str(cache_root() / "helm-home" / "data")
    return subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


# -- kubectl apply --dry-run=client without a cluster -----------------------------------

# group/version -> (kind, plural, namespaced) for every kind the chart can render
KINDS: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("ConfigMap", "configmaps", True),
        ("Secret", "secrets", True),
        ("Service", "services", True),
        ("ServiceAccount", "serviceaccounts", True),
        ("Namespace", "namespaces", False),
    ],
    "apps/v1": [("StatefulSet", "statefulsets", True)],
    "policy/v1": [("PodDisruptionBudget", "poddisruptionbudgets", True)],
    "autoscaling/v2": [("HorizontalPodAutoscaler", "horizontalpodautoscalers", True)],
    "monitoring.coreos.com/v1": [("ServiceMonitor", "servicemonitors", True)],
}


def _discovery(path: str) -> dict | None:
    """Legacy discovery documents for KINDS; None for anything else (no such object)."""
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path == "/apis":
        groups = []
        for gv in KINDS:
            if "/" in gv:
                group, version = gv.split("/")
                entry = {"groupVersion": gv, "version": version}
                groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    gv = path.removeprefix("/api/") if path.startswith("/api/") else path.removeprefix("/apis/")
    if gv in KINDS:
        resources = [
            {
                "name": plural,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            }
            for kind, plural, namespaced in KINDS[gv]
        ]
        return {"kind": "APIResourceList", "groupVersion": gv, "resources": resources}
    return None


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        doc = _discovery(path)
        if doc is None:
            status = 404
            doc = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}
            doc |= {"reason": "NotFound", "message": f"{path} not found"}
        else:
            status = 200
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _discovery_stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, name="k8s-stub", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def kubectl_binary() -> str | None:
    return shutil.which("kubectl")


def kubectl_dry_run(manifests: str, namespace: str = "default") -> subprocess.CompletedProcess:
    """`kubectl apply --dry-run=client --validate=false -f -` on `manifests`, against the
    discovery stub (no kubeconfig, no cluster)."""
    kubectl = kubectl_binary()
    assert kubectl is not None, "kubectl is not installed"
    with _discovery_stub() as url, tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HOME": home, "KUBECONFIG": os.devnull}
        for proxy in ("HTTP_PROXY", "http_proxy"):
            env.pop(proxy, None)  # the stub is on loopback
        return subprocess.run(
            [
                kubectl,
                "apply",
                "--dry-run=client",
                "--validate=false",
                f"--server={url}",
                f"--namespace={namespace}",
                "-f",
                "-",
            ],
            input=manifests,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )


# -- the API's structural schema ------------------------------------------------------


@functools.cache
def _api_types() -> dict[str, dict]:
    """The schema client-go embeds (applyconfigurations/internal), by type name."""
    import yaml

    go = _go()
    if go is None:
        raise HelmUnavailable("no `go` to fetch the Kubernetes API schema with")
    proc = subprocess.run(
        [go, "mod", "download", "-json", CLIENT_GO],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": ""},
        cwd=tempfile.gettempdir(),  # outside any module
    )
    if proc.returncode != 0:
        raise HelmUnavailable(f"go mod download {CLIENT_GO} failed:\n{proc.stdout}{proc.stderr}")
    source = Path(json.loads(proc.stdout)["Dir"], "applyconfigurations/internal/internal.go")
    text = source.read_text().split("typed.YAMLObject(`", 1)[1].split("`)", 1)[0]
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return {t["name"]: t for t in yaml.load(text, Loader=loader)["types"]}


def _type_name(doc: dict) -> str:
    group, _, version = doc["apiVersion"].rpartition("/")
    return f"io.k8s.api.{group or 'core'}.{version}.{doc['kind']}"


def knows_kind(doc: dict) -> bool:
    """Whether the schema has this object's kind (custom resources it has not)."""
    return _type_name(doc) in _api_types()


def schema_errors(doc: dict) -> list[str]:
    """Where `doc` (one manifest) does not fit its kind's schema: 'path: problem'."""
    types = _api_types()
    errors: list[str] = []
    _check(doc, {"namedType": _type_name(doc)}, doc["kind"], types, errors)
    return errors


_SCALARS = {
    "string": (str,),
    "numeric": (int, float),
    "boolean": (bool,),
    "untyped": (str, int, float, bool),
}


def _check(value: object, typ: dict, path: str, types: dict, errors: list[str]) -> None:
    while "namedType" in typ:
        if typ["namedType"] not in types:
            errors.append(f"{path}: no type {typ['namedType']} in the schema")
            return
        typ = types[typ["namedType"]]
    if value is None:
        return  # null is the same as absent
    if isinstance(value, dict) and "map" in typ:
        fields = {f["name"]: f["type"] for f in typ["map"].get("fields", [])}
        rest = typ["map"].get("elementType")
        for key, item in value.items():
            if key in fields:
                _check(item, fields[key], f"{path}.{key}", types, errors)
            elif rest is not None:
                _check(item, rest, f"{path}.{key}", types, errors)
            else:
                errors.append(f"{path}: unknown field {key!r}")
    elif isinstance(value, list) and "list" in typ:
        for i, item in enumerate(value):
            _check(item, typ["list"]["elementType"], f"{path}[{i}]", types, errors)
    elif "scalar" in typ and not isinstance(value, dict | list):
        kind = typ["scalar"]
        if not isinstance(value, _SCALARS[kind]) or (kind == "numeric" and isinstance(value, bool)):
            errors.append(f"{path}: {value!r} is not a {kind}")
    else:
        shape = (
            "map" if isinstance(value, dict) else "list" if isinstance(value, list) else "scalar"
        )
        expected = sorted({"map", "list", "scalar"} & set(typ))
        errors.append(f"{path}: a {shape} where the schema has a {' or '.join(expected)}")


if __name__ == "__main__":
    try:
        print(helm_binary())
    except HelmUnavailable as e:
        print(e, file=sys.stderr)
        sys.exit(1)
