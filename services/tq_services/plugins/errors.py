"""How plugin failures steer the jobs: a stopped run, a bad module or a refused install dead-letter
at once (running it again changes nothing); a module server that is down retries."""

from __future__ import annotations

from tq.errors import NonRetryableError, TqError


class PluginUnavailable(NonRetryableError):
    """The plugin does not exist or is disabled."""


class InvalidPlugin(NonRetryableError):
    """The module or its install request is refused: too large, sha256 mismatch, not WebAssembly,
    missing exports, unknown imports or permissions, a name already taken."""


class PluginStopped(NonRetryableError):
    """A run was stopped: it trapped, ran out of fuel or time, exceeded its memory, called a host
    capability it was not granted, or returned invalid output. ``status`` names the reason."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class ModuleFetchFailed(TqError):
    """The module could not be fetched for a reason that may pass (timeout, 5xx): retried."""


class PermissionDenied(Exception):
    """Raised inside a host call the plugin's permission set does not grant; it unwinds the guest."""
