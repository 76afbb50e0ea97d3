"""annotations (accepted as it is / needs manual work, with a comment) and indexes for the dashboard

Revision ID: 0004
Revises: 0003

The dashboard aggregates a department of hundreds of thousands of items on every page: the
covering index lets SQLite and PostgreSQL count items and bytes by user, kind and state from the
index alone, and the fidelity index serves the verdict distribution and score histogram.
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('annotations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('department', sa.String(length=200), nullable=False),
    sa.Column('verdict', sa.String(length=30), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('author', sa.String(length=200), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('item_id', name='uq_annotation_item')
    )
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.create_index('ix_annotations_department', ['department'], unique=False)
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.create_index('ix_items_department_progress', ['department', 'owner', 'kind', 'state', 'size'],
                              unique=False)
        batch_op.create_index('ix_items_department_fidelity', ['department', 'fidelity_verdict', 'fidelity_score'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_department_fidelity')
        batch_op.drop_index('ix_items_department_progress')
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.drop_index('ix_annotations_department')
    op.drop_table('annotations')
