"""dashboard indexes: items by (department, id), and by file format for the fidelity histogram

Revision ID: 0005
Revises: 0004

The department page groups the measured documents by format (the extension of `location`),
verdict and score. SQLite indexes exactly the expression reports/dashboard.py's `file_ext`
compiles; PostgreSQL cannot read an expression's value from an index (it would compute the
extension of every measured document on each page), so it keeps the extension in a generated
column `file_format` (not in the ORM model: the database fills it), cut to 20 characters to keep
index entries small. (department, id) serves the latest measured documents and the item pages.
"""
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_TAIL = "substr(location, length(rtrim(location, replace(location, '.', ''))) + 1)"
_SQLITE_EXT = f"(CASE WHEN instr(location, '.') = 0 OR instr({_TAIL}, '/') > 0 THEN '' ELSE lower({_TAIL}) END)"
_PG_TAIL = "reverse(split_part(reverse(location), '.', 1))"
_PG_FORMAT = (f"left(CASE WHEN strpos(location, '.') = 0 OR strpos({_PG_TAIL}, '/') > 0 THEN '' "
              f"ELSE lower({_PG_TAIL}) END, 20)")


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.create_index('ix_items_department_id', ['department', 'id'], unique=False)
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(f"CREATE INDEX ix_items_department_format ON items (department, {_SQLITE_EXT}, "
                   f"fidelity_verdict, fidelity_score)")
    elif dialect == "postgresql":
        op.execute(f"ALTER TABLE items ADD COLUMN file_format text GENERATED ALWAYS AS ({_PG_FORMAT}) STORED")
        op.execute("CREATE INDEX ix_items_department_format ON items "
                   "(department, file_format, fidelity_verdict, fidelity_score)")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        op.execute("DROP INDEX ix_items_department_format")
    if dialect == "postgresql":
        op.execute("ALTER TABLE items DROP COLUMN file_format")
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_department_id')
