"""Department runs (assess, migrate and its delta pass, rerun, report) built on sources, converters,
sinks and reports: plain Python in migrate.py and steps.py, served as Prefect flows by prefect_flows.py."""
