"""deploy/: the Dockerfile passes hadolint, the compose file passes
``docker-compose config``, every Kubernetes manifest of both overlays (rendered
by kustomize) passes kubernetes-validate in strict mode and every KEDA
ScaledObject passes KEDA's CRD schema (check-jsonschema), all offline; each
validator is shown to fail on a broken copy, so the checks can fail. The
autoscaler's query is evaluated by promtool on series where every worker is
busy: it must not read 0."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
SCHEMA = DEPLOY / "k8s" / "schemas" / "scaledobject-keda.sh-v1alpha1.json"
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())


def _tool(name: str) -> str:
    path = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if path is None:
        pytest.skip(f"{name} is not installed (make system-deps)")
    return path


# --- the Dockerfile -------------------------------------------------------------------

def _hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "hadolint"), "--no-color", str(path)], capture_output=True, text=True,
                          timeout=60)


def test_dockerfile_passes_hadolint_and_has_both_targets(tmp_path):
    dockerfile = DEPLOY / "docker" / "Dockerfile"
    lint = _hadolint(dockerfile)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM \S+ AS (\S+)$", text, re.M)
    assert {"cpu", "cuda"} <= set(stages) and stages[-1] == "cpu"     # cpu is the default target
    for target in ("cpu", "cuda"):
        body = text.split(f"AS {target}\n", 1)[1].split("\nFROM ", 1)[0]
        assert re.search(r"^USER 10001:10001$", body, re.M), target           # numeric, non-root
        assert 'VOLUME ["/models"]' in body and f"--from=build-{target}" in body
    assert text.count("python -m orchestration.provision --model-dir /models") == 2   # weights at build time
    assert "HEALTHCHECK" in text and 'ENTRYPOINT ["tini", "--", "retouch"]' in text
    # control: the linter does fail on a bad instruction
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace("apt-get install -y --no-install-recommends build-essential",
                                   "apt-get install build-essential"))
    assert _hadolint(broken).returncode != 0


def test_dockerignore_admits_only_the_package():
    lines = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "**"
    admitted = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert admitted == {"pyproject.toml", "README.md", "worker", "tasks", "orchestration", "monitoring"}
    copied = set(re.findall(r"^COPY (?!--)(\S+)", (DEPLOY / "docker" / "Dockerfile").read_text(), re.M))
    assert copied <= admitted


# --- compose ---------------------------------------------------------------------------

@pytest.fixture
def compose_dir(tmp_path) -> Path:
    """deploy/ as a user has it after `cp retouch.env.example retouch.env`."""
    work = tmp_path / "deploy"
    shutil.copytree(DEPLOY, work, ignore=shutil.ignore_patterns("retouch.env"))
    shutil.copy(work / "retouch.env.example", work / "retouch.env")
    return work


def _compose(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("docker-compose"), "-f", "compose.yaml", *args], cwd=folder, capture_output=True,
                          text=True, timeout=120)


def _host_ip(port) -> str:
    """A published port's host address, from the long (compose v2) or short (v1) syntax."""
    return str(port.get("host_ip", "")) if isinstance(port, dict) else port.split(":")[0]


def _bind(volume) -> tuple[str, Path] | None:
    """(target, source) of a bind mount, long or short syntax; None for a named volume."""
    if isinstance(volume, dict):
        return (volume["target"], Path(volume["source"])) if volume["type"] == "bind" else None
    source, target = volume.split(":")[:2]
    return (target, Path(source)) if source.startswith("/") else None


def test_compose_config_is_valid_and_complete(compose_dir):
    plain = _compose(compose_dir, "config")
    assert plain.returncode == 0, plain.stderr
    services = yaml.safe_load(plain.stdout)["services"]
    assert set(services) == {"redis", "minio", "minio-init", "api", "worker-cpu", "worker-gpu0", "worker-gpu1",
                             "beat", "flower", "prometheus", "grafana"}
    # GPU workers start only with --profile gpu
    assert {name for name, s in services.items() if s.get("profiles")} == {"worker-gpu0", "worker-gpu1"}
    assert services["worker-gpu0"]["profiles"] == ["gpu"]
    gpu = _compose(compose_dir, "--profile", "gpu", "config")
    assert gpu.returncode == 0, gpu.stderr
    services = yaml.safe_load(gpu.stdout)["services"]
    devices = [services[f"worker-gpu{i}"]["deploy"]["resources"]["reservations"]["devices"][0] for i in (0, 1)]
    assert [d["device_ids"] for d in devices] == [["0"], ["1"]]
    assert all(d["driver"] == "nvidia" and d["capabilities"] == ["gpu"] for d in devices)
    assert services["worker-gpu0"]["command"][:3] == ["worker", "--gpus", "0"]
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    init = " ".join(services["minio-init"]["command"])
    assert "mc mb --ignore-existing" in init and "mc version enable" in init
    assert services["api"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert services["beat"]["command"] == ["beat"]
    assert services["api"]["environment"]["RETOUCH_API_TOKEN"] == "change-me-api-token"   # from retouch.env
    for name in ("api", "minio", "flower", "prometheus", "grafana"):
        assert all(_host_ip(p) == "127.0.0.1" for p in services[name]["ports"]), name
    assert "ports" not in services["redis"]
    task_limit = 2100
    for name in ("worker-cpu", "worker-gpu0"):
        minutes = int(str(services[name]["stop_grace_period"]).rstrip("m"))
        assert minutes * 60 > task_limit, name                             # a warm shutdown can finish
    # the monitoring files the containers mount are the repository's own
    mounts = dict(_bind(v) for s in ("prometheus", "grafana") for v in services[s]["volumes"] if _bind(v))
    assert mounts["/etc/prometheus/rules.yml"] == compose_dir / "monitoring" / "rules.yml"
    assert mounts["/var/lib/grafana/dashboards/retouch.json"] == compose_dir / "monitoring" / "grafana-dashboard.json"
    assert all(p.exists() for p in mounts.values())


def test_compose_secrets_come_from_an_uncommitted_env_file(compose_dir):
    text = (DEPLOY / "compose.yaml").read_text()
    assert "change-me" not in text and "PASSWORD=" not in text and "TOKEN:" not in text
    (compose_dir / "retouch.env").unlink()
    missing = _compose(compose_dir, "config")
    assert missing.returncode != 0 and "retouch.env" in missing.stderr
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/retouch.env"], cwd=ROOT)
    assert ignored.returncode == 0
    assert subprocess.run(["git", "check-ignore", "-q", "deploy/retouch.env.example"], cwd=ROOT).returncode == 1


def test_compose_prometheus_config_and_rules(tmp_path):
    promtool = _tool("promtool")
    shutil.copy(DEPLOY / "compose" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOY / "monitoring" / "rules.yml", tmp_path / "rules.yml")
    check = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


# --- Kubernetes ---------------------------------------------------------------------

def _render(overlay: str) -> list[dict]:
    out = subprocess.run([_tool("kubectl"), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _by(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _check_scaled_objects(docs: list[dict], tmp_path: Path) -> subprocess.CompletedProcess:
    files = []
    for i, doc in enumerate(docs):
        path = tmp_path / f"scaledobject-{i}.json"
        path.write_text(json.dumps(doc))
        files.append(str(path))
    return subprocess.run([str(BIN / "check-jsonschema"), "--schemafile", str(SCHEMA), *files], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_every_manifest_validates_offline(overlay, tmp_path):
    docs = _render(overlay)
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    for doc in docs:
        if doc["kind"] == "ScaledObject":
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)   # raises on any error
    check = _check_scaled_objects(scaled, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert not [d for d in docs if d["kind"] == "Secret"]              # referenced, never committed
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
        env_from = pod["containers"][0]["envFrom"]
        assert {"configMapRef": {"name": "retouch-settings"}} in env_from
        assert {"secretRef": {"name": "retouch-secrets"}} in env_from
    api = _by(docs, "Deployment", "retouch-api")["spec"]["template"]
    assert api["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert _by(docs, "Service", "retouch-api")["spec"]["ports"][0]["targetPort"] == "http"
    beat = _by(docs, "Deployment", "retouch-beat")["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"


def test_gpu_workers_one_process_per_gpu_warm_shutdown_and_keda(tmp_path):
    docs = _render("gpu")
    settings = _by(docs, "ConfigMap", "retouch-settings")["data"]
    worker = _by(docs, "Deployment", "retouch-worker-gpu")["spec"]["template"]["spec"]
    container = worker["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["args"][:5] == ["worker", "--gpus", "0", "--cpu-concurrency", "0"]    # one process, one GPU
    assert container["image"].endswith(":cuda")
    grace, hard, soft = (worker["terminationGracePeriodSeconds"], int(settings["RETOUCH_TASK_TIME_LIMIT"]),
                         int(settings["RETOUCH_TASK_SOFT_TIME_LIMIT"]))
    assert grace > hard > soft
    assert settings["RETOUCH_API_GPU_QUEUES"] == "1"      # jobs reach gpu.0 even with zero GPU workers
    scaled = _by(docs, "ScaledObject", "retouch-worker-gpu")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "retouch-worker-gpu" and scaled["minReplicaCount"] == 0
    query = scaled["triggers"][0]["metadata"]["query"]
    assert "retouch_queue_depth" in query and "ready" not in query    # waiting and reserved both count
    assert _by(_render("cpu"), "ConfigMap", "retouch-settings")["data"]["RETOUCH_API_GPU_QUEUES"] == "0"


def test_validators_reject_broken_manifests(tmp_path):
    docs = _render("gpu")
    deployment = _by(docs, "Deployment", "retouch-worker-gpu")
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 2400       # misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    scaled = _by(docs, "ScaledObject", "retouch-worker-gpu")
    typo = json.loads(json.dumps(scaled))
    typo["spec"]["minReplicas"] = typo["spec"].pop("minReplicaCount")                  # HPA's name, not KEDA's
    wrong_type = json.loads(json.dumps(scaled))
    wrong_type["spec"]["triggers"][0]["metadata"]["threshold"] = 4                    # metadata values are strings
    for bad in (typo, wrong_type):
        check = _check_scaled_objects([bad], tmp_path)
        assert check.returncode != 0, bad


def test_keda_query_counts_busy_workers(tmp_path):
    """Every GPU worker busy, nothing waiting: ready 0, unacked 3 on gpu.0, read
    by two exporters (a worker host and the API). The query reads 3, not 0
    (a bare list length) and not 6 (the exporters added up)."""
    promtool = _tool("promtool")
    query = _by(_render("gpu"), "ScaledObject", "retouch-worker-gpu")["spec"]["triggers"][0]["metadata"]["query"]
    (tmp_path / "none.yml").write_text("groups: []\n")
    series = [{"series": f'retouch_queue_depth{{instance="{i}", queue="{q}", state="{s}"}}', "values": v}
              for i in ("worker-gpu:9808", "api:8080") for q, s, v in
              (("gpu.0", "ready", "0x10"), ("gpu.0", "unacked", "3x10"), ("cpu", "ready", "7x10"))]
    tests = {"rule_files": ["none.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "promql_expr_test": [{"expr": query, "eval_time": "5m", "exp_samples": [{"labels": "{}", "value": 3}]}]}]}
    (tmp_path / "query_test.yml").write_text(yaml.safe_dump(tests))
    out = subprocess.run([promtool, "test", "rules", "query_test.yml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
