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
problems is never swapped in: the process logs it and runs the newest publication that loads (at
start and on every look alike, so every process runs the same one). With no published change
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

from definitions.drafts import DraftError, content_hash, journey_paths, kind_of, materialize
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
    again until a newer one; `failure` says why it did not, `trouble` why one could not be tried
    just now). `refresh()` loads the newest publication that loads;
    `keep(stop)` does so every POLL_SECONDS. Callbacks given to `on_change` run after each swap
    with the new Definitions and directory (the worker hands them to its activities)."""

    def __init__(self, store: Store | None, base: Path, *, strict: bool = False):
        self.store = store
        self.base = Path(base)
        self.loaded_seq = self.seen_seq = 0
        self.failure: str | None = None
        #: Why the latest publication could not be tried just now (it is tried again at the next look).
        self.trouble: str | None = None
        self._rehear = False  # reading the published journeys for `heard` failed: read them again
        self.directory = self.base
        self.current = Definitions()
        #: `{path: text}` of the draftable files that run (read when they were loaded): what
        #: `GET /definitions` lists and a change's diff is against, not what a file on disk says later.
        self._files: dict[str, str] | None = None
        self._journey_paths: tuple[dict[str, str], dict[str, str]] | None = None
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
        holder.failure = holder.trouble = None
        holder._rehear = False
        holder.directory, holder.current, holder._files, holder._journey_paths = holder.base, definitions, None, None
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

    def _latest(self) -> int:
        assert self.store is not None
        with self.store.transaction() as session:
            return definition_changes.latest_seq(session)

    def _load_first(self, strict: bool) -> None:
        """At start: the newest publication that loads (`_newest_that_loads`), logged; the base
        alone only when none does. With `strict` (the API, as before), DefinitionsError when the
        base has problems too."""
        latest = self._latest() if self.store is not None else 0
        if latest and self._newest_that_loads(latest):
            return
        loaded, problems = check_definitions(self.base)
        if problems and strict:
            raise DefinitionsError(problems)
        for problem in problems:
            log.error("definition problem (instances of other journeys are unaffected): %s", problem)
        self.current, self.directory, self._files = loaded, self.base, draftable_files(self.base)
        self._hear(loaded)
        if latest and self.seen_seq >= latest:
            log.error("running the base definitions in %s alone: no publication up to %d loads", self.base, latest)

    def _newest_that_loads(self, latest: int) -> bool:
        """Swap in the newest publication from `latest` down to the one after what runs that loads
        (each the publications up to it laid over the base): the same rule at start and on every
        poll, so every process runs the same one. True if one swapped in. A passing failure (the
        disk, the store) stops the search without marking anything: the next poll tries again."""
        newest_failure: str | None = None
        for seq in range(latest, self.loaded_seq, -1):
            _seq, files = self._published(up_to=seq)
            loads = self._try(seq, files)
            if loads is None:
                return False
            if loads:
                self.seen_seq = max(self.seen_seq, latest)  # the newer ones: not tried again until a newer one
                if seq < latest:
                    self.failure = newest_failure
                    log.error(
                        "publication %d of the definitions does not load: running publication %d, the newest that does",
                        latest,
                        seq,
                    )
                return True
            newest_failure = newest_failure or self.failure
        self.seen_seq, self.failure = max(self.seen_seq, latest), newest_failure
        return False

    def _try(self, seq: int, files: dict[str, str]) -> bool | None:
        """Load publication `seq` into a directory of its own; swap it in if it has no problems.
        True if swapped in, False if it does not load, None if it could not be tried now (the
        disk refused: an OSError, which passes) — then nothing is marked and the next poll tries
        again."""
        try:
            target = materialize(self.base, files, self._scratch_dir() / f"seq-{seq}")
            texts = draftable_files(target)
            loaded, problems = check_definitions(target)
        except OSError as err:  # a full or refusing disk passes: not a fault of the publication
            self.trouble = f"publication {seq} could not be loaded now: {type(err).__name__}: {err}"
            log.warning("%s; trying again at the next look", self.trouble)
            return None
        except Exception as err:  # a file the drafts' checks let through but the loader refused
            loaded, problems = Definitions(), [f"{type(err).__name__}: {err}"]
        self.trouble = None
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
        self.current, self.directory, self._files, self.loaded_seq, self.failure = loaded, target, texts, seq, None
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
            except Exception as err:  # routing still hears what runs now and what it heard before
                log.warning("could not read the published versions of the journeys (%s); trying again", err)
                for name, heard in self.heard.items():
                    add(name, heard)
                self._rehear = True
            else:
                self._rehear = False
        for file_hash, text in texts.items():
            if file_hash not in self._parsed and text is not None:
                self._parsed[file_hash] = _parse_heard(text)
            if parsed := self._parsed.get(file_hash):
                add(*parsed)
        self.heard = found

    def refresh(self) -> bool:
        """Load the newest publication that loads if one is newer than what was tried (the same
        fallback as at start); rebuild `heard` if reading the published journeys failed last time.
        True if it swapped."""
        if self.store is None:
            return False
        with self._lock:
            latest = self._latest()
            swapped = latest > self.seen_seq and self._newest_that_loads(latest)
            if self._rehear and not swapped:
                self._hear(self.current)
            return swapped

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

    def running_files(self) -> dict[str, str]:
        """`{path: text}` of every draftable file that runs now (journeys, templates, segments,
        broadcasts, policy.yaml, loyalty.yaml; not events.yaml, sms.yaml, ...), as loaded."""
        files = self._files
        if files is None:  # a fixed holder: its directory read once, when first asked
            files = self._files = draftable_files(self.directory)
        return files

    def journey_paths(self) -> dict[str, str]:
        """`{journey name: path}` of the journey files that run (definitions/drafts.py
        `journey_paths`), found once per loaded set."""
        files = self.running_files()
        cached = self._journey_paths
        if cached is None or cached[0] is not files:
            cached = self._journey_paths = (files, journey_paths(files))
        return cached[1]

    def running_text(self, path: str) -> str | None:
        """The text of the file at `path` that runs now, None if there is none."""
        return self.running_files().get(path)


def draftable_files(root: Path) -> dict[str, str]:
    """`{path: text}` of the files under `root` a change may hold (definitions/drafts.py `kind_of`)."""
    found: dict[str, str] = {}
    if not root.is_dir():
        return found
    for file in sorted(root.rglob("*")):
        if not file.is_file() or file.suffix not in (".yaml", ".yml"):
            continue
        relative = file.relative_to(root).as_posix()
        try:
            kind_of(relative)
            found[relative] = file.read_text(encoding="utf-8")
        except (DraftError, OSError, UnicodeDecodeError):
            continue
    return found


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
