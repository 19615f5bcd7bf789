"""managers: the registry of manager processes, and the owner of a session's transitional status

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-20 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

import ai.backend.manager.models.base

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "managers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=256), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("started_at", ai.backend.manager.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen", ai.backend.manager.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lock_key", sa.Integer(), nullable=False),
        sa.Column("leader", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_managers")),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("manager_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("manager_id")
    op.drop_table("managers")
