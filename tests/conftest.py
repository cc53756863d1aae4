"""Shared fixtures: stores on SQLite and on the real PostgreSQL, the shipped definitions, the send activity."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text

from activities.journey import JourneyActivities
from channels import build_channels
from definitions.loader import PACKAGE_DIR, load_definitions
from store.db import Store
from tests.helpers import attempt

PG_URL = os.environ.get("JOURNEYS_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def definitions():
    return load_definitions(PACKAGE_DIR)


@pytest.fixture
def sqlite_store(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/journeys.db").migrate()
    yield store
    store.dispose()


@pytest.fixture(scope="session")
def pg_admin():
    """A connection to the test PostgreSQL. CI sets JOURNEYS_REQUIRE_POSTGRES: unreachable fails there."""
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as err:
        engine.dispose()
        if os.environ.get("JOURNEYS_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL at {PG_URL} is unreachable and CI requires it: {err}")
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable: {err}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_store(pg_admin):
    """A store in a fresh PostgreSQL schema, dropped afterwards (parallel runs never meet)."""
    schema = f"journeys_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    store = Store(f"{PG_URL}?options=-csearch_path%3D{schema}").migrate()
    yield store
    store.dispose()
    with pg_admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request):
    return request.getfixturevalue(f"{request.param}_store" if request.param == "sqlite" else "pg_store")


@pytest.fixture
def outbox(tmp_path):
    """Where the outbox channel writes in a test."""
    return tmp_path / "outbox.jsonl"


@pytest.fixture
def send(store, outbox):
    """The real send activity on `store`, every channel the outbox, the shop 小店."""
    activities = JourneyActivities(store, build_channels(outbox), "小店", default_region="CN")
    return lambda req, number=1: attempt(number).run(activities.decide_message, req)
