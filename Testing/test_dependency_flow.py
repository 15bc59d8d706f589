"""The one check-and-install flow both modules and their self-tests use (``dependency_flow``).

Not available here, and replaced by stand-ins with the same call signatures: Slicer's message
boxes (``slicer.util.confirmOkCancelDisplay``/``infoDisplay``/``errorDisplay``, Qt dialogs),
``slicer.app.testingEnabled()`` (the application), and Slicer 5.12's
``slicer.packaging.pip_ensure`` (which would install with pip and show its own restart prompt;
the stand-in records its arguments and writes the package metadata pip would write). The plans
are real ``dependencies.check`` plans of a throwaway metadata folder, and the installation is
the real ``dependencies.install``.
"""

from __future__ import annotations

import shutil
import sys
import types
import unittest
from pathlib import Path

import pytest
from LiverXAILib.slicer import dependencies, dependency_flow
from LiverXAILib.slicer.dependencies import Installers, check
from LiverXAILib.slicer.dependency_flow import Dialogs, Outcome, ensure

REQUIREMENTS = ["lxai-monai>=1.3", "lxai-captum>=0.7"]


class Talk:
    """Stand-in dialogs: answers ``confirm`` with ``answer`` and records every message."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.shown: list[tuple[str, str]] = []

    def dialogs(self) -> Dialogs:
        def confirm(text: str) -> bool:
            self.shown.append(("confirm", text))
            return self.answer

        return Dialogs(
            confirm=confirm,
            info=lambda text: self.shown.append(("info", text)),
            error=lambda text: self.shown.append(("error", text)),
        )

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.shown]


def _dist_info(folder: Path, name: str, version: str) -> None:
    for old in folder.glob(f"{name.replace('-', '_')}-*.dist-info"):
        shutil.rmtree(old)
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


class Site:
    """A metadata folder standing in for Slicer's site-packages, and a Slicer 5.12-like
    ``pip_ensure`` that 'installs' by writing metadata there."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        _dist_info(folder, "torch", "2.4.1")  # torch is there: only the rest is missing
        _dist_info(folder, "lxai-captum", "0.6")  # installed but too old: replaced
        self.calls: list[dict] = []
        self.fail = False

    def plan(self):
        return check(requirements=REQUIREMENTS, search_path=[str(self.folder)])

    def pip_ensure(
        self,
        requirements,
        constraints=None,
        skip_packages=None,
        prompt_install=True,
        prompt_restart=True,
        requester=None,
        skip_in_testing=True,
        show_progress=True,
    ):
        self.calls.append(
            {
                "requirements": [str(r) for r in requirements],
                "prompt_install": prompt_install,
                "prompt_restart": prompt_restart,
                "skip_in_testing": skip_in_testing,
                "requester": requester,
            }
        )
        if self.fail:
            raise RuntimeError("pip failed: no network")
        for requirement in requirements:
            _dist_info(self.folder, requirement.name, "9.0")

    def installers(self) -> Installers:
        def refuse(text):
            raise AssertionError(f"pip_install should not be used: {text}")

        return Installers(pip_install=refuse, pip_ensure=self.pip_ensure)


@pytest.fixture
def site(tmp_path):
    return Site(tmp_path)


def test_nothing_is_asked_when_everything_is_installed():
    talk = Talk()
    assert ensure(talk.dialogs()) == Outcome(True)  # this environment has every package
    assert talk.shown == []


def test_asks_once_installs_and_shows_no_restart_when_nothing_was_loaded(site):
    talk = Talk(answer=True)
    outcome = ensure(talk.dialogs(), plan=site.plan(), installers=site.installers())
    assert outcome.ready and outcome.installed and outcome.restart == ()
    assert talk.kinds() == ["confirm"]
    assert "lxai-monai>=1.3 (not installed)" in talk.shown[0][1]
    assert "lxai-captum>=0.7 (lxai-captum 0.6 is installed)" in talk.shown[0][1]
    assert site.calls == [
        {
            "requirements": REQUIREMENTS,
            "prompt_install": False,  # we asked already
            "prompt_restart": False,  # Slicer's own restart prompt: off
            "skip_in_testing": False,
            "requester": "LiverXAI",
        }
    ]


def test_one_restart_message_when_a_loaded_package_was_replaced(site, monkeypatch):
    monkeypatch.setattr(dependency_flow, "imported_distributions", lambda names: tuple(names))
    talk = Talk(answer=True)
    outcome = ensure(talk.dialogs(), plan=site.plan(), installers=site.installers())
    assert outcome.restart == ("lxai-captum",)  # replaced and loaded; monai was new
    assert talk.kinds() == ["confirm", "info"]  # one question, one restart message
    assert (
        "Restart 3D Slicer" in talk.shown[1][1] and "lxai-captum was upgraded" in talk.shown[1][1]
    )
    assert site.calls[0]["prompt_restart"] is False


def test_declining_installs_nothing(site):
    talk = Talk(answer=False)
    outcome = ensure(talk.dialogs(), plan=site.plan(), installers=site.installers())
    assert not outcome.ready and "Not installed, as you chose" in outcome.reason
    assert site.calls == [] and talk.kinds() == ["confirm"]


def test_a_failed_installation_is_shown_once(site):
    site.fail = True
    talk = Talk(answer=True)
    outcome = ensure(talk.dialogs(), plan=site.plan(), installers=site.installers())
    assert not outcome.ready and "no network" in outcome.reason
    assert talk.kinds() == ["confirm", "error"]


def test_under_testing_nothing_is_installed_and_the_reason_is_given(site):
    talk = Talk()
    outcome = ensure(talk.dialogs(), testing=True, plan=site.plan(), installers=site.installers())
    assert not outcome.ready
    assert "--testing" in outcome.reason and "LIVERXAI_INSTALL_IN_TESTS=1" in outcome.reason
    assert "lxai-monai>=1.3" in outcome.reason
    assert talk.shown == [] and site.calls == []


def test_under_testing_with_the_opt_in_it_installs_without_asking(site):
    talk = Talk(answer=False)  # dialogs answer themselves under --testing: never asked
    outcome = ensure(
        talk.dialogs(),
        testing=True,
        install_in_tests=True,
        plan=site.plan(),
        installers=site.installers(),
    )
    assert outcome.ready and outcome.installed
    assert talk.shown == []
    assert site.calls[0]["skip_in_testing"] is False  # else Slicer 5.12 would skip it


def test_imported_distributions():
    import numpy  # noqa: F401

    assert dependency_flow.imported_distributions(["NumPy", "lxai-not-installed"]) == ("NumPy",)


def _fake_slicer(monkeypatch, testing: bool, answer: bool, shown: list) -> None:
    util = types.SimpleNamespace(
        confirmOkCancelDisplay=lambda text, windowTitle: shown.append(windowTitle) or answer,
        infoDisplay=lambda text, windowTitle: shown.append(text),
        errorDisplay=lambda text, windowTitle: shown.append(text),
    )
    app = types.SimpleNamespace(testingEnabled=lambda: testing)
    monkeypatch.setitem(sys.modules, "slicer", types.SimpleNamespace(app=app, util=util))


def test_in_slicer_the_self_test_is_skipped_with_the_reason(monkeypatch, tmp_path):
    shown = []
    _fake_slicer(monkeypatch, testing=True, answer=True, shown=shown)
    monkeypatch.delenv(dependency_flow.INSTALL_IN_TESTS, raising=False)
    empty = check(search_path=[str(tmp_path)])  # a fresh Slicer: nothing installed
    monkeypatch.setattr(dependencies, "check", lambda: empty)
    with pytest.raises(
        unittest.SkipTest, match="self-test skipped: Missing Python packages: torch"
    ):
        dependency_flow.require_for_self_test()
    assert shown == []


def test_in_slicer_the_user_is_asked_with_the_title(monkeypatch, tmp_path):
    shown = []
    _fake_slicer(monkeypatch, testing=False, answer=False, shown=shown)
    empty = check(search_path=[str(tmp_path)])
    monkeypatch.setattr(dependencies, "check", lambda: empty)
    outcome = dependency_flow.ensure_in_slicer()
    assert not outcome.ready and shown == [dependency_flow.TITLE]


def test_the_self_test_runs_when_the_packages_are_there():
    dependency_flow.require_for_self_test(lambda: Outcome(True))
