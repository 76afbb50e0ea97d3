"""Protocol clients that sources and sinks share: IMAP, PIM formats (iCalendar, vCard), S3, HTTP.

Sources and sinks never import each other, yet an IMAP source and an IMAP target speak the same
protocol, and a Nextcloud target and a Graph source the same HTTP. What both sides need lives here,
below them: clients import core and nothing else of umstieg, and core imports no client, so core
holds only the kernel (items, ledger, department, outcomes, errors, settings).
"""
