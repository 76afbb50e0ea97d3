"""Prefect flows (assess, migrate, rerun, delta) built on sources, converters, sinks and reports."""
