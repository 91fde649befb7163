"""Test and benchmark helpers: generated study databases that readers cannot tell from real ones."""

from ablate.testing.fake_study import write_fake_study

__all__ = ["write_fake_study"]
