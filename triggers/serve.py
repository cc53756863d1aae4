"""Serve the event API with its dispatcher: `journeys api`, and the API part of `journeys up`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

import uvicorn
from fastapi import FastAPI
from temporalio.client import Client

from core.access import parse_api_keys
from core.config import Settings
from core.temporal import connect, payload_codec
from definitions.loader import Definitions, default_directory
from store import queries, reached
from store.db import Store
from triggers.api import create_app
from triggers.dispatcher import Dispatcher
from triggers.live import LiveDefinitions
from triggers.replies import start_reply_answer
from triggers.webhooks import WebhookConfig
from views.effect import Prices, goals_of, runs_of

log = logging.getLogger("journeys.api")


def refresh_read_model(store: Store, definitions: Definitions) -> None:
    """Bring the effect report's read model up to date for the journeys' goals, the recurring
    broadcasts' runs' too (store/reached.py `refresh`); logged, never fatal."""
    try:
        changed = reached.refresh(store, goals_of(definitions, runs_of(store, definitions)))
        if changed:
            log.info("effect report: conversions computed for %s (goal new or changed)", ", ".join(changed))
    except Exception:  # the report refreshes it itself on its first run
        log.exception("effect report: the journeys' goals could not be recorded now")


async def keep_read_model(
    store: Store, definitions: Definitions | LiveDefinitions, stop: asyncio.Event, every: float = 5.0
) -> None:
    """Refresh the read model once (the goals, then the runs to settle), then settle new runs
    every `every` seconds until `stop` (store/reached.py `settle_all`). With live definitions, a
    newly published version's goals are recorded again at the next tick."""
    live = definitions if isinstance(definitions, LiveDefinitions) else LiveDefinitions.fixed(definitions)
    seen = live.current
    await asyncio.to_thread(refresh_read_model, store, seen)
    while not stop.is_set():
        if live.current is not seen:
            seen = live.current
            await asyncio.to_thread(refresh_read_model, store, seen)
        try:
            await asyncio.to_thread(reached.settle_all, store)
        except Exception:  # the store down, or a bug: logged, retried at the next tick; reports settle too
            log.exception("effect report: settling new runs failed; retrying")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


class UnsafeBinding(ValueError):
    """An API without keys may only listen on the loopback interface."""


def build_api(settings: Settings, live: LiveDefinitions | None = None) -> FastAPI:
    """The API over the configured store, with a dispatcher that runs as long as the API does.
    Raises ApiKeyError for a malformed JOURNEYS_API_KEYS before anything starts. `live`: what runs,
    when another part of the process holds it already (`journeys up`'s worker shares it); by
    default the API loads its own."""
    parse_api_keys(settings.api_keys)
    if not settings.api_keys and settings.api_host not in ("127.0.0.1", "localhost", "::1"):
        raise UnsafeBinding(
            f"no API keys are configured (JOURNEYS_API_KEYS), so the API listens on 127.0.0.1 only, "
            f"not {settings.api_host}"
        )
    store = Store(settings.database_url).migrate()
    queries.configure_salt(settings.secret)  # erased addresses' suppression hashes
    # What runs: the base directory with the published changes over it, loaded again whenever a
    # change is published (triggers/live.py); problems in it stop the API here, as they always did.
    if live is None:
        live = LiveDefinitions(store, settings.definitions_dir or default_directory(), strict=True)
    client: Client | None = None
    connecting = asyncio.Lock()

    async def temporal() -> Client:
        """One client for the process, made on first use (the API starts while Temporal is down)."""
        nonlocal client
        async with connecting:
            if client is None:
                client = await connect(settings)
        return client

    dispatcher = Dispatcher(store, live, temporal, settings.task_queue, default_region=settings.default_region)

    async def answer_reply(reply_id: str) -> None:
        """A logged SMS reply that needs an answer: its ReplyAnswer workflow, started at most once."""
        await start_reply_answer(await temporal(), reply_id, task_queue=settings.task_queue)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        # The effect report's read model, in the background: the definitions' goals (after an
        # upgrade or a changed goal the first report then need not compute every conversion),
        # then the runs sends made, every few seconds, off the send path.
        goals = asyncio.create_task(keep_read_model(store, live, stop))
        # Newly published definitions, from this process's approvals or another's.
        polling = asyncio.create_task(live.keep(stop))
        try:
            yield
        finally:
            stop.set()
            await task
            if not goals.done():
                log.info("waiting for the effect report's conversions to be computed before stopping")
            await asyncio.gather(goals, polling, return_exceptions=True)
            store.dispose()

    app = create_app(
        store,
        temporal=temporal,
        live=live,
        publish_own_changes=settings.publish_own_changes,
        ui_url=settings.temporal_ui_url,
        api_keys=settings.api_keys,
        max_body_bytes=settings.api_max_body_bytes,
        on_accepted=dispatcher.wake.set,
        webhooks=webhook_config(settings),
        codec=payload_codec(settings),
        ui_origins=[_origin(settings.temporal_ui_url)],
        default_region=settings.default_region,
        task_queue=settings.task_queue,
        prices=Prices.of(settings),
        shop_timezone=settings.shop_timezone,
        shop_name=settings.shop_name,
        sms_opt_out=settings.sms_opt_out,
        outbox=settings.outbox_path,
        lifespan=lifespan,
        on_reply=answer_reply,
        link_base=settings.short_link_base(),
    )
    app.state.settings = settings  # a dry run's process is started with them (triggers/api/dry_runs.py)
    return app


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def webhook_config(settings: Settings) -> WebhookConfig:
    """How the API verifies provider webhooks."""
    return WebhookConfig(
        public_url=settings.public_url,
        twilio_auth_token=settings.twilio_auth_token,
        sendgrid_public_key=settings.sendgrid_webhook_public_key,
        unsubscribe_secret=settings.secret,
        aliyun_push_token=settings.aliyun_sms_push_token,
        max_body_bytes=settings.api_max_body_bytes,
    )


class _EmbeddedServer(uvicorn.Server):
    """A server inside `journeys up`, which owns Ctrl-C and stops the server itself."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def api_server(settings: Settings, embedded: bool = False, live: LiveDefinitions | None = None) -> uvicorn.Server:
    if not settings.api_keys:
        log.warning("no API keys configured (JOURNEYS_API_KEYS): listening on %s only", settings.api_host)
    config = uvicorn.Config(
        build_api(settings, live), host=settings.api_host, port=settings.api_port, log_level="warning", lifespan="on"
    )
    return (_EmbeddedServer if embedded else uvicorn.Server)(config)
