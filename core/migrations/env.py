"""alembic environment: the ledger passes its open connection in `config.attributes`."""

from alembic import context

from core.ledger import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run ledger migrations through core.ledger.Ledger.migrate()")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
