"""Running the ``tq`` command line in-process (typer's ``CliRunner``) for the CLI tests."""

from __future__ import annotations

import json
from typing import Any

from tq_cli.main import app
from typer.testing import CliRunner, Result

runner = CliRunner()


def tq(*args: str) -> Result:
    return runner.invoke(app, list(args))


def ok(*args: str) -> str:
    """The command's stdout; it must exit 0."""
    result = tq(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def ok_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json"))


def refused(*args: str) -> str:
    """Exit status 2 with the reason; the output with Rich's line wrapping undone."""
    result = tq(*args)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return " ".join(result.output.split())
