"""The web dashboard (Plotly Dash) over any ablate study database: ``ablate dashboard``.

It reads through :mod:`ablate.results` only and never writes; every asset is served locally.
"""

from ablate.dashboards.app import create_app, make_server
from ablate.dashboards.sources import Sources, StudyRef, resolve_targets

__all__ = ["create_app", "make_server", "Sources", "StudyRef", "resolve_targets"]
