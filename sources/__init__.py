"""One module per source system: fileshare (folders), smb, s3, onedrive (OneDrive, SharePoint),
graph and m365 (Microsoft 365 mail, calendars, contacts), ews (Exchange), imap, export (PST, MBOX,
EML, MSG, ICS, VCF files) with outlook (PST/MSG reading); mstime and directory are shared helpers."""
