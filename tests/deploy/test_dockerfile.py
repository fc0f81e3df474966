"""The Dockerfile's structure: stages, non-root user, entry points, and that every COPY source exists.

There is no Docker engine on development machines, so the file is read, not built.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path

import pytest

from jivapay.cli import app as cli_app

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for word, rest in _instructions():
        if word == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest, flags=re.IGNORECASE)
            assert match, f"every stage is named: FROM {rest}"
            current = stages.setdefault(match.group(2), [])
        elif current is not None:
            current.append((word, rest))
    return stages


def test_multi_stage_build_with_slim_runtime() -> None:
    stages = _stages()
    assert list(stages) == ["build", "runtime"]
    runtime = stages["runtime"]
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime
    # No compiler or package manager run in the final stage: only the user is created there.
    runs = [rest for word, rest in runtime if word == "RUN"]
    assert all("pip install" not in run and "apt-get" not in run for run in runs)


def test_runtime_runs_as_a_non_root_user() -> None:
    runtime = _stages()["runtime"]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid not in ("0", "root")
    assert uid.isdigit(), "numeric uid so Kubernetes' runAsNonRoot can verify it"
    # The last USER comes after every RUN: nothing after it runs as root.
    last_user = max(i for i, (word, _) in enumerate(runtime) if word == "USER")
    assert all(word != "RUN" for word, _ in runtime[last_user:])


def test_entrypoint_is_the_cli_and_every_role_command_exists() -> None:
    runtime = _stages()["runtime"]
    entry = json.loads(next(rest for word, rest in runtime if word == "ENTRYPOINT"))
    cmd = json.loads(next(rest for word, rest in runtime if word == "CMD"))
    assert entry == ["jivapay"]
    assert cmd[:2] == ["serve", "--role"]
    commands = {
        c.name or (c.callback.__name__ if c.callback else "") for c in cli_app.registered_commands
    }
    groups = {g.name for g in cli_app.registered_groups}
    assert {"serve", "worker", "beat", "intake-feed"} <= commands
    assert "db" in groups
    # The header documents the entry points an orchestrator uses.
    header = DOCKERFILE.read_text(encoding="utf-8").split("\n\n", 1)[0]
    usages = ("jivapay serve --role", "jivapay worker", "jivapay beat", "jivapay intake-feed")
    for usage in (*usages, "jivapay db upgrade"):
        assert usage in header


def test_production_environment_and_graceful_stop() -> None:
    runtime = dict(_stages()["runtime"])
    env = shlex.split(runtime["ENV"])
    assert "ENVIRONMENT=production" in env
    assert any(item.startswith("PROMETHEUS_MULTIPROC_DIR=") for item in env)
    assert runtime["STOPSIGNAL"] == "SIGTERM"


def _dockerignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(fnmatch.fnmatch(path, p) or path.split("/")[0] == p.rstrip("/") for p in patterns)


@pytest.mark.parametrize("stage", ["build", "runtime"])
def test_every_copied_file_exists_and_is_not_dockerignored(stage: str) -> None:
    for word, rest in _stages()[stage]:
        if word != "COPY" or rest.startswith("--from="):
            continue
        *sources, _dest = shlex.split(rest)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert not _dockerignored(source), f"COPY {source} is excluded by .dockerignore"


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    for path in (".env", ".git", ".venv", ".jivapay", "tests"):
        assert _dockerignored(path), path
    assert not _dockerignored("jivapay")
    assert not _dockerignored("pyproject.toml")
