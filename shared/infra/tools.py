"""Developer tools built with `go install` through the Go module proxy, and files taken from Go modules.

kubeconform validates deploy/k8s. It fetches its schemas from GitHub by default, which the project's
machines cannot reach, so the schemas are built here, offline, from two Go modules the proxy serves:
Kubernetes' own OpenAPI document (k8s.io/kubernetes api/openapi-spec/swagger.json) and KEDA's CRDs
(github.com/kedacore/keda/v2 config/crd/bases), converted with kubeconform's own
scripts/openapi2jsonschema.py rules (strict: no properties the schema does not name). Everything is
cached under `cache_dir()` like the other infrastructure binaries.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from shared.infra.paths import cache_dir
from shared.infra.process import InfraError, run_with_status

KUBECONFORM = "github.com/yannh/kubeconform"
KUBECONFORM_VERSION = "v0.7.0"
KUBERNETES = "k8s.io/kubernetes"
KUBERNETES_VERSION = "v1.34.2"
KEDA = "github.com/kedacore/keda/v2"
KEDA_VERSION = "v2.21.0"
# KEDA CRDs whose kinds deploy/k8s may use.
KEDA_CRDS = ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml")

# kubeconform's path template: <kind>-<group's first label>-<version>.json, or <kind>-<version>.json in
# the core group (its registry.go builds ResourceKind and KindSuffix this way).
SCHEMA_TEMPLATE = "{{ .ResourceKind }}{{ .KindSuffix }}.json"


def _require_go() -> None:
    if shutil.which("go") is None:
        raise InfraError("go not found: the tool is built with `go install` through the Go module proxy")


def go_install(
    package: str, version: str, *, cgo: bool = False, bin_dir: Path | None = None, expected: str = ""
) -> Path:
    """`go install package@version` once into the cache (or `bin_dir`); later calls return the binary.

    `expected` is shown in the status line (how long the first build takes)."""
    name = package.rstrip("/").rsplit("/", 1)[-1]
    bin_dir = bin_dir or cache_dir() / "tools" / name / version / "bin"
    binary = bin_dir / name
    if binary.exists():
        return binary
    _require_go()
    run_with_status(
        f"building {name} {version} with go install (first run only{', ' + expected if expected else ''})",
        ["go", "install", "-v", f"{package}@{version}"],
        cache_dir() / "logs" / f"{name}-build.log",
        env={"GOBIN": str(bin_dir), "CGO_ENABLED": "1" if cgo else "0", "GOFLAGS": "-mod=mod"},
    )
    if not binary.exists():
        raise InfraError(f"go install finished but {binary} is missing")
    return binary


def go_module_dir(module: str, version: str) -> Path:
    """The extracted source of module@version in Go's module cache (`go mod download`, verified by go.sum
    database checks as usual)."""
    _require_go()
    cache_dir().mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        cwd=cache_dir(),  # outside any go.mod
        env={**os.environ, "GOFLAGS": "-mod=mod"},
        check=False,
    )
    try:
        info: dict[str, Any] = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except json.JSONDecodeError:
        info = {}
    if proc.returncode != 0 or "Error" in info or not info.get("Dir"):
        reason = info.get("Error") or proc.stderr.strip() or proc.stdout.strip()
        raise InfraError(f"go mod download {module}@{version} failed (exit {proc.returncode}): {reason}")
    return Path(info["Dir"])


def kubeconform() -> Path:
    return go_install(f"{KUBECONFORM}/cmd/kubeconform", KUBECONFORM_VERSION)


def _openapi2jsonschema() -> tuple[Path, ModuleType]:
    """kubeconform's converter script (and the module, for its schema rewriting functions)."""
    script = go_module_dir(KUBECONFORM, KUBECONFORM_VERSION) / "scripts" / "openapi2jsonschema.py"
    spec = importlib.util.spec_from_file_location("kubeconform_openapi2jsonschema", script)
    if spec is None or spec.loader is None:
        raise InfraError(f"cannot load {script}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return script, module


def _kind_file(group: str, version: str, kind: str) -> str:
    """The file name kubeconform looks up for apiVersion group/version (registry.go's schemaPath)."""
    suffix = (
        f"-{group.split('.', maxsplit=1)[0].lower()}-{version.lower()}" if group else f"-{version.lower()}"
    )
    return f"{kind.lower()}{suffix}.json"


def _closure(definitions: dict[str, Any], root: str) -> dict[str, Any]:
    """`root` and every definition it references, transitively."""
    found: dict[str, Any] = {}
    pending = [root]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found[name] = definitions[name]
        stack: list[Any] = [definitions[name]]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref.startswith("#/definitions/"):
                    pending.append(ref.removeprefix("#/definitions/"))
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return found


def _write_kubernetes_schemas(swagger_file: Path, out: Path, converter: ModuleType) -> int:
    definitions: dict[str, Any] = json.loads(swagger_file.read_text())["definitions"]
    # A quantity is written as a string or a number ("500m", 1, 0.5); swagger.json only says string.
    definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {
        "oneOf": [{"type": "string"}, {"type": "number"}]
    }
    written = 0
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            closure = _closure(definitions, name)
            schema = {**json.loads(json.dumps(definition)), "definitions": json.loads(json.dumps(closure))}
            # Strict at every level, int-or-string as oneOf: the rules of kubeconform's converter.
            schema = converter.replace_int_or_string(converter.additional_properties(schema))
            (out / _kind_file(gvk["group"], gvk["version"], gvk["kind"])).write_text(json.dumps(schema))
            written += 1
    return written


def kubeconform_schemas(
    kubernetes_version: str = KUBERNETES_VERSION, keda_version: str = KEDA_VERSION
) -> Path:
    """A folder of strict standalone JSON schemas for every built-in kind of `kubernetes_version` and
    KEDA's CRDs of `keda_version`, for `kubeconform -schema-location <folder>/SCHEMA_TEMPLATE`."""
    target = cache_dir() / "kubeconform-schemas" / f"kubernetes-{kubernetes_version}-keda-{keda_version}"
    if (target / ".complete").exists():
        return target
    script, converter = _openapi2jsonschema()
    swagger = go_module_dir(KUBERNETES, kubernetes_version) / "api" / "openapi-spec" / "swagger.json"
    crds = go_module_dir(KEDA, keda_version) / "config" / "crd" / "bases"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / "schemas"
        out.mkdir()
        if _write_kubernetes_schemas(swagger, out, converter) < 50:
            raise InfraError(f"{swagger} defines too few kinds: is it Kubernetes' OpenAPI document?")
        proc = subprocess.run(
            [sys.executable, str(script), *(str(crds / crd) for crd in KEDA_CRDS)],
            capture_output=True,
            text=True,
            cwd=out,
            env={
                **os.environ,
                "FILENAME_FORMAT": "{kind}-{group}-{version}",  # = kubeconform's lookup for keda.sh/<v>
                "DENY_ROOT_ADDITIONAL_PROPERTIES": "1",
            },
            check=False,
        )
        if proc.returncode != 0:
            raise InfraError(f"converting KEDA's CRDs with {script} failed:\n{proc.stdout}{proc.stderr}")
        (out / ".complete").write_text(f"{kubernetes_version} {keda_version}\n")
        shutil.rmtree(target, ignore_errors=True)
        out.rename(target)
    return target
