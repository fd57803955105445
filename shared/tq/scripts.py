"""The Lua scripts, loaded once per client. Each touches the keys of one queue only (one slot)."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import Any

SCRIPT_NAMES = ("enqueue", "settle", "promote", "replay", "remove", "inspect", "cancel", "progress")


@cache
def source(name: str) -> str:
    return (files("tq") / "scripts" / f"{name}.lua").read_text()


def called_commands(name: str) -> set[str]:
    """The Redis commands the script ``name`` calls itself (lower case, as INFO commandstats names
    them): what a count of the commands clients sent leaves out."""
    return {c.lower() for c in re.findall(r"redis\.p?call\(\s*'(\w+)'", source(name))}


class Scripts:
    """Registered scripts for one client: ``await scripts.settle(keys=[...], args=[...])``.

    redis-py's Script object runs EVALSHA and falls back to loading the script on NOSCRIPT.
    """

    def __init__(self, client: Any) -> None:
        self.enqueue = client.register_script(source("enqueue"))
        self.settle = client.register_script(source("settle"))
        self.promote = client.register_script(source("promote"))
        self.replay = client.register_script(source("replay"))
        self.remove = client.register_script(source("remove"))
        self.inspect = client.register_script(source("inspect"))
        self.cancel = client.register_script(source("cancel"))
        self.progress = client.register_script(source("progress"))
        self.durations = client.register_script(source("durations"))
