"""Dependencies inside Slicer (LiverXAILib.slicer.dependencies): requirement parsing, detection of
missing and too-old packages in the real environment, the plan and its question, the device
sentence. Real pip installations are tested in ``test_dependency_install.py``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from LiverXAILib.slicer import dependencies, requirement_specs
from LiverXAILib.slicer.dependencies import (
    PIP,
    PYTORCH_EXTENSION,
    TORCH_REQUIREMENT,
    check,
    parse_requirement,
    read_requirements,
)

ROOT = Path(__file__).resolve().parents[1]
SLICER_SHIPS = {"numpy", "scipy", "simpleitk", "pillow"}


@pytest.fixture(params=[True, False], ids=["packaging", "fallback"])
def either_parser(request, monkeypatch):
    """Run a test with packaging and with the fallback used where packaging is missing."""
    monkeypatch.setattr(requirement_specs, "_USE_PACKAGING", request.param)
    return request.param


# --- parsing -------------------------------------------------------------------------------
def test_read_requirements_skips_comments_blank_lines_and_options(tmp_path, either_parser):
    path = tmp_path / "requirements.txt"
    path.write_text(
        "# a comment\n\n-c constraints.txt\n--index-url https://example.invalid/simple\n"
        "monai>=1.3  # inline comment\nmatplotlib >= 3.6, <4\ncaptum\n"
        "pywin32>=300; sys_platform == 'win32'\n",
        encoding="utf-8",
    )
    requirements = read_requirements(path)
    assert [r.name for r in requirements] == ["monai", "matplotlib", "captum", "pywin32"]
    assert requirements[0].text == "monai>=1.3"
    assert requirements[0].specifier == ">=1.3"
    assert {c.strip() for c in requirements[1].specifier.split(",")} == {">=3.6", "<4"}
    assert requirements[2].specifier == ""
    assert requirements[3].marker is not None
    if either_parser:  # the marker is evaluated only with packaging
        assert requirements[3].applies() == (sys.platform == "win32")


def test_a_bad_line_names_the_file_and_line(tmp_path, either_parser):
    path = tmp_path / "requirements.txt"
    path.write_text("monai>=1.3\nnot a requirement !!\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        read_requirements(path)


@pytest.mark.parametrize(
    ("requirement", "version", "accepted"),
    [
        ("x>=1.3", "1.3", True),
        ("x>=1.3", "1.2.9", False),
        ("x>=1.3", "1.10", True),  # numeric, not text, comparison
        ("x>=2.1", "2.4.1+cu121", True),  # a local CUDA build label
        ("x>=2.1", "2.5.0rc1", True),  # an installed pre-release counts
        ("x>=3.6,<4", "4.0", False),
        ("x==1.3.*", "1.3.7", True),
        ("x~=1.3", "2.0", False),
        ("x!=0.8.0", "0.8.0", False),
    ],
)
def test_version_comparison(either_parser, requirement, version, accepted):
    assert parse_requirement(requirement).accepts(version) is accepted


# --- the shipped requirements --------------------------------------------------------------
def _pyproject_dependencies() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    parsed = [parse_requirement(d) for d in data["project"]["dependencies"]]
    return {r.name.lower(): r.specifier for r in parsed}


def test_requirements_file_lists_what_slicer_lacks_with_the_pyproject_bounds():
    requirements = read_requirements(dependencies.REQUIREMENTS_FILE)
    assert dependencies.REQUIREMENTS_FILE == ROOT / "LiverXAI" / "Resources" / "requirements.txt"
    names = {r.name.lower() for r in requirements}
    assert names == {"monai", "matplotlib", "captum"}
    assert not names & (SLICER_SHIPS | {"torch", "highdicom"})
    bounds = _pyproject_dependencies()
    for requirement in requirements:
        assert requirement.specifier.startswith(">="), requirement.text
        assert requirement.specifier == bounds[requirement.name.lower()], requirement.text
    torch = parse_requirement(TORCH_REQUIREMENT)
    assert torch.specifier == bounds["torch"]
    # every dependency of pyproject is either installed here or shipped by Slicer
    assert set(bounds) == names | SLICER_SHIPS | {"torch"}


def test_the_real_requirements_are_satisfied_in_this_environment():
    plan = check()
    assert plan.satisfied, plan.summary()
    assert not plan.torch_missing and plan.missing == ()
    assert plan.requirements == ("monai>=1.3", "matplotlib>=3.6", "captum>=0.7")
    import torch  # installed here: its version is pinned, with Slicer's packages

    assert f"torch=={torch.__version__}" in plan.pins
    pinned = {p.split("==")[0].lower() for p in plan.pins}
    assert pinned == {"torch"} | SLICER_SHIPS
    assert "All Python packages" in plan.question()


# --- detection -----------------------------------------------------------------------------
def test_absent_and_too_old_packages_are_found(either_parser):
    import numpy

    plan = check(
        requirements=[
            "liverxai-no-such-package-8d1f>=1",
            "numpy>=9999",  # installed, far too old for this
            "scipy>=1.0",  # satisfied
            "pywin32>=300; sys_platform == 'never'" if either_parser else "scipy",
        ]
    )
    assert not plan.satisfied
    assert not plan.torch_missing
    assert [(m.name, m.installed) for m in plan.missing] == [
        ("liverxai-no-such-package-8d1f", None),
        ("numpy", numpy.__version__),
    ]
    assert plan.to_install() == ["liverxai-no-such-package-8d1f>=1", "numpy>=9999"]
    # numpy is to be upgraded, so it is not held at its version; the others are
    pinned = {p.split("==")[0].lower() for p in plan.pins}
    assert "numpy" not in pinned and {"torch", "scipy"} <= pinned
    assert plan.restart_recommended


def _dist_info(folder: Path, name: str, version: str) -> None:
    info = folder / f"{name}-{version.replace(' ', '_')}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_pins_hold_the_installed_versions_pip_can_read(tmp_path, either_parser):
    _dist_info(tmp_path, "torch", "2.4.1+cu121")
    _dist_info(tmp_path, "numpy", "1.26.4")
    _dist_info(tmp_path, "SimpleITK", "2.4.0 Slicer build")  # not PEP 440: no pin
    _dist_info(tmp_path, "Pillow", "10.1.0")
    assert dependencies.installed_version("simpleitk", [str(tmp_path)]) == "2.4.0 Slicer build"
    pins = dependencies.current_pins([str(tmp_path)])
    assert pins == ("torch==2.4.1+cu121", "numpy==1.26.4", "Pillow==10.1.0")
    assert dependencies.current_pins([str(tmp_path)], exclude=["NumPy"]) == (
        "torch==2.4.1+cu121",
        "Pillow==10.1.0",
    )


def test_torch_missing_and_the_installer_chosen(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    plan = check(search_path=[str(empty)])  # an environment with nothing installed
    assert plan.torch_missing and plan.torch.installed is None
    assert [m.name for m in plan.missing] == ["monai", "matplotlib", "captum"]
    assert plan.pins == ()
    assert plan.torch_installer == PIP
    question = plan.question()
    assert "torch>=2.1 (not installed): installed with pip" in question
    assert "PyTorch extension from the Extensions Manager" in question
    for requirement in ("monai>=1.3", "matplotlib>=3.6", "captum>=0.7"):
        assert f"{requirement} (not installed)" in question
    assert question.endswith("Install them now?")
    assert not plan.restart_recommended

    # With the PyTorch extension's module on the path, torch goes through the extension:
    # the module is only found, never imported (it imports Slicer).
    extension = tmp_path / "extension"
    extension.mkdir()
    (extension / "PyTorchUtils.py").write_text("raise ImportError('imported')\n")
    monkeypatch.syspath_prepend(str(extension))
    plan = check(search_path=[str(empty)])
    assert plan.torch_installer == PYTORCH_EXTENSION
    assert "installed by the PyTorch extension, which picks the CUDA build" in plan.question()
    assert "PyTorchUtils" not in sys.modules


def test_imports_and_check_neither_import_torch_nor_install(tmp_path):
    # A fresh interpreter: importing the module files, checking and writing the question
    # must not import torch, Slicer or the PyTorch extension, nor start any process.
    script = textwrap.dedent(
        f"""
        import os, subprocess, sys
        sys.path.insert(0, {str(ROOT / "LiverXAI")!r})
        def refuse(*args, **kwargs):
            raise AssertionError("a process was started")
        subprocess.Popen = subprocess.run = subprocess.call = os.system = refuse
        import LiverXAILib.slicer.dependencies as dependencies
        import LiverXAILib.slicer.logic
        plan = dependencies.check(search_path=[{str(tmp_path)!r}])
        assert not plan.satisfied and plan.question()
        dependencies.check()
        for name in ("torch", "PyTorchUtils", "pip", "slicer.packaging", "qt"):
            assert name not in sys.modules, name
        print("clean")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"


# --- the device sentence -------------------------------------------------------------------
def test_device_sentence_reuses_describe_device():
    from LiverXAILib.segment.inference import describe_device

    assert dependencies.device_sentence() == describe_device()
    assert dependencies.device_sentence("cpu") == describe_device("cpu")
    import torch

    if torch.version.cuda is None:  # this project's CPU build
        assert dependencies.device_sentence() == "CPU: no CUDA build of torch installed"


def test_device_sentence_says_when_torch_is_missing(tmp_path):
    sentence = dependencies.device_sentence(search_path=[str(tmp_path)])
    assert "torch is not installed" in sentence
