"""deploy/compose.yaml: the services an operator expects, their order, health checks and secrets.

Read with PyYAML (no Docker engine here); anchors and merge keys are resolved by the loader.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from jivapay.cli import app as cli_app
from jivapay.servers.app_factory import DEFAULT_PORTS, ServerName

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ROLES = [s.value for s in ServerName]
SECRET_WORDS = ("PASSWORD", "SECRET", "KEY", "TOKEN", "AUTH", "DSN")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def test_every_component_is_there(compose: dict[str, Any]) -> None:
    expected = {"postgres", "redis", "minio", "migrate", "worker", "beat", "intake-feed", "flower"}
    expected |= {"prometheus", "grafana", "loki", "promtail", *ROLES}
    assert expected <= set(_services(compose))


@pytest.mark.parametrize("role", ROLES)
def test_api_servers_wait_for_migrations_and_are_healthy_on_ready(
    compose: dict[str, Any], role: str
) -> None:
    service = _services(compose)[role]
    assert service["command"][:3] == ["serve", "--role", role]
    port = DEFAULT_PORTS[ServerName(role)]
    assert str(port) in service["command"]
    probe = " ".join(service["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/ready" in probe
    deps = service["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    for backing in ("postgres", "redis", "minio"):
        assert deps[backing]["condition"] == "service_healthy"
    assert service["stop_grace_period"], "graceful shutdown window for draining"


def test_backing_services_have_health_checks(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name in ("postgres", "redis", "minio", "prometheus", "grafana", "loki", "flower"):
        assert services[name]["healthcheck"]["test"], name


def test_migrate_is_one_shot_upgrade_then_seed_then_the_bucket(compose: dict[str, Any]) -> None:
    migrate = _services(compose)["migrate"]
    assert migrate["restart"] == "no"
    command = " ".join(migrate["command"])
    assert command.index("jivapay db upgrade") < command.index("jivapay seed")
    # MinIO starts empty: without the bucket every receipt upload would fail.
    assert command.index("jivapay seed") < command.index("jivapay storage-init")
    assert migrate["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "migrate" not in migrate["depends_on"]


@pytest.mark.parametrize("role", ROLES)
def test_api_servers_keep_metrics_off_their_published_port(
    compose: dict[str, Any], role: str
) -> None:
    # /metrics holds business counters: served on an internal port of the compose network,
    # which no service publishes, and answering 404 on the public one.
    service = _services(compose)[role]
    metrics_port = service["environment"]["METRICS_PORT"]
    published = [str(p).rsplit(":", 1)[-1] for p in service.get("ports", [])]
    assert metrics_port not in published and str(DEFAULT_PORTS[ServerName(role)]) in published
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [api] = [job for job in prometheus["scrape_configs"] if job["job_name"] == "api"]
    scraped = {(name, str(sd["port"])) for sd in api["dns_sd_configs"] for name in sd["names"]}
    assert (role, metrics_port) in scraped


def test_exactly_one_beat_and_workers_expose_metrics(compose: dict[str, Any]) -> None:
    services = _services(compose)
    beats = [name for name, s in services.items() if s.get("command", [None])[0] == "beat"]
    assert beats == ["beat"]
    assert services["beat"]["deploy"]["replicas"] == 1
    worker = services["worker"]["command"]
    assert worker[0] == "worker"
    assert worker[worker.index("--metrics-port") + 1] == "9100"
    # The worker binds loopback by default: in its container it must listen on the network.
    assert worker[worker.index("--metrics-addr") + 1] == "0.0.0.0"
    # Warm shutdown needs time to finish the tasks in flight.
    assert services["worker"]["stop_grace_period"] == "120s"


def test_exactly_one_intake_feed(compose: dict[str, Any]) -> None:
    services = _services(compose)
    feeds = [n for n, s in services.items() if s.get("command", [None])[0] == "intake-feed"]
    assert feeds == ["intake-feed"]
    feed = services["intake-feed"]
    assert feed["command"] == ["intake-feed"]
    # A second feed would send every order twice: never scaled.
    assert feed["deploy"]["replicas"] == 1
    deps = feed["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    for backing in ("postgres", "redis"):
        assert deps[backing]["condition"] == "service_healthy"


def test_flower_requires_basic_auth(compose: dict[str, Any]) -> None:
    env = _services(compose)["flower"]["environment"]
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]*\}", env["FLOWER_BASIC_AUTH"])


def test_monitoring_is_provisioned_from_this_directory(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for service in ("prometheus", "grafana", "promtail"):
        for volume in services[service]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{service} mounts missing {source}"


def _walk_env(compose: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(service, variable, value) of every environment entry, plus command strings."""
    found = []
    for name, service in _services(compose).items():
        env = service.get("environment") or {}
        items = env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)
        for key, value in items:
            found.append((name, str(key), str(value)))
        for part in service.get("command") or []:
            found.append((name, "command", str(part)))
    return found


def test_no_secret_has_a_default_value(compose: dict[str, Any]) -> None:
    raw = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    # Every ${VAR...} that names a secret must be required (`:?`), never defaulted (`:-` / `-`).
    for match in re.finditer(r"\$\{([A-Z0-9_]+)([^}]*)\}", raw):
        name, modifier = match.groups()
        if any(word in name for word in SECRET_WORDS) and name != "SENTRY_DSN":
            assert modifier.startswith(":?"), f"${{{name}}} must be required, not {modifier!r}"
    # And no literal secret value is written anywhere in the environment.
    for service, key, value in _walk_env(compose):
        if value in ("true", "false") or key == "SENTRY_DSN":
            continue
        if any(word in key for word in SECRET_WORDS):
            assert "${" in value, f"{service}.{key} is a literal value"


def test_only_public_apis_are_published_on_every_interface(compose: dict[str, Any]) -> None:
    services = _services(compose)
    internal = ("admin", "support", "flower", "prometheus", "grafana")
    for name in internal:
        for port in services[name].get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
    for name in ("postgres", "redis", "minio", "loki"):
        assert "ports" not in services[name], f"{name} must not be published"


def _dockerfile_instruction(name: str) -> list[str]:
    """The exec (JSON) form of the runtime stage's last ENTRYPOINT or CMD."""
    found = re.findall(rf"^{name}\s+(\[.*\])\s*$", (ROOT / "Dockerfile").read_text(), re.M)
    assert found, f"the Dockerfile has no exec-form {name}"
    return list(json.loads(found[-1]))


def _jivapay_command_errors(argv: list[str]) -> str | None:
    """Why `jivapay <argv>` would not run (no such command, an unknown option), else None."""
    # Typer 0.29 builds on its own copy of click: the group and its errors are duck-typed.
    command: Any = typer.main.get_command(cli_app)
    args = list(argv)
    names = ["jivapay"]
    while hasattr(command, "list_commands"):
        if not args:
            return f"{' '.join(names)}: no subcommand"
        name = args.pop(0)
        sub = command.get_command(command.context_class(command), name)
        if sub is None:
            return f"{' '.join(names)}: no such command {name!r}"
        names.append(name)
        command = sub
    try:
        command.make_context(" ".join(names), args)
    except typer.Exit:
        return None  # --help
    except Exception as exc:
        if not hasattr(exc, "format_message"):
            raise
        return f"{' '.join(names)}: {exc.format_message()}"
    return None


def _effective_argv(service: dict[str, Any]) -> list[str]:
    # Compose: `entrypoint:` replaces the image's ENTRYPOINT (and then drops its CMD), `command:`
    # replaces only CMD, so a command given to an image whose entry point is `jivapay` is the
    # arguments of `jivapay`.
    entrypoint = service.get("entrypoint")
    command = service.get("command")
    if isinstance(entrypoint, str):
        entrypoint = shlex.split(entrypoint)
    if isinstance(command, str):
        command = shlex.split(command)
    if entrypoint is None:
        entrypoint = _dockerfile_instruction("ENTRYPOINT")
        command = _dockerfile_instruction("CMD") if command is None else command
    return [*entrypoint, *(command or [])]


def _argv_errors(argv: list[str]) -> list[str]:
    if argv[:1] == ["jivapay"]:
        error = _jivapay_command_errors(argv[1:])
        return [error] if error else []
    if argv[:2] in (["sh", "-c"], ["/bin/sh", "-c"]) and len(argv) == 3:
        errors = []
        for step in re.split(r"&&|\|\||;", argv[2]):
            words = shlex.split(step)
            if words[:1] != ["jivapay"]:
                errors.append(f"shell step {step.strip()!r} is not a jivapay command")
            else:
                errors.extend(_argv_errors(words))
        return errors
    return [f"runs {argv!r}: neither `jivapay SUBCOMMAND` nor `sh -c` of jivapay commands"]


def test_every_app_service_runs_an_existing_jivapay_command(compose: dict[str, Any]) -> None:
    # The image's ENTRYPOINT is `jivapay`: a `command:` of `sh -c ...` would run
    # `jivapay sh -c ...` ("No such command 'sh'") and every app waiting on it would never start.
    app_services = {
        name: service
        for name, service in _services(compose).items()
        if "build" in service or "JIVAPAY_IMAGE" in str(service.get("image", ""))
    }
    assert {"migrate", "worker", "beat", "intake-feed", *ROLES} <= set(app_services)
    errors = []
    for name, service in app_services.items():
        errors += [f"{name}: {e}" for e in _argv_errors(_effective_argv(service))]
        probe = (service.get("healthcheck") or {}).get("test") or []
        if probe[:2] == ["CMD", "jivapay"]:
            errors += [f"{name} healthcheck: {e}" for e in _argv_errors(probe[1:])]
    assert not errors, "\n".join(errors)


def test_the_command_check_sees_a_wrong_command() -> None:
    entry = _dockerfile_instruction("ENTRYPOINT")
    assert entry == ["jivapay"]
    shell_as_command = {"command": ["sh", "-c", "jivapay db upgrade && jivapay seed"]}
    assert _argv_errors(_effective_argv(shell_as_command))
    assert _argv_errors(["sh", "-c", "jivapay db upgrade && jivapay sead"])
    assert _argv_errors(["sh", "-c", "jivapay db upgrade && alembic upgrade head"])
    assert _argv_errors(["jivapay", "worker", "--no-such-option", "1"])
    assert _argv_errors(["jivapay", "db"])
    assert not _argv_errors(_effective_argv({"command": ["db", "upgrade"]}))
    assert not _argv_errors(_effective_argv({}))  # the image's CMD: the gateway
