"""The definitions that run now (docs/publishing.md): the base directory (JOURNEYS_DEFINITIONS, or
the shipped definitions) with the files of every published change laid over it, loaded without a
restart.

One `LiveDefinitions` per process, read by everything that needs the definitions: in the API
process the routes (triggers/api/deps.py `ApiContext.definitions`), the dispatcher, the effect
report's read model and the SMS reply intake; in the worker the contact policy, the loyalty
programme, sms.yaml and the reply rules its activities use (journeys/worker.py). Each process
polls the store's latest publication (`store.definition_changes.latest_seq`, one cheap query every
two seconds) and loads again when it grows; the API process also right after its own approval.

The files are written to a directory of their own per publication (under one temporary directory
per process, removed at exit), which stays while the process runs: activities read files from the
directory later (the loyalty programme's daily run). A published set that does not load without
problems is never swapped in: the process logs it and keeps what it ran. With no published change
what runs is the base directory itself, exactly as before publishing existed. Running instances
keep the snapshot they started with (it is in their input, instances/start.py): only instances
started after a swap run the new version.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from definitions.drafts import content_hash, kind_of, materialize
from definitions.loader import RESERVED_FILES, Definitions, DefinitionsError, check_definitions
from definitions.schema import Journey
from store import definition_changes
from store.db import Store
from triggers.router import Heard

log = logging.getLogger("journeys.definitions")

#: How often a process looks for a new publication.
POLL_SECONDS = 2.0


def describe_files(files: Mapping[str, str]) -> tuple[list[definition_changes.NewFile], str]:
    """A change's files as the store keeps them (kind and name from their path, each file's hash)
    and the change's hash; DraftError naming a path that is no definition file."""
    described = []
    for path, text in files.items():
        kind, name = kind_of(path)
        described.append(
            definition_changes.NewFile(path=path, kind=kind, name=name, text=text, hash=content_hash({path: text}))
        )
    return described, content_hash(dict(files))


class LiveDefinitions:
    """What runs now: `current` (the Definitions), `directory` (where its files are),
    `loaded_seq` (also `seq`: the publication that runs, laid over the base, 0 for none) and
    `seen_seq` (the latest publication this process tried: one that did not load is not tried
    again until a newer one; `failure` says why it did not). `refresh()` loads a newer publication;
    `keep(stop)` does so every POLL_SECONDS. Callbacks given to `on_change` run after each swap
    with the new Definitions and directory (the worker hands them to its activities)."""

    def __init__(self, store: Store | None, base: Path, *, strict: bool = False):
        self.store = store
        self.base = Path(base)
        self.loaded_seq = self.seen_seq = 0
        self.failure: str | None = None
        self.directory = self.base
        self.current = Definitions()
        self._listeners: list[Callable[[Definitions, Path], None]] = []
        self._lock = threading.Lock()
        self._scratch: Path | None = None
        #: What every version of each journey that may still run listens to (triggers/router.py
        #: `plan`), and the parsed journey files behind it, by hash (each parsed once).
        self.heard: dict[str, Heard] = {}
        self._parsed: dict[str, tuple[str, Heard] | None] = {}
        self._load_first(strict)

    @classmethod
    def fixed(cls, definitions: Definitions, base: Path | None = None) -> LiveDefinitions:
        """A holder of `definitions` that never loads anything (tests, simulations, an API
        without a store of publications)."""
        holder = cls.__new__(cls)
        holder.store, holder.base = None, Path(base) if base else Path(".")
        holder.loaded_seq = holder.seen_seq = 0
        holder.failure = None
        holder.directory, holder.current = holder.base, definitions
        holder._listeners, holder._lock, holder._scratch = [], threading.Lock(), None
        holder.heard, holder._parsed = {}, {}
        return holder

    @property
    def seq(self) -> int:
        """The publication that runs (0: the base alone)."""
        return self.loaded_seq

    # -- loading -------------------------------------------------------------------------------

    def _published(self, up_to: int | None = None) -> tuple[int, dict[str, str]]:
        assert self.store is not None
        with self.store.transaction() as session:
            files = definition_changes.published_files(session, up_to)
            return (up_to if up_to is not None else definition_changes.latest_seq(session)), files

    def _seqs(self) -> list[int]:
        assert self.store is not None
        with self.store.transaction() as session:
            return definition_changes.published_seqs(session)

    def _latest(self) -> int:
        assert self.store is not None
        with self.store.transaction() as session:
            return definition_changes.latest_seq(session)

    def _load_first(self, strict: bool) -> None:
        """At start: the base with the publications over it; if those do not load, the newest
        publication that does (each earlier one in turn: the publications up to it laid over the
        base), logged; the base alone only when none does. With `strict` (the API, as before),
        DefinitionsError when the base has problems too."""
        seq, files = self._published() if self.store is not None else (0, {})
        if seq and self._try(seq, files):
            return
        if seq:
            newest_failure = self.failure
            for earlier in self._seqs():
                if earlier >= seq:
                    continue
                if self._try(*self._published(up_to=earlier)):
                    self.seen_seq = seq  # the newer ones are not tried again until a newer publication
                    self.failure = newest_failure
                    log.error(
                        "publication %d of the definitions does not load: running publication %d, the newest that does",
                        seq,
                        earlier,
                    )
                    return
        loaded, problems = check_definitions(self.base)
        if problems and strict:
            raise DefinitionsError(problems)
        for problem in problems:
            log.error("definition problem (instances of other journeys are unaffected): %s", problem)
        self.current, self.directory = loaded, self.base
        self._hear(loaded)
        if seq:
            log.error("running the base definitions in %s alone: no publication up to %d loads", self.base, seq)
            self.seen_seq = seq  # not tried again until a newer publication

    def _try(self, seq: int, files: dict[str, str]) -> bool:
        """Load publication `seq` into a directory of its own; swap it in if it has no problems."""
        try:
            target = materialize(self.base, files, self._scratch_dir() / f"seq-{seq}")
            loaded, problems = check_definitions(target)
        except Exception as err:  # a file the drafts' checks let through but the disk refused
            loaded, problems = Definitions(), [f"{type(err).__name__}: {err}"]
        self.seen_seq = max(self.seen_seq, seq)  # not tried again until a newer publication
        if problems:
            self.failure = f"publication {seq} does not load: {'; '.join(problems)}"
            log.error(
                "publication %d of the definitions does not load; still running %s: %s",
                seq,
                f"publication {self.loaded_seq}" if self.loaded_seq else "the base definitions",
                "; ".join(problems),
            )
            return False
        for warning in loaded.warnings:
            log.warning("definition %s", warning)
        self.current, self.directory, self.loaded_seq, self.failure = loaded, target, seq, None
        self._hear(loaded)
        log.info("running publication %d of the definitions (%d journeys, in %s)", seq, len(loaded), target)
        for listener in list(self._listeners):
            try:
                listener(loaded, target)
            except Exception:
                log.exception("a part of this process did not take the new definitions")
        return True

    # -- what running instances may hear -----------------------------------------------------

    def _hear(self, loaded: Definitions) -> None:
        """`heard`: for each journey, the union over what runs now, the base directory's version
        and every published version of its file, of the events it waits for or exits on. An
        instance keeps the version it started on, so the router signals it for any of them."""
        found: dict[str, Heard] = {}

        def add(name: str, heard: Heard) -> None:
            found[name] = found[name].union(heard) if name in found else heard

        for snapshot in loaded:
            add(snapshot.definition.name, _heard_of(snapshot.definition))
        texts: dict[str, str | None] = {}
        if self.base.is_dir():
            for path in sorted(self.base.glob("*.yaml")) + sorted(self.base.glob("*.yml")):
                if path.name in RESERVED_FILES:
                    continue
                try:
                    text = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                texts[content_hash({path.name: text})] = text
        if self.store is not None:
            try:
                with self.store.transaction() as session:
                    texts |= definition_changes.published_journey_files(session, known=self._parsed)
            except Exception as err:  # routing still hears what runs now
                log.warning("could not read the published versions of the journeys (%s)", err)
        for file_hash, text in texts.items():
            if file_hash not in self._parsed and text is not None:
                self._parsed[file_hash] = _parse_heard(text)
            if parsed := self._parsed.get(file_hash):
                add(*parsed)
        self.heard = found

    def refresh(self) -> bool:
        """Load the latest publication if it is newer than what runs; True if it swapped."""
        if self.store is None:
            return False
        with self._lock:
            if self._latest() <= self.seen_seq:
                return False
            seq, files = self._published()
            if seq <= self.seen_seq:
                return False
            return self._try(seq, files)

    async def keep(self, stop: asyncio.Event, every: float = POLL_SECONDS) -> None:
        """Look for a new publication every `every` seconds until `stop`; a failure to read the
        store is logged and tried again at the next tick."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            if stop.is_set():
                return
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as err:
                log.warning("could not look for newly published definitions (%s); trying again", err)

    def on_change(self, listener: Callable[[Definitions, Path], None]) -> None:
        self._listeners.append(listener)

    def _scratch_dir(self) -> Path:
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="journeys-definitions-"))
            atexit.register(shutil.rmtree, self._scratch, True)
        return self._scratch

    def running_text(self, path: str) -> str | None:
        """The text of the file at `path` that runs now, None if there is none."""
        file = self.directory / path
        try:
            return file.read_text(encoding="utf-8") if file.is_file() else None
        except (OSError, UnicodeDecodeError):
            return None


def _heard_of(journey: Journey) -> Heard:
    return Heard(frozenset({journey.entry.key}), journey.listened_events, frozenset(journey.exit_on))


def _parse_heard(text: str) -> tuple[str, Heard] | None:
    """A journey file's name and what its instances hear; None for a file that is no journey."""
    try:
        data = yaml.safe_load(text)
        journey = Journey.model_validate(data) if isinstance(data, dict) else None
    except (yaml.YAMLError, ValidationError, ValueError, TypeError):
        return None
    return (journey.name, _heard_of(journey)) if journey is not None else None
