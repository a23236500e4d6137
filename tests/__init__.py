"""trial tests for twisted-keyx; run with ``python -W error -m twisted.trial tests``."""
