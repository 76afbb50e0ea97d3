"""batch counts: each chunk records how many of its items ended in which state; items by batch

Revision ID: 0009
Revises: 0008

A run's progress (the command's progress bar every half second, the dashboard's run list) was
counted from the items of its batches, a scan of every item (items had no index by batch): 1.1 s
per look at a million items, most of a core through a long run. The counts each chunk already
makes are kept with its batch, and the items of the chunks still running are found by an index;
a run's progress is the sum.
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('counts', sa.JSON(), nullable=True))
    op.create_index('ix_items_batch', 'items', ['batch_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_items_batch', table_name='items')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('counts')
