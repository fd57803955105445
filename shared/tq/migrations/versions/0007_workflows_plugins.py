"""workflows_plugins: workflow_definition, workflow_instance, workflow_step_execution, plugin,
plugin_execution_log (issue 5)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
