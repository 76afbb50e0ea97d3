"""One module per target system: webdav (Nextcloud, OX Drive), groupware (CalDAV, CardDAV), imap,
s3 and localdir; http, names, twins and mailfolders are what several of them share."""
