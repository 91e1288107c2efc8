"""Tenants and their API keys; every audit belongs to a tenant (existing ones to "default"), and
records when its task was dispatched and when this attempt was claimed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 23:40:02.755436
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    tenants = op.create_table(
        "tenants",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("max_active_audits", sa.Integer(), nullable=True),
        sa.Column("max_stored_bytes", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # The tenant of every audit made without authentication, and of those made before it existed.
    op.execute(tenants.insert().values(name="default", created_at=sa.func.current_timestamp()))
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant"], ["tenants.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audits", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "tenant", sa.String(length=64), server_default=sa.text("'default'"), nullable=False
            )
        )
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_index("ix_audits_created_at")
        batch_op.drop_index("ix_audits_reuse")
        batch_op.create_index(
            "ix_audits_reuse", ["tenant", "dataset_sha256", "preset", "seed"], unique=False
        )
        batch_op.create_index("ix_audits_status", ["status"], unique=False)
        batch_op.create_index("ix_audits_tenant_created_at", ["tenant", "created_at"], unique=False)
        batch_op.create_foreign_key("fk_audits_tenant", "tenants", ["tenant"], ["name"])


def downgrade() -> None:
    with op.batch_alter_table("audits", schema=None) as batch_op:
        batch_op.drop_constraint("fk_audits_tenant", type_="foreignkey")
        batch_op.drop_index("ix_audits_tenant_created_at")
        batch_op.drop_index("ix_audits_status")
        batch_op.drop_index("ix_audits_reuse")
        batch_op.create_index("ix_audits_reuse", ["dataset_sha256", "preset", "seed"], unique=False)
        batch_op.create_index("ix_audits_created_at", ["created_at"], unique=False)
        batch_op.drop_column("claimed_at")
        batch_op.drop_column("dispatched_at")
        batch_op.drop_column("tenant")

    op.drop_table("api_keys")
    op.drop_table("tenants")
