"""The kernel: items, the ledger, the department model, outcomes, the error taxonomy and settings.

core imports nothing from the rest of umstieg; everything else may import core. Protocol clients
(IMAP, HTTP, S3, iCalendar/vCard) live beside it in clients/.
"""
