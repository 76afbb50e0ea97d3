"""One module per source system (ews, graph, imap, pst, mailfiles, fileshare, s3, onedrive)."""
