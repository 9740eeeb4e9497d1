"""Unit tests: property tests must not fail because a busy machine ran an example slowly."""

from hypothesis import settings

settings.register_profile("zrelay", deadline=None)
settings.load_profile("zrelay")
