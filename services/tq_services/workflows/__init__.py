"""The workflows family: run-workflow and trigger-workflow (``workflows:run``).

``steps`` defines the step types (enqueue a job and wait for it, an HTTP call, a delay, a condition
on the previous step's output) and runs one attempt of each; ``runner`` drives an instance through
its steps with per-step retries, resuming at its first unfinished step; ``handlers`` registers the
jobs; ``seed`` inserts a demo definition.
"""
