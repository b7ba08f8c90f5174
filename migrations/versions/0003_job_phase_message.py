"""jobs.phase_message: what the run is doing in its current phase

A running job reports its slow one-time phases (preparing_model, starting_engine,
evaluating) with a line for people ("loading lco-tiny onto cpu"); the job's
status_details.message shows it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 18:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("phase_message", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("phase_message")
