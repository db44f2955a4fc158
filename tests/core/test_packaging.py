"""The installed layout follows the folders: every package folder is listed for setuptools, and every
core module is covered by the import contract (both lists live in pyproject.toml)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INSTALLED_AS = {"shiftover": "shiftover", "flows": "shiftover.flows", "tasks": "shiftover.tasks"}
INSTALLED_AS |= {"checks": "shiftover.checks", "examples": "shiftover.examples"}


def folders() -> set[str]:
    found = set()
    for top, name in INSTALLED_AS.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *rel)))
    return found


def test_every_package_folder_is_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(config["tool"]["setuptools"]["packages"]) == folders()


def test_the_import_contract_covers_every_core_module() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    [contract] = config["tool"]["importlinter"]["contracts"]
    covered = set(contract["source_modules"])
    core = {f"shiftover.{p.stem}" for p in (ROOT / "shiftover").glob("*.py") if p.stem != "__init__"}
    core |= {f"shiftover.{p.parent.name}" for p in (ROOT / "shiftover").glob("*/__init__.py")}
    assert core == covered
