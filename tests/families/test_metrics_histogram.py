"""The family services' hot-path histogram (``tq_services.metrics.HistogramSet``) counts its
observations in bulk: what it exposes must be what prometheus_client's own Histogram exposes for
the same observations, whenever a scrape comes."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram
from tq_services.metrics import DURATION_BUCKETS, PENDING_MAX, HistogramSet


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith(name) and not s.name.endswith("_created")
    }


def test_bulk_counted_buckets_are_prometheus_clients_at_every_scrape() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = HistogramSet("d_seconds", "d", ["queue"], DURATION_BUCKETS)
    ours.register(fast)
    reference = Histogram("d_seconds", "d", ["queue"], buckets=DURATION_BUCKETS, registry=theirs)
    series, ref = fast.labels("q"), reference.labels("q")
    rng = random.Random(7)
    # on every bound (a bucket holds the values <= its bound), just past it, zero, and beyond the last
    values = [*DURATION_BUCKETS, *(b * 1.000001 for b in DURATION_BUCKETS), 0.0, 1e6]
    values += [rng.expovariate(10) for _ in range(3 * PENDING_MAX)]  # past the bulk count's threshold
    for i, value in enumerate(values):
        series.pending.append(value)  # what JobMetrics.observe does per job
        if len(series.pending) >= PENDING_MAX:
            series.count_pending()
        ref.observe(value)
        if i % 997 == 0 or i == len(values) - 1:  # scrapes between bulk counts, and at the end
            got, want = _samples(ours, "d_seconds"), _samples(theirs, "d_seconds")
            assert got.keys() == want.keys()
            for key, expected in want.items():
                assert abs(got[key] - expected) <= 1e-9 * max(1.0, abs(expected)), key
    assert _samples(ours, "d_seconds")[("d_seconds_count", "")] == len(values)
