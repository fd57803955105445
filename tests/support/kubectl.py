"""A real ``kubectl`` against the emulated API server (the ``cluster`` fixture's KUBECONFIG)."""

from __future__ import annotations

import asyncio
import re
import shutil

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
