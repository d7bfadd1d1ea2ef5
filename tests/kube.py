"""Build the Kustomize manifests and turn a pod of a StatefulSet into the command and
environment Kubernetes would give its containers, so tests can run them as local processes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
Manifest = dict[str, Any]


def kustomize_command() -> list[str]:
    """``kubectl kustomize`` (kubectl ships Kustomize) or a standalone ``kustomize build``."""
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    raise RuntimeError(
        "the manifest tests need kubectl or kustomize on PATH (see k8s/README.md); "
        "neither was found"
    )


def build(directory: Path) -> list[Manifest]:
    result = subprocess.run(
        [*kustomize_command(), str(directory)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"kustomize failed on {directory}:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    for manifest in manifests:
        if manifest["kind"] == kind and manifest["metadata"]["name"] == name:
            return manifest
    raise KeyError(f"no {kind} {name}")


def image_entrypoint() -> list[str]:
    """The Dockerfile's ENTRYPOINT: what a container without ``command`` runs."""
    match = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", (ROOT / "Dockerfile").read_text(), re.M)
    if match is None:
        raise RuntimeError("the Dockerfile has no exec-form ENTRYPOINT")
    entrypoint: list[str] = json.loads(match.group(1))
    return entrypoint


@dataclass(frozen=True)
class Container:
    name: str
    command: list[str]
    env: dict[str, str]
    mounts: dict[str, str]  # mountPath -> volume name


def pod_containers(
    manifests: list[Manifest],
    statefulset: Manifest,
    ordinal: int,
    secrets: dict[str, dict[str, str]],
) -> tuple[list[Container], Container]:
    """(init containers, the main container) of pod ``ordinal``, as the kubelet would
    start them: image entrypoint + args, ConfigMaps and Secrets resolved, fieldRefs filled."""
    pod_name = f"{statefulset['metadata']['name']}-{ordinal}"
    spec = statefulset["spec"]["template"]["spec"]

    def container(raw: Manifest) -> Container:
        command = raw.get("command") or image_entrypoint()
        env: dict[str, str] = {}
        for source in raw.get("envFrom", []):
            config_map = find(manifests, "ConfigMap", source["configMapRef"]["name"])
            env.update(config_map["data"])
        for variable in raw.get("env", []):
            resolved = _env_value(manifests, variable, pod_name, secrets)
            if resolved is not None:
                env[variable["name"]] = resolved
        mounts = {m["mountPath"]: m["name"] for m in raw.get("volumeMounts", [])}
        return Container(raw["name"], [*command, *raw.get("args", [])], env, mounts)

    inits = [container(raw) for raw in spec.get("initContainers", [])]
    (main,) = [container(raw) for raw in spec["containers"]]
    return inits, main


def _env_value(
    manifests: list[Manifest],
    variable: Manifest,
    pod_name: str,
    secrets: dict[str, dict[str, str]],
) -> str | None:
    if "value" in variable:
        return str(variable["value"])
    source = variable["valueFrom"]
    if "fieldRef" in source:
        field = source["fieldRef"]["fieldPath"]
        if field != "metadata.name":
            raise NotImplementedError(field)
        return pod_name
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        return str(find(manifests, "ConfigMap", ref["name"])["data"][ref["key"]])
    ref = source["secretKeyRef"]
    value = secrets.get(ref["name"], {}).get(ref["key"])
    if value is None and not ref.get("optional", False):
        raise KeyError(f"pod needs Secret {ref['name']} key {ref['key']}")
    return value
