"""A local SMTP server that keeps the recipients of what it accepts, for the tests that run the
messaging family's real delivery (``tq serve messaging``) against it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiosmtpd.controller import Controller

from support.redis_server import free_port


class Mailbox:
    def __init__(self) -> None:
        self.recipients: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.recipients += envelope.rcpt_tos
        return "250 2.0.0 queued"


@contextmanager
def serving_smtp(handler: Any) -> Iterator[int]:
    """An SMTP server (aiosmtpd) on a free port of 127.0.0.1 with ``handler``: its port."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@contextmanager
def running_mailbox() -> Iterator[tuple[Mailbox, int]]:
    """A mailbox served on a free port of 127.0.0.1: (the mailbox, the port)."""
    box = Mailbox()
    with serving_smtp(box) as port:
        yield box, port
