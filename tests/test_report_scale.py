"""The run and status reports count in the database: what they must keep in step with to stay cheap."""


def test_needs_a_person_predicate_is_the_dashboards_word_for_word():
    # SQLite reads the partial indexes of migration 0008 only for a query that repeats their
    # predicate exactly: the reports' copy must stay the dashboard's (and the migration's)
    from reports.dashboard import NEEDS_A_PERSON as dashboard
    from reports.migration import NEEDS_A_PERSON as reports
    assert reports == dashboard
