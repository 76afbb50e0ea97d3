"""dashboard: partial indexes of the items that need a person

Revision ID: 0008
Revises: 0007

Encrypted and unreadable documents (moved unconverted), review and broken conversions, renamed
files, links and special files that were not moved, and documents too large to convert are
finished for the pipeline but not done for the department: a person must look at each. The
dashboard counts them by user on every department page and pages through them as a queue; these
partial indexes hold only those items, so that costs what they number, not what the department
numbers. The predicate is core/ledger.py's NEEDS_A_PERSON, word for word (SQLite uses a
partial index only for a query that repeats its WHERE term).
"""
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

NEEDS_A_PERSON = ("(conversion IN ('encrypted', 'unreadable') OR fidelity_verdict IN ('review', 'broken') "
                  "OR renamed IS NOT NULL OR reason IN ('conversion_too_large', 'skipped_link', 'skipped_fifo', "
                  "'skipped_socket', 'skipped_device', 'skipped_special'))")


def upgrade() -> None:
    op.execute("CREATE INDEX ix_items_needs_person ON items (department, owner, state, reason, conversion, "
               f"fidelity_verdict, renamed) WHERE {NEEDS_A_PERSON}")
    op.execute(f"CREATE INDEX ix_items_needs_person_id ON items (department, id) WHERE {NEEDS_A_PERSON}")


def downgrade() -> None:
    op.execute("DROP INDEX ix_items_needs_person_id")
    op.execute("DROP INDEX ix_items_needs_person")
