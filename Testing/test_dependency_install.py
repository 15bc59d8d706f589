"""Real pip installations from hand-made wheels into a throwaway virtual environment, offline.

The Slicer functions themselves (``slicer.util.pip_install``, ``slicer.packaging.pip_ensure``,
the PyTorch extension's ``installTorch``) do not exist here: they are replaced by functions with
the same signatures that run the real pip, offline, into the throwaway environment. The lookup
of those functions in Slicer (``Installers.from_slicer``) is tested here too.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from LiverXAILib.slicer import dependencies
from LiverXAILib.slicer.dependencies import (
    PIP,
    PYTORCH_EXTENSION,
    TORCH_REQUIREMENT,
    DependencyError,
    Installers,
    check,
)


# --- real installations --------------------------------------------------------------------
def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """Write a minimal pure-Python wheel by hand (a zip with METADATA, WHEEL and RECORD)."""
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{path},sha256={encoded},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    """A stand-in torch (2.1.0+cpu and 3.0), and stand-ins for monai, matplotlib and captum:
    the newest version of the monai stand-in needs torch 3, the older one torch 2.1, as
    monai's releases follow torch's."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    _wheel(folder, "torch", "2.1.0+cpu")
    _wheel(folder, "torch", "3.0")
    _wheel(folder, "lxai-monai", "1.3", ("torch>=2.1",))
    _wheel(folder, "lxai-monai", "2.0", ("torch>=3",))
    _wheel(folder, "lxai-matplotlib", "3.6")
    _wheel(folder, "lxai-captum", "0.7", ("lxai-matplotlib", "torch>=2.1"))
    return folder


PIP_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
PIP_ENV.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
REQUIREMENTS = ["lxai-monai>=1.3", "lxai-matplotlib>=3.6", "lxai-captum>=0.7"]


class Environment:
    """A throwaway virtual environment, filled by the real pip from the wheelhouse only."""

    def __init__(self, folder: Path, wheelhouse: Path):
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
        bindir = "Scripts" if os.name == "nt" else "bin"
        self.python = str(folder / bindir / ("python.exe" if os.name == "nt" else "python"))
        self.site = subprocess.run(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.wheelhouse = wheelhouse
        self.calls: list[tuple[str, object]] = []

    def pip(self, *args: str) -> None:
        subprocess.run([*self.pip_command(), *args], check=True, env=PIP_ENV, timeout=300)

    def pip_command(self) -> list[str]:
        # --isolated and no configuration file: this machine's pip settings (extra indexes,
        # find-links, a global constraints file) must not reach the throwaway environment.
        command = [sys.executable, "-m", "pip", "--isolated", "--python", self.python]
        return command + ["install", "--no-index", "--find-links", str(self.wheelhouse), "-q"]

    # the Slicer functions' stand-ins, with their signatures
    def pip_install(self, requirements: str) -> None:  # slicer.util.pip_install
        self.calls.append(("pip_install", requirements))
        self.pip(*shlex.split(requirements))

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
        # slicer.packaging.pip_ensure of Slicer 5.12: pip install with -c constraints, after its
        # own prompt, then its own restart prompt; under --testing it would install nothing.
        texts = [str(r) for r in requirements]  # packaging Requirement objects
        flags = {"prompt_restart": prompt_restart, "skip_in_testing": skip_in_testing}
        self.calls.append(("pip_ensure", (texts, prompt_install, requester, flags)))
        assert Path(constraints).is_file()
        self.constraints = Path(constraints).read_text(encoding="utf-8")
        self.pip(*texts, "-c", str(constraints))

    def pip_ensure_511(self, requirements, constraints=None, prompt_install=True, requester=None):
        # an early pip_ensure without prompt_restart / skip_in_testing: they are not passed
        self.calls.append(("pip_ensure_511", [type(r).__name__ for r in requirements]))
        self.pip(*map(str, requirements), "-c", str(constraints))

    def version(self, name: str) -> str | None:
        return dependencies.installed_version(name, [self.site])

    def check(self):
        return check(requirements=REQUIREMENTS, search_path=[self.site])


@pytest.fixture
def environment(tmp_path, wheelhouse):
    return Environment(tmp_path / "venv", wheelhouse)


def test_pip_installs_torch_then_the_rest_keeping_torch(environment):
    plan = environment.check()
    assert plan.torch_missing and len(plan.missing) == 3 and plan.torch_installer == PIP
    after = dependencies.install(plan, Installers(pip_install=environment.pip_install))
    assert after.satisfied
    assert [c[0] for c in environment.calls] == ["pip_install", "pip_install"]
    assert environment.calls[0][1] == TORCH_REQUIREMENT
    # pip chose torch 3.0 for "torch>=2.1"; installing the rest then kept it
    assert environment.version("torch") == "3.0"
    assert "torch==3.0" in environment.calls[1][1].split()
    assert environment.version("lxai-monai") == "2.0"
    assert environment.version("lxai-captum") == "0.7"


def test_the_pin_keeps_the_installed_torch_where_pip_would_replace_it(environment):
    environment.pip("torch==2.1.0+cpu")  # as the PyTorch extension would have left it
    plan = environment.check()
    assert not plan.torch_missing
    assert plan.pins == ("torch==2.1.0+cpu",)
    dependencies.install(plan, Installers(pip_install=environment.pip_install))
    # the newest monai stand-in needs torch 3: with torch pinned, pip took the older one
    assert environment.version("torch") == "2.1.0+cpu"
    assert environment.version("lxai-monai") == "1.3"

    # Without the pin, pip would have replaced the installed torch (the CUDA build, in Slicer).
    environment.pip("--upgrade-strategy", "only-if-needed", "lxai-monai>=2")
    assert environment.version("torch") == "3.0"


def test_pip_ensure_gets_the_requirements_and_a_constraints_file(environment):
    environment.pip("torch==2.1.0+cpu")
    plan = environment.check()
    installers = Installers(pip_install=environment.pip_install, pip_ensure=environment.pip_ensure)
    after = dependencies.install(plan, installers)
    assert after.satisfied
    # asked once already: no install prompt, no restart prompt of Slicer's own
    flags = {"prompt_restart": False, "skip_in_testing": False}
    assert environment.calls == [("pip_ensure", (REQUIREMENTS, False, "LiverXAI", flags))]
    assert environment.constraints.split() == ["torch==2.1.0+cpu"]
    assert environment.version("torch") == "2.1.0+cpu"
    assert environment.version("lxai-monai") == "1.3"


def test_an_older_pip_ensure_gets_only_the_keywords_it_takes(environment):
    environment.pip("torch==2.1.0+cpu")
    installers = Installers(
        pip_install=environment.pip_install, pip_ensure=environment.pip_ensure_511
    )
    assert dependencies.install(environment.check(), installers).satisfied
    assert environment.calls == [("pip_ensure_511", ["Requirement"] * 3)]


def _fake_pytorch_extension(folder: Path, environment: Environment, returns: str) -> None:
    """A PyTorchUtils module with the extension's installTorch signature, which installs the
    torch stand-in with the real pip (light-the-torch's job in Slicer)."""
    folder.mkdir()
    (folder / "PyTorchUtils.py").write_text(
        textwrap.dedent(
            f"""
            import subprocess
            CALLS = []

            class PyTorchUtilsLogic:
                def installTorch(self, askConfirmation=False, forceComputationBackend=None,
                                 torchVersionRequirement=None):
                    CALLS.append((askConfirmation, forceComputationBackend,
                                  torchVersionRequirement))
                    # light-the-torch's choice, as if for a CUDA 12.1 driver: the 2.1 build
                    subprocess.run({environment.pip_command()!r}
                                   + ["torch" + torchVersionRequirement + ",<3"],
                                   check=True, env={PIP_ENV!r})
                    return {returns}
            """
        ),
        encoding="utf-8",
    )


@pytest.fixture
def extension_folder(tmp_path, monkeypatch):
    """A folder on sys.path for a stand-in PyTorchUtils, forgotten after the test."""
    folder = tmp_path / "extension"
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("PyTorchUtils", None)
    yield folder
    sys.modules.pop("PyTorchUtils", None)


def test_the_pytorch_extension_installs_torch(environment, extension_folder):
    _fake_pytorch_extension(extension_folder, environment, returns="'torch module'")
    plan = environment.check()
    assert plan.torch_installer == PYTORCH_EXTENSION
    installers = Installers(
        pip_install=environment.pip_install, torch=dependencies.install_torch_with_extension
    )
    after = dependencies.install(plan, installers)
    assert after.satisfied
    import PyTorchUtils

    assert PyTorchUtils.CALLS == [(False, None, ">=2.1")]  # no second question
    assert environment.version("torch") == "2.1.0+cpu"  # the extension's choice, kept
    assert environment.version("lxai-monai") == "1.3"
    assert [c[0] for c in environment.calls] == ["pip_install"]


def test_an_extension_that_installs_nothing_is_an_error(environment, extension_folder):
    _fake_pytorch_extension(extension_folder, environment, returns="None")
    with pytest.raises(DependencyError, match="did not install torch"):
        dependencies.install_torch_with_extension(">=2.1")


def test_a_failed_installation_raises_and_leaves_the_rest(environment):
    plan = check(requirements=["lxai-not-in-the-wheelhouse>=1"], search_path=[environment.site])
    with pytest.raises(subprocess.CalledProcessError):
        dependencies.install(plan, Installers(pip_install=environment.pip_install))
    assert environment.version("lxai-not-in-the-wheelhouse") is None


def test_an_installer_that_installs_nothing_is_reported(environment):
    plan = environment.check()
    with pytest.raises(DependencyError, match="still missing.*lxai-monai"):
        dependencies.install(plan, Installers(pip_install=lambda requirements: None))


def test_nothing_is_installed_for_a_satisfied_plan():
    plan = check()
    assert plan.satisfied

    def refuse(*args, **kwargs):
        raise AssertionError("nothing should be installed")

    assert dependencies.install(plan, Installers(pip_install=refuse, pip_ensure=refuse)) is plan


def test_installers_outside_slicer():
    # slicer-core (the test environment) has slicer.util but no slicer.packaging and no
    # PyTorch extension: the lookups fall back to pip_install for everything (as on Slicer 5.10).
    pytest.importorskip("slicer.util")
    installers = Installers.from_slicer()
    import slicer.util

    assert installers.pip_install is slicer.util.pip_install
    assert installers.torch is None
    try:
        import slicer.packaging  # noqa: F401
    except ImportError:
        assert installers.pip_ensure is None


@pytest.mark.parametrize("where", ["slicer.packaging", "slicer.pydeps"])
def test_pip_ensure_is_found_where_the_slicer_version_has_it(monkeypatch, where):
    # Slicer 5.12 and later: slicer.packaging.pip_ensure; 5.11 previews: slicer.pydeps.
    pytest.importorskip("slicer.util")
    import types

    def pip_ensure(requirements, **options):
        return None

    for name in ("slicer.packaging", "slicer.pydeps"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, where, types.SimpleNamespace(pip_ensure=pip_ensure))
    assert Installers.from_slicer().pip_ensure is pip_ensure
