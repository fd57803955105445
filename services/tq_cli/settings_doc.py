"""The README's configuration tables, generated from the settings classes: one table per owner
(the engine, the operator, each family, the admin service) with every variable, its default and
its description, between two markers in README.md.

    python -m tq_cli.settings_doc           # rewrite README.md's tables (`make settings-doc`)
    python -m tq_cli.settings_doc --check   # exit 1 when they differ from the classes

The composition root is the one place that knows every owner, so the list lives here.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic.fields import FieldInfo
from tq import generated
from tq.settings import Settings, TqSettings
from tq_operator.settings import OperatorSettings
from tq_services.admin.settings import AdminSettings
from tq_services.ai.settings import AiSettings
from tq_services.analytics.settings import AnalyticsSettings
from tq_services.media.settings import MediaSettings
from tq_services.messaging.settings import MessagingSettings
from tq_services.plugins.settings import PluginSettings
from tq_services.search.settings import SearchSettings
from tq_services.webhooks.settings import WebhookSettings
from tq_services.workflows.settings import WorkflowSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
README = Path("README.md")
MAKE_TARGET = "settings-doc"
BEGIN = (
    f"<!-- settings tables: generated from the settings classes by `make {MAKE_TARGET}` "
    "(tq_cli.settings_doc); edit the classes, not these lines -->"
)
END = "<!-- end of the generated settings tables -->"

# (heading, class) in the README's order; tests/cli/test_settings_doc.py checks that every
# TqSettings subclass of the code base is here.
OWNERS: tuple[tuple[str, type[TqSettings]], ...] = (
    ("The engine", Settings),
    ("The operator", OperatorSettings),
    ("Messaging", MessagingSettings),
    ("Webhooks", WebhookSettings),
    ("AI", AiSettings),
    ("Analytics", AnalyticsSettings),
    ("The admin service", AdminSettings),
    ("Workflows", WorkflowSettings),
    ("Plugins", PluginSettings),
    ("Media", MediaSettings),
    ("Search", SearchSettings),
)


def env_name(cls: type[TqSettings], field: str) -> str:
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def default_text(info: FieldInfo) -> str:
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if value == "":
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict | list):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(heading: str, cls: type[TqSettings]) -> str:
    where = f"{cls.__module__}.{cls.__qualname__}"
    rows = [
        f"| `{env_name(cls, name)}` | {_cell(default_text(info))} | {_cell(info.description or '')} |"
        for name, info in cls.model_fields.items()
    ]
    return "\n".join(
        [f"### {heading} (`{where}`)", "", "| variable | default | meaning |", "| --- | --- | --- |", *rows]
    )


def tables() -> str:
    return "\n\n".join(table(heading, cls) for heading, cls in OWNERS)


def with_tables(readme: str) -> str:
    """``readme`` with the text between the markers replaced by the generated tables."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{README} lacks the markers of the generated settings tables: {BEGIN!r}, {END!r}")
    return f"{readme[: start + len(BEGIN)]}\n\n{tables()}\n\n{readme[end:]}"


def generated_files(root: Path) -> dict[Path, str]:
    return {README: with_tables((root / README).read_text())}


def main(argv: list[str] | None = None) -> int:
    return generated.main(
        "python -m tq_cli.settings_doc",
        __doc__.split("\n")[0],
        REPO_ROOT,
        MAKE_TARGET,
        lambda args: generated_files(args.root),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
