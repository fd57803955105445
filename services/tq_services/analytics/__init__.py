"""The analytics family: ``analytics:process`` (process-events, rollup-daily, compute-funnels,
compute-retention) and ``analytics:snapshot`` (snapshot-dashboard, snapshot-realtime).

``rollups`` turns raw ``analytics_event`` rows into the daily roll-ups, funnels and retention
with set-based SQL upserts; ``snapshots`` precomputes dashboard payloads into Redis and reads them
back (fresh, stale or missing); ``handlers`` registers the jobs; ``seed`` writes demo events.
"""
