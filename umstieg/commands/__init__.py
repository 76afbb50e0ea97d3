"""One module per command (or group of related commands) of the `umstieg` command line."""
