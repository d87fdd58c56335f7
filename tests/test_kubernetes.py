"""The Kubernetes manifests (deploy/kubernetes/): every kustomization renders
with `kubectl kustomize`, every object it renders is valid against
Kubernetes' schemas (kubernetes-validate, no cluster), the PrometheusRule is
monitoring/alerts.yml, the probes send an allowed Host, and every variable
the manifests set is one the service reads."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from django.http.request import validate_host

from tests.harness import image
from tests.harness.variables import variables_the_service_reads

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests are meant for: what they use must
# exist there (kubernetes-validate holds every release's schemas).
KUBERNETES_VERSION = "1.30.0"
WORKLOADS = ("Deployment", "Job")


def kustomizations() -> list[Path]:
    """Every directory that `kubectl kustomize` can render (not the components)."""
    found = []
    for path in sorted(KUBERNETES.rglob("kustomization.yaml")):
        if yaml.safe_load(path.read_text()).get("kind", "Kustomization") == "Kustomization":
            found.append(path.parent)
    return found


def kubectl() -> str:
    """The dev group's kubectl (in the venv), else the machine's."""
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is missing, and CI must validate the Kubernetes manifests")
        pytest.skip("kubectl is missing: `make install-dev` installs it")
    return found


@cache
def _render(directory: Path, kubectl: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(directory: Path) -> tuple[dict[str, Any], ...]:
    return _render(directory, kubectl())


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    pod = obj["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


# What the manifests give `status.podIP` stands for in these tests.
POD_IP = "10.1.2.3"


def container_env(
    container: dict[str, Any], objects: tuple[dict[str, Any], ...]
) -> dict[str, str | None]:
    """The variables a container is given, as the kubelet makes them: its
    ConfigMaps' (envFrom) first, then its own `env` in order, each $(NAME)
    expanded from those before it; None for a value from a Secret."""
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"envFrom other than a ConfigMap: {source}"
        env.update(config_maps[source["configMapRef"]["name"]].get("data", {}))
    for variable in container.get("env", []):
        field = variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if field == "status.podIP":
            env[variable["name"]] = POD_IP
        elif "value" in variable:
            env[variable["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m[1]) or m[0], variable["value"]
            )
        else:
            env[variable["name"]] = None
    return env


# --- Custom resources: their CRDs' schemas are not in kubernetes-validate ----


def check_service_monitor(obj: dict[str, Any]) -> list[str]:
    """The fields the Prometheus Operator needs, and ports the Services have."""
    spec = obj.get("spec", {})
    problems = []
    if not spec.get("selector", {}).get("matchLabels"):
        problems.append("spec.selector.matchLabels is missing")
    if not spec.get("endpoints"):
        problems.append("spec.endpoints is missing")
    for endpoint in spec.get("endpoints", []):
        if not isinstance(endpoint.get("port"), str) or not endpoint.get("path", "/").startswith(
            "/"
        ):
            problems.append(f"an endpoint needs a port name and a path: {endpoint}")
    return problems


def check_prometheus_rule(obj: dict[str, Any]) -> list[str]:
    problems = []
    for group in obj.get("spec", {}).get("groups") or [None]:
        if not isinstance(group, dict) or not group.get("name") or not group.get("rules"):
            problems.append(f"a group needs a name and rules: {group}")
            continue
        for rule in group["rules"]:
            if not rule.get("expr") or not (rule.get("alert") or rule.get("record")):
                problems.append(f"a rule needs an expr and an alert or record: {rule}")
    return problems


CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_service_monitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheus_rule,
}


def test_the_manifests_hold_an_overlay_for_production() -> None:
    names = {path.relative_to(KUBERNETES).as_posix() for path in kustomizations()}
    assert {"base", "overlays/production"} <= names


@pytest.mark.parametrize("directory", kustomizations(), ids=lambda p: p.name)
def test_every_object_is_valid_against_kubernetes_schemas(directory: Path) -> None:
    objects = render(directory)
    problems = []
    for obj in objects:
        name = f"{obj['kind']} {obj['metadata']['name']}"
        check = CUSTOM_RESOURCES.get((obj["apiVersion"], obj["kind"]))
        if check is not None:
            problems += [f"{name}: {problem}" for problem in check(obj)]
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(part) for part in exc.absolute_path)
            problems.append(f"{name}: {path}: {exc.message}")
    assert not problems, "\n".join(problems)
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "Job", "Service", "PodDisruptionBudget", "PrometheusRule"} <= kinds


@pytest.mark.parametrize("directory", kustomizations(), ids=lambda p: p.name)
def test_every_pod_runs_unprivileged_with_its_limits(directory: Path) -> None:
    for obj in render(directory):
        if obj["kind"] not in WORKLOADS:
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
        for container in containers(obj):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            resources = container["resources"]
            assert resources["requests"]["memory"] and resources["limits"]["memory"]
            # With a read-only root, what the service writes has a volume.
            mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
            env = container_env(container, render(directory))
            assert {"/tmp", env["CACHE_PATH"]} <= mounted, obj["metadata"]["name"]


# What a Secret's key stands for in these tests: any value of the right form.
SECRET_STANDS_FOR = {
    "SECRET_KEY": "k7#Qv2!mZp9@Lw4$Rt6^Yx8&Nb3*Hc5(Jd1)Fg0_Ts-e8Ua4%Wo2=Ki7+Xs9",
    "DATABASE_URL": "postgres://imagecache:secret@db.example.com:5432/imagecache",
    "REDIS_URL": "redis://redis.example.com:6379/0",
}


@pytest.mark.parametrize("directory", kustomizations(), ids=lambda p: p.name)
def test_every_container_starts_the_profile_it_runs(directory: Path) -> None:
    """Each container's settings load as the image loads them (its ENV, then
    the manifests'), with every Secret's key given: a variable the profile
    requires and a manifest forgets fails here, not in the cluster."""
    objects = render(directory)
    for obj in objects:
        if obj["kind"] not in WORKLOADS:
            continue
        for container in containers(obj):
            env = {
                **image.environment(),
                **{
                    name: SECRET_STANDS_FOR.get(name, "from-a-secret") if value is None else value
                    for name, value in container_env(container, objects).items()
                },
            }
            result = subprocess.run(
                [sys.executable, "-c", "import django; django.setup()"],
                cwd=ROOT,
                env={"PATH": os.environ["PATH"], **env},
                capture_output=True,
                text=True,
                timeout=60,
            )
            where = f"{obj['kind']} {obj['metadata']['name']}"
            assert result.returncode == 0, f"{where}: {result.stderr.strip().splitlines()[-1]}"


@pytest.mark.parametrize("directory", kustomizations(), ids=lambda p: p.name)
def test_probes_send_a_host_the_service_allows(directory: Path) -> None:
    objects = render(directory)
    probes = 0
    for obj in objects:
        if obj["kind"] not in WORKLOADS:
            continue
        for container in containers(obj):
            env = container_env(container, objects)
            allowed = (env["ALLOWED_HOSTS"] or "").split(",")
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                http = container.get(kind, {}).get("httpGet")
                if http is None:
                    continue
                headers = {h["name"].lower(): h["value"] for h in http.get("httpHeaders", [])}
                assert "host" in headers, f"{kind} sends no Host: the kubelet's is the pod's IP"
                assert validate_host(headers["host"], allowed), (headers["host"], allowed)
                probes += 1
            # Prometheus scrapes a web pod by its IP (the ServiceMonitor).
            if any(port.get("name") == "http" for port in container.get("ports", [])):
                assert validate_host(POD_IP, allowed), allowed
    assert probes >= 3


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "prometheus_rule", KUBERNETES / "prometheus_rule.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_prometheus_rule_is_monitoring_alerts() -> None:
    rules = [o for o in render(KUBERNETES / "base") if o["kind"] == "PrometheusRule"]
    assert len(rules) == 1
    alerts = yaml.safe_load((ROOT / "monitoring" / "alerts.yml").read_text())
    assert rules[0]["spec"] == alerts, (
        "deploy/kubernetes/base/prometheusrule.yaml differs from monitoring/alerts.yml: "
        "run deploy/kubernetes/prometheus_rule.py"
    )
    generator = _load_generator()
    assert yaml.safe_load(generator.PROMETHEUS_RULE.read_text()) == generator.prometheus_rule()


def test_the_reads_found_include_each_kind_of_read() -> None:
    # One of each: env_str, env_number, _read(env.bool, ...), os.environ.get
    # in gunicorn.py, a name held in a constant, a secret's _FILE, the shell.
    assert {
        "SECRET_KEY",
        "Q_WORKERS",
        "DEBUG",
        "WEB_CONCURRENCY",
        "PROMETHEUS_MULTIPROC_DIR",
        "KT_AUTH_TOKEN_FILE",
        "RUN_AS",
        "PORT",
    } <= variables_the_service_reads()


@pytest.mark.parametrize("directory", kustomizations(), ids=lambda p: p.name)
def test_every_variable_the_manifests_set_is_a_setting(directory: Path) -> None:
    objects = render(directory)
    read = variables_the_service_reads()
    unread = set()
    for obj in objects:
        if obj["kind"] not in WORKLOADS:
            continue
        for container in containers(obj):
            env = container_env(container, objects)
            # A variable set only to be expanded into another (the pod's IP
            # into ALLOWED_HOSTS) is not a setting.
            references = {
                name
                for variable in container.get("env", [])
                for name in re.findall(r"\$\((\w+)\)", variable.get("value", ""))
            }
            unread |= {name for name in env if name not in read and name not in references}
    assert not unread, f"set by the manifests, read by nothing in the service: {sorted(unread)}"
