"""The README and docs/ kept true: links that resolve, one table of every setting that
matches config.py, the schedules' cost counted from the workflow files, and comments and
docs that name no tracker issue.

Markdown is read the way GitHub renders it, closely enough for these files: headings
outside fenced code give the anchors (github-slugger's rule: lower case, punctuation
dropped, spaces to hyphens, repeats numbered), and links outside code are checked.
"""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from croniter import croniter

import config

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MARKDOWN = [README, *DOCS]
WORKFLOWS = ROOT / ".github" / "workflows"


# --- reading markdown -----------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a `# comment` in a shell block is no heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(path.read_text()):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading[1])
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", line))
    return found


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")


def links(path: Path) -> list[str]:
    """Every link target outside code (inline code spans included)."""
    targets = []
    for line in prose_lines(path.read_text()):
        line = re.sub(r"(`+).*?\1", "", line)
        targets += LINK.findall(line)
        reference = REFERENCE.match(line)
        if reference:
            targets.append(reference[1])
    return targets


def tables(path: Path) -> list[list[list[str]]]:
    """Every table as rows of cells (the header first, the --- row left out)."""
    found: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in prose_lines(path.read_text()):
        stripped = line.strip()
        if not stripped.startswith("|"):
            current = None
            continue
        body = stripped.strip("|").replace(r"\|", "\x00")
        cells = [cell.strip().replace("\x00", "|") for cell in body.split("|")]
        if all(re.fullmatch(r":?-{3,}:?", cell) for cell in cells):
            continue
        if current is None:
            current = []
            found.append(current)
        current.append(cells)
    return found


def table_with(path: Path, *header_words: str) -> list[list[str]]:
    """The one table of `path` whose header has each of `header_words` in some cell."""
    matching = [
        t for t in tables(path) if all(any(w in cell for cell in t[0]) for w in header_words)
    ]
    assert len(matching) == 1, f"{path.name}: {len(matching)} tables headed {header_words}"
    return matching[0]


def number(text: str) -> float:
    found = re.search(r"-?[0-9][0-9,]*(?:\.[0-9]+)?", text)
    assert found, f"no number in {text!r}"
    return float(found[0].replace(",", ""))


# --- links ----------------------------------------------------------------------------


def test_the_markdown_reader_finds_anchors_and_links_as_github_renders_them(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Club Strava sync\n## 3. Vercel: the service and its settings\n"
        "## The operator's view\n## `limit` and `done`\n## Notes\n## Notes\n"
        "```sh\n# not a heading\n[not a link](nowhere.md)\n```\n"
        'See [a](#notes-1), ![b](docs/x.png "title"), `[c](code.md)` and <https://x.org>.\n'
        "[ref]: other.md#top\n"
    )
    assert anchors(page) == {
        "club-strava-sync",
        "3-vercel-the-service-and-its-settings",
        "the-operators-view",
        "limit-and-done",
        "notes",
        "notes-1",
    }
    assert links(page) == ["#notes-1", "docs/x.png", "other.md#top"]


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    broken = []
    for target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.is_relative_to(ROOT) or not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor in {linked.name}")
    assert not broken, f"{path.name}: " + "; ".join(broken)


def test_the_readme_is_short_and_starts_where_its_reader_starts():
    text = README.read_text()
    assert len(text.splitlines()) < 300
    for command in ("python3 dev.py demo", "python3 dev.py test", "python3 dev.py demo --serve"):
        assert f"\n{command}" in text, command
    deploy = text[text.index("\n## Deploying") :]
    steps = re.findall(r"^### ([0-9]+)\. (.*)$", deploy, re.MULTILINE)
    assert [int(n) for n, _ in steps] == list(range(1, len(steps) + 1)), "one numbered path"
    widget = deploy[deploy.index(next(f"### {n}. {t}" for n, t in steps if "widget" in t)) :]
    assert "ClubSync.mount" in widget and "ALLOWED_ORIGINS" in widget and "Supabase" in widget
    last = deploy[deploy.rindex(f"### {steps[-1][0]}. ") :]
    assert "club page" in last and "widget" in last, "the path ends with the widget on a club page"
    for doc in DOCS:
        assert f"(docs/{doc.name}" in text, f"the README links to docs/{doc.name}"


def test_one_way_to_run_the_command_line():
    """The service's commands run one way everywhere: `.venv/bin/flask --app api.index`."""
    for path in [*MARKDOWN, ROOT / ".env.example"]:
        for prefix in re.findall(r"(\S*)flask --app", path.read_text()):
            assert prefix.lstrip("`") == ".venv/bin/", f"{path.name}: {prefix}flask --app"


# --- the settings ---------------------------------------------------------------------


def variables_config_reads() -> set[str]:
    """Every environment variable config.py reads: the keys of _VARIABLES and every name
    looked up in an environment mapping (`environ.get("X")`, `os.environ["X"]`)."""
    tree = ast.parse((ROOT / "config.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        target = None
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "_VARIABLES" for t in targets):
                assert isinstance(node.value, ast.Dict)
                names.update(k.value for k in node.value.keys if isinstance(k, ast.Constant))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "get" and node.args:
                target, key = node.func.value, node.args[0]
        elif isinstance(node, ast.Subscript):
            target, key = node.value, node.slice
        if target is not None and ast.unparse(target) in {"environ", "os.environ"}:
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                names.add(key.value)
    return names


def settings_table() -> dict[str, list[str]]:
    rows = table_with(ROOT / "docs" / "configuration.md", "variable", "allowed")
    header, body = rows[0], rows[1:]
    assert header == ["variable", "what it is", "when unset", "allowed"]
    named: dict[str, list[str]] = {}
    for row in body:
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row[0]):
            assert name not in named, f"{name} has two rows"
            named[name] = row
    return named


def test_config_reads_the_variables_it_is_known_to_read():
    names = variables_config_reads()
    assert {"DATABASE_URL", "CRON_SECRET", "VERCEL", "PYTHON_DOTENV_DISABLED"} <= names
    assert names >= set(config._VARIABLES)


def test_the_settings_table_names_every_variable_config_reads_and_nothing_else():
    documented, read = set(settings_table()), variables_config_reads()
    assert not read - documented, f"read by config.py, not in the table: {read - documented}"
    assert not documented - read, f"in the table, not read by config.py: {documented - read}"


def test_the_settings_table_gives_each_number_its_default_and_range():
    defaults = {f.name: f.default for f in config.fields(config.Settings)}
    for name, row in settings_table().items():
        if name not in config._VARIABLES:
            continue
        field, parse = config._VARIABLES[name]
        default = defaults[field]
        if isinstance(parse, config.Number):
            low, high = re.findall(r"-?[0-9][0-9,]*(?:\.[0-9]+)?", row[3])[:2]
            assert (number(low), number(high)) == (parse.min, parse.max), name
            if default is not None:  # an optional number: "when unset" says what then
                assert number(row[2]) == default, f"{name}: default {default}"
        elif isinstance(default, str):
            assert f"`{default}`" in row[2], f"{name}: default {default}"


def test_the_settings_table_exists_once():
    """docs/configuration.md holds the one table of settings; the README's deploy step has
    the settings a deployment sets, each of them one config.py reads."""
    for path in MARKDOWN:
        headed = [t for t in tables(path) if t[0] and t[0][0] == "variable"]
        expected = 1 if path.name in {"configuration.md", "README.md"} else 0
        assert len(headed) == expected, path.name
    deploy = table_with(README, "variable", "what to set")
    named = {n for row in deploy[1:] for n in re.findall(r"`([A-Z][A-Z0-9_]+)`", row[0])}
    assert named <= set(config._VARIABLES), named - set(config._VARIABLES)
    required = {"DATABASE_URL", "CRON_SECRET", "TOKEN_ENCRYPTION_KEY", "STRAVA_CLIENT_ID",
                "STRAVA_CLIENT_SECRET", "SUPABASE_URL", "PUBLIC_BASE_URL",
                "STRAVA_WEBHOOK_VERIFY_TOKEN", "ALLOWED_ORIGINS", "APP_RETURN_URL"}  # fmt: skip
    assert required <= named, required - named


# --- the schedules and what they cost -------------------------------------------------

DAYS = 30  # "a month" in the README


def scheduled_workflows() -> dict[str, tuple[str, list[str]]]:
    """file name -> (the workflow's name, its cron expressions), for every scheduled one."""
    found = {}
    for path in sorted(WORKFLOWS.glob("*.yml")):
        document = yaml.safe_load(path.read_text())
        triggers = document.get("on", document.get(True)) or {}  # YAML 1.1 reads `on` as true
        schedule = triggers.get("schedule") if isinstance(triggers, dict) else None
        if schedule:
            found[path.name] = (document["name"], [entry["cron"] for entry in schedule])
    return found


def runs_in(expressions: list[str], days: int = DAYS) -> int:
    """How many times the schedule fires in `days` days (from a Monday, 00:00 UTC)."""
    start = datetime(2027, 3, 1, tzinfo=UTC)
    end = start + timedelta(days=days)
    times: set[datetime] = set()
    for expression in expressions:
        it = croniter(expression, start - timedelta(seconds=1))
        while (moment := it.get_next(datetime)) < end:
            times.add(moment)
    return len(times)


def test_counting_runs():
    assert runs_in(["*/5 * * * *"], 1) == 288
    assert runs_in(["7,37 * * * *"], 1) == 48
    assert runs_in(["7 2-23/3 * * *"], 1) == 8
    assert runs_in(["17 * * * *", "17 * * * *"], 1) == 24  # a time listed twice runs once


def check_cost_table(rows: list[list[str]], schedule_column: int) -> int:
    """Each row's runs a day and billed minutes a month follow from its cron lines (each
    run is one job, billed at least a minute); the total row adds them up. Returns the
    total runs a day."""
    header, body = rows[0], rows[1:]
    runs_col = header.index("runs a day")
    minutes_col = header.index("billed minutes a month, at least")
    total_runs = total_minutes = 0
    for row in body[:-1]:
        crons = re.findall(r"`([^`]+)`", row[schedule_column])
        in_month = runs_in(crons)
        assert in_month % DAYS == 0, f"{row[0]}: not the same every day"
        assert number(row[runs_col]) == in_month / DAYS, row[0]
        assert number(row[minutes_col]) == in_month, row[0]
        total_runs += in_month // DAYS
        total_minutes += in_month
    assert body[-1][0] == "all five"
    assert number(body[-1][runs_col]) == total_runs
    assert number(body[-1][minutes_col]) == total_minutes
    return total_runs


def test_the_readme_lists_the_five_scheduled_workflows_as_their_files_say():
    rows = table_with(README, "workflow", "file", "schedule", "runs a day")
    workflows = scheduled_workflows()
    assert len(workflows) == 5
    listed = {re.sub(r"[`\s]", "", row[1]): row for row in rows[1:-1]}
    assert set(listed) == set(workflows)
    for file, (name, crons) in workflows.items():
        row = listed[file]
        assert row[0] == name, file
        assert re.findall(r"`([^`]+)`", row[2]) == crons, file
    per_day = check_cost_table(rows, schedule_column=2)
    assert per_day == sum(runs_in(crons) for _, crons in workflows.values()) / DAYS
    text = " ".join(README.read_text().split())
    said = re.search(r"at least ([0-9,]+) billed minutes a day, ([0-9,]+) in a 30-day month", text)
    assert said, "the README says the schedules' billed minutes a day and a month"
    assert (number(said[1]), number(said[2])) == (per_day, per_day * DAYS)


def test_the_lighter_set_fits_github_free_for_a_private_repository():
    rows = table_with(README, "workflow", "lighter schedule", "runs a day")
    names = {name for name, _ in scheduled_workflows().values()}
    assert {row[0] for row in rows[1:-1]} == names
    per_day = check_cost_table(rows, schedule_column=1)
    assert per_day * DAYS <= 2000
    assert all(row[-1].strip() for row in rows[1:]), "each thinning says what it costs"


# --- comments and docstrings ----------------------------------------------------------

MODULE_DIRS = ("api", "routes", "services", "models", "fake_strava", "fake_weather", "bench",
               "scripts")  # fmt: skip


def product_modules() -> list[Path]:
    found = sorted(ROOT.glob("*.py"))
    for directory in MODULE_DIRS:
        found += sorted((ROOT / directory).rglob("*.py"))
    return found


def test_every_module_opens_with_what_it_is_for():
    missing = []
    for path in product_modules():
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        if not docstring or not docstring.splitlines()[0].strip():
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"modules without an opening line: {missing}"


TRACKER = re.compile(r"\b(?:issues?|tickets?)\s+#?[0-9]+\b|\(#[0-9]+\)|\bcommit\s+[0-9a-f]{7,40}\b")
TEXT_SUFFIXES = {".py", ".md", ".yml", ".yaml", ".sh", ".js", ".css", ".html", ".toml", ".txt"}
SKIPPED = {".git", ".venv", ".data", ".ci", "node_modules", "__pycache__", ".mypy_cache",
           ".ruff_cache", ".pytest_cache"}  # fmt: skip


def test_no_tracker_issue_or_commit_is_cited_in_code_or_docs():
    """Whoever carries the code on has no tracker: comments and docs say why in words.
    (Old migration files are never edited, so they are left as they are.)"""
    cited = []
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT)
        if SKIPPED & set(relative.parts) or relative.parts[:2] == ("supabase", "migrations"):
            continue
        if relative.parts[:2] == ("tests", "fixtures") or not path.is_file():
            continue
        if path.suffix not in TEXT_SUFFIXES and path.name != ".env.example":
            continue
        for number_, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if TRACKER.search(line):
                cited.append(f"{relative}:{number_}: {line.strip()}")
    assert not cited, "\n".join(cited)
