"""A storage password is never printed nor stored: literal or as ``${VAR}``, through validate, run,
show, report (every format), export and the dashboard, in every error (a closed port, an
unparsable URL, a wrong password), and in the database a real run on PostgreSQL writes."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest

from ablate.storage import close_storage, display_url, expand_url, open_storage, scrub_secrets
from tests.cli_helpers import run_cli

CANARY = "hunter2canary"
ROOT = Path(__file__).resolve().parents[2]
PG = "postgresql+psycopg" if importlib.util.find_spec("psycopg") else "postgresql"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def _study_file(folder: Path, storage: str) -> Path:
    text = (ROOT / "studies" / "window_size.yaml").read_text()
    text = text.replace("storage: sqlite:///runs/focal-window-size.db", f"storage: '{storage}'")
    assert storage in text
    path = folder / "study.yaml"
    path.write_text(text)
    return path


def _written(folder: Path) -> str:
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file()
                   and p.name != "study.yaml")


@pytest.mark.parametrize("url", [
    f"postgresql://u:{CANARY}@h/db", f"postgresql://u:{CANARY}@h:notaport/db", f"postgresql://u:hun@ter2{CANARY}@h/db",
    f"postgresql://u:{CANARY}?x@h/db", f"postgresql://u@h/db?password={CANARY}&sslmode=require",
    f"postgresql:/u:{CANARY}@h/db", f"mysql://a@b:{CANARY}@h/db", f"postgresql://u:ab{CANARY}${{X}}@h/db",
])
def test_display_url_masks_a_literal_password_in_any_form(url, monkeypatch):
    from sqlalchemy.engine import make_url

    monkeypatch.setenv("X", "zz")
    assert CANARY not in display_url(url)
    try:  # the password as the driver gets it (and may quote it back)
        password = make_url(expand_url(url)).password or CANARY
    except Exception:
        password = CANARY
    for text in (f"could not connect to {url}", f"could not connect to {expand_url(url)}: password {password} refused"):
        assert CANARY not in scrub_secrets(text, url), text


def test_references_stay_until_connecting(monkeypatch):
    monkeypatch.setenv("ABLATE_PW", "p@ss/w:rd{x}")
    url = "postgresql://u:${ABLATE_PW}@127.0.0.1/db"
    assert display_url(url) == url  # shown and stored as written
    from sqlalchemy.engine import make_url

    assert make_url(expand_url(url)).password == "p@ss/w:rd{x}"  # quoted into the URL, read back whole
    monkeypatch.delenv("ABLATE_PW")
    with pytest.raises(Exception, match="ABLATE_PW is not set"):
        expand_url(url)


def test_the_stored_spec_keeps_the_reference_and_masks_a_literal(tmp_path):
    from ablate.run.optuna_study import stored_spec
    from ablate.study import load_study

    for storage, stored in ((f"postgresql://u:{CANARY}@h/db", "postgresql://u:***@h/db"),
                            ("postgresql://u:${ABLATE_PW}@h/db", "postgresql://u:${ABLATE_PW}@h/db")):
        study = load_study(_study_file(tmp_path, storage), check=False)
        assert study.storage == storage  # the reference is expanded only when connecting
        assert stored_spec(study)["storage"] == stored and CANARY not in json.dumps(stored_spec(study))


@pytest.mark.parametrize("form", ["literal", "env", "unparsable"])
def test_no_command_prints_the_password(tmp_path, capsys, monkeypatch, form):
    """A server that is not there (a closed port) and an unparsable URL: every command fails or
    succeeds in one line, and the password is in none of them nor in any file written."""
    port = _closed_port()
    monkeypatch.setenv("ABLATE_TEST_PW", CANARY)
    url = {"literal": f"{PG}://ablate:{CANARY}@127.0.0.1:{port}/db",
           "env": f"{PG}://ablate:${{ABLATE_TEST_PW}}@127.0.0.1:{port}/db",
           "unparsable": f"{PG}://ablate:{CANARY}@127.0.0.1:notaport/db"}[form]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    study = _study_file(tmp_path, url)
    commands = [["validate", str(study)], ["run", str(study), "--dry-run"], ["run", str(study), "-q"],
                ["run", str(_study_file(out_dir, "sqlite:///x.db")), "--storage", url, "--dry-run"],
                ["show", str(study)], ["show", url], ["show", url, "--format", "json"],
                ["show", str(study), "--format", "csv"], ["show", str(out_dir / "none.db"), "--storage", url],
                *[["report", url, "--format", f] for f in ("md", "latex", "csv", "html")],
                ["report", str(study), "-o", str(out_dir / "r.html")],
                ["export", url, "--trial", "0", "-o", str(out_dir / "m.yaml")],
                ["dashboard", url], ["dashboard", str(study)]]
    for args in commands:
        code, out, err = run_cli(capsys, *args)
        assert CANARY not in out + err, (args, out, err)
        assert "Traceback" not in err, (args, err)
        if args[0] in ("show", "report", "export", "dashboard") or args[1:] == [str(study), "-q"]:
            assert code == 2 and len(err.strip().splitlines()) == 1, (args, err)
        if form != "unparsable" and args[0] == "validate":
            assert code == 0 and ("${ABLATE_TEST_PW}" in out if form == "env" else "***" in out), out
    assert CANARY not in _written(tmp_path)


def test_an_unset_variable_is_one_line_naming_the_file_the_key_and_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ABLATE_UNSET_PW", raising=False)
    study = _study_file(tmp_path, f"{PG}://ablate:${{ABLATE_UNSET_PW}}@127.0.0.1:{_closed_port()}/db")
    for args in (["validate", str(study)], ["run", str(study)], ["run", str(study), "--dry-run"],
                 ["show", str(study)], ["report", str(study)], ["dashboard", str(study)]):
        code, out, err = run_cli(capsys, *args)
        line = err.strip()
        assert code == 2 and len(line.splitlines()) == 1, (args, err)
        assert str(study) in line and "storage" in line and "ABLATE_UNSET_PW" in line, (args, line)
    code, out, err = run_cli(capsys, "show", str(study), "--storage", "sqlite:///${ABLATE_UNSET_PW}/x.db")
    assert code == 2 and "--storage" in err and "ABLATE_UNSET_PW" in err
    assert list(tmp_path.iterdir()) == [study]


# --------------------------------------------------------------------------- a real PostgreSQL


@pytest.fixture
def short_ray_tmp(monkeypatch):
    path = tempfile.mkdtemp(prefix="abl-", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_postgres_password_is_never_printed_nor_stored(postgres_server, postgres_url, short_ray_tmp, tmp_path,
                                                       capsys, monkeypatch):
    import optuna
    import sqlalchemy
    from ray import cloudpickle

    import tests.run.drivers as drivers
    from ablate.run import run_study
    from ablate.study import study_from_dict

    cloudpickle.register_pickle_by_value(sys.modules[drivers.__name__])
    password = postgres_server.password
    monkeypatch.setenv("ABLATE_TEST_PGPASSWORD", password)
    template = postgres_url.replace(f":{password}@", ":${ABLATE_TEST_PGPASSWORD}@")
    assert password in postgres_url and password not in template
    spec = {"name": "secret-smoke", "task": "classify",
            "fixed": {"attention": "softmax", "depths": [1, 1], "embed_dim": 16, "num_heads": 2},
            "grid": {"window_size": [2, 4]},
            "objectives": [{"name": "top1", "direction": "maximize"}, {"name": "gflops", "direction": "minimize"}],
            "data": {"name": "digits", "image_size": 32}, "train": {"epochs": 1, "batch_size": 64},
            "resources": {"cpu": 1, "gpu": 0}, "storage": template}
    study = study_from_dict(spec, check=False)
    summary = run_study(study, trial_fn=drivers.synthetic_trial, progress=False, num_cpus=1)
    assert len(summary.new_trials) == 2
    capsys.readouterr()

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for url in (postgres_url, template):
        for args in (["show", url], ["show", url, "--format", "json"], ["show", url, "--format", "csv"],
                     *[["report", url, "--format", f] for f in ("md", "latex", "csv", "html")],
                     ["report", url, "-o", str(out_dir / "r.html")], ["report", url, "-o", str(out_dir / "r.md")]):
            code, out, err = run_cli(capsys, *args)
            assert code == 0, (args, err)
            assert password not in out + err, args
        code, out, err = run_cli(capsys, "export", url, "--trial", "0", "-o", str(out_dir / "m.yaml"))
        assert code == 2 and password not in out + err and password not in err
    assert json.loads(run_cli(capsys, "show", template, "--format", "json")[1])["storage"] == display_url(template)
    assert password not in _written(out_dir)

    # The dashboard's pages, through its callbacks.
    from ablate.dashboards import Sources, create_app, resolve_targets

    for url in (postgres_url, template):
        sources = Sources(resolve_targets([url]))
        refs, errors = sources.studies()
        assert len(refs) == 1 and not errors
        client = create_app(sources).server.test_client()
        pages = []
        for path in ("/", f"/study/{refs[0].key}/pareto", f"/study/{refs[0].key}/table", f"/study/{refs[0].key}/trial/0"):
            body = {"output": "page.children", "outputs": {"id": "page", "property": "children"},
                    "inputs": [{"id": "url", "property": "pathname", "value": path},
                               {"id": "version", "property": "data", "value": None}],
                    "state": [], "changedPropIds": ["url.pathname"]}
            res = client.post("/_dash-update-component", json=body)
            pages.append(res.get_data(as_text=True))
        sources.close()
        assert "secret-smoke" in pages[0] and all(password not in p for p in pages)
        assert refs[0].key not in password

    # Nothing written holds it: every table of the database, as text.
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            dump = [str(row) for table in sqlalchemy.inspect(conn).get_table_names()
                    for row in conn.execute(sqlalchemy.text(f'SELECT * FROM "{table}"'))]
    finally:
        engine.dispose()
    assert dump and not [row for row in dump if password in row]
    stored = optuna.load_study(study_name="secret-smoke", storage=postgres_url).user_attrs["spec"]
    assert stored["storage"] == template

    # A reader's transactions are read-only at the server.
    storage = open_storage(template, create=False)
    try:
        study_id = storage.get_study_id_from_name("secret-smoke")
        with pytest.raises(Exception) as refused:
            storage.set_study_user_attr(study_id, "written", True)
        chain, err = [], refused.value
        while err is not None:
            chain.append(str(err))
            err = err.__cause__ or err.__context__
        assert any("read-only transaction" in text for text in chain), chain
    finally:
        close_storage(storage)
    assert "written" not in optuna.load_study(study_name="secret-smoke", storage=postgres_url).user_attrs

    # A wrong password: one line, neither password in it.
    wrong = postgres_url.replace(f":{password}@", f":{CANARY}@")
    code, out, err = run_cli(capsys, "show", wrong)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert CANARY not in out + err and password not in out + err
