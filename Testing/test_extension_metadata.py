"""The extension's description for the Extension Index and the Extensions Manager, in its three
places: ``CMakeLists.txt`` (``EXTENSION_*``, what the built package carries), ``LiverXAI.json``
(the Extension Index entry read since Slicer 5.8) and ``LiverXAI.s4ext`` (kept for older
tooling). They must agree with each other, with the module files and with the files they point
to (icon, screenshots), and the JSON must follow Slicer's catalog entry schema v1.0.1.

The supported Slicer (5.10 and later) is checked where it is declared, and ``CMakeLists.txt`` is
configured with CMake against a stand-in Slicer build tree (``SlicerConfig.cmake`` with its
version file, and ``UseSlicer.cmake`` with stand-ins of ``slicerMacroBuildScriptedModule`` and
``slicer_add_python_unittest`` that check every listed file exists): a real Slicer build tree
is not available here, and the ``slicer-core-sdk`` wheel is no substitute (it configures the C++
libraries of the slicer-core wheel and needs VTK's CMake package; it has none of the extension
macros, ``Slicer_USE_FILE`` or ``Slicer_EXTENSION_CPACK``).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import struct
import subprocess
import textwrap
from pathlib import Path

import pytest
from LiverXAILib.slicer import slicer_version
from module_specs import MODULES, ROOT, module_tree

RAW_PREFIX = "https://raw.githubusercontent.com/liverxai/SlicerLiverXAI/main/"
SCHEMA_URL = (
    "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
    "slicer-extension-catalog-entry-schema-v1.0.1.json#"
)
# Slicer's catalog entry schema v1.0.1 (Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json
# in Slicer's repository), transcribed: only these keys, three of them required.
CATALOG_SCHEMA = {
    "type": "object",
    "required": ["$schema", "category", "scm_url"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"},
        "category": {"type": "string"},
        "scm_url": {"type": "string"},
        "scm_revision": {"type": "string"},
        "scm_type": {"type": "string", "enum": ["git", "local"]},
        "build_dependencies": {"type": "array", "items": {"type": "string"}},
        "build_subdirectory": {"type": "string"},
        "enabled": {"type": "boolean"},
        "tier": {"type": "integer", "enum": [1, 3, 5]},
    },
}


# --- reading the three descriptions -------------------------------------------------------------
def cmake_text() -> str:
    return (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")


def cmake_value(name: str) -> str:
    match = re.search(rf'^set\({name}\s+"([^"]*)"\)', cmake_text(), re.M)
    assert match, f"set({name} ...) not found in CMakeLists.txt"
    return match.group(1)


def s4ext() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "LiverXAI.s4ext").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            entries[key] = value.strip()
    return entries


def catalog_entry() -> dict:
    return json.loads((ROOT / "LiverXAI.json").read_text(encoding="utf-8"))


def module_parent(module, attribute: str):
    for node in ast.walk(module_tree(module)):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Attribute) and t.attr == attribute for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{module.name}: self.parent.{attribute} not set")


def repository_file(url: str) -> Path:
    assert url.startswith(RAW_PREFIX), url
    return ROOT / url[len(RAW_PREFIX) :]


# --- agreement ----------------------------------------------------------------------------------
def test_name():
    assert re.search(r"^project\(LiverXAI\)$", cmake_text(), re.M)
    assert (ROOT / "LiverXAI.s4ext").is_file() and (ROOT / "LiverXAI.json").is_file()


def test_homepage_and_repository():
    homepage = cmake_value("EXTENSION_HOMEPAGE")
    assert homepage.startswith("https://github.com/")
    assert s4ext()["homepage"] == homepage
    assert s4ext()["scmurl"] == homepage == catalog_entry()["scm_url"]
    assert s4ext()["scm"] == "git" and catalog_entry().get("scm_type", "git") == "git"
    assert s4ext()["scmrevision"] == catalog_entry()["scm_revision"] == "main"
    assert RAW_PREFIX.startswith(homepage.replace("github.com", "raw.githubusercontent.com"))


def test_category():
    category = cmake_value("EXTENSION_CATEGORY")
    assert s4ext()["category"] == category == catalog_entry()["category"]
    for module in MODULES:
        assert module_parent(module, "categories") == [category], module.name


def test_contributors_and_description():
    contributors = cmake_value("EXTENSION_CONTRIBUTORS")
    assert s4ext()["contributors"] == contributors
    for module in MODULES:
        assert ", ".join(module_parent(module, "contributors")) == contributors, module.name
    description = cmake_value("EXTENSION_DESCRIPTION")
    assert s4ext()["description"] == description
    assert "not for clinical use" in description


def test_icon_url_points_to_the_128_pixel_icon():
    url = cmake_value("EXTENSION_ICONURL")
    assert s4ext()["iconurl"] == url
    data = repository_file(url).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (128, 128)


def test_screenshot_urls_point_to_real_screenshots():
    urls = cmake_value("EXTENSION_SCREENSHOTURLS").split()
    assert urls and s4ext()["screenshoturls"].split() == urls
    for url in urls:
        path = repository_file(url)
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", path
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 800 and height >= 600, (path, width, height)
        assert len(data) < 1_000_000, f"{path.name}: {len(data)} bytes"


def test_screenshot_originals_are_kept_beside_the_composite():
    for name in ("SegmentAndExplain_overview.png", "SegmentAndExplain_3d.png"):
        data = (ROOT / "Screenshots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 1_000_000, name


def test_dependencies():
    depends = cmake_value("EXTENSION_DEPENDS").split()
    assert depends == ["PyTorch"]
    assert s4ext()["depends"].split() == depends
    assert catalog_entry()["build_dependencies"] == depends


def test_build_subdirectory_and_enabled():
    assert s4ext()["build_subdirectory"] == catalog_entry()["build_subdirectory"] == "."
    assert s4ext()["enabled"] == "1" and catalog_entry()["enabled"] is True


def test_catalog_entry_follows_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    entry = catalog_entry()
    jsonschema.validate(entry, CATALOG_SCHEMA)
    assert entry["$schema"] == SCHEMA_URL
    assert entry["tier"] == 1  # experimental: research software
    text = (ROOT / "LiverXAI.json").read_text(encoding="utf-8")
    assert text == json.dumps(entry, indent=2, sort_keys=True) + "\n"  # as the index keeps them


# --- the supported Slicer -----------------------------------------------------------------------
def test_minimum_slicer_is_declared_everywhere():
    minimum = slicer_version.version_text(slicer_version.MINIMUM_SLICER)
    assert cmake_value("LiverXAI_MINIMUM_SLICER_VERSION") == minimum
    header = (ROOT / "LiverXAI.s4ext").read_text(encoding="utf-8")
    assert f"Supported 3D Slicer: {minimum} and later" in header
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"3D Slicer {minimum} or later" in readme


def _stub_slicer(folder: Path, version: str) -> Path:
    """A stand-in Slicer build tree: what find_package(Slicer) and include(Slicer_USE_FILE)
    give an extension, with checking stand-ins of the scripted-module macros."""
    folder.mkdir(parents=True)
    (folder / "SlicerConfigVersion.cmake").write_text(
        textwrap.dedent(
            f"""
            set(PACKAGE_VERSION "{version}")
            if(PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION)
              set(PACKAGE_VERSION_COMPATIBLE FALSE)
            else()
              set(PACKAGE_VERSION_COMPATIBLE TRUE)
            endif()
            """
        )
    )
    (folder / "SlicerConfig.cmake").write_text(
        textwrap.dedent(
            """
            set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
            set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/Describe.cmake")
            set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/Empty.cmake")
            """
        )
    )
    (folder / "UseSlicer.cmake").write_text(
        textwrap.dedent(
            """
            function(slicerMacroBuildScriptedModule)
              cmake_parse_arguments(M "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
              foreach(file ${M_SCRIPTS} ${M_RESOURCES})
                if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${file}")
                  message(FATAL_ERROR "${M_NAME}: listed file missing: ${file}")
                endif()
              endforeach()
              list(LENGTH M_SCRIPTS count)
              file(APPEND "${CMAKE_BINARY_DIR}/modules.txt"
                "${M_NAME} ${count} ${M_WITH_GENERIC_TESTS}\\n")
            endfunction()
            function(slicer_add_python_unittest)
            endfunction()
            """
        )
    )
    (folder / "Describe.cmake").write_text(
        'file(WRITE "${CMAKE_BINARY_DIR}/extension.txt" "${EXTENSION_HOMEPAGE}\\n'
        '${EXTENSION_CATEGORY}\\n${EXTENSION_DEPENDS}\\n${EXTENSION_SCREENSHOTURLS}\\n")\n'
    )
    (folder / "Empty.cmake").write_text("")
    return folder


def _configure(tmp_path: Path, version: str) -> subprocess.CompletedProcess:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    if not (shutil.which("cc") or shutil.which("gcc")) or not (
        shutil.which("c++") or shutil.which("g++")
    ):
        pytest.skip("no C/C++ compiler for project()'s language checks")
    stub = _stub_slicer(tmp_path / f"Slicer-{version}", version)
    command = [cmake, "-S", str(ROOT), "-B", str(tmp_path / "build"), f"-DSlicer_DIR={stub}"]
    return subprocess.run(command + ["-DBUILD_TESTING=OFF"], capture_output=True, text=True)


def test_cmake_refuses_slicer_58(tmp_path):
    done = _configure(tmp_path, "5.8.1")
    assert done.returncode != 0
    output = " ".join((done.stdout + done.stderr).split())
    assert "LiverXAI needs 3D Slicer 5.10 or later (Python 3.12)" in output, output
    assert "is Slicer 5.8" in output


def test_cmake_configures_with_slicer_510(tmp_path):
    done = _configure(tmp_path, "5.10.0")
    assert done.returncode == 0, done.stdout + done.stderr
    modules = (tmp_path / "build" / "modules.txt").read_text().split("\n")
    assert modules[0].split()[0] == "LiverXAI" and modules[0].split()[2] == "TRUE"
    assert modules[1].split()[:1] == ["LiverXAITraining"] and modules[1].split()[2] == "TRUE"
    homepage, category, depends, screenshots = (
        (tmp_path / "build" / "extension.txt").read_text().splitlines()
    )
    assert homepage == s4ext()["homepage"] and category == s4ext()["category"]
    assert depends == s4ext()["depends"] and screenshots == s4ext()["screenshoturls"]
