"""Alembic migrations build exactly the schema of ``store.tables`` on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, Index, Integer, MetaData, inspect

from phiguard.store import migrate
from phiguard.store.engine import has_schema, make_engine
from phiguard.store.tables import metadata


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db' / 'phiguard.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    eng = make_engine(url)
    yield eng
    eng.dispose()


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def _downgrade_to_base(engine: Engine) -> None:
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(migrate.MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")


def test_upgrade_builds_exactly_the_declared_tables(engine: Engine) -> None:
    assert not has_schema(engine)
    assert migrate.current_revision(engine) is None

    migrate.upgrade(engine)

    assert _differences(engine) == []
    insp = inspect(engine)
    assert set(insp.get_table_names()) == set(metadata.tables) | {"alembic_version"}
    # Autogenerate does not compare primary keys: check them (and index columns) here.
    for table in metadata.sorted_tables:
        pk = insp.get_pk_constraint(table.name)["constrained_columns"]
        assert pk == [c.name for c in table.primary_key.columns], table.name
        indexes = {i["name"]: i["column_names"] for i in insp.get_indexes(table.name)}
        declared = {i.name: [c.name for c in i.columns] for i in table.indexes}
        assert indexes == declared, table.name
    assert migrate.is_current(engine)
    assert migrate.current_revision(engine) == migrate.head_revision(engine)


def test_upgrade_is_idempotent_and_downgrade_removes_everything(engine: Engine) -> None:
    migrate.upgrade(engine)
    migrate.upgrade(engine)  # a second start-up must be a no-op
    assert _differences(engine) == []

    _downgrade_to_base(engine)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    assert migrate.current_revision(engine) is None
    assert not migrate.is_current(engine)

    migrate.upgrade(engine)
    assert _differences(engine) == []
    assert migrate.is_current(engine)


def test_comparison_notices_drift(engine: Engine) -> None:
    """The no-difference checks above would fail if the model and migrations drifted."""
    migrate.upgrade(engine)
    drifted = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["settings"].append_column(Column("extra", Integer))
    Index("ix_drift", drifted.tables["resources"].c.rid)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), drifted)
    kinds = sorted(d[0] for d in diffs if isinstance(d, tuple))
    assert kinds == ["add_column", "add_index"]
