"""Publishing on the engine as deployed (PostgreSQL, `journeys api` and `journeys worker` as their
own processes): `journeys publish` from a checkout with a key of the publish role puts a changed
journey live without restarting anything. A new event starts an instance on the new version, while
an instance started before keeps its version and sends the old message."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select
from temporalio.client import Client

from core.records import apply_customer_event
from core.vocabulary import JOURNEY_VERSION
from store import definition_changes, queries
from store.tables import InstanceRow
from tests.helpers import daytime_zone, event
from tests.stack import JOURNEYS, Stack, wait_until
from tests.test_publishing import JOURNEY, TEMPLATE, write_base

#: Each instance waits for its order's payment before it sends: the old one is still running when
#: the change goes live, and sends afterwards.
WAITING = JOURNEY.replace("steps:\n", "steps:\n  - wait_for: {event: order.paid, timeout: 1h}\n")
SHOP, CI = {"Authorization": "Bearer shop-secret"}, {"Authorization": "Bearer ci-secret"}


def post_order(stack: Stack, customer: str, order: str, type: str = "order.created") -> None:
    sent = {
        "event_id": str(uuid.uuid4()), "type": type, "occurred_at": datetime.now(UTC).isoformat(),
        "customer_id": customer, "order_id": order, "data": {"amount": 99},
    }  # fmt: skip
    answer = httpx.post(f"{stack.api}/events", json=sent, headers=SHOP, timeout=30)
    assert answer.status_code == 202, answer.text


def publish(stack: Stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [JOURNEYS, "publish", *args], env=stack.env | (env or {}), cwd=stack.directory, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def commit(folder, author: str) -> None:
    """Commit `folder` as a Git repository of its own, by `author`."""
    name, email = author.removesuffix(">").split(" <")
    identity = ["-c", f"user.name={name}", "-c", f"user.email={email}"]
    for command in (["init", "-q"], ["add", "."], [*identity, "commit", "-q", "-m", "broken"]):
        subprocess.run(["git", "-C", str(folder), *command], check=True, capture_output=True, timeout=30)


def searched_versions(stack: Stack, orders: list[str]) -> list[str | None]:
    """Each order's instance's JourneyVersion search attribute, as Temporal holds it."""

    async def ask() -> list[str | None]:
        client = await Client.connect(stack.address)
        found = []
        for order in orders:
            described = await client.get_workflow_handle(f"hello:{order}").describe()
            found.append(described.typed_search_attributes.get(JOURNEY_VERSION))
        return found

    return asyncio.run(ask())


def instance_version(store, order: str) -> str | None:
    with store.transaction() as session:
        row = session.scalars(select(InstanceRow).where(InstanceRow.workflow_id == f"hello:{order}")).first()
        return row.journey_version if row else None


def sent_bodies(stack: Stack) -> dict[str, tuple[str, str]]:
    """Each customer's message from the outbox: (its text, when it was written)."""
    if not stack.outbox.exists():
        return {}
    lines = [json.loads(line) for line in stack.outbox.read_text(encoding="utf-8").splitlines() if line]
    return {line["customer_id"]: (line["body"], line["written_at"]) for line in lines if line["journey"] == "hello"}


def test_a_published_journey_runs_for_new_instances_without_a_restart(pg_store, tmp_path):
    now = datetime.now(UTC)
    base = write_base(tmp_path / "base")
    (base / "hello.yaml").write_text(WAITING, encoding="utf-8")
    with pg_store.transaction() as session:
        for customer in ("early", "late"):
            created = event(
                "customer.created", now - timedelta(days=1), customer=customer, name=customer,
                phone=f"+8613900000{len(customer):03d}", timezone=daytime_zone(now),
            )  # fmt: skip
            queries.upsert_customer(session, apply_customer_event(None, created), created.occurred_at, "CN")
    checkout = tmp_path / "checkout"
    shutil.copytree(base, checkout)
    (checkout / "templates" / "hello.yaml").write_text(TEMPLATE.format(version="v2"), encoding="utf-8")
    keys = "ci:publish:ci-secret,shop:ingest:shop-secret"
    env = {"JOURNEYS_DEFINITIONS": str(base), "JOURNEYS_API_KEYS": keys}

    with Stack(tmp_path, pg_store.url, extra_env=env) as stack:
        post_order(stack, "early", "o-early")
        before = wait_until(lambda: instance_version(pg_store, "o-early"), 30, "the first instance")

        published = publish(stack, str(checkout), "--key", "ci-secret", "--author", "Dave <dave@shop.cn>")
        assert published.returncode == 0, published.stderr
        post_order(stack, "late", "o-late")
        after = wait_until(lambda: instance_version(pg_store, "o-late"), 30, "the instance on the new version")
        post_order(stack, "early", "o-early", "order.paid")
        post_order(stack, "late", "o-late", "order.paid")
        refused = publish(stack, str(checkout), "--key", "shop-secret")
        bodies = wait_until(lambda: (b := sent_bodies(stack)) and len(b) == 2 and b, 60, "both messages")
        wait_until(lambda: "running publication 1 " in stack.worker_logs(), 30, "the worker to load it too")

        again = publish(stack, str(checkout), env={"JOURNEYS_API_KEY": "ci-secret"})
        (checkout / "hello.yaml").write_text(WAITING.replace("channel: sms", "channel: pigeon"), encoding="utf-8")
        commit(checkout, "Erin <erin@shop.cn>")  # the change's author, when --author is not given
        broken = publish(stack, str(checkout), "--only", "hello.yaml", env={"JOURNEYS_API_KEY": "ci-secret"})
        versions = httpx.get(f"{stack.api}/definitions/template/hello/versions", headers=CI, timeout=30)
        api_log = stack.log("api").read_text(errors="replace")
        searched = searched_versions(stack, ["o-early", "o-late"])

    assert refused.returncode == 1
    assert "GET /definitions: 403 this API key (shop, role ingest) may not read journeys" in refused.stderr
    [change_line, file_line] = published.stdout.splitlines()
    assert change_line.startswith("published change ") and "(publication 1, hash " in change_line
    assert change_line.endswith("written by Dave <dave@shop.cn>, approved by ci [" + change_line.split(" [")[-1])
    assert file_line == "  templates/hello.yaml (changed)"
    assert before != after  # the template is part of the journey's version
    assert searched == [before, after]
    assert (bodies["early"][0], bodies["late"][0]) == ("【小店】你好 v1", "【小店】你好 v2")
    with pg_store.transaction() as session:
        [change] = definition_changes.changes(session, "published")
    assert datetime.fromisoformat(bodies["early"][1]) > change.published_at  # it ran on after the change went live
    assert again.returncode == 0 and again.stdout.startswith("nothing to publish: the 2 definition files of ")
    assert broken.returncode == 1
    assert "not published (409): the change has 1 problem(s): hello.yaml:9: " in broken.stderr
    assert "  hello.yaml:9: steps[1].send.channel: " in broken.stderr
    [version] = versions.json()
    assert (version["change_id"], version["state"], version["author"]) == (
        change.id,
        "published",
        "Dave <dave@shop.cn>",
    )
    assert " ERROR " not in api_log and "Traceback" not in api_log
