"""Plain text from an article body: HTML tags dropped (script and style with their content),
entities decoded, the commonest Markdown marks removed, whitespace collapsed."""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser

_SKIPPED = {"script", "style", "template", "noscript"}
_MD_IMAGE_OR_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_MARKS = re.compile(r"(^|\s)#{1,6}\s|[*_`~]{1,3}|^\s*>\s?|^\s*[-+]\s", re.MULTILINE)
_SPACE = re.compile(r"\s+")


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self.skipping += 1
        self.parts.append(" ")  # <p>a</p><p>b</p> is two words, not "ab"

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED and self.skipping:
            self.skipping -= 1
        self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def plain_text(markup: str) -> str:
    parser = _Text()
    parser.feed(markup)
    parser.close()
    text = unescape("".join(parser.parts))
    text = _MD_IMAGE_OR_LINK.sub(r"\1", text)
    text = _MD_MARKS.sub(" ", text)
    return _SPACE.sub(" ", text).strip()
