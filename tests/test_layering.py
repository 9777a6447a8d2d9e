"""The layering of the code, kept true by reading every module's imports.

Dependencies point down: entry -> routes -> services -> store -> settings and logging.
The simulators (fake_strava, fake_weather) know nothing of the product, and the product
never imports them, the benches, the demo's scripts or the tests. import-linter is the
well-kept tool for such contracts, but it takes only packages, and the settings, the
database and the factory are top-level modules here; reading the imports with `ast` is
a few lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The product: what Vercel deploys and runs.
PRODUCT = ("api", "routes", "services", "models", "config", "token_keys", "db", "app_factory",
           "commands", "logging_setup")  # fmt: skip
SIMULATORS = ("fake_strava", "fake_weather")
NOT_PRODUCT = (*SIMULATORS, "bench", "scripts", "tests", "dev")
SETTINGS = ("config", "token_keys", "logging_setup")

# (importer's top-level name or names, what it may never import, why)
RULES: list[tuple[tuple[str, ...], tuple[str, ...], str]] = [
    (("routes",), ("models", "db"), "routes are thin: they call a service, never the store"),
    (("models",), ("services", "routes", "flask", "app_factory"), "the store needs no service"),
    (SETTINGS, ("services", "routes", "models", "flask", "app_factory"), "settings are the base"),
    (("services",), ("flask", "werkzeug", "routes", "app_factory"), "services import no Flask"),
    (PRODUCT, NOT_PRODUCT, "the product never imports the simulators, benches or tests"),
    (SIMULATORS, (*PRODUCT, "bench", "scripts", "tests"), "simulators know nothing of the product"),
]


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement of the file names (absolute imports only: the
    project uses no relative ones)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def python_files(root: Path) -> list[Path]:
    skip = {".venv", ".data", "node_modules", ".git", ".mutmut", "mutants"}
    return [p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts)]


def violations(root: Path) -> list[str]:
    """Each import that breaks a rule, as `importer -> imported: why`."""
    found = []
    for path in sorted(python_files(root)):
        importer = module_name(root, path)
        top = importer.split(".")[0]
        for imported in sorted(imported_modules(path)):
            target = imported.split(".")[0]
            for sources, forbidden, why in RULES:
                if top in sources and target in forbidden and target != top:
                    found.append(f"{importer} -> {imported}: {why}")
    return found


def test_the_code_keeps_its_layers():
    assert violations(ROOT) == []


def test_every_product_module_is_under_a_rule():
    tops = {module_name(ROOT, p).split(".")[0] for p in python_files(ROOT)}
    assert tops <= set(PRODUCT) | set(NOT_PRODUCT) | {"conftest"}, tops - set(PRODUCT)


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("routes/x.py", "import models\n", "routes.x -> models"),
        ("routes/x.py", "from db import Database\n", "routes.x -> db"),
        ("models/x.py", "from services.activities import RIDE_SPORTS\n", "models.x -> services"),
        ("models/x.py", "import flask\n", "models.x -> flask"),
        ("config.py", "from services.sealing import Sealer\n", "config -> services.sealing"),
        ("services/x.py", "from flask import request\n", "services.x -> flask"),
        ("services/x.py", "import fake_strava\n", "services.x -> fake_strava"),
        ("fake_strava/x.py", "import models\n", "fake_strava.x -> models"),
        ("fake_weather/x.py", "from services import weather\n", "fake_weather.x -> services"),
    ],
)
def test_a_broken_rule_is_reported(tmp_path, path, source, expected):
    file = tmp_path / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(source)
    found = violations(tmp_path)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_allowed_imports_are_not_reported(tmp_path):
    for path, source in {
        "routes/x.py": "from services import sync\n",
        "services/x.py": "import models\nfrom config import Settings\n",
        "models/x.py": "from models.base import Conn\nimport psycopg\n",
        "bench/x.py": "import models\nfrom fake_strava import FakeStrava\n",
    }.items():
        file = tmp_path / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(source)
    assert violations(tmp_path) == []
