"""Webhook deliveries; audits keep a callback URL and are found by content, preset and seed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 22:08:19.597402
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("audit_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["audit_id"], ["audits.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("audit_id", "attempt"),
    )
    with op.batch_alter_table("audits", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callback_url", sa.String(length=2048), nullable=True))
        batch_op.drop_index(batch_op.f("ix_audits_dataset_sha256"))
        batch_op.create_index("ix_audits_reuse", ["dataset_sha256", "preset", "seed"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audits", schema=None) as batch_op:
        batch_op.drop_index("ix_audits_reuse")
        batch_op.create_index(
            batch_op.f("ix_audits_dataset_sha256"), ["dataset_sha256"], unique=False
        )
        batch_op.drop_column("callback_url")

    op.drop_table("webhook_deliveries")
