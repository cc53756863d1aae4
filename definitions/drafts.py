"""Drafts of definitions: which file a journey, template, segment, broadcast, policy or loyalty
programme lives in, a set of changed files laid over a definitions directory, and the checks of
`journeys validate` run on the result, each problem at its file and line.

A change (a draft, then reviewed, then published: store/definition_changes.py) is a set of files
by their path inside a definitions directory (`payment_reminder.yaml`, `templates/x.yaml`). What
runs is the base directory (the configured one, or the shipped one) with the published files laid
over it, loaded by the same loader as `journeys validate` (definitions/loader.py).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import yaml
from pydantic import BaseModel

from definitions.broadcasts import BROADCASTS_DIR
from definitions.loader import LOYALTY_FILE, POLICY_FILE, RESERVED_FILES, Definitions, check_definitions

#: What a draft may change, and the file (or folder of files) each lives in.
KINDS = ("journey", "template", "segment", "broadcast", "policy", "loyalty")
_FOLDERS = {"template": "templates", "segment": "segments", "broadcast": BROADCASTS_DIR}
_SINGLE = {"policy": POLICY_FILE, "loyalty": LOYALTY_FILE}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
#: The longest file a draft may hold (a journey with its templates is a few kilobytes).
MAX_FILE_BYTES = 256 * 1024
_PROBLEM = re.compile(r"^(?P<path>[^:]+\.ya?ml):(?P<line>\d+): (?P<rest>.*)$")


class DraftError(ValueError):
    """A draft names a file or kind that cannot be: the message names it."""


class Problem(BaseModel):
    """One problem `journeys validate` found, placed at its file and line."""

    path: str
    line: int
    #: The field path (`steps[2].send.channel`), "" when the problem is the file's as a whole.
    field: str = ""
    message: str
    warning: bool = False


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise DraftError(f"{name!r} is not a definition name: letters, digits, '_', '-' and '.', at most 100")
    return name


def path_of(kind: str, name: str, journeys: Mapping[str, str] | None = None) -> str:
    """The file a definition of `kind` named `name` lives in, relative to the definitions
    directory. A journey's file is the one `journeys` (`{journey name: path}` of what is loaded,
    `journey_paths`) names for it (files need not be named after their journey), else `NAME.yaml`;
    `policy` and `loyalty` have one file each."""
    if kind not in KINDS:
        raise DraftError(f"{kind!r} is not a kind of definition; kinds are {', '.join(KINDS)}")
    if kind in _SINGLE:
        return _SINGLE[kind]
    check_name(name)
    if kind in _FOLDERS:
        return f"{_FOLDERS[kind]}/{name}.yaml"
    return (journeys or {}).get(name, f"{name}.yaml")


def journey_paths(files: Mapping[str, str]) -> dict[str, str]:
    """`{journey name: path}` of the journey files among `files` (`{path: text}`), by their `name:`;
    of two files naming one journey, the first in path order."""
    found: dict[str, str] = {}
    for path in sorted(files):
        if "/" in path or path in RESERVED_FILES or path in _SINGLE.values():
            continue
        name = _name_in(files[path])
        if name is not None:
            found.setdefault(name, path)
    return found


def kind_of(path: str) -> tuple[str, str]:
    """`(kind, name)` of a file a draft may hold; DraftError for any other path."""
    clean = check_path(path)
    parts = PurePosixPath(clean).parts
    stem = PurePosixPath(clean).stem
    if len(parts) == 1:
        for kind, file in _SINGLE.items():
            if clean == file:
                return kind, kind
        if clean in RESERVED_FILES:
            raise DraftError(f"{path}: drafts change journeys, templates, segments, broadcasts, policy and loyalty")
        return "journey", stem
    for kind, folder in _FOLDERS.items():
        if parts[0] == folder and len(parts) == 2:
            if PurePosixPath(clean).suffix != ".yaml":  # the loader reads only *.yaml in the folders
                raise DraftError(f"{path}: a file in {folder}/ ends .yaml ({folder}/{stem}.yaml), or it is never read")
            return kind, stem
    raise DraftError(f"{path}: not a definition file (NAME.yaml, templates/, segments/ or broadcasts/NAME.yaml)")


def check_path(path: str) -> str:
    """`path` as a clean relative POSIX path of a YAML file, or DraftError."""
    clean = PurePosixPath(path or "")
    if clean.is_absolute() or ".." in clean.parts or not clean.parts or clean.suffix not in (".yaml", ".yml"):
        raise DraftError(f"{path!r}: a draft's file is a relative path ending .yaml inside the definitions")
    check_name(clean.stem)
    return str(clean)


def _name_in(text: str) -> str | None:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def content_hash(files: Mapping[str, str]) -> str:
    """The hash of a set of files (path and text), the version a change records."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return digest.hexdigest()[:12]


def materialize(base: Path, overlay: Mapping[str, str], target: Path) -> Path:
    """Copy the definitions of `base` (its YAML files and folders) to `target`, then write each of
    `overlay`'s files over them. Returns `target`."""
    target.mkdir(parents=True, exist_ok=True)
    if base.is_dir():
        for source in base.rglob("*"):
            relative = source.relative_to(base)
            if source.is_file() and source.suffix in (".yaml", ".yml") and "__pycache__" not in relative.parts:
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target / relative)
    for path, text in overlay.items():
        clean = check_path(path)
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError:
            raise DraftError(f"{path}: not UTF-8 text (it holds a lone surrogate)") from None
        if len(encoded) > MAX_FILE_BYTES:
            raise DraftError(f"{path}: longer than {MAX_FILE_BYTES // 1024} KiB")
        (target / clean).parent.mkdir(parents=True, exist_ok=True)
        (target / clean).write_bytes(encoded)
    return target


def check_with(base: Path, overlay: Mapping[str, str]) -> tuple[Definitions, list[Problem]]:
    """What `base` with `overlay` laid over it loads, and every problem and warning `journeys
    validate` would print for it, each at its path (relative to the definitions) and line."""
    with tempfile.TemporaryDirectory(prefix="journeys-draft-") as scratch:
        root = materialize(base, overlay, Path(scratch) / "definitions")
        loaded, lines = check_definitions(root)
        found = [_problem(line, root, warning=False) for line in lines]
        found += [_problem(line, root, warning=True) for line in loaded.warnings]
    return loaded, found


def _problem(text: str, root: Path, warning: bool) -> Problem:
    relative = text.replace(f"{root}/", "").replace(str(root), ".")
    match = _PROBLEM.match(relative)
    if match is None:
        return Problem(path="", line=0, message=relative, warning=warning)
    rest = match["rest"]
    field, _, message = rest.partition(": ")
    if not message or " " in field:  # a message without a field path (a YAML syntax error)
        field, message = "", rest
    if message.startswith("warning: "):
        message, warning = message.removeprefix("warning: "), True
    return Problem(path=match["path"], line=int(match["line"]), field=field, message=message, warning=warning)
