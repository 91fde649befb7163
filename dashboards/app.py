"""The Plotly Dash app behind ``ablate dashboard``: routing, refresh and the page callbacks.

Every asset (Dash's own scripts, plotly.js, the stylesheet in ``assets/``) is served by
this process; nothing is fetched from a CDN, so the dashboard works with no network. It
only reads: a poll every few seconds asks each visible study for its version (cheap,
thanks to :class:`~ablate.results.StudyReader`) and re-draws only when it changed.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from pathlib import Path
from typing import Any

import dash
from dash import Input, Output, State, dcc, html, no_update

from ablate.errors import AblateError
from ablate.storage import display_url
from ablate.results.figures import (config_figure, hypervolume_figure, importance_figure, importance_note,
                                    parallel_figure)

from ablate.dashboards import live, pages
from ablate.dashboards.sources import Sources, StudyRef

__all__ = ["create_app", "make_server"]

_STUDY_PATH = re.compile(r"^/study/(?P<key>[0-9a-f]+)/(?P<page>pareto|curves|trials|table|analysis|trial/(?P<number>\d+))/?$")


def _parse(pathname: str | None) -> tuple[str, str | None, int | None]:
    """(page, study key, trial number) of a dashboard path; page "studies" or "missing" otherwise."""
    if not pathname or pathname == "/":
        return "studies", None, None
    m = _STUDY_PATH.match(pathname)
    if m is None:
        return "missing", None, None
    number = m.group("number")
    return ("trial" if number else m.group("page")), m.group("key"), int(number) if number else None


def _guard(n_outputs: int = 1, notice_at: int = 0):
    """Run a callback; an error becomes a notice in output ``notice_at``, never a browser traceback."""
    def decorate(fn):
        def wrapped(*args: Any) -> Any:
            try:
                return fn(*args)
            except AblateError as err:
                return _error_output(n_outputs, notice_at, str(err))
            except dash.exceptions.PreventUpdate:
                raise
            except Exception as err:  # a bug: log it, keep the page alive
                traceback.print_exc(file=sys.stderr)
                return _error_output(n_outputs, notice_at,
                                     f"internal error ({type(err).__name__}: {err}); see the server's log")
        wrapped.__name__ = fn.__name__
        return wrapped
    return decorate


def _error_output(n_outputs: int, notice_at: int, text: str) -> Any:
    notice = pages.message(text)
    if n_outputs == 1:
        return notice
    out: list[Any] = [no_update] * n_outputs
    out[notice_at] = notice
    return tuple(out)


def create_app(sources: Sources, *, refresh_s: float = 5.0) -> dash.Dash:
    """The dashboard over ``sources``; serve ``app.server`` (a Flask app) with any WSGI server."""
    app = dash.Dash(__name__, title="ablate dashboard", update_title=None, serve_locally=True,
                    assets_folder=str(Path(__file__).with_name("assets")), suppress_callback_exceptions=True,
                    external_scripts=[], external_stylesheets=[])
    # No dev tools, and so no version check against plotly's servers.
    app.enable_dev_tools(debug=False, dev_tools_ui=False, dev_tools_props_check=False,
                         dev_tools_disable_version_check=True, dev_tools_hot_reload=False)
    app.layout = html.Div([
        dcc.Location(id="url", refresh=False),
        dcc.Store(id="version"),
        dcc.Interval(id="tick", interval=int(refresh_s * 1000)),
        html.Header([html.A("ablate", href="/", className="brand"), html.Span(" dashboard", className="muted")]),
        html.Main(id="page"),
    ])

    def ref_of(key: str | None) -> StudyRef:
        ref = sources.ref(key) if key else None
        if ref is None:
            raise AblateError("this study is not in the dashboard's storages (any more); go back to the studies page")
        return ref

    def studies_version() -> str:
        refs, errors = sources.studies()
        return "|".join([f"{r.key}:{sources.version(r)}" for r in refs] + [u for u, _ in errors])

    @app.callback(Output("version", "data"), Input("tick", "n_intervals"), State("url", "pathname"),
                  State("version", "data"))
    def poll(_: Any, pathname: str | None, seen: Any) -> Any:
        try:
            page, key, _n = _parse(pathname)
            if page == "studies":
                now: Any = studies_version()
            elif page == "missing":
                return no_update
            else:
                now = f"{key}:{sources.version(ref_of(key))}"
        except AblateError:
            return no_update
        return no_update if now == seen else now

    @app.callback(Output("page", "children"), Input("url", "pathname"), Input("version", "data"))
    @_guard()
    def route(pathname: str | None, _version: Any) -> Any:
        page, key, number = _parse(pathname)
        by_poll = dash.ctx.triggered_id == "version"
        if by_poll and page in ("pareto", "curves", "trials", "analysis", "missing"):
            return no_update  # these pages re-draw their plots (or rows) themselves and keep their controls
        if page == "studies":
            refs, errors = sources.studies()
            rows = []
            for ref in refs:
                try:
                    rows.append(pages.study_summary(ref, sources.read(ref)))
                except AblateError as err:
                    errors.append((f"{display_url(ref.url)} / {ref.name}", str(err)))
            return pages.studies_page(rows, errors)
        if page == "missing":
            return html.Div([pages.nav(None, None, ""), pages.message(f"no such page: {pathname}")])
        ref = ref_of(key)
        results = sources.read(ref)
        if page == "trial":
            return pages.trial_page(ref, results, number)
        if page == "table":
            return pages.table_page(ref, results)
        if page == "trials":
            return live.trials_page(ref, results)
        if page == "curves":
            return live.curves_controls(ref, results)
        if results.trials.empty and page == "pareto":
            return html.Div([pages.nav(ref, results, page),
                             pages.message(f"study {ref.name!r} has no trials yet; this page refreshes by itself.",
                                           kind="info"),
                             pages.pareto_controls(ref, results)])
        return pages.pareto_controls(ref, results) if page == "pareto" else pages.analysis_controls(ref, results)

    def pareto(_version: Any, states: list[str] | None, x: str | None, log: list[str] | None,
               pathname: str | None) -> Any:
        _page, key, _n = _parse(pathname)
        ref = ref_of(key)
        return pages.pareto_view(ref, sources.read(ref), states or [], x, log or [])

    app.callback(Output("pareto-graph", "figure"), Output("pareto-summary", "children"),
                 Input("version", "data"), Input("pareto-states", "value"), Input("pareto-x", "value"),
                 Input("pareto-log", "value"), State("url", "pathname"))(_guard(2, notice_at=1)(pareto))

    def curves(_version: Any, metric: str | None, states: list[str] | None, log: list[str] | None,
               pathname: str | None) -> Any:
        _page, key, _n = _parse(pathname)
        return live.curves_view(sources.read(ref_of(key)), metric, states or [], log or [])

    app.callback(Output("curves-graph", "figure"), Output("curves-summary", "children"),
                 Input("version", "data"), Input("curves-metric", "value"), Input("curves-states", "value"),
                 Input("curves-log", "value"), State("url", "pathname"))(_guard(2, notice_at=1)(curves))

    @app.callback(Output("trials-table", "data"), Input("version", "data"), State("url", "pathname"),
                  prevent_initial_call=True)
    @_guard()
    def trial_rows(_version: Any, pathname: str | None) -> Any:
        # Only the rows change: the table keeps its filter, sort and page.
        _page, key, _n = _parse(pathname)
        ref = ref_of(key)
        return live.trials_rows(ref, sources.read(ref))[0]

    @app.callback(Output("url", "pathname"), Input("pareto-graph", "clickData"), State("url", "pathname"),
                  prevent_initial_call=True)
    def open_trial(click: dict | None, pathname: str | None) -> Any:
        points = (click or {}).get("points") or []
        if not points or points[0].get("customdata") is None:
            return no_update
        _page, key, _n = _parse(pathname)
        custom = points[0]["customdata"]
        number = int(custom[0] if isinstance(custom, list) else custom)
        return f"/study/{key}/trial/{number}"

    # A click on a curve opens its trial too (the same answer, another graph).
    app.callback(Output("url", "pathname", allow_duplicate=True), Input("curves-graph", "clickData"),
                 State("url", "pathname"), prevent_initial_call=True)(open_trial)

    def analysis(_version: Any, objective: str | None, pathname: str | None) -> Any:
        _page, key, _n = _parse(pathname)
        ref = ref_of(key)
        results = sources.read(ref)
        objective = objective or results.objectives[0]["name"]
        note = importance_note(results)
        if note is None:
            try:
                values, method = sources.importances(ref, objective)
                importance = importance_figure(values, objective, method)
            except AblateError as err:
                note = str(err)
        if note is not None:
            importance = importance_figure({}, objective, "", note=note)
        return (parallel_figure(results, objective), config_figure(results, objective), note or "", importance,
                hypervolume_figure(results))

    app.callback(Output("analysis-parallel", "figure"), Output("analysis-configs", "figure"),
                 Output("analysis-importance-note", "children"),
                 Output("analysis-importance", "figure"), Output("analysis-hypervolume", "figure"),
                 Input("version", "data"), Input("analysis-objective", "value"),
                 State("url", "pathname"))(_guard(5, notice_at=2)(analysis))
    return app


def make_server(app: dash.Dash, host: str = "127.0.0.1", port: int = 8050):
    """A threaded WSGI server for the app (``serve_forever()`` to run, ``shutdown()`` to stop).

    Raises:
        OSError: the address is in use or cannot be bound.
    """
    import socket

    from werkzeug.serving import make_server as _make

    # werkzeug answers a busy port with a message and sys.exit(1): find out first.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    try:
        return _make(host, port, app.server, threaded=True)
    except SystemExit:
        raise OSError(f"cannot listen on {host}:{port}") from None
