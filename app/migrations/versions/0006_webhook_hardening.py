"""Webhooks: a secret per tenant, a delivery state per audit, and no peer answers kept.

Every tenant gets a new random secret (the shared WEBHOOK_SECRET is gone): show one with
``dataset-audit tenants set NAME --rotate-webhook-secret``. An ended audit's delivery counts as
delivered when an attempt was, as failed otherwise, so retries under way when this runs stop.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 10:00:00.000000
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

tenants = sa.table("tenants", sa.column("name", sa.String), sa.column("webhook_secret", sa.String))
audits = sa.table(
    "audits",
    sa.column("id", sa.Uuid),
    sa.column("callback_url", sa.String),
    sa.column("status", sa.String),
    sa.column("webhook_state", sa.String),
)
deliveries = sa.table(
    "webhook_deliveries", sa.column("audit_id", sa.Uuid), sa.column("delivered", sa.Boolean)
)


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("webhook_secret", sa.String(length=64), nullable=True))
    connection = op.get_bind()
    for (name,) in connection.execute(sa.select(tenants.c.name)).all():
        secret = "whsec_" + secrets.token_urlsafe(32)  # app.webhooks.new_secret, frozen here
        connection.execute(
            tenants.update().where(tenants.c.name == name).values(webhook_secret=secret)
        )
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.alter_column("webhook_secret", existing_type=sa.String(length=64), nullable=False)

    with op.batch_alter_table("audits", schema=None) as batch_op:
        batch_op.add_column(sa.Column("webhook_state", sa.String(length=16), nullable=True))
        batch_op.create_index(
            "ix_audits_tenant_webhook_state", ["tenant", "webhook_state"], unique=False
        )
    ended = audits.c.callback_url.is_not(None) & audits.c.status.in_(
        ["succeeded", "failed", "cancelled"]
    )
    delivered = sa.exists().where(deliveries.c.audit_id == audits.c.id, deliveries.c.delivered)
    connection.execute(
        audits.update()
        .where(ended)
        .values(webhook_state=sa.case((delivered, "delivered"), else_="failed"))
    )

    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_column("error")
        batch_op.drop_column("status_code")


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_code", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))
    with op.batch_alter_table("audits", schema=None) as batch_op:
        batch_op.drop_index("ix_audits_tenant_webhook_state")
        batch_op.drop_column("webhook_state")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("webhook_secret")
