"""The admin API from the caller's side: what ``tq --api URL --token T`` uses to act through a
running admin service instead of on Redis. Answers come back as the tq library's own types
(``JobRecord``, ``DeadLetter``, ``Page``, ``ReplayResult``), so the CLI prints them the same way."""

from __future__ import annotations

from dataclasses import fields
from typing import Any
from urllib.parse import quote

import httpx
from tq.dlq import DeadLetter, ReplayResult
from tq.envelope import JobState
from tq.errors import NotFound, TqError
from tq.jobs import JobRecord
from tq.paging import Page

_JOB_FIELDS = {f.name for f in fields(JobRecord)}
_DEAD_FIELDS = {f.name for f in fields(DeadLetter)}


class ApiCallFailed(TqError):
    """The admin API refused the call (4xx): its message is the API's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"admin API answered {status}: {message}")
        self.status = status


def _job(d: dict[str, Any]) -> JobRecord:
    return JobRecord(**{**{k: v for k, v in d.items() if k in _JOB_FIELDS}, "state": JobState(d["state"])})


def _dead(d: dict[str, Any]) -> DeadLetter:
    # a listed entry comes without its envelope and failure history (only the detail has them)
    return DeadLetter(**{"envelope": "", "history": [], **{k: v for k, v in d.items() if k in _DEAD_FIELDS}})


class AdminClient:
    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.http.request(method, "/api/owner/queues" + path, **kwargs)
        if r.status_code < 400:
            return r.json()
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:500]
        if r.status_code == 404:
            raise NotFound(message)
        if r.status_code >= 500:
            raise httpx.HTTPStatusError(
                f"admin API failed: {r.status_code} {message}", request=r.request, response=r
            )
        raise ApiCallFailed(r.status_code, message)

    @staticmethod
    def _q(queue: str) -> str:
        return quote(queue, safe="")

    def queues(self) -> list[dict[str, Any]]:
        """Rows as ``tq queues`` shows them: family, jobs and the counts."""
        return [{"family": q["family"], "jobs": q["jobs"], **q["counts"]} for q in self._call("GET", "")]

    def list_jobs(
        self, queue: str, state: JobState, *, cursor: str | None, limit: int, search: str | None
    ) -> Page:
        params: dict[str, Any] = {"state": state.value, "limit": limit}
        params.update({k: v for k, v in (("cursor", cursor), ("search", search)) if v is not None})
        page = self._call("GET", f"/{self._q(queue)}/jobs", params=params)
        return Page([_job(j) for j in page["items"]], page["next_cursor"])

    def get_job(self, queue: str, job_id: str) -> JobRecord:
        return _job(self._call("GET", f"/{self._q(queue)}/jobs/{quote(job_id, safe='')}"))

    def cancel_job(self, queue: str, job_id: str) -> dict[str, Any]:
        """``{"outcome": "removed"|"requested", "was": state}`` (``tq.cancel``)."""
        return dict(self._call("POST", f"/{self._q(queue)}/jobs/{quote(job_id, safe='')}/cancel"))

    def set_paused(self, queue: str, paused: bool) -> None:
        self._call("POST", f"/{self._q(queue)}/{'pause' if paused else 'resume'}")

    def list_dead(self, queue: str, **filters: Any) -> Page:
        params = {k: v for k, v in filters.items() if v is not None}
        page = self._call("GET", f"/{self._q(queue)}/dlq", params=params)
        return Page([_dead(d) for d in page["items"]], page["next_cursor"])

    def get_dead(self, queue: str, dlq_id: str) -> DeadLetter:
        return _dead(self._call("GET", f"/{self._q(queue)}/dlq/{quote(dlq_id, safe='')}"))

    def replay_one(self, queue: str, dlq_id: str) -> str:
        return str(self._call("POST", f"/{self._q(queue)}/dlq/{quote(dlq_id, safe='')}/replay")["job_id"])

    def replay(
        self, queue: str, *, limit: int | None, error_type: str | None, text: str | None
    ) -> ReplayResult:
        body: dict[str, Any] = {"all": limit is None, "error_type": error_type, "text": text}
        if limit is not None:
            body["limit"] = limit
        r = self._call("POST", f"/{self._q(queue)}/dlq/replay", json=body)
        return ReplayResult(r["replayed"], r["skipped"], r["job_ids"])

    def delete(self, queue: str, dlq_id: str) -> None:
        self._call("DELETE", f"/{self._q(queue)}/dlq/{quote(dlq_id, safe='')}")

    def purge(self, queue: str, confirm: str) -> int:
        return int(self._call("POST", f"/{self._q(queue)}/dlq/purge", json={"confirm": confirm})["purged"])
