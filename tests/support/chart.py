"""The Helm chart rendered in the test process (helm-python-sdk, a dev extra), as `helm template`
prints it: the chart tests' one way of loading it, parsing its manifests and merging values."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "tq"
ENVS = ("default", "dev", "staging", "prod")  # values.yaml alone, and each values-<env>.yaml over it
RELEASE, NAMESPACE = "tq", "tq"

Doc = dict[str, Any]


def env_values(env: str) -> dict[str, Any]:
    """The values of ``values-<env>.yaml`` (none for ``default``)."""
    if env == "default":
        return {}
    loaded: dict[str, Any] = yaml.safe_load((CHART / f"values-{env}.yaml").read_text()) or {}
    return loaded


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base`` as Helm merges values files (maps by key)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render_docs(
    values: dict[str, Any],
    *,
    chart: Path = CHART,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    is_install: bool = True,
) -> list[Doc]:
    """The chart's objects for ``values``, in the order of their template files (NOTES.txt left out)."""
    import helm_python as helm  # the callers skip without it (pytest.importorskip)

    with helm.Chart.load(chart) as loaded:
        manifests = loaded.render(values, name=release, namespace=namespace, is_install=is_install)
    return [
        d
        for path, text in sorted(manifests.items())
        if not path.endswith("NOTES.txt")
        for d in yaml.safe_load_all(text)
        if d
    ]
