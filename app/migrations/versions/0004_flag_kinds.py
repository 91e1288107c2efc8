"""Flagged samples are suspected poisons or label issues, each kind with its own positions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 18:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("flagged_samples", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "kind", sa.String(length=16), server_default=sa.text("'label_issue'"),
                nullable=False,
            )
        )  # fmt: skip
        batch_op.add_column(sa.Column("kind_ordinal", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("kind_rank", sa.Integer(), nullable=True))
    # Audits from before the verdict have label issues only: their positions are the kind's.
    op.execute("UPDATE flagged_samples SET kind_ordinal = ordinal, kind_rank = rank")
    with op.batch_alter_table("flagged_samples", schema=None) as batch_op:
        batch_op.alter_column("kind_ordinal", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("kind_rank", existing_type=sa.Integer(), nullable=False)
        batch_op.create_index(
            "ix_flagged_samples_kind_ordinal", ["audit_id", "kind", "kind_ordinal"], unique=True
        )
        batch_op.create_index(
            "ix_flagged_samples_kind_rank", ["audit_id", "kind", "kind_rank"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("flagged_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_flagged_samples_kind_rank")
        batch_op.drop_index("ix_flagged_samples_kind_ordinal")
        batch_op.drop_column("kind_rank")
        batch_op.drop_column("kind_ordinal")
        batch_op.drop_column("kind")
