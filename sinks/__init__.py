"""One module per target protocol or system (webdav, caldav, carddav, imap, localdir, s3)."""
