"""Settings by owner: every owner's settings class is documented in README.md's generated tables
(tq_cli.settings_doc), each variable has one owner, and the owners read the same ``TQ_*`` variables
as always."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import tq_operator
import tq_services
from support.settings import SETTINGS_ACCESSORS, clear_settings_caches
from tq.settings import Settings, TqSettings
from tq_cli import settings_doc


def _settings_modules() -> list[str]:
    """Every ``settings`` module of the engine, the families, the admin service and the operator."""
    names = ["tq.settings"]
    for package in (tq_services, tq_operator):
        root = Path(package.__file__).resolve().parent
        for path in sorted(root.rglob("settings.py")):
            parts = path.relative_to(root.parent).with_suffix("").parts
            names.append(".".join(parts))
    return names


def _all_settings_classes() -> set[type[TqSettings]]:
    for name in _settings_modules():
        importlib.import_module(name)
    found: set[type[TqSettings]] = set()
    todo = list(TqSettings.__subclasses__())
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += cls.__subclasses__()
    return found


def test_the_readme_tables_are_current(tmp_path: Path) -> None:
    stale_message = "README.md's settings tables are stale: run `make settings-doc`"
    assert settings_doc.main(["--check"]) == 0, stale_message
    # The check does fail on a stale table, and the generator repairs it.
    readme = (settings_doc.REPO_ROOT / settings_doc.README).read_text()
    stale = tmp_path / settings_doc.README
    stale.write_text(readme.replace("| `TQ_SMTP_PORT` | `25` |", "| `TQ_SMTP_PORT` | `587` |", 1))
    assert stale.read_text() != readme
    assert settings_doc.main(["--check", "--root", str(tmp_path)]) == 1
    assert settings_doc.main(["--root", str(tmp_path)]) == 0
    assert settings_doc.main(["--check", "--root", str(tmp_path)]) == 0
    assert stale.read_text() == readme


def test_every_settings_class_is_documented_and_cleared_by_the_tests() -> None:
    classes = _all_settings_classes()
    assert {cls for _, cls in settings_doc.OWNERS} == classes
    assert set(SETTINGS_ACCESSORS) == {cls.__module__ for cls in classes}
    for module_name, accessor in SETTINGS_ACCESSORS.items():
        get = getattr(importlib.import_module(module_name), accessor)
        assert type(get()).__module__ == module_name
        assert get() is get()  # cached, so clear_settings_caches has something to clear
    clear_settings_caches()


def test_every_variable_has_one_owner_and_a_description() -> None:
    owner: dict[str, str] = {}
    for _, cls in settings_doc.OWNERS:
        assert cls.model_config["env_prefix"] == "TQ_" and cls.model_config["extra"] == "ignore"
        for name, info in cls.model_fields.items():
            variable = settings_doc.env_name(cls, name)
            assert variable not in owner, f"{variable}: both {owner[variable]} and {cls.__name__}"
            owner[variable] = cls.__name__
            assert info.description, f"{cls.__name__}.{name} has no description (the README shows it)"


def test_each_owner_reads_its_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from tq_operator.settings import get_operator_settings
    from tq_services.admin.settings import get_admin_settings
    from tq_services.ai.settings import LlmPrice, get_ai_settings
    from tq_services.messaging.settings import get_messaging_settings

    env = {
        "TQ_REDIS_URL": "redis://redis.example:6379/3",
        "TQ_QUEUES__ai:content__concurrency": "4",
        "TQ_SMTP_HOST": "smtp.example",
        "TQ_SMTP_PORT": "2525",
        "TQ_LLM_PRICES": json.dumps({"m": {"input": 1.5, "output": 6}}),
        "TQ_ADMIN_JWT_KEY": "k" * 32,
        "TQ_OPERATOR_KEDA": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    clear_settings_caches()
    try:
        settings = Settings()
        assert settings.redis_url == env["TQ_REDIS_URL"]
        assert settings.queues["ai:content"].concurrency == 4
        assert not hasattr(settings, "smtp_host")  # the engine knows no family's settings
        messaging = get_messaging_settings()
        assert (messaging.smtp_host, messaging.smtp_port) == ("smtp.example", 2525)
        assert get_ai_settings().llm_prices == {"m": LlmPrice(input=1.5, output=6.0)}
        key = get_admin_settings().admin_jwt_key
        assert key is not None and key.get_secret_value() == "k" * 32
        assert get_operator_settings().operator_keda is True
        with pytest.raises(ValueError, match="smtp_port"):
            type(messaging)(smtp_port=0)  # same bounds as before
    finally:
        monkeypatch.undo()
        clear_settings_caches()
