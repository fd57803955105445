"""The README's install section, as a platform team follows it, checked against the chart.

Every ``helm install`` / ``helm upgrade`` line of the section (read from the markdown, so a
changed command is checked as changed) renders with the Helm SDK exactly as written (release,
namespace, values files, ``--set``); the Secrets its ``kubectl create secret`` lines make in a
namespace are exactly the ones that release reads (names and keys: none missing, none unused);
``helm test``, ``kubectl exec deploy/...`` and ``helm uninstall`` name a release and a Deployment
that the section installs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.chart import Doc, deep_merge, render_docs

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) is not installed")

REPO = Path(__file__).resolve().parents[2]
SECTION = "### Install, two environments, upgrade, uninstall"
FENCE = re.compile(r"^\s*```(?:sh|bash|shell)?\n(.*?)^\s*```", re.S | re.M)


def section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION)
    return text[start : text.index("\n## ", start)]


def commands() -> list[list[str]]:
    """argv of every command in the section's shell blocks (continuations joined, comments dropped)."""
    out: list[list[str]] = []
    for block in FENCE.findall(section()):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                out.append(argv)
    return out


def option(argv: list[str], *names: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in names]


def set_value(values: dict[str, Any], dotted: str) -> None:
    path, _, value = dotted.partition("=")
    *parents, leaf = path.split(".")
    for key in parents:
        values = values.setdefault(key, {})
    values[leaf] = value


def render(argv: list[str]) -> tuple[str, str, list[Doc]]:
    """(release, namespace, objects) of a `helm install|upgrade RELEASE CHART ...` as written."""
    release, chart = argv[2], argv[3]
    (namespace,) = option(argv, "-n", "--namespace")
    values: dict[str, Any] = {}
    for path in option(argv, "-f", "--values"):
        values = deep_merge(values, yaml.safe_load((REPO / path).read_text()) or {})
    for dotted in option(argv, "--set"):
        set_value(values, dotted)
    docs = render_docs(
        values, chart=REPO / chart, release=release, namespace=namespace, is_install=argv[1] == "install"
    )
    return release, namespace, docs


def secrets_read(docs: list[Doc]) -> dict[str, set[str]]:
    """Secret -> keys the release's pods and KEDA read, without the Secrets the chart makes itself
    and without optional keys."""
    made = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    read: dict[str, set[str]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("secretKeyRef")
            if isinstance(ref, dict) and not ref.get("optional"):
                read.setdefault(ref["name"], set()).add(ref["key"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for doc in docs:
        walk(doc)
        if doc["kind"] == "TriggerAuthentication":
            for ref in doc["spec"]["secretTargetRef"]:
                read.setdefault(ref["name"], set()).add(ref["key"])
    return {name: keys for name, keys in read.items() if name not in made}


def optional_keys(docs: list[Doc]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for doc in docs:
        for match in re.finditer(r"'name': '([^']+)', 'key': '([^']+)', 'optional': True", repr(doc)):
            found.add((match[1], match[2]))
    return found


def secrets_created(namespace: str) -> dict[str, set[str]]:
    created: dict[str, set[str]] = {}
    for argv in commands():
        if argv[:4] == ["kubectl", "create", "secret", "generic"] and option(argv, "-n") == [namespace]:
            literals = [
                arg.removeprefix("--from-literal=") for arg in argv if arg.startswith("--from-literal=")
            ]
            keys = {literal.split("=", 1)[0] for literal in literals}
            created.setdefault(argv[4], set()).update(keys)
    return created


def installs() -> list[list[str]]:
    return [argv for argv in commands() if argv[:2] in (["helm", "install"], ["helm", "upgrade"])]


def prose_installs() -> list[list[str]]:
    """`helm install ...` in the text (production: "the same Secrets in namespace prod")."""
    spans = re.findall(r"`(helm (?:install|upgrade) [^`]+)`", section())
    return [shlex.split(" ".join(span.split())) for span in spans]


def test_the_section_installs_dev_and_staging_upgrades_and_uninstalls() -> None:
    verbs = [(argv[0], argv[1]) for argv in commands()]
    assert ("helm", "install") in verbs and ("helm", "upgrade") in verbs and ("helm", "test") in verbs
    namespaces = {option(argv, "-n")[0] for argv in installs()}
    assert {"dev", "staging"} <= namespaces  # two environments in one cluster
    assert "helm uninstall" in section() and "<!-- remove-finalizers -->" in section()


@pytest.mark.parametrize("argv", installs(), ids=lambda argv: " ".join(argv[1:3] + option(argv, "-n")))
def test_every_helm_install_and_upgrade_renders_as_written(argv: list[str]) -> None:
    _release, namespace, docs = render(argv)
    assert any(d["kind"] == "Deployment" for d in docs)
    created = secrets_created(namespace)
    read = secrets_read(docs)
    # every Secret the release reads is made by the section, with every key; and nothing else is made
    assert read == {
        name: keys - {k for n, k in optional_keys(docs) if n == name} for name, keys in created.items()
    }


@pytest.mark.parametrize("argv", prose_installs(), ids=lambda argv: " ".join(argv[1:3] + option(argv, "-n")))
def test_the_installs_in_the_text_render_as_written(argv: list[str]) -> None:
    _release, namespace, docs = render(argv)
    assert namespace == "prod" and any(d["kind"] == "Deployment" for d in docs)
    # "the same Secrets in namespace prod (redis-password only if you turn KEDA on)"
    staging = secrets_created("staging")
    staging["tq-connections"] = staging["tq-connections"] - {"redis-password"}
    assert secrets_read(docs) == {
        name: keys - {k for n, k in optional_keys(docs) if n == name} for name, keys in staging.items()
    }


def test_helm_test_and_kubectl_exec_name_what_was_installed() -> None:
    installed = {}
    for argv in installs():
        release, namespace, docs = render(argv)
        installed[(release, namespace)] = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    for argv in commands():
        if argv[:2] == ["helm", "test"]:
            assert (argv[2], option(argv, "-n")[0]) in installed, argv
        if argv[:2] == ["kubectl", "exec"]:
            (namespace,) = option(argv, "-n")
            target = argv[argv.index(namespace) + 1]
            assert target.startswith("deploy/")
            assert any(
                target.removeprefix("deploy/") in names
                for (_, ns), names in installed.items()
                if ns == namespace
            )


def test_the_check_bites() -> None:
    (staging,) = [argv for argv in installs() if argv[1] == "install" and option(argv, "-n") == ["staging"]]
    _, _, docs = render(staging)
    read = secrets_read(docs)
    assert read["tq-connections"] == {"redis-url", "database-url", "redis-password"}
    assert read["tq-admin"] == {"jwt-key"} and read["tq-s3"] == {"access-key-id", "secret-access-key"}
    assert ("tq-smtp", "username") in optional_keys(docs)
    _, _, dev = render([*staging[:4], "-n", "dev", "-f", "charts/tq/values-dev.yaml"])
    assert secrets_read(dev) == {}  # dev bundles its databases: the chart makes the Secrets
