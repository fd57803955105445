"""The Grafana dashboards (``charts/tq/files/dashboards``): generated from the registry and never
stale, built on the ``datasource``/``queue`` variables, using only metrics the service (on the
operator row: the operator) exports; and every panel query run on a real Prometheus scraping a real
``tq serve messaging``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support import fast_settings, wait_until
from support.prometheus import (
    PromError,
    needs_prometheus,
    operator_metric_names,
    prometheus,
    service_metric_names,
)
from support.services import messaging_db, serve_family, stop_process
from tq import keys
from tq.producer import SyncProducer
from tq.registry import PRODUCT_QUEUE_NAMES, families
from tq_services import dashboards


def checked_in(uid: str) -> dict[str, Any]:
    return dict(json.loads((dashboards.REPO_ROOT / dashboards.DASHBOARDS_DIR / f"{uid}.json").read_text()))


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        if panel["type"] != "row":
            yield panel


def rows(board: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Row title -> the panels under it (rows are expanded: their panels follow them)."""
    out: dict[str, list[dict[str, Any]]] = {}
    current = ""
    for panel in board["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
            out[current] = []
        else:
            out[current].append(panel)
    return out


def exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(board) for t in p["targets"]]


def product_families() -> dict[str, list[str]]:
    return {
        family: [s.name for s in specs if s.name in PRODUCT_QUEUE_NAMES]
        for family, specs in families().items()
        if any(s.name in PRODUCT_QUEUE_NAMES for s in specs)
    }


# ---- generated, never stale ---------------------------------------------------------------------
def test_checked_in_dashboards_are_fresh() -> None:
    stale = dashboards.stale_files(dashboards.REPO_ROOT)
    assert not stale, f"stale generated dashboards {stale}: run `make dashboards`"


def test_check_flag_fails_on_a_stale_tree_and_passes_after_writing(tmp_path: Path) -> None:
    assert dashboards.main(["--check", "--root", str(tmp_path)]) == 1
    assert dashboards.main(["--root", str(tmp_path)]) == 0
    assert dashboards.main(["--check", "--root", str(tmp_path)]) == 0
    target = tmp_path / dashboards.DASHBOARDS_DIR / f"{dashboards.OVERVIEW_UID}.json"
    target.write_text(target.read_text().replace("histogram_quantile(0.95", "histogram_quantile(0.9", 1))
    assert dashboards.main(["--check", "--root", str(tmp_path)]) == 1


def test_generation_is_deterministic_and_ignores_queues_registered_at_run_time() -> None:
    from support import e2e_service
    from tq.registry import unregister_queue

    before = dashboards.generated_files()
    queue = e2e_service.register("e2e-alpha")
    try:
        assert dashboards.generated_files() == before  # the chart ships the product queues only
    finally:
        unregister_queue(queue)


def test_a_queue_name_a_regex_would_misread_is_refused() -> None:
    from tq.payloads import Payload
    from tq.registry import QueueSpec

    assert dashboards.queues_matcher([QueueSpec("a:b-c", "f", {"j": Payload})]) == 'queue=~"a:b-c"'
    with pytest.raises(ValueError, match="regex metacharacter"):
        dashboards.queues_matcher([QueueSpec("a.b", "f", {"j": Payload})])


# ---- shape --------------------------------------------------------------------------------------
@pytest.mark.parametrize("uid", [dashboards.OVERVIEW_UID, dashboards.QUEUE_UID])
def test_stable_uid_datasource_variable_and_layout(uid: str) -> None:
    board = checked_in(uid)
    assert board["uid"] == uid
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
    # no two panels overlap on the grid
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        mine = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_overview_has_a_row_per_registry_family_with_exactly_its_queues() -> None:
    board = checked_in(dashboards.OVERVIEW_UID)
    by_row = rows(board)
    expected = product_families()
    family_rows = {title: ps for title, ps in by_row.items() if title.startswith("Family ")}
    assert len(family_rows) == len(expected)
    for family, queues in expected.items():
        (title,) = [t for t in family_rows if t.startswith(f"Family {family}:")]
        for panel in family_rows[title]:
            for t in panel["targets"]:
                matched = re.findall(r'queue=~"([^"]+)"', t["expr"])
                assert matched, t["expr"]
                assert all(set(m.split("|")) == set(queues) for m in matched), t["expr"]
    titles = {p["title"] for p in by_row["All queues"]}
    assert {"Throughput", "Failures by outcome", "Depth", "Consumers per family"} <= titles
    all_exprs = " ".join(exprs(board))
    for q in (0.5, 0.95, 0.99):
        assert f"histogram_quantile({q}, sum by (queue, le) (rate(tq_job_duration_seconds_bucket" in all_exprs
    assert "delta(tq_queue_dlq[15m])" in all_exprs
    assert "sum by (family)" in all_exprs


def test_drilldown_filters_every_query_by_the_queue_variable() -> None:
    board = checked_in(dashboards.QUEUE_UID)
    (queue_var,) = [v for v in board["templating"]["list"] if v["name"] == "queue"]
    assert queue_var["type"] == "query"
    assert queue_var["query"]["query"] == "label_values(tq_queue_waiting, queue)"
    assert queue_var["datasource"]["uid"] == "${datasource}"
    for expr in exprs(board):
        assert 'queue="$queue"' in expr, expr
    overview_titles = {p["title"] for p in rows(checked_in(dashboards.OVERVIEW_UID))["All queues"]}
    drill_titles = {p["title"] for p in panels(board)}
    assert {"Throughput", "Failures by outcome", "Depth"} <= overview_titles & drill_titles


async def test_dashboards_use_only_exported_metrics(redis_client: Any) -> None:
    """A renamed or dropped metric breaks this: the panels' names against a real exposition."""
    exported = await service_metric_names(redis_client)
    operator = operator_metric_names()
    assert operator and all(name.startswith("tq_operator_") for name in operator)
    for uid in (dashboards.OVERVIEW_UID, dashboards.QUEUE_UID):
        by_row = rows(checked_in(uid))
        for title, row_panels in by_row.items():
            # the operator's row shows the operator's metrics; every other row the services'
            source = operator if title == dashboards.OPERATOR_ROW else exported
            used = {
                name
                for p in row_panels
                for t in p["targets"]
                for name in re.findall(r"\b(tq_[a-z0-9_]+)\b", t["expr"])
            }
            assert used, f"{uid} / {title}"
            assert used <= source, f"{uid} / {title} uses metrics not exported: {sorted(used - source)}"
    overview = rows(checked_in(dashboards.OVERVIEW_UID))
    for title in (
        dashboards.SCHEDULES_ROW,
        dashboards.WORKER_FAULTS_ROW,
        dashboards.OPERATOR_ROW,
        dashboards.RATE_LIMITS_ROW,
    ):
        assert overview[title], title


# ---- every panel on a real Prometheus -----------------------------------------------------------
EMAIL = {"to": "a@example.com", "template": "welcome"}  # no ``name`` variable: dead-lettered at once


def substitute(expr: str, queue: str) -> str:
    """What Grafana sends: the variables replaced (``$__rate_interval`` as for a 1 s scrape)."""
    return expr.replace("$__rate_interval", "1m").replace("$queue", queue)


@needs_prometheus
def test_every_panel_query_runs_on_a_real_prometheus(redis_url: str, tmp_path: Path) -> None:
    queue = "email:send"
    served = product_families()["messaging"]
    assert queue in served
    client = redis.Redis.from_url(redis_url)
    proc, port = serve_family(redis_url, "messaging", TQ_DATABASE_URL=messaging_db(tmp_path))
    try:
        with prometheus([f"127.0.0.1:{port}"]) as prom:
            SyncProducer(client, fast_settings(redis_url)).enqueue_many(queue, [("send-email", EMAIL)] * 3)
            wait_until(lambda: client.xlen(keys.dlq(queue)) == 3, 15, "3 dead letters")
            # the failures reach Prometheus, and a rate window holds samples before and after them
            prom.wait(
                lambda: (
                    prom.values(
                        f'tq_jobs_failed_total{{queue="{queue}",outcome="dead_lettered"}}', "job"
                    ).get("send-email")
                    == 3
                ),
                15,
                "the dead letters in Prometheus",
            )
            checked = 0
            for uid in (dashboards.OVERVIEW_UID, dashboards.QUEUE_UID):
                for title, row_panels in rows(checked_in(uid)).items():
                    # the rows of families not served here have no series, nor has the operator's
                    # (no operator is scraped here): they only have to parse
                    must_answer = (
                        not title.startswith("Family ") or title.startswith("Family messaging:")
                    ) and title != dashboards.OPERATOR_ROW
                    for panel in row_panels:
                        for t in panel["targets"]:
                            expr = substitute(t["expr"], queue)
                            try:
                                result = prom.query(expr)
                            except PromError as exc:
                                raise AssertionError(f"{uid} / {panel['title']}: {exc}") from None
                            if must_answer:
                                assert result, f"{uid} / {title} / {panel['title']}: no series for {expr}"
                            checked += 1
            assert checked >= 40
            # the numbers behind the main panels, as a panel shows them
            failures = prom.query(substitute(dashboards.failures('queue="$queue"'), queue))
            by_outcome = {s["metric"]["outcome"]: float(s["value"][1]) for s in failures}
            assert by_outcome["dead_lettered"] > 0 and by_outcome["retried"] == 0
            # per job: the tq ``job`` label survives the scrape (honor_labels, docs/services.md)
            (by_job,) = [
                t["expr"]
                for p in panels(checked_in(dashboards.QUEUE_UID))
                if p["title"] == "Failures by outcome"
                for t in p["targets"]
            ]
            per_job = {
                (s["metric"]["job"], s["metric"]["outcome"]): float(s["value"][1])
                for s in prom.query(substitute(by_job, queue))
            }
            assert per_job[("send-email", "dead_lettered")] > 0
            assert per_job[("send-email", "invalid")] == 0
            dlq = prom.values(substitute(dashboards.gauge("tq_queue_dlq", 'queue="$queue"'), queue), "queue")
            assert dlq == {queue: 3.0}
            consumers = prom.values(dashboards.consumers_per_family(""), "family")
            assert consumers == {"messaging": float(len(served))}  # one consumer per queue of the family
    finally:
        stop_process(proc)
        client.close()
