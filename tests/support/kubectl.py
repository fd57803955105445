"""A real ``kubectl`` against the emulated API server (the ``cluster`` fixture's KUBECONFIG)."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl")  # CI: Debian's kubernetes-client; the tests that need it skip without


async def kubectl(*args: str) -> str:
    assert KUBECTL is not None
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, f"kubectl {' '.join(args)} failed ({proc.returncode}): {err.decode()}"
    return out.decode()


def table(text: str) -> list[dict[str, str]]:
    """``kubectl get`` output as rows keyed by the header (columns are separated by 2+ spaces)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(header, re.split(r"\s{2,}", line.strip()), strict=True)) for line in lines[1:]]


def readme_block(marker: str) -> str:
    """The shell block right after ``<!-- marker -->`` in README.md, as written there."""
    text = (REPO_ROOT / "README.md").read_text()
    after = text.split(f"<!-- {marker} -->", 1)[1]
    match = re.search(r"```sh\n(.*?)```", after, re.S)
    assert match is not None
    return match.group(1).strip()


async def shell(command: str, cwd: Path = REPO_ROOT) -> str:
    """Run ``command`` with bash (``-euo pipefail``) as a reader would, from the repository root."""
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        command,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, f"{command} failed ({proc.returncode}): {err.decode()}"
    return out.decode()
