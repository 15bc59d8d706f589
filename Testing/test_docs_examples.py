"""Every Python and shell example in README.md and docs/**/*.md runs as written.

Fenced blocks tagged ``python``, ``bash``, ``shell`` or ``sh`` are examples. Each one is run,
unless the line right before its fence is ``<!-- not run: REASON -->`` (a reason is required:
the Slicer application, a GPU, LiTS, a download, hours of training). Blocks of one page run
in order, as a reader would type them, in a fresh folder that looks like a source checkout
(every top-level entry of the repository linked in, ``../shared`` beside it), so a later block
may use what an earlier one wrote; ``HOME``, the model folder and the slice cache are private.

A Python block preceded by ``<!-- Slicer Python console -->`` is meant for Slicer's Python
console. It runs as the console would run it, on the real MRML library (slicer-core): a
headless scene and application logic (``LiverXAILib.slicer.headless``) stand behind
``slicer.mrmlScene`` and ``slicer.app.applicationLogic()`` (``slicer.app.processEvents()`` does
nothing: there is no Qt event loop), with the bundled sample CT loaded
as node "TotalSegmentatorExampleCT" (what Sample Data → LiverXAI does in Slicer). Consecutive
console blocks share one session (names defined in one are used in the next). Other Python
blocks run alone in a plain interpreter, as scripts.

Commands of ``python -m LiverXAILib`` in any fenced block, run or not (synopses in ``text``
blocks too), may only use subcommands and options the parser has.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
OWN_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # docs/*.md
RUN_LANGUAGES = {"python", "bash", "shell", "sh"}
CONSOLE = "<!-- Slicer Python console -->"
NOT_RUN = re.compile(r"<!--\s*not run:(.*?)-->")
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
LEFT_OUT = {".git", "demo-output", "bench-results.json", ".pytest_cache", ".ruff_cache"}
BLOCK_TIMEOUT = 600  # seconds; the longest example (one training epoch) takes well under a minute

SAMPLE_CT = ROOT / "LiverXAI" / "Resources" / "Data" / "TotalSegmentatorExampleCT.nii.gz"
CONSOLE_RUNNER = """
import sys, types
from pathlib import Path

import slicer
import vtk
from LiverXAILib.slicer.headless import create_headless_application
from LiverXAILib.slicer.scene import add_volume_from_array
from LiverXAILib.io.volumes import read_volume

app = create_headless_application()
slicer.mrmlScene = app.scene
slicer.app = types.SimpleNamespace(  # what the examples use of Slicer's application object
    applicationLogic=lambda: app.appLogic, processEvents=lambda: None
)
array, ijk_to_ras = read_volume(sys.argv[1])
add_volume_from_array(app.scene, array, ijk_to_ras, "TotalSegmentatorExampleCT")
del array
namespace = {"__name__": "__main__", "slicer": slicer, "vtk": vtk}
for script, page, line in zip(*[iter(sys.argv[2:])] * 3):
    code = "\\n" * (int(line) - 1) + Path(script).read_text()  # tracebacks name the page's line
    exec(compile(code, page, "exec"), namespace)
"""


@dataclass
class Example:
    page: Path
    line: int  # of the first line of code (the fence is the line before)
    language: str
    code: str
    comment: str  # the HTML comment right before the fence, or ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language in RUN_LANGUAGES and not NOT_RUN.search(self.comment)

    @property
    def console(self) -> bool:
        return self.comment == CONSOLE


def fenced_blocks(page: Path) -> list[Example]:
    """Every fenced block of a page with its language and the comment right before it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        indent, language = match.groups()
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        assert end < len(lines), f"{page.relative_to(ROOT)}:{index + 1}: fence never closed"
        before = [text.strip() for text in lines[:index] if text.strip()]
        comment = before[-1] if before and before[-1].startswith("<!--") else ""
        code = "\n".join(text[len(indent) :] for text in lines[index + 1 : end])
        blocks.append(Example(page, index + 2, language.lower(), code + "\n", comment))
        index = end + 1
    return blocks


def all_blocks() -> list[Example]:
    return [block for page in PAGES for block in fenced_blocks(page)]


# --- the rules ------------------------------------------------------------------------------------
def test_pages_are_found_and_hold_examples():
    names = {str(page.relative_to(ROOT)) for page in PAGES}
    for name in ("README.md", "docs/user-guide.md", "docs/command-line.md", "docs/architecture.md"):
        assert name in names
    readme = fenced_blocks(ROOT / "README.md")
    assert any(b.console and b.runs for b in readme), "README: a console example that runs"
    assert any(b.language == "bash" and b.runs for b in readme), "README: a command that runs"


def test_every_example_is_run_or_marked_with_a_reason():
    for block in all_blocks():
        if block.language not in RUN_LANGUAGES:
            continue
        reason = NOT_RUN.search(block.comment)
        if reason:
            assert len(reason.group(1).strip()) >= 10, f"{block.where}: say why it is not run"
        elif block.comment:
            assert block.console and block.language == "python", (
                f"{block.where}: unknown marker {block.comment!r}: use {CONSOLE!r} or "
                "'<!-- not run: REASON -->'"
            )


def test_every_fence_of_the_readme_and_docs_names_its_language():
    """An untagged block would escape the run; synopses with placeholders are ``text``."""
    for page in OWN_PAGES:
        for block in fenced_blocks(page):
            assert block.language, f"{block.where}: name the language (python, bash, text, ...)"


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings (fenced blocks left out)."""
    anchors, seen, fenced = set(), {}, False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line) or line.strip() == "```":
            fenced = not fenced
        if fenced or not re.match(r"^#{1,6} ", line):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_links_between_pages_resolve():
    """Every relative link of the README and docs/*.md names a file that exists, and a heading
    of it when it has an anchor."""
    for page in OWN_PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.relative_to(ROOT)}: {target} does not exist"
            if anchor:
                assert anchor in heading_anchors(linked), f"{page.relative_to(ROOT)}: {target}"


def _subcommands(parser) -> dict:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def liverxai_commands(code: str) -> list[list[str]]:
    """The arguments after ``-m LiverXAILib`` of every command in a block."""
    joined = re.sub(r"\\\n", " ", code)
    commands = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0]
        for part in re.split(r"&&|\|\||;|\|(?=\s)", line):
            words = part.split()
            if "LiverXAILib" in words and words.index("LiverXAILib") > 0:
                at = words.index("LiverXAILib")
                if words[at - 1] == "-m":
                    commands.append(words[at + 1 :])
    return commands


def test_every_liverxai_option_shown_exists():
    from LiverXAILib.cli.main import build_parser

    parser = build_parser()
    commands = _subcommands(parser)
    checked = 0
    for block in all_blocks():
        for words in liverxai_commands(block.code):
            name = words[0].strip("[]()") if words else ""
            assert name in commands, f"{block.where}: no subcommand {name!r}"
            command = commands[name]
            nested = _subcommands(command)
            if nested and len(words) > 1 and not words[1].startswith("-"):
                assert words[1] in nested, f"{block.where}: no '{name} {words[1]}'"
                command = nested[words[1]]
            known = _options(command) | _options(parser)
            for word in words[1:]:
                option = re.match(r"^[\[(]*(--[a-z][a-z0-9-]*)", word)
                if option:
                    assert option.group(1) in known, f"{block.where}: {name} has no {option[1]}"
                    checked += 1
    assert checked > 20


def test_examples_are_found_by_the_command_parser():
    code = ".venv/bin/python -m LiverXAILib segment CT.nii.gz --out OUT \\\n    [--model NAME]\n"
    assert liverxai_commands(code) == [
        ["segment", "CT.nii.gz", "--out", "OUT", "[--model", "NAME]"]
    ]
    assert liverxai_commands("torchrun --nproc_per_node 4 -m LiverXAILib train --data x\n") == [
        ["train", "--data", "x"]
    ]


# --- running them -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One slice cache for every page: the second training of a case starts at once."""
    return tmp_path_factory.mktemp("slice-cache")


def checkout_entries() -> list[Path]:
    """The repository's own top-level entries (what git tracks) and the ``.venv`` the examples
    call; outputs lying in the real checkout are left out, so no example writes into it."""
    done = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:  # not a git checkout: everything but known outputs
        return [entry for entry in ROOT.iterdir() if entry.name not in LEFT_OUT]
    names = {line.split("/", 1)[0] for line in done.stdout.splitlines() if line}
    return [ROOT / name for name in sorted(names | {".venv"}) if (ROOT / name).exists()]


def checkout_copy(folder: Path) -> Path:
    """A folder that looks like a source checkout: top-level entries linked, shared beside."""
    checkout = folder / "checkout"
    checkout.mkdir()
    for entry in checkout_entries():
        (checkout / entry.name).symlink_to(entry)
    (folder / "shared").symlink_to(SHARED)
    return checkout


def environment(folder: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HOME=str(folder / "home"),
        LIVERXAI_MODELS_DIR=str(folder / "home" / ".liverxai" / "models"),
        LIVERXAI_CACHE=str(cache),
        MPLBACKEND="Agg",
        PYTHONUNBUFFERED="1",
    )
    (folder / "home").mkdir(exist_ok=True)
    return env


def run(command: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    try:
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what}: still running after {BLOCK_TIMEOUT} s")
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-6000:]
        pytest.fail(f"{what} failed with exit status {done.returncode}:\n{output}")


def sessions(blocks: list[Example]) -> list[list[Example]]:
    """Runnable blocks in page order; consecutive console blocks form one session."""
    groups: list[list[Example]] = []
    for block in blocks:
        if not block.runs:
            continue
        if block.console and groups and groups[-1][-1].console:
            groups[-1].append(block)
        else:
            groups.append([block])
    return groups


def pages_with_examples() -> list[Path]:
    return [page for page in PAGES if any(block.runs for block in fenced_blocks(page))]


@pytest.mark.slow
@pytest.mark.parametrize("page", pages_with_examples(), ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_of_the_page_run_as_written(page, tmp_path, shared_cache):
    checkout = checkout_copy(tmp_path)
    env = environment(tmp_path, shared_cache)
    blocks = fenced_blocks(page)
    ran = []
    for group in sessions(blocks):
        scripts = []
        for block in group:
            scripts.append(tmp_path / f"example_{block.line}.py")
            scripts[-1].write_text(block.code)
        first = group[0]
        if first.language in {"bash", "shell", "sh"}:
            command = ["bash", "-e", "-o", "pipefail", "-c", first.code]
        elif first.console:
            command = [sys.executable, "-c", CONSOLE_RUNNER, str(SAMPLE_CT)]
            for script, block in zip(scripts, group, strict=True):
                command += [str(script), str(block.page.relative_to(ROOT)), str(block.line)]
        else:
            command = [sys.executable, str(scripts[0])]
        run(command, checkout, env, " + ".join(block.where for block in group))
        ran += group
    assert ran == [block for block in blocks if block.runs]
    assert ran, f"{page.relative_to(ROOT)}: nothing to run"


def test_shell_blocks_parse():
    """A syntax error shows here in a second, before the long runs."""
    for block in all_blocks():
        if block.language in {"bash", "shell", "sh"}:
            done = subprocess.run(["bash", "-n", "-c", block.code], capture_output=True, text=True)
            assert done.returncode == 0, f"{block.where}: {done.stderr}"
        elif block.language == "python":
            compile(block.code, block.where, "exec")
