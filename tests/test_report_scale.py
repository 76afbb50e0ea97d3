"""The run and status reports count in the database: what they must keep in step with to stay cheap."""


def test_needs_a_person_predicate_is_the_index_migrations_word_for_word():
    # SQLite reads the partial indexes of migration 0008 only for a query that repeats their
    # predicate exactly: the one the dashboard and the reports add (core.ledger) must stay the
    # migration's, which keeps its own frozen copy as migrations do
    import importlib.util

    from core.ledger import MIGRATIONS, NEEDS_A_PERSON
    path = MIGRATIONS / "versions" / "0008_needs_a_person_index.py"
    spec = importlib.util.spec_from_file_location("migration_0008", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert migration.NEEDS_A_PERSON == NEEDS_A_PERSON
