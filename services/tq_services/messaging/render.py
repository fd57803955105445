"""Per-locale Jinja2 templates: ``templates/<locale>/<name>.subject.txt``, ``<name>.txt``,
``<name>.html`` (and ``<name>.sms.txt`` for text messages).

HTML parts are autoescaped; subject and text parts are plain text. Variables are strict: a
missing one is a ``TemplateProblem`` naming it. A locale falls back to its language
(``pt-BR`` -> ``pt``) and then to ``en``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from tq_services.messaging.errors import TemplateProblem

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
DEFAULT_LOCALE = "en"


@dataclass(frozen=True, slots=True)
class Rendered:
    locale: str  # the locale whose templates were used
    subject: str
    text: str
    html: str


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
    )


def _candidates(locale: str) -> list[str]:
    out = [locale]
    if "-" in locale:
        out.append(locale.split("-", 1)[0])
    if DEFAULT_LOCALE not in out:
        out.append(DEFAULT_LOCALE)
    return out


def _resolve(name: str, locale: str, part: str) -> tuple[str, jinja2.Template]:
    if "/" in name or "\\" in name or name.startswith("."):
        raise TemplateProblem(f"unknown template {name!r}")
    env = environment()
    for candidate in _candidates(locale):
        try:
            return candidate, env.get_template(f"{candidate}/{name}.{part}")
        except jinja2.TemplateNotFound:
            continue
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateProblem(f"template {name!r} ({candidate}) is broken: {exc}") from None
    raise TemplateProblem(f"unknown template {name!r} (locale {locale!r}, part {part})")


def _render(name: str, locale: str, part: str, variables: dict[str, Any]) -> tuple[str, str]:
    used, template = _resolve(name, locale, part)
    try:
        return used, template.render(variables)
    except jinja2.UndefinedError as exc:
        raise TemplateProblem(f"missing variable in template {name!r} ({used}): {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise TemplateProblem(f"template {name!r} ({used}) failed: {exc}") from None


def render_email(name: str, locale: str, variables: dict[str, Any]) -> Rendered:
    """Subject, text and HTML of template ``name`` in ``locale`` (or its fallback)."""
    used, subject = _render(name, locale, "subject.txt", variables)
    _, text = _render(name, used, "txt", variables)
    _, html = _render(name, used, "html", variables)
    return Rendered(locale=used, subject=" ".join(subject.split()), text=text, html=html)


def render_sms(name: str, locale: str, variables: dict[str, Any]) -> str:
    return _render(name, locale, "sms.txt", variables)[1].strip()
