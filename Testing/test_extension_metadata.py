"""The extension as Slicer's Extensions Index and Extension Manager see it, and the module files' shape."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE_FILES = (REPO / "LVMyoSeg" / "LVMyoSeg.py", REPO / "LVMyoSegTrainer" / "LVMyoSegTrainer.py")
# Slicer's Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json: required and allowed keys
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}
CATALOG_ALLOWED = CATALOG_REQUIRED | {"scm_revision", "scm_type", "build_dependencies", "dicom_support_rule",
                                      "build_subdirectory", "enabled", "tier"}
RAW = "https://raw.githubusercontent.com/lvmyoseg/LVMyoSeg/main/"


def cmake_settings() -> dict[str, str]:
    text = (REPO / "CMakeLists.txt").read_text()
    return dict(re.findall(r'^set\((EXTENSION_\w+) "([^"]*)"\)', text, flags=re.M))


def test_license_is_the_bsd_3_clause_the_package_declares():
    assert (REPO / "LICENSE").read_text().startswith("BSD 3-Clause License")
    assert 'license = { text = "BSD-3-Clause" }' in (REPO / "pyproject.toml").read_text()


def test_cmake_metadata_is_complete_and_its_pictures_exist():
    settings = cmake_settings()
    assert "TODO" not in (REPO / "CMakeLists.txt").read_text()
    assert settings["EXTENSION_HOMEPAGE"].startswith("https://github.com/lvmyoseg/LVMyoSeg")
    for contributor in settings["EXTENSION_CONTRIBUTORS"].split(","):
        assert re.fullmatch(r"[^()]+ \([^()]+\)", contributor.strip()), contributor  # "Name (Organisation)"
    urls = [settings["EXTENSION_ICONURL"], *settings["EXTENSION_SCREENSHOTURLS"].split()]
    assert len(urls) >= 3
    for url in urls:
        assert url.startswith(RAW) and (REPO / url[len(RAW):]).is_file(), url


def test_extensions_index_entry_follows_the_catalog_schema_and_the_cmake_file():
    entry = json.loads((REPO / "ExtensionsIndex" / "LVMyoSeg.json").read_text())
    assert CATALOG_REQUIRED <= set(entry) <= CATALOG_ALLOWED
    assert entry["category"] == cmake_settings()["EXTENSION_CATEGORY"]
    assert cmake_settings()["EXTENSION_HOMEPAGE"].startswith(entry["scm_url"])
    assert entry["scm_type"] == "git" and 1 <= entry["tier"] <= 5
    assert not list(REPO.glob("*.s4ext"))


def test_module_files_are_thin_parse_on_python_3_9_and_the_trainer_does_not_import_the_other_module():
    for path in MODULE_FILES:
        text = path.read_text()
        assert len(text.splitlines()) <= 400, f"{path.name} has {len(text.splitlines())} lines"
        ast.parse(text, feature_version=(3, 9))  # Slicer 5.8 must load it to show what is needed
    trainer = ast.parse(MODULE_FILES[1].read_text())
    imported = {n.module for n in ast.walk(trainer) if isinstance(n, ast.ImportFrom)} | \
               {a.name for n in ast.walk(trainer) if isinstance(n, ast.Import) for a in n.names}
    assert "LVMyoSeg" not in imported


def test_each_module_has_its_self_test_registered_with_ctest():
    for path in MODULE_FILES:
        name = path.stem
        test = path.parent / "Testing" / "Python" / f"{name}SelfTest.py"
        assert f"class {name}SelfTest(" in test.read_text()
        assert f"slicer_add_python_unittest(SCRIPT {name}SelfTest.py)" in \
            (path.parent / "Testing" / "Python" / "CMakeLists.txt").read_text()
        assert "add_subdirectory(Testing)" in (path.parent / "CMakeLists.txt").read_text()
