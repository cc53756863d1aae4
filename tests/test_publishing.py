"""Definitions as published versions through the API (docs/publishing.md), on both databases: a
draft, its review (活动审核) by someone else with the publish role, what runs afterwards, each
file's versions and the audit; and every bad request refused naming what is at fault."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import typer
from sqlalchemy.exc import OperationalError

from store import definition_changes
from triggers.api import create_app
from triggers.live import LiveDefinitions, describe_files

KEYS = [
    "alice:operator:alice-secret",
    "bob:publish:bob-secret",
    "carol:publish:carol-secret",
    "reader:read:reader-secret",
]
ALICE, BOB, CAROL, READER = ({"Authorization": f"Bearer {who}-secret"} for who in ("alice", "bob", "carol", "reader"))

JSON = {"Content-Type": "application/json"}

JOURNEY = """\
name: hello
title: 你好
category: transactional
entry:
  event: order.created
  key: order
steps:
  - send: {id: hi, channel: sms, template: hello}
"""
TEMPLATE = 'sms:\n  zh-CN: "你好 {version}"\n  en: "hello {version}"\n'


def write_base(folder: Path) -> Path:
    """A definitions directory of one journey and its template (version v1)."""
    (folder / "templates").mkdir(parents=True)
    (folder / "hello.yaml").write_text(JOURNEY, encoding="utf-8")
    (folder / "templates" / "hello.yaml").write_text(TEMPLATE.format(version="v1"), encoding="utf-8")
    return folder


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://journeys")


@pytest.fixture
def base(tmp_path) -> Path:
    return write_base(tmp_path / "definitions")


@pytest.fixture
def live(store, base) -> LiveDefinitions:
    return LiveDefinitions(store, base)


@pytest.fixture
def api(store, live):
    return client_for(create_app(store, live=live, api_keys=KEYS))


def v2() -> dict[str, str]:
    return {"templates/hello.yaml": TEMPLATE.format(version="v2")}


async def drafted(api, files: dict[str, str] | None = None, who=ALICE) -> dict:
    answer = await api.post("/definitions/changes", json={"files": files or v2(), "title": "v2"}, headers=who)
    assert answer.status_code == 201, answer.text
    return answer.json()


async def in_review(api, files: dict[str, str] | None = None, who=ALICE) -> dict:
    change = await drafted(api, files, who)
    answer = await api.post(f"/definitions/changes/{change['id']}/submit", headers=who)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_a_draft_reviewed_and_approved_by_another_publisher_runs_at_once(api, live):
    change = await drafted(api)
    assert change["state"] == "draft" and change["author"].startswith("alice [")
    [file] = change["files"]
    assert (file["path"], file["kind"], file["name"]) == ("templates/hello.yaml", "template", "hello")
    assert '-  zh-CN: "你好 v1"' in file["diff"] and '+  zh-CN: "你好 v2"' in file["diff"]
    assert change["problems"] == []

    submitted = await api.post(f"/definitions/changes/{change['id']}/submit", headers=ALICE)
    assert submitted.json()["state"] == "in_review" and submitted.json()["submitted_at"]
    assert live.current["hello"].templates["hello"].sms["zh-CN"] == "你好 v1"  # nothing runs before approval

    approved = await api.post(f"/definitions/changes/{change['id']}/approve", json={"comment": "好"}, headers=BOB)
    assert approved.status_code == 200, approved.text
    shown = approved.json()
    assert (shown["state"], shown["seq"], shown["comment"]) == ("published", 1, "好")
    assert shown["reviewed_by"].startswith("bob [") and shown["published_at"]
    assert live.current["hello"].templates["hello"].sms["zh-CN"] == "你好 v2"  # this process: at once

    running = (await api.get("/definitions/template/hello", headers=READER)).json()
    assert running["text"] == TEMPLATE.format(version="v2")
    assert (running["source"], running["change_id"], running["hash"]) == ("published", change["id"], file["hash"])
    listed = {item["path"]: item for item in (await api.get("/definitions", headers=READER)).json()}
    assert listed["templates/hello.yaml"]["source"] == "published"
    assert listed["templates/hello.yaml"]["published_by"].startswith("bob [")
    assert (listed["hello.yaml"]["source"], listed["hello.yaml"]["kind"]) == ("base", "journey")

    [version] = (await api.get("/definitions/template/hello/versions", headers=READER)).json()
    assert (version["change_id"], version["state"], version["hash"]) == (change["id"], "published", file["hash"])
    assert version["author"].startswith("alice [") and version["reviewed_by"].startswith("bob [")
    audit = (await api.get("/audit", params={"kind": "template", "name": "hello"}, headers=READER)).json()
    assert [(row["action"], row["who"].split(" ")[0]) for row in audit] == [
        ("approved", "bob"),
        ("submitted", "alice"),
        ("created", "alice"),
    ]
    assert {row["hash"] for row in audit} == {change["hash"]} and all(row["at"] for row in audit)
    assert audit[0]["comment"] == "好"
    assert (await api.get("/audit", params={"kind": "journey", "name": "hello"}, headers=READER)).json() == []


async def test_an_operator_may_draft_but_not_approve(api):
    change = await in_review(api)
    refused = await api.post(f"/definitions/changes/{change['id']}/approve", headers=ALICE)
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        "this API key (alice, role operator) may not approve, publish or reject drafts of definitions; "
        "that needs the role publish or above"
    )
    also = await api.post("/definitions/publish", json={"files": v2(), "author": "dave"}, headers=ALICE)
    assert also.status_code == 403 and "role publish" in also.json()["detail"]
    reading = await api.post("/definitions/changes", json={"files": v2()}, headers=READER)
    assert reading.status_code == 403 and "role operator" in reading.json()["detail"]


async def test_the_author_may_not_approve_their_own_change_unless_the_shop_allows_it(store, live):
    strict = client_for(create_app(store, live=live, api_keys=KEYS))
    change = await in_review(strict, who=BOB)
    refused = await strict.post(f"/definitions/changes/{change['id']}/approve", headers=BOB)
    assert refused.status_code == 403
    assert refused.json()["detail"].startswith("bob [") and "wrote change" in refused.json()["detail"]
    assert "JOURNEYS_PUBLISH_OWN_CHANGES=true" in refused.json()["detail"]
    alone = await strict.post("/definitions/publish", json={"files": v2()}, headers=BOB)
    assert alone.status_code == 403 and "may not publish their own change" in alone.json()["detail"]

    lenient = client_for(create_app(store, live=live, api_keys=KEYS, publish_own_changes=True))
    approved = await lenient.post(f"/definitions/changes/{change['id']}/approve", headers=BOB)
    assert approved.status_code == 200 and approved.json()["state"] == "published"


async def test_a_publisher_who_rewrote_another_s_draft_may_not_approve_it(api):
    change = await drafted(api)
    rewritten = await api.put(
        f"/definitions/changes/{change['id']}",
        json={"files": {"templates/hello.yaml": "sms: {en: mine}\n"}},
        headers=BOB,
    )
    assert rewritten.status_code == 200 and rewritten.json()["author"].startswith("alice [")
    assert (await api.post(f"/definitions/changes/{change['id']}/submit", headers=ALICE)).status_code == 200
    refused = await api.post(f"/definitions/changes/{change['id']}/approve", headers=BOB)
    assert refused.status_code == 403
    assert (
        refused.json()["detail"].startswith("bob [")
        and "(edited it) and may not approve it" in refused.json()["detail"]
    )
    approved = await api.post(f"/definitions/changes/{change['id']}/approve", headers=CAROL)
    assert approved.status_code == 200 and approved.json()["state"] == "published"


async def test_one_person_with_an_operator_key_and_a_publish_key_is_one_person_to_the_review(store, live):
    both = client_for(create_app(store, live=live, api_keys=[*KEYS, "bob:operator:bob-drafting-secret"]))
    drafting = {"Authorization": "Bearer bob-drafting-secret"}
    change = await in_review(both, who=drafting)
    refused = await both.post(f"/definitions/changes/{change['id']}/approve", headers=BOB)
    assert refused.status_code == 403 and "(created it) and may not approve it" in refused.json()["detail"]
    assert (await both.post(f"/definitions/changes/{change['id']}/approve", headers=CAROL)).status_code == 200


async def test_publish_records_the_declared_author_as_vouched_for_by_the_key_and_not_the_key_s_own_name(api):
    itself = await api.post("/definitions/publish", json={"files": v2(), "author": "carol"}, headers=CAROL)
    assert itself.status_code == 403 and "may not publish their own change" in itself.json()["detail"]
    declared = await api.post("/definitions/publish", json={"files": v2(), "author": "dave"}, headers=CAROL)
    assert declared.status_code == 201, declared.text
    created = [row for row in (await api.get("/audit", headers=READER)).json() if row["action"] == "created"]
    assert [(row["who"], row["comment"].split(" [")[0]) for row in created] == [("dave", "author declared by carol")]


async def test_a_reject_needs_a_comment_and_sends_the_change_back_to_its_author(api):
    change = await in_review(api)
    url = f"/definitions/changes/{change['id']}/reject"
    missing = await api.post(url, json={}, headers=BOB)
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "comment"]
    blank = await api.post(url, json={"comment": "  "}, headers=BOB)
    assert blank.status_code == 422 and blank.json()["detail"] == "a reject needs a comment saying why: {comment: ...}"
    rejected = await api.post(url, json={"comment": "语气太生硬"}, headers=BOB)
    assert (rejected.json()["state"], rejected.json()["comment"]) == ("rejected", "语气太生硬")
    again = await api.post(f"/definitions/changes/{change['id']}/approve", headers=CAROL)
    assert again.status_code == 409 and again.json()["detail"].endswith("only a change in review can be approved")

    edited = await api.put(
        f"/definitions/changes/{change['id']}", json={"files": v2() | {"hello.yaml": JOURNEY}}, headers=ALICE
    )
    assert edited.status_code == 200 and edited.json()["state"] == "draft"
    assert [file["path"] for file in edited.json()["files"]] == ["hello.yaml", "templates/hello.yaml"]
    assert edited.json()["files"][0]["diff"] == ""  # the journey as it runs
    audit = (await api.get("/audit", headers=READER)).json()
    assert [row["action"] for row in audit] == ["edited", "rejected", "submitted", "created"]
    assert audit[1]["comment"] == "语气太生硬" and audit[1]["who"].startswith("bob [")
    assert audit[0]["hash"] == edited.json()["hash"] != change["hash"]
    [version] = (await api.get("/definitions/template/hello/versions", headers=READER)).json()
    assert version["state"] == "draft"


async def test_a_broken_draft_cannot_be_submitted_and_names_its_problems_at_their_lines(api):
    broken = JOURNEY.replace("channel: sms", "channel: pigeon")
    change = await drafted(api, {"hello.yaml": broken})
    [problem] = [p for p in change["problems"] if not p["warning"]]
    assert (problem["path"], problem["line"]) == ("hello.yaml", 8)
    refused = await api.post(f"/definitions/changes/{change['id']}/submit", headers=ALICE)
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith(f"change {change['id']} has 1 problem(s): hello.yaml:8: ")
    assert refused.json()["problems"] == [problem]
    published = await api.post(
        "/definitions/publish", json={"files": {"hello.yaml": broken}, "author": "d"}, headers=BOB
    )
    assert published.status_code == 409 and published.json()["problems"] == [problem]
    assert (await api.get("/definitions/changes", params={"state": "published"}, headers=READER)).json() == []


async def test_publish_makes_submits_and_approves_at_once_for_the_commit_s_author(api, live):
    answer = await api.post(
        "/definitions/publish",
        json={"files": v2(), "author": "Dave <dave@shop.cn>", "comment": "CI", "title": "hello v2"},
        headers=CAROL,
    )
    assert answer.status_code == 201, answer.text
    change = answer.json()
    assert (change["state"], change["author"], change["title"], change["seq"]) == (
        "published", "Dave <dave@shop.cn>", "hello v2", 1,
    )  # fmt: skip
    assert change["reviewed_by"].startswith("carol [") and change["files"][0]["diff"] == ""  # it runs now
    assert live.current["hello"].templates["hello"].sms["en"] == "hello v2"
    audit = (await api.get("/audit", headers=READER)).json()
    assert [(row["action"], row["who"].split(" ")[0]) for row in audit] == [
        ("approved", "carol"), ("submitted", "carol"), ("created", "Dave"),
    ]  # fmt: skip


async def test_two_approvers_at_once_publish_a_change_once_and_two_changes_in_order(api, store):
    first, second = await in_review(api), await in_review(api, {"hello.yaml": JOURNEY.replace("你好", "您好")})
    answers = await asyncio.gather(
        api.post(f"/definitions/changes/{first['id']}/approve", headers=BOB),
        api.post(f"/definitions/changes/{first['id']}/approve", headers=CAROL),
        api.post(f"/definitions/changes/{second['id']}/approve", headers=CAROL),
    )
    assert sorted(answer.status_code for answer in answers[:2]) == [200, 409]
    assert answers[2].status_code == 200
    seqs = sorted(answer.json()["seq"] for answer in answers if answer.status_code == 200)
    assert seqs == [1, 2]
    audit = (await api.get("/audit", headers=READER)).json()
    assert [row["action"] for row in audit].count("approved") == 2


async def test_bad_requests_are_refused_naming_what_is_at_fault(api):
    unknown_kind = await api.get("/definitions/campaign/hello", headers=READER)
    assert unknown_kind.status_code == 404
    assert unknown_kind.json()["detail"].startswith("'campaign' is not a kind of definition; kinds are journey")
    no_such = await api.get("/definitions/journey/nope", headers=READER)
    assert no_such.status_code == 404 and no_such.json()["detail"] == "no journey 'nope' runs; journeys that run: hello"
    assert (await api.get("/definitions/journey/nope/versions", headers=READER)).status_code == 404
    bad_audit = await api.get("/audit", params={"kind": "campaign"}, headers=READER)
    assert bad_audit.status_code == 422 and "'campaign' is not a kind" in bad_audit.json()["detail"]

    for files, status, detail in [
        ({"../etc/passwd.yaml": "x: 1"}, 422, "'../etc/passwd.yaml': a draft's file is a relative path ending .yaml"),
        ({"events.yaml": "x: 1"}, 422, "events.yaml: drafts change journeys, templates"),
        ({"hello.txt": "x"}, 422, "'hello.txt': a draft's file is a relative path ending .yaml"),
        ({}, 422, "a change holds at least one file"),
        ({"hello.yaml": "x" * 300_000}, 413, "'hello.yaml': 300000 bytes, longer than the 256 KiB"),
        ({"hello.yaml": "name: a\x00"}, 422, "'hello.yaml': holds a NUL character"),
        ({"hello.yaml": "name: \ud800"}, 422, "'hello.yaml': not UTF-8 text"),
    ]:
        body = json.dumps({"files": files})  # ASCII, so a lone surrogate is sent as JSON sends it: \ud800
        answer = await api.post("/definitions/changes", content=body, headers=ALICE | JSON)
        assert answer.status_code == status, (files.keys(), answer.text)
        assert answer.json()["detail"].startswith(detail), answer.json()
    not_json = await api.post("/definitions/changes", content=b"\xff\xfe", headers=ALICE | JSON)
    assert not_json.status_code == 422

    unknown = await api.post("/definitions/changes/nope/submit", headers=ALICE)
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "no change 'nope'; GET /definitions/changes lists them"
    assert (await api.get("/definitions/changes/nope", headers=READER)).status_code == 404
    wrong_state = await api.get("/definitions/changes", params={"state": "lost"}, headers=READER)
    assert wrong_state.status_code == 422 and "'lost' is not a state of a change" in wrong_state.json()["detail"]
    draft = await drafted(api)
    early = await api.post(f"/definitions/changes/{draft['id']}/approve", headers=BOB)
    assert early.status_code == 409
    assert early.json()["detail"] == f"change {draft['id']} is draft: only a change in review can be approved"
    await api.post(f"/definitions/changes/{draft['id']}/submit", headers=ALICE)
    frozen = await api.put(f"/definitions/changes/{draft['id']}", json={"files": v2()}, headers=ALICE)
    assert frozen.status_code == 409 and "only a draft or a rejected change can be edited" in frozen.json()["detail"]


@pytest.mark.parametrize(
    ("method", "url", "body", "who", "status", "says"),
    [
        ("get", "/definitions/changes/a%00b", None, READER, 404, "no change 'a\\x00b': a change's id is a UUID"),
        ("post", "/definitions/changes/a%00b/submit", None, ALICE, 404, "no change 'a\\x00b'"),
        ("post", "/definitions/changes/a%00b/approve", None, BOB, 404, "no change 'a\\x00b'"),
        ("post", "/definitions/changes/a%00b/dry-runs", {"days": 7}, ALICE, 404, "no change 'a\\x00b'"),
        ("post", "/definitions/dry-runs", {"files": v2(), "change_id": "a\x00b"}, ALICE, 422, "change_id: no change"),
        (
            "post",
            "/definitions/dry-runs",
            {"files": {"hello.yaml": "a\x00"}},
            ALICE,
            422,
            "files: hello.yaml: holds a NUL",
        ),
        ("get", "/audit?name=a%00", None, READER, 422, "name: 'a\\x00' is not a definition name"),
        ("post", "/definitions/changes", {"files": v2(), "title": "a\x00"}, ALICE, 422, "title holds a NUL"),
        ("post", "/definitions/publish", {"files": v2(), "author": "d\x00"}, BOB, 422, "author holds a NUL"),
        ("post", "/definitions/publish", {"files": v2(), "author": "d", "comment": "\x00"}, BOB, 422, "comment holds"),
    ],
)
async def test_a_nul_in_an_id_or_free_text_is_refused_naming_it(api, method, url, body, who, status, says):
    """PostgreSQL refuses a NUL in a query: it must be a refusal naming the field, never a 500."""
    answer = await api.request(method, url, json=body, headers=who)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    text = detail if isinstance(detail, str) else " ".join(item["msg"] for item in detail)
    assert says in text, text


async def test_a_nul_in_a_reject_s_or_an_approval_s_comment_is_refused_naming_it(api):
    change = await in_review(api)
    for action in ("reject", "approve"):
        answer = await api.post(
            f"/definitions/changes/{change['id']}/{action}", json={"comment": "no\x00"}, headers=BOB
        )
        assert answer.status_code == 422 and "comment holds a NUL" in answer.json()["detail"][0]["msg"]
        assert answer.json()["detail"][0]["loc"] == ["body", "comment"]


def a_finished_dry_run(store, change_id: str, files: dict[str, str], sent: int) -> str:
    """A dry run of `files` for the change, done with `sent` messages more (as its process ends one)."""
    from datetime import UTC, datetime

    from store import dry_runs

    now = datetime.now(UTC)
    with store.transaction() as session:
        job_id = dry_runs.queue(session, files, 7, "alice [test]", change_id, now).id
        assert dry_runs.claim(session, job_id, now, None)
        dry_runs.finish(session, job_id, {"window": {}, "diff": {"hello": {"sent": sent}}}, now)
    return job_id


async def test_a_change_edited_after_its_dry_run_is_approved_without_the_old_figures(api, store):
    change = await drafted(api)
    old = a_finished_dry_run(store, change["id"], v2(), sent=5)
    edited = {"templates/hello.yaml": TEMPLATE.format(version="v3")}
    assert (
        await api.put(f"/definitions/changes/{change['id']}", json={"files": edited}, headers=ALICE)
    ).status_code == 200
    shown = (await api.get(f"/definitions/changes/{change['id']}", headers=READER)).json()
    assert [(run["id"], run["stale"]) for run in shown["dry_runs"]] == [(old, True)]
    assert (await api.post(f"/definitions/changes/{change['id']}/submit", headers=ALICE)).status_code == 200
    assert (await api.post(f"/definitions/changes/{change['id']}/approve", headers=BOB)).status_code == 200
    [approved] = [row for row in (await api.get("/audit", headers=READER)).json() if row["action"] == "approved"]
    assert approved["figures"] is None  # not the figures of v2, which is not what was approved

    again = await drafted(api)
    current = a_finished_dry_run(store, again["id"], v2(), sent=2)
    shown = (await api.get(f"/definitions/changes/{again['id']}", headers=READER)).json()
    assert [(run["id"], run["stale"]) for run in shown["dry_runs"]] == [(current, False)]
    versions = (await api.get("/definitions/template/hello/versions", headers=READER)).json()
    assert [v["dry_run"] and v["dry_run"]["dry_run"] for v in versions if v["change_id"] == again["id"]] == [current]


async def test_a_dry_run_for_a_change_must_run_that_change_s_files(api):
    change = await drafted(api)
    other = {"templates/hello.yaml": TEMPLATE.format(version="v9")}
    refused = await api.post("/definitions/dry-runs", json={"files": other, "change_id": change["id"]}, headers=ALICE)
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith(f"change_id: these files are not change {change['id']}'s as it is now")


async def test_changes_are_listed_newest_first_without_their_texts(api):
    first = await drafted(api)
    second = await in_review(api, {"hello.yaml": JOURNEY.replace("你好", "您好")})
    listed = (await api.get("/definitions/changes", headers=READER)).json()
    assert [change["id"] for change in listed] == [second["id"], first["id"]]
    assert all(file["text"] is None and file["diff"] is None for change in listed for file in change["files"])
    in_review_only = (await api.get("/definitions/changes", params={"state": "in_review"}, headers=READER)).json()
    assert [change["id"] for change in in_review_only] == [second["id"]]
    running = {item["path"]: item for item in (await api.get("/definitions", headers=READER)).json()}
    assert (running["hello.yaml"]["open_changes"], running["templates/hello.yaml"]["open_changes"]) == (1, 1)


async def test_what_runs_is_shown_as_loaded_not_as_a_file_edited_on_disk_since(api, live, base):
    """The base directory is read when the process loads it: a file edited there afterwards (not
    published, no restart) does not run, so the console neither lists it as running nor diffs a
    change against it."""
    (base / "templates" / "hello.yaml").write_text(TEMPLATE.format(version="edited on disk"), encoding="utf-8")
    (base / "hello.yaml").write_text(JOURNEY.replace("name: hello", "name: renamed"), encoding="utf-8")
    running = (await api.get("/definitions/template/hello", headers=READER)).json()
    assert running["text"] == TEMPLATE.format(version="v1")
    journey = await api.get("/definitions/journey/hello", headers=READER)  # found by the name it runs under
    assert journey.status_code == 200 and journey.json()["text"] == JOURNEY
    assert (await api.get("/definitions/journey/renamed", headers=READER)).status_code == 404
    assert live.current["hello"].templates["hello"].sms["en"] == "hello v1"
    change = await drafted(api)
    [file] = change["files"]
    assert '-  zh-CN: "你好 v1"' in file["diff"] and "edited on disk" not in file["diff"]


def test_with_no_publication_what_runs_is_the_base_directory_itself(store, base):
    live = LiveDefinitions(store, base)
    assert (live.seq, live.directory) == (0, base)
    assert live.current["hello"].templates["hello"].sms["en"] == "hello v1"
    assert live.refresh() is False


def test_a_publication_that_does_not_load_is_not_swapped_in(store, base, live, caplog):
    """A change published behind the API's checks (here: written straight to the store) that does
    not load: every process keeps what it ran, and logs why."""
    from datetime import UTC, datetime

    from store import definition_changes
    from triggers.live import describe_files

    taken = []
    live.on_change(lambda definitions, directory: taken.append(directory))
    now = datetime.now(UTC)
    with store.transaction() as session:
        files, change_hash = describe_files({"hello.yaml": JOURNEY.replace("channel: sms", "channel: pigeon")})
        change = definition_changes.create(session, files, change_hash, "mallory", now)
        definition_changes.submit(session, change.id, "mallory", now)
        definition_changes.approve(session, change.id, "mallory", now, allow_own=True)
    assert live.refresh() is False
    assert live.current["hello"].definition.steps[0].send.channel == "sms" and live.directory == base
    assert taken == []
    assert "publication 1 of the definitions does not load; still running the base definitions" in caplog.text
    assert "hello.yaml:8: steps[0].send.channel: 'pigeon' is not one of" in caplog.text

    with store.transaction() as session:
        files, change_hash = describe_files(v2())
        change = definition_changes.create(session, files, change_hash, "alice", now)
        definition_changes.submit(session, change.id, "alice", now)
        definition_changes.approve(session, change.id, "bob", now)
        assert definition_changes.latest_seq(session) == 2
        assert definition_changes.published_files(session) == {
            "hello.yaml": JOURNEY.replace("channel: sms", "channel: pigeon"),
            "templates/hello.yaml": TEMPLATE.format(version="v2"),
        }
    assert live.refresh() is False  # the latest of each file, the broken journey too: still not loaded
    assert live.current["hello"].templates["hello"].sms["en"] == "hello v1"

    with store.transaction() as session:
        files, change_hash = describe_files({"hello.yaml": JOURNEY})
        change = definition_changes.create(session, files, change_hash, "alice", now)
        definition_changes.submit(session, change.id, "alice", now)
        definition_changes.approve(session, change.id, "bob", now)
    assert live.refresh() is True and live.seq == 3 and taken == [live.directory]
    assert live.current["hello"].templates["hello"].sms["en"] == "hello v2"
    assert (live.directory / "templates" / "hello.yaml").read_text(encoding="utf-8") == TEMPLATE.format(version="v2")
    assert LiveDefinitions(store, base).current["hello"].templates["hello"].sms["en"] == "hello v2"  # a new process


def published_behind_the_api(store, files: dict[str, str], author: str = "mallory") -> str:
    """A change published straight to the store, behind the API's checks (another tool, an older
    version): it may not load."""
    from datetime import UTC, datetime

    from store import definition_changes
    from triggers.live import describe_files

    now = datetime.now(UTC)
    with store.transaction() as session:
        described, change_hash = describe_files(files)
        change = definition_changes.create(session, described, change_hash, author, now)
        definition_changes.submit(session, change.id, author, now)
        definition_changes.approve(session, change.id, author, now, allow_own=True)
        return change.id


PIGEON = {"hello.yaml": JOURNEY.replace("channel: sms", "channel: pigeon")}


def test_a_process_starting_when_the_latest_publication_does_not_load_runs_the_newest_that_does(store, base, caplog):
    published_behind_the_api(store, v2())
    published_behind_the_api(store, PIGEON)
    started = LiveDefinitions(store, base)
    assert (started.loaded_seq, started.seen_seq) == (1, 2)
    assert started.current["hello"].templates["hello"].sms["en"] == "hello v2"  # publication 1 kept, not reverted
    assert "publication 2 of the definitions does not load: running publication 1, the newest that does" in caplog.text
    assert started.refresh() is False  # the broken one is not tried again until a newer publication


async def test_an_approval_over_a_publication_that_did_not_load_is_refused_and_what_runs_says_what_loaded(
    api, store, live
):
    broken = published_behind_the_api(store, PIGEON)
    assert live.refresh() is False and (live.loaded_seq, live.seen_seq) == (0, 1)
    running = {row["path"]: row for row in (await api.get("/definitions", headers=READER)).json()}
    assert (running["hello.yaml"]["source"], running["hello.yaml"]["change_id"]) == ("base", None)
    text = (await api.get("/definitions/journey/hello", headers=READER)).json()
    assert (text["source"], text["change_id"]) == ("base", None) and broken

    change = await in_review(api)  # the template alone: it loads over what this process runs
    refused = await api.post(f"/definitions/changes/{change['id']}/approve", headers=BOB)
    assert refused.status_code == 409, refused.text
    assert "no longer loads over what runs now" in refused.json()["detail"]
    assert "hello.yaml:8: steps[0].send.channel: 'pigeon' is not one of" in refused.json()["detail"]
    shown = (await api.get(f"/definitions/changes/{change['id']}", headers=READER)).json()
    assert shown["state"] == "in_review" and live.current["hello"].templates["hello"].sms["en"] == "hello v1"


def test_instances_of_an_earlier_version_still_hear_what_it_exits_on_and_waits_for(store, base):
    """v1 exits on order.paid and waits for order.shipped; v2 does neither. A v1 instance still
    running must get the payment (else it reminds a customer who paid) and the shipment."""
    from datetime import UTC, datetime

    from tests.helpers import event
    from triggers.router import Dispatch, plan

    v1 = JOURNEY.replace(
        "steps:\n", "exit_on: [order.paid]\nsteps:\n  - wait_for: {event: order.shipped, timeout: 1d}\n"
    )
    (base / "hello.yaml").write_text(v1, encoding="utf-8")
    live = LiveDefinitions(store, base)
    assert live.current["hello"].definition.exit_on == ["order.paid"]
    published_behind_the_api(store, {"hello.yaml": JOURNEY}, author="alice")
    assert live.refresh() is True and live.current["hello"].definition.exit_on == []
    now = datetime.now(UTC)
    reaching = [Dispatch("signal", "hello", "hello:o1", "o1")]
    for kind in ("order.paid", "order.shipped"):
        assert plan(event(kind, now, order="o1"), live.current) == []  # what v2 alone hears
        assert plan(event(kind, now, order="o1"), live.current, heard=live.heard) == reaching, kind
    assert plan(event("order.paid", now, order="o1"), live.current, backfill=True, heard=live.heard) == reaching
    assert plan(event("order.shipped", now, order="o1"), live.current, backfill=True, heard=live.heard) == []
    assert plan(event("order.created", now, order="o1"), live.current, heard=live.heard) == [
        Dispatch("start", "hello", "hello:o1", "o1")
    ]
    assert LiveDefinitions(store, base).heard == live.heard  # a process started after it hears the same


async def test_an_approval_that_does_not_load_here_says_so_instead_of_published(api, live, tmp_path, caplog):
    """The change checks out, but this process cannot load it now (its disk refuses the files):
    it is published in the store, the answer says it did not load rather than 200, and the
    publication is not marked as one that does not load: the next look loads it once the disk
    takes the files again."""
    refusing = tmp_path / "not-a-directory"
    refusing.write_text("", encoding="utf-8")
    live._scratch = refusing  # where this process writes each publication's files
    change = await in_review(api)
    answer = await api.post(f"/definitions/changes/{change['id']}/approve", headers=BOB)
    assert answer.status_code == 503, answer.text
    shown = answer.json()
    assert (shown["change_id"], shown["seq"]) == (change["id"], 1)
    assert shown["detail"].startswith(
        f"change {change['id']} is published in the store (publication 1) but did not load: publication 1 could not "
        "be loaded now: NotADirectoryError"
    )
    assert shown["detail"].endswith("still running the base definitions (it is tried again at the next look)")
    assert f"change {change['id']} is published (publication 1) but did not load" in caplog.text
    assert (live.loaded_seq, live.seen_seq, live.failure) == (0, 0, None)  # a passing failure marks nothing
    running = {row["path"]: row for row in (await api.get("/definitions", headers=READER)).json()}
    assert (running["templates/hello.yaml"]["source"], running["templates/hello.yaml"]["change_id"]) == ("base", None)

    assert live.refresh() is False and live.seen_seq == 0  # the disk still refuses: tried again next time
    live._scratch = tmp_path / "mended"
    live._scratch.mkdir()
    assert live.refresh() is True and (live.loaded_seq, live.seen_seq) == (1, 1)
    assert live.current["hello"].templates["hello"].sms["en"] == "hello v2"


async def test_the_console_approves_with_its_session_and_csrf_token_only(api):
    """A console session may approve (the publish role's key signed in), but only with the page's
    CSRF token: a page of another site riding the cookie cannot publish."""
    import time

    from core.access import SESSION_COOKIE, csrf_token, parse_api_keys, session_token

    change = await in_review(api)
    bob = next(key for key in parse_api_keys(KEYS) if key.name == "bob")
    cookie = session_token(bob, int(time.time()) + 600)
    api.cookies.set(SESSION_COOKIE, cookie)
    url = f"/definitions/changes/{change['id']}/approve"
    forged = await api.post(url, headers={"Origin": "http://journeys"})
    assert forged.status_code == 403 and "X-CSRF-Token" in forged.json()["detail"]
    signed = await api.post(url, headers={"Origin": "http://journeys", "X-CSRF-Token": csrf_token(bob.secret, cookie)})
    assert signed.status_code == 200 and signed.json()["reviewed_by"].startswith("bob [")


# -- every process agrees on what runs, and says so --------------------------------------------


def test_a_change_checked_over_one_publication_is_not_published_over_a_newer_one(store):
    now = datetime.now(UTC)
    with store.transaction() as session:
        files, change_hash = describe_files(v2())
        change = definition_changes.create(session, files, change_hash, "alice", now)
        definition_changes.submit(session, change.id, "alice", now)
    published_behind_the_api(store, {"hello.yaml": JOURNEY})  # lands after the change was checked over 0
    meanwhile = "checked over publication 0, but publication 1"
    with store.transaction() as session, pytest.raises(definition_changes.PublishedMeanwhile, match=meanwhile):
        definition_changes.approve(session, change.id, "bob", now, expected_seq=0)
    with store.transaction() as session:
        assert definition_changes.get(session, change.id).state == "in_review"  # nothing published
        row = definition_changes.approve(session, change.id, "bob", now, expected_seq=1)
        assert (row.state, row.seq) == ("published", 2)


async def test_an_approval_racing_another_publication_is_checked_again_over_it(api, store, live, monkeypatch):
    """Another process publishes a journey that breaks with this change between this approval's
    check and its publication: the approval checks again over it and refuses, instead of
    publishing a set that does not load."""
    from triggers.api import definitions as routes

    change = await in_review(
        api, {"templates/hello.yaml": TEMPLATE.format(version="v2"), "templates/bye.yaml": TEMPLATE}
    )
    checked = routes._check_loads
    raced: list[str] = []

    async def racing_check(*args, **kwargs):
        await checked(*args, **kwargs)
        if not raced:  # the other process's approval lands right after this one's check
            raced.append(
                published_behind_the_api(store, {"hello.yaml": JOURNEY.replace("template: hello", "template: gone")})
            )

    monkeypatch.setattr(routes, "_check_loads", racing_check)
    answer = await api.post(f"/definitions/changes/{change['id']}/approve", headers=BOB)
    assert answer.status_code == 409, answer.text
    assert "no longer loads over what runs now" in answer.json()["detail"] and "gone" in answer.json()["detail"]
    shown = (await api.get(f"/definitions/changes/{change['id']}", headers=READER)).json()
    assert (shown["state"], shown["seq"]) == ("in_review", None)


def test_a_running_process_falls_back_to_the_newest_publication_that_loads_as_a_starting_one_does(store, base):
    live = LiveDefinitions(store, base)
    published_behind_the_api(store, v2())
    published_behind_the_api(store, PIGEON)  # both land between two looks
    assert live.refresh() is True
    assert (live.loaded_seq, live.seen_seq) == (1, 2) and live.failure and "publication 2 does not load" in live.failure
    assert live.current["hello"].templates["hello"].sms["en"] == "hello v2"
    started = LiveDefinitions(store, base)
    assert (started.loaded_seq, started.seen_seq) == (live.loaded_seq, live.seen_seq)  # every process agrees
    assert live.refresh() is False


def test_a_failed_read_of_the_published_journeys_keeps_what_was_heard_and_is_read_again(store, base, monkeypatch):
    """A journey published with `exit_on: [order.paid]`, then a version without it: if the store
    cannot be read while hearing, instances of the first still get the payment, and the next look
    reads the published journeys again even with no new publication."""
    live = LiveDefinitions(store, base)
    published_behind_the_api(store, {"hello.yaml": JOURNEY.replace("steps:\n", "exit_on: [order.paid]\nsteps:\n")})
    assert live.refresh() is True and "order.paid" in live.heard["hello"].exits

    reads = []
    reading = definition_changes.published_journey_files

    def down(*args, **kwargs):
        reads.append("down")
        raise OperationalError("SELECT", {}, Exception("the database went away"))

    monkeypatch.setattr(definition_changes, "published_journey_files", down)
    live._parsed.clear()  # as a process that has not parsed the first version yet
    published_behind_the_api(store, {"hello.yaml": JOURNEY}, author="alice")
    assert live.refresh() is True and live.current["hello"].definition.exit_on == []
    assert reads == ["down"] and "order.paid" in live.heard["hello"].exits

    def up(*args, **kwargs):
        reads.append("up")
        return reading(*args, **kwargs)

    monkeypatch.setattr(definition_changes, "published_journey_files", up)
    assert live.refresh() is False and reads == ["down", "up"]  # read again without a new publication
    assert "order.paid" in live.heard["hello"].exits
    assert live.refresh() is False and reads == ["down", "up"]  # and only once


def test_commands_run_the_newest_publication_that_loads_as_the_engine_does(store, base):
    from journeys.cli import _running_definitions

    settings = SimpleNamespace(
        database_url=store.engine.url.render_as_string(hide_password=False), definitions_dir=base
    )
    published_behind_the_api(store, v2())
    published_behind_the_api(store, PIGEON)
    loaded = _running_definitions(settings)  # type: ignore[arg-type]
    assert loaded["hello"].templates["hello"].sms["en"] == "hello v2"
    assert loaded["hello"].definition.steps[0].send.channel == "sms"


def test_commands_name_a_database_they_cannot_reach_instead_of_running_the_base(base, capsys):
    from journeys.cli import _running_definitions

    settings = SimpleNamespace(
        database_url="postgresql+psycopg2://nobody:secret@127.0.0.1:1/journeys", definitions_dir=base
    )
    with pytest.raises(typer.Exit) as stopped:
        _running_definitions(settings)  # type: ignore[arg-type]
    assert stopped.value.exit_code == 1
    said = capsys.readouterr().err
    assert (
        "cannot read the published definitions from the database postgresql+psycopg2://nobody:***@127.0.0.1:1/journeys"
        in said
    )
    assert "secret" not in said


def test_commands_on_a_store_without_publications_run_the_base(tmp_path, base):
    from journeys.cli import _running_definitions

    settings = SimpleNamespace(database_url=f"sqlite:///{tmp_path / 'empty.db'}", definitions_dir=base)
    assert _running_definitions(settings)["hello"].templates["hello"].sms["en"] == "hello v1"  # type: ignore[arg-type]


async def test_a_publish_whose_approval_is_refused_leaves_no_change_in_review(api, store, live):
    """`POST /definitions/publish` over a publication that does not load: refused (409), and the
    change it made is rejected with the reason, not left in review with no one to review it."""
    published_behind_the_api(store, PIGEON)
    live.refresh()
    answer = await api.post("/definitions/publish", json={"files": v2(), "author": "alice", "title": "v2"}, headers=BOB)
    assert answer.status_code == 409, answer.text
    detail = answer.json()["detail"]
    assert "no longer loads over what runs now" in detail and "was rejected)" in detail
    listed = (await api.get("/definitions/changes", headers=READER)).json()
    assert [row["state"] for row in listed if row["author"].startswith("alice")] == ["rejected"]


def test_journeys_publish_says_a_change_published_but_not_loaded_is_published(store, live, base, tmp_path):
    """The API answers 503 (in the store, not loaded by it): the command says which change and
    publication went out and why it did not load, not "not published" (a rerun would publish it
    again), and exits 1."""
    import threading
    import time

    import uvicorn
    from typer.testing import CliRunner

    from journeys.cli import app
    from tests.helpers import free_port

    refusing = tmp_path / "not-a-directory"
    refusing.write_text("", encoding="utf-8")
    live._scratch = refusing  # this API process's disk refuses the publication's files
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store, live=live, api_keys=KEYS), port=port, log_level="error"))
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    try:
        while not server.started:
            time.sleep(0.05)
        checkout = write_base(tmp_path / "checkout")
        (checkout / "templates" / "hello.yaml").write_text(TEMPLATE.format(version="v2"), encoding="utf-8")
        result = CliRunner().invoke(
            app,
            ["publish", str(checkout), "--api", f"http://127.0.0.1:{port}", "--key", "bob-secret", "--author", "alice"],
        )
    finally:
        server.should_exit = True
        serving.join(10)
    assert result.exit_code == 1, result.output
    with store.transaction() as session:
        [change] = definition_changes.changes(session, "published")
    assert f"published as change {change.id}, publication 1, but not loaded: " in result.output
    assert "not published" not in result.output
