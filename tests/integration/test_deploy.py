"""deploy/ works on first apply: the compose file and the Kubernetes manifests validate (docker-compose
and the Kubernetes JSON schemas), and what makes them safe to run is there: a registry-qualified image,
migrations before the services, pools within max_connections, a numeric non-root user, probes, PDBs,
securityContext, preStop, a hash-checked lock file; concurrent migrations take turns."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import yaml
from packaging.requirements import Requirement

from tests.conftest import ROOT
from tests.support.database import TestDatabase

DEPLOY = ROOT / "deploy"
MANIFEST = DEPLOY / "k8s" / "dvc766.yaml"
MAX_CONNECTIONS = 100 - 3  # PostgreSQL's default, less superuser_reserved_connections


def _registry_qualified(image: str) -> bool:
    first = image.split("/", 1)[0]
    return "/" in image and ("." in first or ":" in first) and ":" in image.rsplit("/", 1)[1]


def test_the_compose_file_validates_and_orders_migrations_first():
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose is missing: ./dev test installs Debian's docker-compose"
    env = {**os.environ, "DVC766_API_KEYS": '{"k": {"role": "admin"}}', "DVC766_SESSION_SECRET": "s"}
    result = subprocess.run([tool, "-f", str(DEPLOY / "docker-compose.yml"), "config"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    for name in ("ingest", "indicators", "api"):
        assert _registry_qualified(services[name]["image"]), services[name]["image"]
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["migrate"]
    kafka = services["kafka"]
    log_dir = kafka["environment"]["KAFKA_LOG_DIRS"]
    targets = [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in kafka["volumes"]]
    assert log_dir in targets, "the broker's log is not on its volume"
    pools = 2 * int(services["ingest"]["environment"]["DVC766_DB_POOL_SIZE"])
    assert pools * 5 <= MAX_CONNECTIONS  # three services and two more indicators


def test_the_kubernetes_manifests_validate_against_the_schemas():
    tool = shutil.which("kubernetes-validate") or str(ROOT / ".venv" / "bin" / "kubernetes-validate")
    result = subprocess.run([tool, "--strict", str(MANIFEST)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len([d for d in yaml.safe_load_all(MANIFEST.read_text()) if d])


def test_the_kubernetes_manifests_are_safe_to_apply():
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    deployments = [d for d in documents if d["kind"] == "Deployment"]
    budgets = {d["metadata"]["name"]: d for d in documents if d["kind"] == "PodDisruptionBudget"}
    assert {d["metadata"]["name"] for d in deployments} == {"dvc766-ingest", "dvc766-indicators", "dvc766-api"}
    connections = 1  # one migrating init container at a time (advisory lock)
    for deployment in deployments:
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        assert [c["args"] for c in pod["initContainers"]] == [["migrate"]]
        for container in pod["initContainers"] + pod["containers"]:
            assert _registry_qualified(container["image"]), container["image"]
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
            assert security["capabilities"]["drop"] == ["ALL"]
        (main,) = pod["containers"]
        assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert main["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
        if deployment["metadata"]["name"] != "dvc766-indicators":  # behind a Service
            assert main["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
        budget = budgets[deployment["metadata"]["name"]]
        assert budget["spec"]["selector"]["matchLabels"] == labels
        pool = int(next(e["value"] for e in main["env"] if e["name"] == "DVC766_DB_POOL_SIZE"))
        surge = spec["strategy"]["rollingUpdate"]["maxSurge"]
        connections += (spec["replicas"] + surge) * 2 * pool
    assert connections <= MAX_CONNECTIONS, connections


def test_the_image_runs_as_a_numeric_user_with_a_healthcheck_and_locked_dependencies():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+)(?::(\d+))?$", dockerfile, re.M)
    assert user and int(user.group(1)) > 0
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", dockerfile, re.M)
    lock_install = dockerfile.index("--require-hashes")
    assert lock_install < dockerfile.index("COPY services"), "dependencies must be a layer before the code"
    assert re.search(r"^ENV DVC766_DATA_DIR=/var/lib/dvc766$", dockerfile, re.M)
    assert "--home-dir /var/lib/dvc766 --create-home" in dockerfile  # the embedded default can write there


def test_the_lock_file_pins_every_dependency_within_pyproject():
    import tomllib

    lock = (DEPLOY / "requirements.lock").read_text()
    pinned = {m.group(1).lower().replace("_", "-"): m.group(2)
              for m in re.finditer(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^ \\\n]+)", lock, re.M)}
    assert all("--hash=sha256:" in block for block in re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n", 3)[3]))
    for dependency in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(dependency)
        name = requirement.name.lower().replace("_", "-")
        assert name in pinned, f"{name} is not in deploy/requirements.lock"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (name, pinned[name])


def test_migrations_started_together_take_turns():
    database = TestDatabase()
    database.create()
    try:
        def migrate() -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "services.cli", "migrate"],
                                  env={**os.environ, "DVC766_DATABASE_URL": database.url},
                                  capture_output=True, text=True, timeout=180)

        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda _: migrate(), range(3)))
        assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results]
    finally:
        database.drop()
