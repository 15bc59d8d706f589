"""Python packages LiverXAI needs inside Slicer: what is missing, and installing it after asking.

Slicer ships numpy, scipy, SimpleITK and pillow; torch and the packages listed in
``Resources/requirements.txt`` (monai, matplotlib, captum) have to be installed into Slicer's
Python on first use. Both modules go through ``dependency_flow.ensure``, which asks before
anything is installed and shows at most one restart message::

    plan = dependencies.check()
    if not plan.satisfied:
        if not slicer.util.confirmOkCancelDisplay(plan.question(), "LiverXAI"):
            return
        dependencies.install(plan)

:func:`check` reads installed package metadata only: it imports neither torch nor Slicer, so it
is quick enough for the module panel. :func:`install` installs torch first, through the PyTorch
extension's ``PyTorchUtilsLogic().installTorch`` when that extension is there (it picks the CUDA
build matching the NVIDIA driver, or the CPU build) and otherwise with
``slicer.util.pip_install``; then the rest, with Slicer's ``pip_ensure`` where the Slicer version
has it (``slicer.packaging``, or ``slicer.pydeps`` in early 5.11 previews) and
``slicer.util.pip_install`` on Slicer 5.10, the oldest LiverXAI supports. ``pip_ensure`` gets
``prompt_install=False`` and ``prompt_restart=False`` (the user was asked once already, and
``dependency_flow`` shows the one restart message) and ``skip_in_testing=False`` (whether to
install under ``--testing`` is decided in ``dependency_flow``). While the rest is installed,
torch and Slicer's own packages are held at the versions installed (a pip constraint), so that
pip chooses versions of monai and captum that work with them rather than replacing Slicer's numpy
or the extension's CUDA build of torch. The Slicer functions are looked up inside
:meth:`Installers.from_slicer`, never at import, and can be passed in instead. Nothing here
installs anything at import time.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .requirement_specs import (  # noqa: F401  (part of this module's interface)
    REQUIREMENTS_FILE,
    Requirement,
    _valid_version,
    packaging_requirements,
    parse_requirement,
    read_requirements,
)

REQUESTER = "LiverXAI"
# As in pyproject.toml; not in requirements.txt, because torch has its own installer.
TORCH_REQUIREMENT = "torch>=2.1"
# Installed with Slicer (numpy, scipy, SimpleITK, pillow) or by the PyTorch extension (torch):
# never upgraded nor downgraded as a side effect of installing the rest.
PINNED = ("torch", "numpy", "scipy", "SimpleITK", "pillow")
PYTORCH_EXTENSION = "PyTorch extension"
PIP = "pip"


class DependencyError(RuntimeError):
    """Packages LiverXAI needs could not be installed, or are still missing afterwards."""


# --- what is installed ---------------------------------------------------------------------
def _installed(name: str, search_path: Sequence[str] | None) -> tuple[str, str] | None:
    """(name as installed, version) of the distribution Python would import, or ``None``."""
    kwargs = {"name": name} if search_path is None else {"name": name, "path": list(search_path)}
    for distribution in importlib.metadata.distributions(**kwargs):
        version = distribution.metadata["Version"]
        if version:
            return distribution.metadata["Name"] or name, version
    return None


def installed_version(name: str, search_path: Sequence[str] | None = None) -> str | None:
    """The version of distribution ``name`` that Python would import (first on ``sys.path``,
    or on ``search_path``), from its metadata: nothing is imported. ``None`` if absent."""
    found = _installed(name, search_path)
    return found[1] if found else None


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def current_pins(
    search_path: Sequence[str] | None = None, exclude: Iterable[str] = ()
) -> tuple[str, ...]:
    """``name==version`` of each installed package of :data:`PINNED` (minus ``exclude``)."""
    excluded = {_canonical(n) for n in exclude}
    pins = []
    for name in PINNED:
        found = _installed(name, search_path) if _canonical(name) not in excluded else None
        if found is not None and _valid_version(found[1]):  # pip would refuse another pin
            pins.append(f"{found[0]}=={found[1]}")
    return tuple(pins)


def pytorch_extension_available() -> bool:
    """Whether the PyTorch extension's ``PyTorchUtils`` module can be imported (found, not
    imported: it imports Slicer)."""
    try:
        return importlib.util.find_spec("PyTorchUtils") is not None
    except (ImportError, ValueError):
        return False


# --- the plan ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Missing:
    """A requirement the environment does not satisfy: absent, or ``installed`` too old."""

    requirement: str
    name: str
    installed: str | None = None

    def describe(self) -> str:
        if self.installed is None:
            return f"{self.requirement} (not installed)"
        return f"{self.requirement} ({self.name} {self.installed} is installed)"


@dataclass(frozen=True)
class DependencyPlan:
    """What :func:`install` would do: which packages are missing, torch's installer, the pins."""

    missing: tuple[Missing, ...]  # packages other than torch
    torch: Missing | None  # None when the installed torch satisfies TORCH_REQUIREMENT
    torch_installer: str  # PYTORCH_EXTENSION or PIP
    pins: tuple[str, ...]  # name==version held while the rest is installed
    requirements: tuple[str, ...] = ()  # every requirement checked (to check again)
    search_path: tuple[str, ...] | None = field(default=None, repr=False)

    @property
    def satisfied(self) -> bool:
        return not self.missing and self.torch is None

    @property
    def torch_missing(self) -> bool:
        return self.torch is not None

    @property
    def restart_recommended(self) -> bool:
        """An installed package will be replaced: Slicer may still hold the old one."""
        return any(m.installed is not None for m in self._all_missing())

    def _all_missing(self) -> tuple[Missing, ...]:
        return ((self.torch,) if self.torch is not None else ()) + self.missing

    def to_install(self) -> list[str]:
        """The requirements of the packages other than torch that will be installed."""
        return [m.requirement for m in self.missing]

    def summary(self) -> str:
        """One line for a log or a status label."""
        if self.satisfied:
            return "All Python packages LiverXAI needs are installed."
        return "Missing Python packages: " + ", ".join(m.describe() for m in self._all_missing())

    def question(self) -> str:
        """The text of the confirmation dialog shown before anything is installed."""
        if self.satisfied:
            return self.summary()
        lines = ["LiverXAI needs Python packages that are not installed in Slicer yet:"]
        if self.torch is not None:
            if self.torch_installer == PYTORCH_EXTENSION:
                how = (
                    "installed by the PyTorch extension, which picks the CUDA build for this "
                    "computer's NVIDIA driver, or the CPU build when there is no NVIDIA GPU"
                )
            else:
                how = (
                    "installed with pip, as the PyTorch extension is not installed (on "
                    "Windows, pip's torch runs on the CPU only: for an NVIDIA GPU there, "
                    "install the PyTorch extension from the Extensions Manager first)"
                )
            lines.append(f"  \u2022 {self.torch.describe()}: {how}")
        lines += [f"  \u2022 {m.describe()}" for m in self.missing]
        size = " (torch alone can be a few GB)" if self.torch is not None else ""
        lines.append(
            f"They will be downloaded from the internet into Slicer's Python, which can take "
            f"several minutes{size}."
        )
        if self.restart_recommended:
            lines.append(
                "Slicer may need a restart afterwards, as installed packages are upgraded."
            )
        lines.append("Install them now?")
        return "\n".join(lines)


def check(
    requirements_file: str | os.PathLike | None = None,
    *,
    search_path: Sequence[str] | None = None,
    requirements: Sequence[str | Requirement] | None = None,
) -> DependencyPlan:
    """Compare the requirements (``requirements``, else those of ``requirements_file``, by
    default ``Resources/requirements.txt``) and :data:`TORCH_REQUIREMENT` with the installed
    packages' metadata (of ``sys.path``, or of ``search_path``). Imports nothing."""
    if requirements is None:
        requirements = read_requirements(requirements_file or REQUIREMENTS_FILE)
    parsed = [r if isinstance(r, Requirement) else parse_requirement(r) for r in requirements]
    missing = []
    for requirement in parsed:
        if not requirement.applies():
            continue
        version = installed_version(requirement.name, search_path)
        if version is None or not requirement.accepts(version):
            missing.append(Missing(requirement.text, requirement.name, version))
    torch_requirement = parse_requirement(TORCH_REQUIREMENT)
    torch_version = installed_version("torch", search_path)
    torch = None
    if torch_version is None or not torch_requirement.accepts(torch_version):
        torch = Missing(TORCH_REQUIREMENT, "torch", torch_version)
    return DependencyPlan(
        missing=tuple(missing),
        torch=torch,
        torch_installer=PYTORCH_EXTENSION if pytorch_extension_available() else PIP,
        pins=current_pins(search_path, exclude=[m.name for m in missing]),
        requirements=tuple(r.text for r in parsed),
        search_path=None if search_path is None else tuple(search_path),
    )


# --- installing ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Installers:
    """The functions :func:`install` calls; :meth:`from_slicer` looks up Slicer's.

    ``pip_install(text)``: like ``slicer.util.pip_install``, space-separated pip arguments.
    ``pip_ensure(requirements, constraints=..., prompt_install=..., prompt_restart=...,
    skip_in_testing=..., requester=...)``: like Slicer's ``pip_ensure`` (keywords it lacks are
    not passed); ``None`` on Slicer 5.10, which has none.
    ``torch(specifier)``: installs torch of the version ``specifier`` (``">=2.1"``); ``None``
    installs torch with ``pip_install``.
    """

    pip_install: Callable[[str], object]
    pip_ensure: Callable[..., object] | None = None
    torch: Callable[[str], object] | None = None

    @classmethod
    def from_slicer(cls) -> Installers:
        """Slicer's installers, looked up now (inside Slicer only)."""
        try:
            import slicer.util
        except ImportError as error:
            raise DependencyError(
                "Installing packages from LiverXAI works inside Slicer only; elsewhere run "
                "pip install liverxai"
            ) from error
        pip_ensure = None
        for name in ("slicer.packaging", "slicer.pydeps"):  # 5.12 and later; 5.11 previews
            try:
                pip_ensure = getattr(importlib.import_module(name), "pip_ensure", None)
            except ImportError:
                continue
            if pip_ensure is not None:
                break
        return cls(
            pip_install=slicer.util.pip_install,
            pip_ensure=pip_ensure,
            torch=install_torch_with_extension if pytorch_extension_available() else None,
        )


def _call_pip_ensure(pip_ensure: Callable[..., object], requirements: list[str], **options) -> None:
    """Call Slicer's ``pip_ensure`` with the keywords its version takes, and the requirements as
    ``packaging`` objects (the 5.11 ``slicer.pydeps`` version takes no strings)."""
    parameters = inspect.signature(pip_ensure).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        names = {p.name for p in parameters}
        options = {key: value for key, value in options.items() if key in names}
    pip_ensure(packaging_requirements(requirements), **options)


def install_torch_with_extension(specifier: str) -> object:
    """Install torch through the PyTorch extension (Slicer only): ``light-the-torch`` picks the
    CUDA build for the NVIDIA driver, or the CPU build. The user was asked already."""
    import PyTorchUtils  # the PyTorch extension's module; it imports slicer

    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
        askConfirmation=False, torchVersionRequirement=specifier
    )
    if torch is None:
        raise DependencyError("The PyTorch extension did not install torch.")
    return torch


def install(plan: DependencyPlan, installers: Installers | None = None) -> DependencyPlan:
    """Install what ``plan`` lists (torch first, then the rest with torch and Slicer's own
    packages pinned) and return the plan checked again. Call only after the user agreed.

    Raises ``DependencyError`` when something is still missing afterwards, and lets the
    installers' own errors (``subprocess.CalledProcessError``) through.
    """
    if plan.satisfied:
        return plan
    installers = installers or Installers.from_slicer()
    search_path = plan.search_path
    if plan.torch is not None:
        specifier = parse_requirement(TORCH_REQUIREMENT).specifier
        if installers.torch is not None:
            installers.torch(specifier)
        else:
            installers.pip_install(TORCH_REQUIREMENT)
        importlib.invalidate_caches()
    if plan.missing:
        requirements = plan.to_install()
        pins = current_pins(search_path, exclude=[m.name for m in plan.missing])
        if installers.pip_ensure is not None:
            with tempfile.TemporaryDirectory(prefix="liverxai-pip-") as folder:
                constraints = Path(folder) / "constraints.txt"
                constraints.write_text("".join(p + "\n" for p in pins), encoding="utf-8")
                _call_pip_ensure(
                    installers.pip_ensure,
                    requirements,
                    constraints=str(constraints),
                    prompt_install=False,  # the user was asked already
                    prompt_restart=False,  # dependency_flow shows the one restart message
                    skip_in_testing=False,  # dependency_flow decides about --testing
                    requester=REQUESTER,
                )
        else:
            # Pins as requirements: already satisfied, so pip keeps them; Slicer 5.10's
            # pip_install takes one space-separated string and no constraints.
            installers.pip_install(" ".join(requirements + list(pins)))
        importlib.invalidate_caches()
    after = check(requirements=plan.requirements, search_path=search_path)
    if not after.satisfied:
        raise DependencyError(f"After installation, still missing: {after.summary()}")
    return after


# --- the device ----------------------------------------------------------------------------
def device_sentence(requested: str = "auto", search_path: Sequence[str] | None = None) -> str:
    """Which device LiverXAI will run on and why, for the module panel. Imports torch when it
    is installed (``inference.describe_device``); says so when it is not."""
    version = installed_version("torch", search_path)
    if version is None:
        return "No device yet: torch is not installed (LiverXAI offers to install it on first use)"
    try:
        from ..segment.inference import describe_device
    except Exception as error:  # a broken install: a missing DLL, a build for another CPU ...
        return f"torch {version} is installed but cannot be loaded: {error}"
    return describe_device(requested)
