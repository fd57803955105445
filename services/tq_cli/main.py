"""The ``tq`` command line (Typer + Rich). Every read command takes ``--json`` for scripts; bad
input exits with status 2 and the reason."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table
from tq import cancel, config, dlq, jobs
from tq.connection import async_client
from tq.envelope import FINISHED_STATES, JobState
from tq.errors import ConfirmationRequired, TqError
from tq.registry import all_queues, families, get_queue
from tq.settings import get_settings

app = typer.Typer(
    help="tq - Teknav Queues: jobs on Redis Streams.", no_args_is_help=True, pretty_exceptions_enable=False
)
dlq_app = typer.Typer(help="Dead-letter queue: list, show, replay, delete, purge.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
token_app = typer.Typer(help="Bearer tokens for the admin API.", no_args_is_help=True)
app.add_typer(token_app, name="token")
schedule_app = typer.Typer(
    help="Recurring schedules: list, add, remove, suspend, resume, run-now, install-defaults.",
    no_args_is_help=True,
)
app.add_typer(schedule_app, name="schedule")
console = Console()
err = Console(stderr=True)

T = TypeVar("T")
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


_api: dict[str, str | None] = {"url": None, "token": None}  # set by --api/--token


@app.callback()
def _global_options(
    api: Annotated[
        str | None, typer.Option("--api", help="act through the admin API at this URL instead of on Redis")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="the admin API's bearer token (with --api)")
    ] = None,
) -> None:
    if api and not token:
        raise _fail("--api needs --token (mint one with `tq token create`)")
    _api.update(url=api, token=token)
    from tq_services.tracing import TracingConfigError, setup_from_env

    try:  # off unless OTEL_* asks (docs/engine.md, "Tracing"); before anything connects
        setup_from_env()
    except TracingConfigError as exc:
        raise _fail(str(exc)) from None


def _through_api(remote: Callable[[Any], T] | None) -> T:
    """Run ``remote(client)`` with an admin API client (``--api``)."""
    import httpx
    from tq_services.admin.client import AdminClient

    if remote is None:
        raise _fail("this command acts on Redis only; run it without --api")
    client = AdminClient(_api["url"] or "", _api["token"] or "")
    try:
        return remote(client)
    except (TqError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except httpx.HTTPError as exc:
        raise _fail(f"admin API at {_api['url']} failed: {exc}", code=1) from None
    finally:
        client.close()


def _run(fn: Callable[[Any], Awaitable[T]], remote: Callable[[Any], T] | None = None) -> T:
    """Run ``fn(client)`` with a Redis client, or ``remote(api)`` through the admin API under
    ``--api``; tq's input errors become exit status 2."""
    if _api["url"]:
        return _through_api(remote)

    async def main() -> T:
        client = async_client()
        try:
            return await fn(client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(main())
    except (TqError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except RedisError as exc:
        raise _fail(f"Redis at {get_settings().redis_url} failed: {exc}", code=1) from None


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.command()
def queues(as_json: JsonOpt = False) -> None:
    """Each queue with its family, job names, paused flag and counts by state."""

    async def go(client: Any) -> list[dict[str, Any]]:
        rows = []
        for spec in all_queues():
            c = await jobs.counts(client, spec.name)
            rows.append({"family": spec.family, "jobs": list(spec.jobs), **c})
        return rows

    rows = _run(go, remote=lambda api: api.queues())
    if as_json:
        _emit_json(rows)
        return
    table = Table(
        "queue", "family", "jobs", "paused", "waiting", "active", "delayed", "completed", "dead", "consumers"
    )
    for r in rows:
        table.add_row(
            r["queue"],
            r["family"],
            ", ".join(r["jobs"]),
            "yes" if r["paused"] else "no",
            *(str(r[k]) for k in ("waiting", "active", "delayed", "completed", "dead", "consumers")),
        )
    console.print(table)


@app.command()
def schema(queue: str, job: str) -> None:
    """The JSON Schema of a job's payload."""
    try:
        model = get_queue(queue).payload_model(job)
    except TqError as exc:
        raise _fail(str(exc)) from None
    _emit_json(model.model_json_schema())


@app.command()
def enqueue(
    queue: str,
    job: str,
    data: Annotated[str, typer.Option(help="the payload as a JSON object")] = "{}",
    idempotency_key: Annotated[str | None, typer.Option(help="dedupe key within its TTL")] = None,
    delay: Annotated[float | None, typer.Option(help="seconds to wait before the job is due")] = None,
    trace_id: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Enqueue one job; prints its id."""
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise _fail(f"--data is not valid JSON: {exc}") from None
    from tq.producer import Producer

    async def go(client: Any) -> str:
        producer = Producer(client)
        return await producer.enqueue(
            queue, job, payload, idempotency_key=idempotency_key, delay=delay, trace_id=trace_id
        )

    typer.echo(_run(go))


@app.command("jobs")
def list_jobs(
    queue: str,
    state: Annotated[JobState, typer.Option(help="which jobs")] = JobState.WAITING,
    search: Annotated[str | None, typer.Option(help="text in id, name, payload or error")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    cursor: Annotated[str | None, typer.Option(help="from a previous page's next cursor")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Jobs of a queue in one state, a page at a time."""
    page = _run(
        lambda c: jobs.list_jobs(c, queue, state, cursor=cursor, limit=limit, search=search),
        remote=lambda api: api.list_jobs(queue, state, cursor=cursor, limit=limit, search=search),
    )
    if as_json:
        _emit_json({"items": [j.to_dict() for j in page.items], "next_cursor": page.next_cursor})
        return
    table = Table("id", "name", "state", "attempts", "enqueued", "finished", "error")
    for j in page.items:
        table.add_row(
            j.id,
            j.name,
            j.state.value,
            str(j.attempts),
            _when(j.enqueued_at),
            _when(j.finished_at),
            (j.error or "")[:60],
        )
    console.print(table)
    if page.next_cursor:
        console.print(f"next page: --cursor {page.next_cursor}")


@app.command("job")
def show_job(
    queue: Annotated[str, typer.Argument(metavar="QUEUE", help="the queue, or `cancel` to cancel a job")],
    job_id: Annotated[str, typer.Argument(metavar="ID", help="the job (after `cancel`: its queue)")],
    cancel_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="after `cancel`: the job")] = None,
    wait: Annotated[
        float, typer.Option(min=0, help="cancel: seconds to wait for a running job's outcome")
    ] = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """One job: payload, attempts, progress, errors with stack, timeline.

    `tq job cancel QUEUE ID` cancels it: a waiting or delayed job is removed (it never runs); a
    running one is cancelled on the replica that runs it and ends `cancelled`."""
    if queue == "cancel":
        if cancel_id is None:
            raise _fail("usage: tq job cancel QUEUE ID")
        _cancel(job_id, cancel_id, wait, as_json)
        return
    if cancel_id is not None:
        raise _fail(f"unexpected argument {cancel_id!r}: tq job QUEUE ID, or tq job cancel QUEUE ID")
    rec = _run(lambda c: jobs.get_job(c, queue, job_id), remote=lambda api: api.get_job(queue, job_id))
    if as_json:
        _emit_json({**rec.to_dict(), "timeline": rec.timeline()})
        return
    for key, value in rec.to_dict().items():
        if (
            key not in ("stack", "payload", "failures")
            and not key.startswith("progress")
            and value not in (None, [], "")
        ):
            console.print(f"[bold]{key}[/bold]: {value}")
    if rec.progress is not None:
        note = f" - {rec.progress_message}" if rec.progress_message else ""
        console.print(f"[bold]progress[/bold]: {rec.progress:.0%}{note} (at {_when(rec.progress_at)})")
    console.print("[bold]payload[/bold]:", json.dumps(rec.payload, indent=2))
    for step in rec.timeline():
        console.print(
            f"  {_when(step['at'])}  {step['event']}  {step.get('type', '')} {step.get('message', '')}"
        )
    if rec.stack:
        console.print("[bold]stack[/bold]:\n" + rec.stack)


def _cancel(queue: str, job_id: str, wait: float, as_json: bool) -> None:
    """``tq job cancel``: cancel, then (a running job) wait up to ``wait`` s for its outcome."""

    async def local(client: Any) -> dict[str, Any]:
        done = await cancel.cancel_job(client, queue, job_id)
        out: dict[str, Any] = {"outcome": done.outcome.value, "was": done.was.value}
        if done.outcome is cancel.CancelOutcome.REQUESTED and wait:
            final = await cancel.wait_settled(client, queue, job_id, wait)
            out["state"] = final.value if final is not None else None
        return out

    def remote(api: Any) -> dict[str, Any]:
        out = api.cancel_job(queue, job_id)
        out = {"outcome": out["outcome"], "was": out["was"]}
        if out["outcome"] == "requested" and wait:
            deadline = time.monotonic() + wait
            out["state"] = None
            while time.monotonic() < deadline:
                state = api.get_job(queue, job_id).state
                if state in FINISHED_STATES:
                    out["state"] = state.value
                    break
                time.sleep(0.2)
        return out

    out = _run(local, remote=remote)
    if as_json:
        _emit_json({"queue": queue, "job_id": job_id, **out})
        return
    if out["outcome"] == "removed":
        typer.echo(f"{job_id} cancelled: it was {out['was']} and was removed; it never runs")
    elif not wait:
        typer.echo(f"{job_id} is running: cancel requested")
    elif out.get("state") == "cancelled":
        typer.echo(f"{job_id} cancelled while running")
    elif out.get("state"):
        typer.echo(f"{job_id} ended {out['state']} before the cancel reached it")
    else:
        typer.echo(f"{job_id} is still running after {wait:g}s: its consumer cancels it at its next check")


@app.command()
def pause(queue: str) -> None:
    """Stop consumers fetching from QUEUE (in-flight jobs finish)."""
    _run(lambda c: config.set_paused(c, queue, True), remote=lambda api: api.set_paused(queue, True))
    typer.echo(f"{queue} paused")


@app.command()
def resume(queue: str) -> None:
    """Let consumers fetch from QUEUE again."""
    _run(lambda c: config.set_paused(c, queue, False), remote=lambda api: api.set_paused(queue, False))
    typer.echo(f"{queue} resumed")


@app.command()
def concurrency(queue: str, value: int) -> None:
    """Set QUEUE's in-flight limit per replica, live."""
    _run(lambda c: config.set_concurrency(c, queue, value))
    typer.echo(f"{queue} concurrency {value}")


@dlq_app.command("list")
def dlq_list(
    queue: str,
    error_type: Annotated[str | None, typer.Option(help="exact error type, e.g. NoHandler")] = None,
    search: Annotated[str | None, typer.Option(help="text in job, error or payload")] = None,
    since: Annotated[float | None, typer.Option(help="epoch seconds")] = None,
    until: Annotated[float | None, typer.Option(help="epoch seconds")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    cursor: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Dead-lettered jobs, newest first."""
    page = _run(
        lambda c: dlq.list_dead(
            c, queue, since=since, until=until, error_type=error_type, text=search, cursor=cursor, limit=limit
        ),
        remote=lambda api: api.list_dead(
            queue, since=since, until=until, error_type=error_type, text=search, cursor=cursor, limit=limit
        ),
    )
    if as_json:
        _emit_json({"items": [d.to_dict() for d in page.items], "next_cursor": page.next_cursor})
        return
    table = Table("dlq id", "job id", "name", "error type", "error", "attempts", "failed at")
    for d in page.items:
        table.add_row(
            d.dlq_id, d.job_id, d.name, d.error_type, d.error[:60], str(d.attempts), _when(d.failed_at)
        )
    console.print(table)
    if page.next_cursor:
        console.print(f"next page: --cursor {page.next_cursor}")


@dlq_app.command("show")
def dlq_show(queue: str, dlq_id: str, as_json: JsonOpt = False) -> None:
    """One DLQ entry with its payload and stack."""
    d = _run(lambda c: dlq.get_dead(c, queue, dlq_id), remote=lambda api: api.get_dead(queue, dlq_id))
    if as_json:
        _emit_json(d.to_dict())
        return
    for key, value in d.to_dict().items():
        if key not in ("stack", "envelope"):
            console.print(f"[bold]{key}[/bold]: {value}")
    console.print("[bold]stack[/bold]:\n" + d.stack)


@dlq_app.command("replay")
def dlq_replay(
    queue: str,
    dlq_id: Annotated[str | None, typer.Argument(help="one entry; omit to replay many")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many")] = None,
    error_type: Annotated[str | None, typer.Option()] = None,
    search: Annotated[str | None, typer.Option()] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="replay every matching entry")] = False,
) -> None:
    """Re-enqueue dead-lettered jobs with a fresh attempt count."""
    if dlq_id:
        typer.echo(
            _run(
                lambda c: dlq.replay_one(c, queue, dlq_id),
                remote=lambda api: api.replay_one(queue, dlq_id),
            )
        )
        return
    if limit is None and not replay_all:
        raise _fail("give a DLQ id, --limit N or --all")
    r = _run(
        lambda c: dlq.replay(c, queue, limit=limit, error_type=error_type, text=search),
        remote=lambda api: api.replay(queue, limit=limit, error_type=error_type, text=search),
    )
    typer.echo(json.dumps({"replayed": r.replayed, "skipped": r.skipped, "job_ids": r.job_ids}))


@dlq_app.command("delete")
def dlq_delete(queue: str, dlq_id: str) -> None:
    """Delete one DLQ entry."""
    _run(lambda c: dlq.delete(c, queue, dlq_id), remote=lambda api: api.delete(queue, dlq_id))
    typer.echo(f"deleted {dlq_id}")


@dlq_app.command("purge")
def dlq_purge(queue: str, confirm: Annotated[str, typer.Option(help="the queue name again")] = "") -> None:
    """Delete every DLQ entry of QUEUE; needs --confirm QUEUE."""
    try:
        n = _run(lambda c: dlq.purge(c, queue, confirm), remote=lambda api: api.purge(queue, confirm))
    except ConfirmationRequired as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"purged {n} entries from {queue}")


@app.command()
def worker(
    family: Annotated[list[str] | None, typer.Option(help="a family to consume; repeat; default all")] = None,
) -> None:
    """Run consumers in this process until SIGTERM/SIGINT (then drain gracefully)."""
    import logging

    from tq.handlers import default_handlers
    from tq.worker_app import WorkerApp
    from tq_services import load_handlers

    known = families()
    for f in family or []:
        if f not in known:
            raise _fail(f"unknown family {f!r}; known: {', '.join(known)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    load_handlers(family or [])  # each family's handlers register on the process-wide registry
    worker_app = WorkerApp(family or [], settings, default_handlers)
    if settings.uvloop:
        import uvloop

        uvloop.run(worker_app.app.run())
    else:
        asyncio.run(worker_app.app.run())


@app.command()
def serve(
    family: Annotated[str, typer.Argument(help="the family to run, e.g. messaging; or admin")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port")] = 8000,
) -> None:
    """Run FAMILY's consumers as an HTTP service (uvicorn): /metrics, /healthz, /readyz; SIGTERM drains.
    `tq serve admin` runs the owner's admin API and live events instead (no consumers)."""
    import logging

    if family == "admin":  # not a family of the registry: a service of its own
        from tq_services.admin import serve as run_admin
        from tq_services.admin.settings import get_admin_settings

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            run_admin(host=host, port=port, settings=get_settings(), admin=get_admin_settings())
        except ValueError as exc:
            raise _fail(str(exc)) from None
        return
    known = families()
    if family not in known:
        raise _fail(f"unknown family {family!r}; known: {', '.join(known)}")
    from tq_services.family_service import serve as run_service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_service(family, host=host, port=port)


@app.command()
def operator() -> None:
    """Run the QueueConfig operator (kopf; TQ_OPERATOR_NAMESPACES, else every namespace) until SIGTERM."""
    try:
        from tq_operator.main import run as run_operator
    except ImportError as exc:
        raise _fail(f"the operator is not installed: {exc}") from None
    run_operator()


@app.command()
def migrate() -> None:
    """Create or upgrade the database at TQ_DATABASE_URL (the engine's tables and every family's)."""
    from tq_services.schema import migrate as run_migrations

    run_migrations(get_settings().database_url)
    typer.echo(f"database at {get_settings().database_url} is up to date")


@app.command()
def seed() -> None:
    """Insert the demo rows (articles, workflows, plugins, ...) that `make dev` starts with; idempotent."""
    from tq_services import seed as seed_families
    from tq_services.store import dispose_engines

    async def run() -> list[str]:
        try:
            return await seed_families(get_settings().database_url)
        finally:
            await dispose_engines()

    done = asyncio.run(run())
    typer.echo(f"seeded: {', '.join(done) or 'nothing (no family has seed data)'}")


@app.command("search")
def search_documents(
    query: str,
    locale: Annotated[str | None, typer.Option(help="only documents in this locale, e.g. en")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="most results")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Full-text search over the indexed articles (index-article), best match first."""
    from tq_services.search.query import search as run_search
    from tq_services.store import dispose_engines, sessions

    async def run() -> list[Any]:
        try:
            async with sessions(get_settings().database_url)() as session:
                return await run_search(session, query, locale=locale, limit=limit)
        finally:
            await dispose_engines()

    try:
        hits = asyncio.run(run())
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        _emit_json([hit.as_dict() for hit in hits])
        return
    if not hits:
        typer.echo(f"no documents match {query!r}")
        return
    table = Table("score", "article", "locale", "title", "snippet")
    for hit in hits:
        table.add_row(f"{hit.score:.4f}", str(hit.article_id), hit.locale, hit.title, hit.snippet)
    console.print(table)


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _ttl_seconds(ttl: str) -> int:
    """``90``, ``90s``, ``30m``, ``1h``, ``7d`` as seconds."""
    value, unit = (ttl[:-1], ttl[-1]) if ttl and ttl[-1] in _TTL_UNITS else (ttl, "s")
    if not value.isdigit() or int(value) == 0:
        raise ValueError(f"--ttl {ttl!r}: give a positive whole number with an optional unit s, m, h or d")
    return int(value) * _TTL_UNITS[unit]


@token_app.command("create")
def token_create(
    role: Annotated[
        str, typer.Option(help="owner (anything), viewer (reads, when enabled) or producer (enqueue only)")
    ] = "owner",
    ttl: Annotated[str, typer.Option(help="lifetime: 90s, 30m, 1h, 7d")] = "1h",
    subject: Annotated[str, typer.Option(help="who holds it: the actor of its audit rows")] = "operator",
) -> None:
    """Mint a bearer token for the admin API, signed with TQ_ADMIN_JWT_KEY; prints it."""
    from tq_services.admin.auth import Role, mint_token
    from tq_services.admin.settings import get_admin_settings

    try:
        token = mint_token(get_admin_settings(), subject=subject, role=Role(role), ttl_s=_ttl_seconds(ttl))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo(token)


@token_app.command("revoke")
def token_revoke(
    token: Annotated[
        str,
        typer.Argument(
            help="the token's id (its jti: `details.token_id` of its audit rows), or the token itself"
        ),
    ],
) -> None:
    """Revoke an admin token: refused from now on, its open live streams closed within seconds."""
    import time

    import jwt
    from tq_services.admin.auth import token_id, verified_claims
    from tq_services.admin.revocation import revoke
    from tq_services.admin.settings import get_admin_settings

    settings = get_admin_settings()
    longest = time.time() + settings.admin_token_max_ttl_s
    if token.count(".") == 2:  # a whole token: revoked until it expires
        try:
            claims = verified_claims(settings, token)
            tid, until = token_id(token, claims), min(float(str(claims.get("exp"))), longest)
        except (jwt.InvalidTokenError, ValueError) as exc:
            raise _fail(f"not a token of this admin service: {exc}") from None
    elif token.isascii() and 0 < len(token) <= 64 and all(c.isalnum() or c in "-_" for c in token):
        tid, until = token, longest  # only the id: kept as long as any token may live
    else:
        raise _fail(f"{token!r} is neither a token id (jti) nor a token")
    _run(lambda client: revoke(client, tid, until))
    typer.echo(f"revoked {tid} until {_when(until)}")


# ---- recurring schedules (tq.schedules) -----------------------------------------------------------
def _schedule_row(spec: Any, state: dict[str, Any]) -> dict[str, Any]:
    return {
        **spec.model_dump(by_alias=True),
        "lastScheduleTime": state["last"],
        "nextScheduleTime": state["next"],
        "lastJobId": state["job"],
        "lastOutcome": state["outcome"],
        "lastError": state["error"],
        "fired": state["fired"],
        "skipped": state["skipped"],
        "missed": state["missed"],
        "managedBy": state["owner"],  # a JobSchedule (the operator's), or None
    }


@schedule_app.command("list")
def schedule_list(as_json: JsonOpt = False) -> None:
    """Every schedule with its last and next tick, last job and outcome, and its tick counts."""
    from tq import schedules

    rows = [_schedule_row(spec, state) for spec, state in _run(schedules.list_with_state)]
    if as_json:
        _emit_json(rows)
        return
    table = Table("name", "job", "when", "last", "next", "outcome", "fired/skipped/missed")
    for r in rows:
        when = f"cron {r['cron']} {r['timeZone']}" if r["cron"] else f"every {r['intervalSeconds']}s"
        if r["concurrencyPolicy"] != "Allow":
            when += f", {r['concurrencyPolicy']}"
        table.add_row(
            r["name"] + (f"\n({r['managedBy']})" if r["managedBy"] else ""),
            f"{r['queue']} {r['job']}",
            when,
            _when(r["lastScheduleTime"]),
            "suspended" if r["suspend"] else _when(r["nextScheduleTime"]),
            r["lastOutcome"] or "-",
            f"{r['fired']}/{r['skipped']}/{r['missed']}",
        )
    console.print(table)


@schedule_app.command("add")
def schedule_add(
    name: str,
    queue: str,
    job: str,
    cron: Annotated[str | None, typer.Option(help="five-field cron expression, e.g. '0 2 * * *'")] = None,
    every: Annotated[
        int | None, typer.Option(help="a tick every this many seconds (instead of --cron)")
    ] = None,
    tz: Annotated[str, typer.Option(help="IANA time zone of --cron and of $today/$yesterday")] = "UTC",
    data: Annotated[
        str, typer.Option(help='the payload as a JSON object; "$yesterday", "$today", "$tick" are filled in')
    ] = "{}",
    policy: Annotated[
        str,
        typer.Option(
            help="Allow; Forbid: skip a tick while the last job is unfinished; Replace: cancel it, then run"
        ),
    ] = "Allow",
    deadline: Annotated[
        int | None,
        typer.Option(help="seconds a tick may be late and still run (default: the latest always runs)"),
    ] = None,
    suspend: Annotated[bool, typer.Option(help="add it suspended")] = False,
) -> None:
    """Add (or replace) a schedule; its payload is validated against the job's model first."""
    from pydantic import ValidationError
    from tq import schedules

    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise _fail(f"--data is not valid JSON: {exc}") from None
    try:
        spec = schedules.ScheduleSpec(
            name=name,
            queue=queue,
            job=job,
            payload=payload,
            cron=cron,
            interval_seconds=every,
            time_zone=tz,
            suspend=suspend,
            concurrency_policy=schedules.ConcurrencyPolicy(policy),
            starting_deadline_seconds=deadline,
        )
    except ValidationError as exc:
        reasons = [f"{'.'.join(map(str, e['loc'])) or 'schedule'}: {e['msg']}" for e in exc.errors()]
        raise _fail("; ".join(reasons)) from None
    except ValueError as exc:  # the policy
        raise _fail(f"{exc} (one of {', '.join(schedules.ConcurrencyPolicy)})") from None
    _run(lambda c: schedules.add(c, spec))
    typer.echo(f"schedule {name}: {schedules.describe(spec)} -> {queue} {job}")


@schedule_app.command("remove")
def schedule_remove(
    name: str,
    force: Annotated[
        bool, typer.Option(help="also one managed by a JobSchedule (after its operator is gone for good)")
    ] = False,
) -> None:
    """Delete a schedule (its jobs already enqueued stay); one managed by a JobSchedule is deleted
    with the resource."""
    from tq import schedules

    if not _run(lambda c: schedules.remove(c, name, force=force)):
        raise _fail(f"unknown schedule {name!r}")
    typer.echo(f"removed schedule {name}")


@schedule_app.command("suspend")
def schedule_suspend(name: str) -> None:
    """Stop firing a schedule; its ticks pass silently until resumed."""
    from tq import schedules

    _run(lambda c: schedules.set_suspended(c, name, True))
    typer.echo(f"suspended schedule {name}")


@schedule_app.command("resume")
def schedule_resume(name: str) -> None:
    """Fire a suspended schedule again from its next tick (the suspended ticks are not run)."""
    from tq import schedules

    _run(lambda c: schedules.set_suspended(c, name, False))
    typer.echo(f"resumed schedule {name}")


@schedule_app.command("run-now")
def schedule_run_now(name: str) -> None:
    """Enqueue the schedule's job at once, outside its ticks; prints the job id."""
    from tq import schedules

    typer.echo(_run(lambda c: schedules.run_now(c, name)))


@schedule_app.command("install-defaults")
def schedule_install_defaults(
    family: Annotated[
        list[str] | None, typer.Option(help="a family whose schedules to install; repeat; default all")
    ] = None,
) -> None:
    """Store the schedules the families declare for their periodic jobs (`make dev` runs this).
    Idempotent: an existing one is updated and keeps its state and its suspension; one managed by
    a JobSchedule (the operator's) is left as the resource says."""
    from tq import schedules
    from tq_services import default_schedules

    specs = default_schedules(family or [])
    installed, managed = _run(lambda c: schedules.install_defaults(c, specs))
    typer.echo(f"installed {len(installed)} schedules: {', '.join(installed)}")
    if managed:
        typer.echo(f"left {len(managed)} managed by JobSchedules as they are: {', '.join(managed)}")


def main() -> None:
    app()
