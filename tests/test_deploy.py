"""deploy/ cannot run here (no container daemon), so it is checked statically: every file parses,
every Journeys container runs a `journeys` command that exists, every environment variable it is
given is one the project or the Temporal SDK reads, probes hit routes the API has, ports agree,
the image copies every package, and the worker's grace period outlasts its drain."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from core.access import Role, parse_api_keys
from core.config import Settings
from core.temporal import SDK_ENVIRONMENT
from journeys.cli import app as cli
from triggers.api import create_app

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KNOWN = set(Settings.environment_names()) | set(SDK_ENVIRONMENT)
COMMANDS = set(get_command(cli).commands)


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def kubernetes() -> list[dict]:
    return [doc for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")) for doc in documents(path)]


def containers() -> list[dict]:
    found = []
    for doc in kubernetes():
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        found += pod.get("containers", [])
    return found


def test_every_file_parses_and_the_kustomization_lists_them():
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert documents(DEPLOY / "kubernetes" / resource), resource
    assert documents(DEPLOY / "compose.yaml")


def test_journeys_containers_run_journeys_commands_that_exist():
    compose = documents(DEPLOY / "compose.yaml")[0]
    commands = [c["command"] for c in containers()]
    commands += [s["command"] for s in compose["services"].values() if "build" in s]
    assert commands, "no journeys containers found"
    for command in commands:
        assert command[0] == "journeys" and command[1] in COMMANDS, command
    cmd = re.search(r'^CMD \["journeys", "(\w+)"\]', (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    assert cmd and cmd.group(1) in COMMANDS
    assert {"worker", "api", "migrate"} <= {command[1] for command in commands}


def test_every_environment_variable_is_one_the_project_reads():
    names: dict[str, str] = {}
    for doc in kubernetes():
        if doc["kind"] == "ConfigMap":
            names.update(dict.fromkeys(doc["data"], "ConfigMap"))
        if doc["kind"] == "Secret":
            names.update(dict.fromkeys(doc["stringData"], "Secret"))
    for container in containers():
        names.update(dict.fromkeys((e["name"] for e in container.get("env", [])), container["name"]))
    compose = documents(DEPLOY / "compose.yaml")[0]
    for service, spec in compose["services"].items():
        if "build" in spec:
            names.update(dict.fromkeys(spec["environment"], service))
    names.update(dict.fromkeys(re.findall(r"\b(JOURNEYS_\w+)=", (DEPLOY / "Dockerfile").read_text()), "Dockerfile"))
    unknown = {name: where for name, where in names.items() if name not in KNOWN}
    assert not unknown, f"read by nothing in the project: {unknown}"
    assert {"DATABASE_URL", "TEMPORAL_ADDRESS", "JOURNEYS_API_KEYS"} <= set(names)


def test_probes_and_ports_match_the_api():
    routes = set(create_app(store=None).openapi()["paths"])  # type: ignore[arg-type]
    [api] = [c for c in containers() if c["command"][1] == "api"]
    env = {e["name"]: e["value"] for e in api["env"]}
    port = int(env.get("JOURNEYS_API_PORT", Settings.default("api_port")))
    assert env["JOURNEYS_API_HOST"] == "0.0.0.0"
    assert [p["containerPort"] for p in api["ports"]] == [port]
    for probe in ("livenessProbe", "readinessProbe"):
        assert api[probe]["httpGet"]["path"] in routes
    assert (api["livenessProbe"]["httpGet"]["path"], api["readinessProbe"]["httpGet"]["path"]) == (
        "/healthz",
        "/readyz",
    )
    [service] = [d for d in kubernetes() if d["kind"] == "Service"]
    assert service["spec"]["ports"][0]["targetPort"] == api["ports"][0]["name"]
    compose = documents(DEPLOY / "compose.yaml")[0]["services"]["api"]
    assert compose["ports"] == [f"{port}:{port}"] and compose["environment"]["JOURNEYS_API_PORT"] == str(port)


def test_workers_get_longer_to_stop_than_they_take_to_drain():
    drain = Settings.default("worker_shutdown_seconds")
    [worker] = [d for d in kubernetes() if d["kind"] == "Deployment" and "worker" in d["metadata"]["name"]]
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain
    compose = documents(DEPLOY / "compose.yaml")[0]["services"]["worker"]
    assert int(compose["stop_grace_period"].rstrip("s")) > drain


@pytest.mark.parametrize(
    "package",
    [
        "core",
        "definitions",
        "store",
        "rules",
        "instances",
        "workflows",
        "activities",
        "channels",
        "views",
        "triggers",
        "journeys",
    ],
)
def test_the_image_copies_every_package(package):
    assert re.search(rf"^COPY {package} {package}$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    assert (DEPLOY.parent / package / "__init__.py").exists()


def test_the_example_api_keys_parse_with_a_role_each():
    """The key lists an operator copies from the example Secret and the compose file are ones the
    API starts with, each key with a role (core.access)."""
    [secret] = [doc for doc in kubernetes() if doc["kind"] == "Secret"]
    keys = parse_api_keys(secret["stringData"]["JOURNEYS_API_KEYS"].split(","))
    assert {key.role for key in keys} == set(Role)
    compose = documents(DEPLOY / "compose.yaml")[0]["services"]["api"]["environment"]["JOURNEYS_API_KEYS"]
    default = re.fullmatch(r"\$\{JOURNEYS_API_KEYS:-(.+)\}", compose)
    assert default and [key.role for key in parse_api_keys(default.group(1).split(","))] == [Role.ADMIN]
