"""Kubernetes-shaped status helpers the handlers share: conditions (metav1.Condition), the status
one handler run writes (``StatusUpdate``) and error messages for a refused spec."""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from typing import Any

import kopf
from pydantic import ValidationError


def rfc3339(epoch: float) -> str:
    """A time as Kubernetes writes it (RFC 3339, seconds, UTC)."""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> str:
    return rfc3339(time.time())


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """``conditions`` with ``type_`` set; lastTransitionTime moves only when the status changes."""
    old = next((c for c in conditions if c.get("type") == type_), None)
    new: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": (
            old["lastTransitionTime"]
            if old is not None and old.get("status") == status and old.get("lastTransitionTime")
            else now()
        ),
    }
    if generation is not None:
        new["observedGeneration"] = generation
    if old is None:
        return [*conditions, new]
    return [new if c is old else c for c in conditions]


def same_conditions(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def key(c: Mapping[str, Any]) -> tuple[Any, ...]:
        return (
            c.get("type"),
            c.get("status"),
            c.get("reason"),
            c.get("message"),
            c.get("observedGeneration"),
        )

    return sorted(map(key, a), key=str) == sorted(map(key, b), key=str)


def condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any]:
    return next((c for c in conditions if c.get("type") == type_), {})


def error_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
    return str(exc)


class StatusUpdate:
    """The status one handler run builds: conditions set one by one, other status fields in
    ``fields``; ``flush`` patches only what differs from the status kopf passed in. A ``fields``
    key starting with ``_`` is the handler's own: ``_remove`` lists annotations to remove."""

    def __init__(self, status: Mapping[str, Any], patch: kopf.Patch, generation: int) -> None:
        self.status = status
        self.patch = patch
        self.generation = generation
        self.conditions: list[dict[str, Any]] = [dict(c) for c in status.get("conditions") or []]
        self._old_conditions = [dict(c) for c in self.conditions]
        self.fields: dict[str, Any] = {}

    def condition(self, type_: str) -> dict[str, Any]:
        return condition(self.conditions, type_)

    def set(self, type_: str, value: str, reason: str, message: str) -> None:
        self.conditions = set_condition(self.conditions, type_, value, reason, message, self.generation)

    def flush(self) -> None:
        if self.status.get("observedGeneration") != self.generation:
            self.patch.status["observedGeneration"] = self.generation
        if not same_conditions(self.conditions, self._old_conditions):
            self.patch.status["conditions"] = self.conditions
        for k, v in self.fields.items():
            if not k.startswith("_") and self.status.get(k) != v:
                self.patch.status[k] = v
        for annotation in self.fields.get("_remove", []):
            self.patch.metadata.setdefault("annotations", {})[annotation] = None

    def refuse(self, body: kopf.Body, logger: Any, reason: str, message: str, log: str | None = None) -> None:
        """Ready=False for a spec that cannot succeed; the Warning Event and the log line only when
        the reason or message is new, so the refresh timer does not repeat them."""
        ready = self.condition("Ready")
        if (ready.get("reason"), ready.get("message")) != (reason, message):
            logger.warning(log or f"{reason}: {message}")
            kopf.event(body, type="Warning", reason=reason, message=message)
        self.set("Ready", "False", reason, message)
        self.flush()

    def redis_unavailable(self, exc: Exception, retry_s: float) -> kopf.TemporaryError:
        """Ready=False written; the error to raise so kopf retries after ``retry_s``."""
        self.set("Ready", "False", "RedisUnavailable", f"cannot reach Redis: {exc}")
        self.flush()
        return kopf.TemporaryError(f"Redis unreachable: {exc}", delay=retry_s)
