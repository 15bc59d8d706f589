"""The supported Slicer (5.10 and later) and what happens on an older one.

- ``slicer_version``'s decisions: the message names the version needed, one message for both
  modules, the panel shows it, a self-test is skipped with it.
- The module files must load on Slicer 5.8 (Python 3.9) to say so: they and the files they
  import first are checked against Python 3.9's grammar (``ast`` with ``feature_version``), for
  annotations evaluated at import that 3.9 cannot evaluate (``X | None``), and with ``vermin``
  for 3.9. The whole extension is checked with ``vermin`` against the library's minimum
  (``requires-python`` in pyproject.toml, Python 3.10).
- The module files are imported in a fresh interpreter under stand-ins of Slicer 5.8 and 5.10
  (``fake_slicer_app``; the real application, Qt and ``slicer.app`` are not available here):
  on 5.8 nothing else of the library is imported, the module classes announce the version
  once, the Widgets show it instead of their controls and do not fail on enter/exit/cleanup.

Python 3.9 itself is not installed here: its grammar and runtime are approximated by the checks
above, not run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from LiverXAILib.slicer import slicer_version
from module_specs import MODULES, ROOT

LIBRARY = ROOT / "LiverXAI" / "LiverXAILib"
# What an older Slicer imports before it is told that it is too old.
PYTHON39_FILES = [m.module_py for m in MODULES] + [
    LIBRARY / "__init__.py",
    LIBRARY / "slicer" / "__init__.py",
    LIBRARY / "slicer" / "slicer_version.py",
]


# --- the decisions ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("slicer", "python", "supported"),
    [
        ((5, 8), (3, 9), False),
        ((5, 9), (3, 12), False),  # a 5.9 preview: older than the first release with 3.12
        ((5, 10), (3, 12), True),
        ((5, 12), (3, 12), True),
        ((6, 0), (3, 13), True),
        (None, (3, 9), False),  # outside Slicer: the library's own minimum
        (None, (3, 10), True),
    ],
)
def test_supported_versions(slicer, python, supported):
    message = slicer_version.problem(slicer, python)
    assert (message is None) is supported
    if slicer is not None and not supported:
        assert "needs 3D Slicer 5.10 or later" in message
        assert f"this is Slicer {slicer[0]}.{slicer[1]}" in message
        assert "https://download.slicer.org" in message
    if slicer is None and not supported:
        assert "needs Python 3.10 or later" in message and "3.12" in message


def test_running_version_from_the_application():
    app = types.SimpleNamespace(majorVersion=5, minorVersion=8)
    assert slicer_version.running_slicer_version(app) == (5, 8)
    assert slicer_version.running_slicer_version(object()) is None
    assert slicer_version.running_slicer_version() is None  # slicer-core: no slicer.app
    assert slicer_version.supported()  # this Python, outside Slicer


def test_declared_minimum_matches_pyproject_and_ruff():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["requires-python"] == ">=" + ".".join(
        map(str, slicer_version.MINIMUM_PYTHON)
    )
    assert project["tool"]["ruff"]["target-version"] == "py" + "".join(
        map(str, slicer_version.MINIMUM_PYTHON)
    )
    assert slicer_version.MINIMUM_SLICER == (5, 10)


@pytest.fixture
def old_slicer(monkeypatch):
    """slicer_version seeing Slicer 5.8 (its application object only)."""
    calls = []
    app = types.SimpleNamespace(
        majorVersion=5, minorVersion=8, connect=lambda *args: calls.append(("connect", args))
    )
    fake = types.SimpleNamespace(
        app=app, util=types.SimpleNamespace(errorDisplay=lambda *a, **k: calls.append(a))
    )
    monkeypatch.setitem(sys.modules, "slicer", fake)
    monkeypatch.setattr(slicer_version, "_announced", False)
    return calls


def test_one_announcement_for_both_modules(old_slicer):
    parents = [types.SimpleNamespace(helpText="Help of module A"), types.SimpleNamespace()]
    assert [slicer_version.announce(p) for p in parents] == [False, False]
    assert parents[0].helpText.startswith("<p><b>LiverXAI needs 3D Slicer 5.10 or later")
    assert parents[0].helpText.endswith("Help of module A")
    assert "needs 3D Slicer 5.10" in parents[1].helpText
    assert len(old_slicer) == 1  # one dialog, after startup
    signal, show = old_slicer[0][1]
    assert signal == "startupCompleted()"
    show()
    assert "this is Slicer 5.8" in old_slicer[1][0]


def test_panel_and_self_test_on_an_older_slicer(old_slicer, monkeypatch):
    widgets = []
    layout = types.SimpleNamespace(addWidget=widgets.append, addStretch=lambda factor: None)
    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace(QLabel=types.SimpleNamespace))
    monkeypatch.setattr(sys.modules["qt"], "QLabel", lambda text: types.SimpleNamespace(text=text))
    assert slicer_version.show_in_panel(layout)
    assert "needs 3D Slicer 5.10" in widgets[0].text and widgets[0].wordWrap
    import unittest

    with pytest.raises(unittest.SkipTest, match="needs 3D Slicer 5.10"):
        slicer_version.skip_test_if_unsupported()


def test_nothing_happens_on_a_supported_slicer():
    assert slicer_version.announce(types.SimpleNamespace(helpText="help")) is True
    assert slicer_version.show_in_panel(None) is False
    slicer_version.skip_test_if_unsupported()


# --- Python 3.9 for what an older Slicer imports first -------------------------------------------
@pytest.mark.parametrize("path", PYTHON39_FILES, ids=lambda p: p.name)
def test_parses_with_python_39_grammar(path):
    ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=(3, 9))


def _future_annotations(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    )


def _evaluated_annotations(tree: ast.Module):
    """Annotations Python evaluates when the module is imported: of function signatures and of
    module- and class-level variables (not of variables inside functions)."""

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                arguments = child.args
                for argument in [
                    *arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                    arguments.vararg, arguments.kwarg,
                ]:  # fmt: skip
                    if argument is not None and argument.annotation is not None:
                        yield argument.annotation
                if child.returns is not None:
                    yield child.returns
                yield from visit(child, True)
            elif isinstance(child, ast.AnnAssign) and not in_function:
                yield child.annotation
            else:
                yield from visit(child, in_function)

    yield from visit(tree, False)


@pytest.mark.parametrize("path", PYTHON39_FILES, ids=lambda p: p.name)
def test_no_python_310_unions_evaluated_at_import(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if path in [m.module_py for m in MODULES]:
        # parameterNodeWrapper evaluates the field annotations, so postponing them is no cure
        assert not _future_annotations(tree), f"{path.name}: use typing, not __future__"
    problems = []
    if not _future_annotations(tree):
        for annotation in _evaluated_annotations(tree):
            for node in ast.walk(annotation):
                if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
                    problems.append(f"line {node.lineno}: {ast.unparse(annotation)}")
    for node in ast.walk(tree):  # isinstance(x, A | B) needs 3.10 when it runs
        called = getattr(node.func, "id", "") if isinstance(node, ast.Call) else ""
        if called in ("isinstance", "issubclass"):
            if any(isinstance(n, ast.BinOp) for n in ast.walk(node.args[1])):
                problems.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not problems, f"{path.name} would fail on Python 3.9: {problems}"


def _vermin(target: str, *paths: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("vermin", reason="vermin is in the test extra of pyproject.toml")
    command = [
        sys.executable, "-c", "import sys; from vermin import main; sys.exit(main())",
        "--no-tips", "--violations", "--no-parse-comments", f"-t={target}", *map(str, paths),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_vermin_python_39_for_what_an_older_slicer_imports():
    done = _vermin("3.9-", *PYTHON39_FILES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_vermin_library_minimum_for_the_whole_extension():
    target = ".".join(map(str, slicer_version.MINIMUM_PYTHON))
    done = _vermin(f"{target}-", ROOT / "LiverXAI", ROOT / "LiverXAITraining")
    assert done.returncode == 0, done.stdout + done.stderr


# --- the module files under stand-ins of an older and a supported Slicer ------------------------
def _load_modules(major: int, minor: int) -> str:
    """Import both module files in a fresh interpreter under Slicer major.minor stand-ins,
    construct their module classes and (on an older Slicer) run their Widgets' setup."""
    script = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        sys.path.insert(0, {str(ROOT / "Testing")!r})
        import fake_slicer_app
        fake_slicer_app.install({major}, {minor})
        report = {{}}
        for name, path in {[(m.name, str(m.module_py)) for m in MODULES]!r}:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            parent = fake_slicer_app.parent()
            getattr(module, name)(parent)
            entry = {{"help": parent.helpText}}
            if not module.slicer_version.supported():
                widget = getattr(module, name + "Widget")()
                widget.setup()
                widget.enter()
                widget.exit()
                widget.cleanup()
                entry["panel"] = [w.text for w in widget.layout.widgets]
            report[name] = entry
        report["library"] = sorted(m for m in sys.modules if m.startswith("LiverXAILib"))
        calls = fake_slicer_app.Recorder.calls
        report["calls"] = [what + " " + str(arguments[0]) for what, arguments in calls]
        print(json.dumps(report))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_modules_on_slicer_58_say_what_is_needed_and_do_nothing_else():
    import json

    report = json.loads(_load_modules(5, 8))
    assert report["library"] == [
        "LiverXAILib",
        "LiverXAILib.slicer",
        "LiverXAILib.slicer.slicer_version",
    ]
    for module in MODULES:
        entry = report[module.name]
        assert entry["help"].startswith("<p><b>LiverXAI needs 3D Slicer 5.10 or later")
        assert len(entry["panel"]) == 1 and "this is Slicer 5.8" in entry["panel"][0]
    assert report["calls"] == ["connect startupCompleted()"]  # one message, no sample data


def test_modules_on_slicer_510_load_the_library():
    import json

    report = json.loads(_load_modules(5, 10))
    assert "LiverXAILib.slicer.logic" in report["library"]
    assert "LiverXAILib.slicer.training_logic" in report["library"]
    assert "LiverXAILib.slicer.dependency_flow" in report["library"]
    assert not any("needs 3D Slicer" in report[m.name]["help"] for m in MODULES)
    assert report["calls"] == ["connect startupCompleted()"]  # the sample data, registered
