"""The README and docs/ say only what is there: every relative link resolves to a file or folder of
the repository (and a `#anchor` into a page to one of its headings, slugged as GitHub does), and
every `journeys` command in a shell code block names a command and subcommand the CLI has, with
options that command takes and the arguments and options it requires. Each failure names the
page, the line and the link or command."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest
import typer

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: The code blocks whose lines are shell commands (`console`: only the lines after a `$ ` prompt).
SHELL_BLOCKS = {"", "sh", "bash", "shell", "zsh", "console"}

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]*(?:\([^()\s]*\)[^()\s<>]*)*)>?(?:\s+\"[^\"]*\")?\s*\)"
)
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_HEREDOC = re.compile(r"<<-?\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")", "|&"}
_REDIRECTS = {">", ">>", "<", "<<", "<<<", ">&", "<&", "&>", "&>>"}
_KEYWORDS = {"do", "then", "else", "time", "exec", "!"}


def _blank(match: re.Match) -> str:
    """The match's text with every character but newlines replaced, so offsets and lines stay."""
    return re.sub(r"[^\n]", " ", match.group(0))


def _fenced_blocks(text: str) -> Iterator[tuple[str, int, int]]:
    """(info word, first content line, last content line), 0-based, of every fenced code block."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if opened:
            fence, info = opened.group(1), opened.group(2).lower()
            end = i + 1
            while end < len(lines) and not re.match(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$", lines[end]):
                end += 1
            yield info, i + 1, end - 1
            i = end
        i += 1


def _without_code_blocks(text: str) -> str:
    """The page with its fenced code blocks (fences included) blanked out, lines kept."""
    lines = text.split("\n")
    for _, first, last in _fenced_blocks(text):
        for n in range(first - 1, min(last + 2, len(lines))):
            lines[n] = " " * len(lines[n])
    return "\n".join(lines)


def _prose(text: str) -> str:
    """The page with its code blocks and inline code spans blanked out: what is left holds the
    links, at their offsets."""
    return _CODE_SPAN.sub(_blank, _without_code_blocks(text))


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: the text as rendered, lower-cased, without
    punctuation (letters of every script, digits, `_` and `-` stay), spaces as hyphens."""
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    """Every heading anchor of a page, a repeated one numbered as GitHub numbers it (-1, -2...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in _without_code_blocks(page.read_text(encoding="utf-8")).split("\n"):
        heading = _HEADING.match(line)
        if not heading:
            continue
        base = slug(heading.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def link_problems(page: Path, root: Path = ROOT) -> list[str]:
    """Where `page`'s relative links do not resolve inside `root`, as `page:line: problem`."""
    text = page.read_text(encoding="utf-8")
    prose = _prose(text)
    where = page.relative_to(root)
    problems = []
    targets = [(m.start(1), m.group(1)) for m in _LINK.finditer(prose)]
    targets += [(m.start(1), m.group(1)) for m in _REFERENCE.finditer(prose)]
    for offset, target in sorted(targets):
        line = prose.count("\n", 0, offset) + 1
        if not target or _SCHEME.match(target):  # http(s), mailto: not ours to check here
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not resolved.is_relative_to(root):
            problems.append(f"{where}:{line}: {target}: points outside the repository")
        elif not resolved.exists():
            problems.append(f"{where}:{line}: {target}: no such file {resolved.relative_to(root)}")
        elif anchor and resolved.suffix == ".md" and unquote(anchor) not in anchors(resolved):
            problems.append(f"{where}:{line}: {target}: no heading #{anchor} in {resolved.relative_to(root)}")
    return problems


def commands(page: Path) -> Iterator[tuple[int, list[str]]]:
    """(line, arguments) of each `journeys` command in the page's shell code blocks: a line (with
    its continuation lines) or a part of one after `&&`, `|` or `;`, whose command word is
    `journeys` (or a path to it), after any `NAME=value` assignments."""
    lines = page.read_text(encoding="utf-8").split("\n")
    for info, first, last in _fenced_blocks("\n".join(lines)):
        if info not in SHELL_BLOCKS:
            continue
        n, heredoc = first, None
        while n <= last:
            start, line = n, lines[n]
            while line.endswith("\\") and n < last:
                n += 1
                line = line[:-1] + " " + lines[n]
            n += 1
            if heredoc is not None:
                heredoc = None if line.strip() == heredoc else heredoc
                continue
            if (opened := _HEREDOC.search(line)) is not None:
                heredoc = opened.group(1)
            stripped = line.strip()
            if info == "console" and not stripped.startswith("$ "):
                continue
            stripped = stripped.removeprefix("$ ")
            if not re.search(r"(^|[\s/;&|(])journeys(\s|$)", stripped):
                continue
            try:
                lexer = shlex.shlex(stripped, posix=True, punctuation_chars=True)
                lexer.whitespace_split = True
                tokens = list(lexer)
            except ValueError as err:
                yield start + 1, ["<unparsable>", f"{stripped}: {err}"]
                continue
            yield from ((start + 1, words) for words in _invocations(tokens))


def _invocations(tokens: list[str]) -> Iterator[list[str]]:
    """The arguments of each `journeys` command among a shell line's tokens."""
    segment: list[str] = []
    for token in [*tokens, ";"]:
        if token not in _SEPARATORS:
            segment.append(token)
            continue
        words: list[str] = []
        skip = False
        for word in segment:
            if skip:
                skip = False
            elif word in _REDIRECTS or re.fullmatch(r"\d*[<>]+&?", word):
                skip = True
            else:
                words.append(word)
        while words and (words[0] in _KEYWORDS or _ASSIGNMENT.match(words[0])):
            words.pop(0)
        if words and Path(words[0]).name == "journeys":
            yield words[1:]
        segment = []


@cache
def _cli():
    from journeys.cli import app

    return typer.main.get_command(app)


def _options(command, ctx) -> dict[str, object]:
    """Each option string of a command (`--limit`, `--no-x`) and its parameter; `--help` too."""
    found: dict[str, object] = {name: None for name in command.get_help_option_names(ctx)}
    for param in command.params:
        if getattr(param, "param_type_name", "") == "option":
            for name in (*param.opts, *param.secondary_opts):
                found[name] = param
    return found


def command_problem(args: list[str]) -> str | None:
    """Why `journeys ARGS` is not a command the CLI takes (None when it is): no such command or
    subcommand, an option the command does not have, a required argument or option left out,
    or more arguments than it takes. Values are not judged (a file need not exist)."""
    if args[:1] == ["<unparsable>"]:
        return f"cannot read the shell line {args[1]}"
    root = _cli()
    try:
        ctx = root.make_context("journeys", list(args), resilient_parsing=True)
    except Exception as err:  # the CLI's own usage error, whatever its class
        return err.format_message() if hasattr(err, "format_message") else str(err)
    command, path = root, []
    allowed = _options(root, ctx)  # --data-dir is the root's, before or after the command
    rest: list[str] = []
    while hasattr(command, "resolve_command"):  # a group: the next word names a command of it
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest or rest[0].startswith("-"):
            break
        name, sub, rest = command.resolve_command(ctx, rest)
        if sub is None:
            known = ", ".join(sorted(command.commands))
            return f"`journeys {' '.join([*path, rest[0] if rest else ''])}`: no such command (there are: {known})"
        path.append(name)
        ctx = sub.make_context(name, list(rest), parent=ctx, resilient_parsing=True)
        command = sub
        allowed |= _options(command, ctx)
    shown = f"`journeys {' '.join(path)}`"
    positional, given = 0, set()
    words = iter(rest)
    for word in words:
        if word == "--":
            positional += sum(1 for _ in words)
        elif word.startswith("-") and word != "-":
            name, equals, _ = word.partition("=")
            if name not in allowed:
                return f"{shown} has no option {name} (it has: {', '.join(sorted(allowed))})"
            param = allowed[name]
            given.add(id(param))
            takes_value = param is not None and not (param.is_flag or param.count)
            if takes_value and not equals:
                next(words, None)
        else:
            positional += 1
    arguments = [p for p in command.params if getattr(p, "param_type_name", "") == "argument"]
    if "--help" in rest:
        return None
    most = sum(p.nargs for p in arguments) if all(p.nargs >= 0 for p in arguments) else None
    if most is not None and positional > most:
        return f"{shown} takes {most} argument(s), given {positional}: {' '.join(rest)}"
    needed = sum(p.nargs for p in arguments if p.required and p.nargs > 0)
    if positional < needed:
        return f"{shown} needs {', '.join(p.name.upper() for p in arguments if p.required)}"
    for param in command.params:
        if getattr(param, "param_type_name", "") == "option" and param.required and id(param) not in given:
            return f"{shown} needs {param.opts[0]}"
    return None


def test_every_relative_link_resolves():
    problems = [problem for page in PAGES for problem in link_problems(page)]
    assert not problems, "\n".join(problems)


def test_every_journeys_command_exists():
    checked, problems = 0, []
    for page in PAGES:
        for line, args in commands(page):
            checked += 1
            if (problem := command_problem(args)) is not None:
                problems.append(f"{page.relative_to(ROOT)}:{line}: journeys {' '.join(args)}: {problem}")
    assert not problems, "\n".join(problems)
    assert checked >= 20, f"only {checked} journeys commands found in the docs' code blocks: is the reader broken?"


def test_the_docs_are_there_and_the_readme_short():
    assert {page.name for page in PAGES} >= {
        "README.md", "journeys.md", "events-and-api.md", "operations.md", "privacy.md", "performance.md", "architecture.md"
    }  # fmt: skip
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) < 250


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Coupons and other resources (防骚扰)", "coupons-and-other-resources-防骚扰"),
        ("The console (/ui/)", "the-console-ui"),
        ("The shop's own event types", "the-shops-own-event-types"),
        ("On embedded defaults: journeys up", "on-embedded-defaults-journeys-up"),
        ("1. Write a journey", "1-write-a-journey"),
        ("`journeys report`, by [day](x.md)", "journeys-report-by-day"),
        ("A - B", "a---b"),
    ],
)
def test_anchors_are_slugged_as_github_slugs_them(heading, anchor):
    assert slug(heading) == anchor


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("journeys customer c1 --data-dir /srv/j", None),
        ("JOURNEYS_DATA_DIR=/srv/j .venv/bin/journeys report --by day --csv > r.csv", None),
        ("journeys validate definitions && journeys broadcast dry-run spring_festival_care | head", None),
        ("journeys simulate --customers c.jsonl --events e.jsonl --until 2026-03-01T00:00:00Z --out m.jsonl", None),
        ("journeys frobnicate", "no such command"),
        ("journeys broadcast launch x", "no such command"),
        ("journeys validate definitions && journeys report --frm 2026-02-01", "has no option --frm"),
        ("journeys preview payment_reminder --customer c1", "needs"),
        ("journeys simulate --customers c.jsonl --events e.jsonl --until 2026-03-01T00:00:00Z", "needs --out"),
        ("journeys history o1", "takes 0 argument(s)"),
    ],
)
def test_the_command_check_catches_what_it_should(tmp_path, line, problem):
    page = tmp_path / "page.md"
    page.write_text(f"# A page\n\n```sh\n{line}\n```\n", encoding="utf-8")
    found = [command_problem(args) for _, args in commands(page)]
    assert found, line
    got = next((p for p in found if p is not None), None)
    if problem is None:
        assert got is None, got
    else:
        assert got is not None and problem in got, got


def test_the_link_check_catches_what_it_should(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "code.py").write_text("")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n\n## 防骚扰 limits\n\n## `journeys report` by day\n\n"
        "[ok](../code.py) [ok](#防骚扰-limits) [ok](page.md#journeys-report-by-day) [web](https://example.com)\n"
        "`[not a link](nowhere.py)`\n"
        "```sh\n[not a link either](nowhere.py)\n```\n"
        "[gone](../missing.py)\n[bad anchor](#nowhere)\n",
        encoding="utf-8",
    )
    found = link_problems(page, root=tmp_path)
    assert [p.split(": ")[0] for p in found] == ["docs/page.md:12", "docs/page.md:13"], found
    assert "missing.py" in found[0] and "#nowhere" in found[1]
