"""run heartbeat: a running run says every minute that it is alive

Revision ID: 0006
Revises: 0005

A run whose process is on another host cannot be probed by pid; a heartbeat older than a few
minutes means it was cut off, so the department is free to run again.
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('heartbeat', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('heartbeat')
