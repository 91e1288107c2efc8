"""Audits, their scores, and their flagged samples.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 20:55:24.065820
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audits",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "succeeded",
                "failed",
                "cancelled",
                name="auditstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("preset", sa.String(length=32), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("dataset_format", sa.String(length=16), nullable=False),
        sa.Column("dataset_filename", sa.String(length=255), nullable=True),
        sa.Column("dataset_sha256", sa.String(length=64), nullable=False),
        sa.Column("dataset_bytes", sa.BigInteger(), nullable=False),
        sa.Column("storage_key", sa.String(length=512), nullable=False),
        sa.Column("n_samples", sa.Integer(), nullable=False),
        sa.Column("n_classes", sa.Integer(), nullable=False),
        sa.Column("image_shape", sa.JSON(), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=True),
        sa.Column("progress_stage", sa.String(length=32), nullable=True),
        sa.Column("progress_done", sa.Integer(), nullable=False),
        sa.Column("progress_total", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("engine_version", sa.String(length=32), nullable=True),
        sa.Column("device", sa.String(length=64), nullable=True),
        sa.Column("n_flagged", sa.Integer(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audits", schema=None) as batch_op:
        batch_op.create_index("ix_audits_created_at", ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audits_dataset_sha256"), ["dataset_sha256"], unique=False
        )

    op.create_table(
        "audit_scores",
        sa.Column("audit_id", sa.Uuid(), nullable=False),
        sa.Column("scores", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["audit_id"], ["audits.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("audit_id"),
    )
    op.create_table(
        "flagged_samples",
        sa.Column("audit_id", sa.Uuid(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("label", sa.BigInteger(), nullable=False),
        sa.Column("voted_label", sa.BigInteger(), nullable=True),
        sa.Column("label_prob", sa.Float(), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["audit_id"], ["audits.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("audit_id", "index"),
    )
    with op.batch_alter_table("flagged_samples", schema=None) as batch_op:
        batch_op.create_index("ix_flagged_samples_ordinal", ["audit_id", "ordinal"], unique=True)
        batch_op.create_index("ix_flagged_samples_rank", ["audit_id", "rank"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("flagged_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_flagged_samples_rank")
        batch_op.drop_index("ix_flagged_samples_ordinal")

    op.drop_table("flagged_samples")
    op.drop_table("audit_scores")
    with op.batch_alter_table("audits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audits_dataset_sha256"))
        batch_op.drop_index("ix_audits_created_at")

    op.drop_table("audits")
