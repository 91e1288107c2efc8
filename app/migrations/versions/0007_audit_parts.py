"""An audit's parts: each bag and the probe as a task of its own (AUDIT_PARALLEL_BAGS).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_parts",
        sa.Column("audit_id", sa.Uuid(), nullable=False),
        sa.Column("part", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("progress_done", sa.Integer(), nullable=False),
        sa.Column("progress_total", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["audit_id"], ["audits.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("audit_id", "part"),
    )
    op.create_index("ix_audit_parts_status", "audit_parts", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_parts_status", table_name="audit_parts")
    op.drop_table("audit_parts")
