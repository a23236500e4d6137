"""trial tests for twisted-keyx; run with ``python -W error -m twisted.trial tests``.

Hypothesis profiles are registered here, before any test module loads:
``ci`` (the default: 1,500 examples per property test; the four take about
40 s together on two cores, see docs/benchmarks.rst) and ``long`` (50,000
each, for a soak: ``KEYX_HYPOTHESIS_PROFILE=long python -W error -m
twisted.trial tests``).
"""

import os

from hypothesis import HealthCheck, settings

_common = dict(
    # A DH key load costs about a millisecond and some examples load several:
    # wall-clock deadlines would only make the run flaky on a busy machine.
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("ci", max_examples=1500, **_common)
settings.register_profile("long", max_examples=50000, **_common)
settings.load_profile(os.environ.get("KEYX_HYPOTHESIS_PROFILE", "ci"))

