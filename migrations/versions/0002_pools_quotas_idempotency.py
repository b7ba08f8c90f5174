"""pools, quotas, fair share, admission, admin keys, idempotency

Teams get a fair-share weight, GPU and queue quotas, a priority ceiling and a quota policy;
API keys an admin flag; jobs their GPUs, priority, admission time and status time. New
tables: registered workers (pool capacity), usage records (GPU-seconds per attempt) and
idempotency records (the first response to a POST with `Idempotency-Key`).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 02:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Server defaults fill the rows that exist already.
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.add_column(sa.Column("share", sa.Float(), nullable=False, server_default="1.0"))
        batch_op.add_column(sa.Column("max_gpus", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_queued_jobs", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("max_priority", sa.String(length=8), nullable=False, server_default="high")
        )
        batch_op.add_column(
            sa.Column("quota_policy", sa.String(length=8), nullable=False, server_default="queue")
        )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gpus", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(
            sa.Column("priority", sa.String(length=8), nullable=False, server_default="normal")
        )
        batch_op.add_column(sa.Column("status_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=True))
    # Jobs queued before this migration were already sent to a worker: keep them admitted.
    op.execute("UPDATE jobs SET admitted_at = dispatched_at WHERE status IN ('queued', 'running')")

    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=256), nullable=False),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workers_pool"), ["pool"], unique=False)

    op.create_table(
        "usage_records",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("team_id", sa.String(length=40), nullable=False),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("start_step", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_usage_records_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_usage_records_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_usage_records")),
    )
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_usage_records_job_id"), ["job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_usage_records_team_id"), ["team_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_usage_records_started_at"), ["started_at"], unique=False
        )

    op.create_table(
        "idempotency_records",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("principal", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("content_type", sa.String(length=128), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_idempotency_records")),
        sa.UniqueConstraint("principal", "key", name=op.f("uq_idempotency_records_principal_key")),
    )
    with op.batch_alter_table("idempotency_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_records_created_at"), ["created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("idempotency_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_records_created_at"))
    op.drop_table("idempotency_records")
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_records_started_at"))
        batch_op.drop_index(batch_op.f("ix_usage_records_team_id"))
        batch_op.drop_index(batch_op.f("ix_usage_records_job_id"))
    op.drop_table("usage_records")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workers_pool"))
    op.drop_table("workers")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("admitted_at")
        batch_op.drop_column("status_since")
        batch_op.drop_column("priority")
        batch_op.drop_column("gpus")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("is_admin")
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.drop_column("quota_policy")
        batch_op.drop_column("max_priority")
        batch_op.drop_column("max_queued_jobs")
        batch_op.drop_column("max_gpus")
        batch_op.drop_column("share")
