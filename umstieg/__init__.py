"""umstieg: move a public administration from Microsoft to open source, and prove nothing was lost.

This package holds the faces (the command line and the dashboard); the work is done in core/,
clients/, converters/, sources/, sinks/, reports/ and flows/.
"""

__version__ = "0.1.0"
