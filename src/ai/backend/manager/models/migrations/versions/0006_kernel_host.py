"""kernel host: where a kernel's service ports are published

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kernels", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kernel_host", sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("kernels", schema=None) as batch_op:
        batch_op.drop_column("kernel_host")
