"""Files generated from the registry and the models (the CRD, the operator's RBAC, the Grafana
dashboards): one way to write them and to check that the checked-in copies are current."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path


def stale_files(root: Path, files: Mapping[Path, str]) -> list[Path]:
    """The paths (relative to ``root``) whose file is missing or differs from its generated text."""
    return [
        rel for rel, text in files.items() if not (root / rel).is_file() or (root / rel).read_text() != text
    ]


def write_or_check(root: Path, files: Mapping[Path, str], check: bool, make_target: str) -> int:
    """Write what changed (exit status 0), or with ``check`` write nothing and return 1 when a file
    is stale, naming it and the make target that regenerates it."""
    stale = stale_files(root, files)
    if check:
        for rel in stale:
            print(f"stale: {rel} (run `make {make_target}`)", file=sys.stderr)
        return 1 if stale else 0
    for rel in stale:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(files[rel])
        print(f"wrote {rel}")
    return 0


def main(
    prog: str,
    description: str,
    default_root: Path,
    make_target: str,
    files: Callable[[argparse.Namespace], Mapping[Path, str]],
    argv: list[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """The ``python -m <generator> [--check] [--root DIR]`` command every generator offers."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if extra is not None:
        extra(parser)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file is stale")
    parser.add_argument("--root", type=Path, default=default_root, help="repository root (default: this one)")
    args = parser.parse_args(argv)
    return write_or_check(args.root, files(args), args.check, make_target)
