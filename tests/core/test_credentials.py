"""Credentials by reference: how references resolve, how they show, and every refusal names its field."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from shiftover import credentials
from shiftover.connect import dispose_engines, get_engine, redact
from shiftover.errors import CredentialError, SpecError
from shiftover.spec import parse_spec

PLANTED = "pl4nted-s3cret"


def spec_data(src: str, dst: str = "sqlite:///new.db") -> dict[str, object]:
    return {
        "name": "m",
        "source": {"url": src, "table": "orders"},
        "target": {"url": dst, "table": "orders"},
        "key": "id",
    }


def test_environment_references_resolve_whole_or_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SO_TEST_URL", f"postgresql://app:{PLANTED}@db/shop")
    monkeypatch.setenv("SO_TEST_PW", PLANTED)
    assert credentials.resolve("${SO_TEST_URL}") == f"postgresql://app:{PLANTED}@db/shop"
    assert credentials.resolve("mysql://app:${SO_TEST_PW}@db/shop") == f"mysql://app:{PLANTED}@db/shop"
    assert credentials.resolve("sqlite:///plain.db") == "sqlite:///plain.db"


def test_file_references_are_read_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "old-url"
    secret.write_text(f"  postgresql://app:{PLANTED}@db/shop\n")
    assert credentials.resolve(f"file:{secret}") == f"postgresql://app:{PLANTED}@db/shop"
    assert credentials.resolve(f"file://{secret}") == f"postgresql://app:{PLANTED}@db/shop"


def test_a_failed_reference_names_the_reference_never_a_value(tmp_path: Path) -> None:
    with pytest.raises(CredentialError) as err:
        credentials.resolve("postgresql://app:${SO_TEST_NEVER_SET}@db/shop")
    assert err.value.field == "${SO_TEST_NEVER_SET}"
    with pytest.raises(CredentialError, match="cannot read the secret file"):
        credentials.resolve(f"file:{tmp_path}/missing")


def test_block_references_need_the_flows_resolver() -> None:
    saved = dict(credentials._resolvers)
    try:
        credentials._resolvers["block"] = credentials._unregistered_block
        with pytest.raises(CredentialError, match="has not registered that resolver") as err:
            credentials.resolve("block:secret/orders-old-url")
        assert err.value.field == "block:secret/orders-old-url"
        credentials.register_resolver("block", lambda name: f"sqlite:///{name}.db")
        assert credentials.resolve("block:secret/x") == "sqlite:///secret/x.db"
    finally:
        credentials._resolvers.clear()
        credentials._resolvers.update(saved)


@pytest.mark.parametrize(
    ("shown", "expected"),
    [
        ("${SO_TEST_URL}", "${SO_TEST_URL}"),
        ("file:/run/secrets/old", "file:/run/secrets/old"),
        ("block:secret/old", "block:secret/old"),
        ("postgresql://app:${SO_TEST_PW}@db/shop", "postgresql://app:${SO_TEST_PW}@db/shop"),
        (f"postgresql://app:{PLANTED}@db/shop", "postgresql://app:***@db/shop"),
        (f"postgresql://app:{PLANTED}@db/${{SO_TEST_DB}}", "postgresql://app:***@db/%24%7BSO_TEST_DB%7D"),
        (f"postgresql://app@db/shop?password={PLANTED}", "postgresql://app@db/shop?password=%2A%2A%2A"),
    ],
)
def test_redact_shows_references_as_written_and_hides_passwords(shown: str, expected: str) -> None:
    assert redact(shown) == expected


def test_an_engine_is_made_from_the_resolved_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SO_TEST_URL", f"sqlite:///{tmp_path}/db.sqlite")
    try:
        engine = get_engine("${SO_TEST_URL}")
        assert engine.url.database == f"{tmp_path}/db.sqlite"
        assert get_engine("${SO_TEST_URL}") is engine  # cached under the reference
    finally:
        dispose_engines()


def test_an_engine_from_a_reference_asks_the_secret_store_once_for_its_first_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's first connections use the value ``get_engine`` resolved (a Secret block lookup
    is an API call); the store is asked again only once ``RESOLVE_EVERY_SECONDS`` have passed."""
    import sqlalchemy as sa

    from shiftover import connect

    asked: list[str] = []
    resolve = credentials.resolve

    def counted(reference: str) -> str:
        asked.append(reference)
        return resolve(reference)

    monkeypatch.setattr(credentials, "resolve", counted)
    monkeypatch.setenv("SO_TEST_URL", f"sqlite:///{tmp_path}/db.sqlite")
    try:
        engine = get_engine("${SO_TEST_URL}")
        for _ in range(3):
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT 1")).scalar() == 1
            engine.dispose()  # the next connection is a new one
        assert asked == ["${SO_TEST_URL}"]
        monkeypatch.setattr(connect, "RESOLVE_EVERY_SECONDS", 0.0)
        engine.connect().close()
        assert asked == ["${SO_TEST_URL}"] * 2
    finally:
        dispose_engines()


def test_a_reference_to_something_else_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SO_TEST_URL", f"not a url {PLANTED}")
    with pytest.raises(CredentialError) as err:
        get_engine("${SO_TEST_URL}")
    assert err.value.field == "${SO_TEST_URL}" and PLANTED not in str(err.value)


@pytest.mark.parametrize("side", ["source", "target"])
@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app:{PLANTED}@db/shop",
        f"mysql+pymysql://app:{PLANTED}${{SO_TEST_PW}}@db/shop",  # part inline, part reference
        f"postgresql://app@db/shop?password={PLANTED}",
    ],
)
def test_a_spec_with_an_inline_password_is_refused_naming_the_field(side: str, url: str) -> None:
    data = spec_data("sqlite:///old.db", "sqlite:///new.db")
    data[side] = {"url": url, "table": "orders"}
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert err.value.field == f"{side}.url"
    assert "password inline" in err.value.problem and "${NAME}" in err.value.problem
    assert "file:" in err.value.problem and "block:secret/" in err.value.problem
    assert PLANTED not in str(err.value)


@pytest.mark.parametrize(
    "url",
    [
        "${SO_TEST_URL}",
        "postgresql://app:${SO_TEST_PW}@db/shop",
        "postgresql://app@db/shop",
        "postgresql://app:@db/shop",
        "file:/run/secrets/old",
        "block:secret/old",
        "sqlite:///old.db",
    ],
)
def test_references_and_passwordless_urls_are_accepted(url: str) -> None:
    assert parse_spec(spec_data(url)).source.url == url


def test_the_same_reference_on_both_sides_is_the_same_place() -> None:
    data = spec_data("${SO_TEST_URL}", "${SO_TEST_URL}")
    with pytest.raises(SpecError, match="identical to source"):
        parse_spec(data)


def test_the_flow_edge_refuses_an_inline_control_url_naming_the_parameter() -> None:
    from shiftover.flows.credentials import admit_control_url

    with pytest.raises(CredentialError) as err:
        admit_control_url(f"postgresql://so:{PLANTED}@127.0.0.1/control")
    assert err.value.field == "control_url"
    assert "flow run's parameters" in err.value.problem and "${NAME}" in err.value.problem
    assert PLANTED not in str(err.value)
    admit_control_url("${SHIFTOVER_CONTROL_URL}")  # a reference passes (nothing resolved here)


def test_the_flow_edge_refuses_a_reference_inside_a_url_that_could_exfiltrate_a_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Anyone who can set a run's parameters could name their own server and any worker variable."""
    from shiftover.flows.credentials import admit_control_url

    monkeypatch.setenv("SO_TEST_WORKER_SECRET", PLANTED)
    with pytest.raises(CredentialError) as err:
        admit_control_url("postgresql://x:${SO_TEST_WORKER_SECRET}@attacker.example/db")
    assert err.value.field == "control_url" and "inside a flow parameter is refused" in err.value.problem
    assert PLANTED not in str(err.value)
    admit_control_url("${SO_TEST_WORKER_SECRET}")  # one whole reference: the worker's own URL


def test_the_cli_refuses_an_inline_control_url_before_any_flow_runs(tmp_path: Path) -> None:
    from shiftover.cli import app

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: m\nsource: {url: 'sqlite:///o.db', table: t}\ntarget: {url: 'sqlite:///n.db', table: t}\nkey: id\n"
    )
    for command in (["run", str(spec)], ["rollback", str(spec)], ["reconcile", str(spec)]):
        out = CliRunner().invoke(app, [*command, "--control-url", f"postgresql://so:{PLANTED}@127.0.0.1:1/control"])
        assert out.exit_code == 2, out.output
        assert "--control-url: holds a password inline" in out.output and "SHIFTOVER_CONTROL_URL" in out.output
        assert PLANTED not in out.output


def test_the_cli_hands_the_flow_its_environment_variable_by_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    from shiftover.cli import _flow_control_url

    inline = f"postgresql://so:{PLANTED}@127.0.0.1/control"
    monkeypatch.setenv("SHIFTOVER_CONTROL_URL", inline)
    assert _flow_control_url(inline) == "${SHIFTOVER_CONTROL_URL}"
    assert _flow_control_url("sqlite:///control.db") == "sqlite:///control.db"


@pytest.fixture
def mariadb_user(mariadb_database: Callable[[], str]) -> Iterator[tuple[str, Callable[[str], None]]]:
    """(the URL of a new MariaDB database, ``rotate(password)``) for a login ``so_rotated`` whose
    password the test sets; the login is dropped after."""
    import sqlalchemy as sa

    url = mariadb_database()
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")

    def rotate(password: str) -> None:
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE USER IF NOT EXISTS 'so_rotated'@'%' IDENTIFIED BY :p"), {"p": password})
            conn.execute(sa.text("ALTER USER 'so_rotated'@'%' IDENTIFIED BY :p"), {"p": password})
            conn.execute(sa.text(f"GRANT SELECT ON `{sa.make_url(url).database}`.* TO 'so_rotated'@'%'"))

    yield url, rotate
    with admin.connect() as conn:
        conn.execute(sa.text("DROP USER IF EXISTS 'so_rotated'@'%'"))
    admin.dispose()


def test_a_rotated_secret_reaches_new_connections_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mariadb_user: tuple[str, Callable[[str], None]]
) -> None:
    """The secret file is rewritten after the password changed on the server: the cached engine's next
    connection logs in with the new one (it used to keep the first, and every new connection failed);
    while the file is unreadable, the last password that resolved is used."""
    import sqlalchemy as sa

    from shiftover import connect

    monkeypatch.setattr(connect, "RESOLVE_EVERY_SECONDS", 0.0)
    url, rotate = mariadb_user
    server = make_url(url)
    secret = tmp_path / "orders-url"
    rotate("first-pw")
    secret.write_text(server.set(username="so_rotated", password="first-pw").render_as_string(False))
    engine = get_engine(f"file:{secret}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_user()")).scalar() == "so_rotated@%"

    rotate("second-pw")
    engine.dispose()  # no pooled connection left: the next one logs in again
    with pytest.raises(sa.exc.OperationalError, match="Access denied"):
        engine.connect().close()  # the file still says first-pw
    secret.write_text(server.set(username="so_rotated", password="second-pw").render_as_string(False))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_user()")).scalar() == "so_rotated@%"
    assert get_engine(f"file:{secret}") is engine

    secret.unlink()  # the secret store is down: the last value that resolved still connects
    engine.dispose()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    dispose_engines()
