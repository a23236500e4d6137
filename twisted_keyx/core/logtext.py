"""Log lines whose text is made before twisted.logger sees it.

twisted.logger formats an event's ``log_format`` with its fields in pure
Python (a field lookup, a conversion and a copy per ``{name}``), for every
observer that writes text.  For the daemon's most frequent lines (one per
handshake or login) we make the text ourselves with an f-string and hand
over a format that formats to itself, the fields kept in the event for
observers that read them (JSON, tests): the same line, about a fifth
cheaper (docs/benchmarks.rst, "instructions per handshake").
"""


def literal(text):
    """``text`` as a twisted.logger format that formats to itself."""
    return text.replace("{", "{{").replace("}", "}}")
