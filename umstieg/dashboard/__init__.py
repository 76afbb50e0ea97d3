"""The web dashboard: a face beside the command line, over the ledger and the report folders."""

from umstieg.dashboard.app import Site, create_app, is_loopback

__all__ = ["Site", "create_app", "is_loopback"]
