"""The deployment examples (deploy/): they parse, run two replicas on one shared bundle volume, and set only
settings the service knows (a misspelt ARTLENS_* variable would be ignored silently by a container)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from artlens.server.settings import Settings

yaml = pytest.importorskip("yaml")
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
# Read outside the Settings struct: the execution device (artlens/embedder.py).
OTHER_VARIABLES = {"ARTLENS_DEVICE"}


def _known(name: str) -> bool:
    return name in OTHER_VARIABLES or name.removeprefix("ARTLENS_").lower() in Settings.__struct_fields__


def test_compose_runs_two_replicas_on_one_read_write_bundle_volume():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    service = compose["services"]["artlens"]
    assert service["deploy"]["replicas"] == 2 and "ports" not in service  # only the proxy is published
    env = service["environment"]
    assert all(_known(name) for name in env), [name for name in env if not _known(name)]
    assert env["ARTLENS_INDEX"].startswith("/bundles/") and float(env["ARTLENS_WATCH_INTERVAL"]) > 0
    mounts = {volume.split(":")[1]: volume for volume in service["volumes"]}
    assert not mounts["/bundles"].endswith(":ro") and mounts["/imports"].endswith(":ro")
    assert env["ARTLENS_IMPORT_ROOT"] == "/imports"
    assert set(compose["volumes"]) >= {"bundles", "models", "imports"}
    proxy = compose["services"]["proxy"]
    conf = (DEPLOY / proxy["volumes"][0].split(":")[0]).read_text()
    assert "server artlens:8000 resolve" in conf and "X-Forwarded-For" in conf
    subnet = compose["networks"]["backend"]["ipam"]["config"][0]["subnet"]
    assert env["ARTLENS_TRUSTED_PROXIES"] == subnet


def test_kubernetes_manifests_share_one_read_write_many_bundle_claim():
    docs = [doc for file in sorted((DEPLOY / "k8s").glob("*.yaml")) if file.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(file.read_text())]
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(f.name for f in (DEPLOY / "k8s").glob("*.yaml")
                                                        if f.name != "kustomization.yaml")
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    (deployment,) = by_kind["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert all(_known(name) for name in env), [name for name in env if not _known(name)]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    bundle_volume = mounts["bundles"]
    assert env["ARTLENS_INDEX"]["value"].startswith(bundle_volume["mountPath"] + "/")
    assert not bundle_volume.get("readOnly", False)
    claims = {c["metadata"]["name"]: c for c in by_kind["PersistentVolumeClaim"]}
    volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert claims[volumes["bundles"]]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert env["ARTLENS_IMPORT_ROOT"]["value"] == mounts["imports"]["mountPath"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for service in by_kind["Service"]:
        assert service["spec"]["selector"].items() <= labels.items()
        assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"


def test_the_examples_name_no_unknown_setting_in_their_comments_either():
    for file in [DEPLOY / "compose.yaml", *sorted((DEPLOY / "k8s").glob("*.yaml"))]:
        names = set(re.findall(r"ARTLENS_[A-Z_]+", file.read_text()))
        assert all(_known(name) for name in names), (file.name, sorted(n for n in names if not _known(n)))
