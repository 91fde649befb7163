"""Fixtures of the runner's tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_local(request: pytest.FixtureRequest):
    """A local 2-CPU Ray for a module, whose workers get the test module by value.

    Ray workers cannot import ``tests/``, so the module's trial functions are pickled with
    their code. A module that needs other settings (one CPU) defines its own ``ray_local``.
    """
    from ablate.run import ray_session

    with ray_session(num_cpus=2):  # before ray is imported: it reads the loopback settings once
        from ray import cloudpickle  # Ray pickles with its own vendored copy

        cloudpickle.register_pickle_by_value(request.module)
        yield
