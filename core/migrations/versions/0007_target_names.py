"""target names decided once: an item's path at the target and why it differs from the source's

Revision ID: 0007
Revises: 0006

NFC twins, case twins and converted-name clashes would make two files one at the target; each
file's target name is decided at discovery (sinks.twins) and kept, so that reruns never rename
or duplicate anything. Rows from before keep `target_path` empty: they land at their location.
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('target_path', sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column('renamed', sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_column('renamed')
        batch_op.drop_column('target_path')
