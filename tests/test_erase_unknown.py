"""Erasing a customer the store has never heard of: a 404 (the CLI: one line, exit 2), Temporal is
not asked, and no erasure is recorded. A known customer is still erased. Both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from sqlalchemy import select
from typer.testing import CliRunner

from core.records import Customer
from store import queries
from store.tables import ErasureRow
from triggers.api import create_app


class NoInstances:
    """A Temporal client whose visibility lists nothing, noting every query asked."""

    namespace = "default"

    def __init__(self):
        self.queries: list[str] = []

    async def list_workflows(self, query: str, **_options):  # rpc_timeout, as the real client takes
        self.queries.append(query)
        for _ in ():
            yield


def erasures(store) -> list[str]:
    with store.transaction() as session:
        return list(session.scalars(select(ErasureRow.customer_id)))


async def test_erasing_nobody_is_a_404_and_records_nothing(store):
    temporal = NoInstances()

    async def connect():
        return temporal

    with store.transaction() as session:
        queries.upsert_customer(session, Customer(customer_id="c1", phone="+8613800000001"), datetime.now(UTC), "CN")
    app = create_app(store, temporal=connect)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://journeys") as api:
        nobody = await api.delete("/customers/nobody")
        assert nobody.status_code == 404, nobody.text
        assert nobody.json() == {"detail": "no customer 'nobody': nothing was erased"}
        assert erasures(store) == [] and temporal.queries == []

        erased = await api.delete("/customers/c1")
        assert erased.status_code == 200, erased.text
        assert erased.json()["removed"]["customer_record"] == 1
        again = await api.delete("/customers/c1")  # erased before: known, so erasing again is a 200
        assert again.status_code == 200, again.text
    assert erasures(store) == ["c1"]


def test_the_cli_erasing_nobody_says_so_in_one_line(store, monkeypatch):
    from journeys.cli import app

    monkeypatch.setenv("DATABASE_URL", store.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:9")  # never reached
    result = CliRunner().invoke(app, ["customer", "erase", "nobody", "--yes"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == ["no customer 'nobody': nothing was erased"]
    assert erasures(store) == []
