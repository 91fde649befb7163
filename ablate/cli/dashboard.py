"""`ablate dashboard`: the web dashboard over one or more storages (read-only)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ablate.cli.common import app
from ablate.errors import ConfigError


@app.command()
def dashboard(
    targets: Optional[list[str]] = typer.Argument(None, help="Study YAMLs, .db files, folders of .db files or "
                                                             "storage URLs (default: runs/)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8050, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    refresh: float = typer.Option(5.0, "--refresh", min=0.5, help="Seconds between checks for new results."),
) -> None:
    """Serve the web dashboard (Pareto plots, trials, ablation tables) over study databases; reads only."""
    from ablate.errors import StorageError

    targets = list(targets or [])
    if not targets:
        if not Path("runs").is_dir():
            raise ConfigError("no study given and no runs/ folder here: name a study file, a .db file, a folder "
                              "or a storage URL")
        targets = ["runs"]
    from ablate.dashboards import Sources, create_app, make_server, resolve_targets

    sources = Sources(resolve_targets(targets))
    refs, errors = sources.studies()
    for url, err in errors:
        if len(sources.targets) == 1 and not isinstance(sources.targets[0], Path):
            raise StorageError(err)  # the only thing asked for cannot be read
        typer.echo(f"warning: {err}", err=True)
    try:
        for ref in refs:  # read every study once now, so that the first page is quick
            sources.read(ref)
    except BaseException:
        sources.close()
        raise
    try:
        server = make_server(create_app(sources, refresh_s=refresh), host, port)
    except OSError as err:
        sources.close()
        raise ConfigError(f"--port {port}: cannot listen on {host}:{port} ({err.strerror or err}); "
                          f"pick another with --port") from None
    shown = f"[{host}]" if ":" in host else host  # the bound address: "localhost" may resolve to ::1 first
    where = f"http://{shown}:{server.server_port}/"
    typer.echo(f"ablate dashboard: {len(refs)} stud{'y' if len(refs) == 1 else 'ies'} in "
               f"{len(sources.storages())} storage(s), serving {where}  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        server.server_close()
        sources.close()  # a SQLite folder is left as it was found

