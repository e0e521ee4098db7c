"""`cellpipe tag NB --at-headings`: from an untagged notebook to a pipeline in one command.

Three notebooks of the shapes people write: a report with a title and numbered sections,
a script-like notebook with setup code before its first heading and Kale tags to replace,
and a notebook in French with emoji, fenced code in markdown and a deeper outline. Each is
split, checked to compile, and (for the first) run; `--dry-run` writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import cellpipe
from cellpipe.compiling.split import split_at_headings
from nbbuild import notebook, write

REPORT = notebook(
    "# md: # Customer churn, Q3\nWhy customers left, from the raw export to a summary table.",
    "import statistics\nimport json\nfrom collections import Counter",
    "# md: ## 1. Load the export",
    ("parameters", "threshold = 3"),
    'rows = [{"id": i, "visits": i % 7, "left": i % 3 == 0} for i in range(30)]\n'
    'print(len(rows), "rows")',
    "# md: ## 2. Features\nVisits per customer; `threshold` marks the low ones.",
    'low = [r for r in rows if r["visits"] < threshold]',
    'share = len(low) / len(rows)\nprint(f"{share:.0%} low-visit customers")',
    "# md: ### A caveat\nA level-3 heading: still part of *Features*.",
    'left_low = sum(r["left"] for r in low)',
    "# md: ## 3. Summary",
    ("metrics", "share"),
    'summary = Counter(r["left"] for r in rows)\nprint(json.dumps({str(k): v for k, v in summary.items()}))',
)

SCRIPT = notebook(
    "import os, sys\n\n%matplotlib inline",  # a magic: not "only imports", stays in setup
    'DATA = os.environ.get("DATA", "/tmp")\nprint(sys.version_info[:2])',
    "# md: Load\n====\nSetext headings count too.",
    ("block:old_load hide-input", "values = list(range(10))"),
    ("block:old_clean prev:old_load", "clean = [v for v in values if v % 2]"),
    "# md: Plot\n----",
    ("skip", "print('scratch: not in the pipeline')"),
    "total = sum(clean)",
    ("pipeline-metrics", "total"),
    "# md: Plot\n----\nThe same heading again.",
    "print(total)",
)

FRENCH = notebook(
    "# md: # Analyse",
    "# md: ## Données brutes",
    "from math import sqrt",
    "mesures = [sqrt(i) for i in range(9)]",
    "# md: ```python\n# pas un titre: du code dans un bloc\n```\n## 📈",
    "print(max(mesures))",
    "# md: ## Conclusion",
    "# md: ### Détails\nRien à exécuter ici.",
    "# md: ### Résumé `final`",
    "print(round(sum(mesures), 2))",
)


def tags_of(path: Path) -> list[list[str]]:
    nb = json.loads(path.read_text())
    return [c.get("metadata", {}).get("tags", []) for c in nb["cells"]]


def test_a_report_with_a_title_and_numbered_sections(cli, tmp_path: Path) -> None:
    path = write(tmp_path / "churn.ipynb", REPORT)
    proc = cli("tag", str(path), "--at-headings", check=True)
    assert "3 steps at the headings of level 2 and above" in proc.stdout
    assert "wrote the tags of 4 cells" in proc.stdout
    assert tags_of(path) == [
        [],
        ["imports"],
        [],
        ["parameters"],
        ["step:load_the_export"],  # the title's section has only imports: no step of its own
        [],
        ["step:features"],
        [],
        [],
        [],  # "### A caveat" does not split at level 2
        [],
        ["step:summary", "metrics"],
        [],
    ]
    pipeline = cellpipe.compile(path)
    assert [s.name for s in pipeline.steps] == ["load_the_export", "features", "summary"]
    # Edges come from the data: features reads rows, summary reads rows and share.
    assert {(e.source, e.target) for e in pipeline.edges} >= {
        ("load_the_export", "features"),
        ("features", "summary"),
    }
    run = cli("run", str(path))
    assert run.returncode == 0, run.stdout + run.stderr


def test_setup_before_the_first_heading_setext_headings_and_kale_tags(cli, tmp_path: Path) -> None:
    path = write(tmp_path / "script.ipynb", SCRIPT)
    proc = cli("tag", str(path), "--at-headings", check=True)
    assert "setup" in proc.stdout and "before the first heading" in proc.stdout
    assert tags_of(path) == [
        ["block:setup"],  # the notebook uses Kale's prefix: so does the split
        [],
        [],
        ["block:load", "hide-input"],  # foreign tags stay, the old step name goes
        [],  # old_clean and its prev: are gone: the split is the new pipeline
        [],
        ["skip"],
        ["block:plot"],
        ["block:plot", "pipeline-metrics"],  # a metrics cell keeps its step explicitly
        [],
        ["block:plot_2"],  # the same heading twice: unique names
    ]
    assert [s.name for s in cellpipe.compile(path).steps] == ["setup", "load", "plot", "plot_2"]


def test_non_ascii_and_emoji_headings_fenced_code_and_a_deeper_level(cli, tmp_path: Path) -> None:
    path = write(tmp_path / "analyse.ipynb", FRENCH)
    proc = cli("tag", str(path), "--at-headings", "--level", "3", "--json", check=True)
    plan = json.loads(proc.stdout)
    assert plan["written"] is True
    # "# pas un titre" sits in a code fence: not a heading. "📈" has no letters: a numbered
    # name. "### Détails" has no code under it: no step. "Résumé `final`": markup dropped.
    assert [(s["name"], s["heading"], s["numbers"]) for s in plan["steps"]] == [
        ("donnees_brutes", "Données brutes", [4]),
        ("section_3", "📈", [6]),
        ("resume_final", "Résumé final", [10]),
    ]
    assert plan["imports"] == ["c3"]
    assert [s.name for s in cellpipe.compile(path).steps] == [
        "donnees_brutes",
        "section_3",
        "resume_final",
    ]
    # At the default level 2, "Résumé" is part of "Conclusion".
    level2 = split_at_headings(json.loads(json.dumps(FRENCH)))
    assert [s.name for s in level2.steps] == ["donnees_brutes", "section_3", "conclusion"]


def test_dry_run_shows_the_steps_and_writes_nothing(cli, tmp_path: Path) -> None:
    path = write(tmp_path / "churn.ipynb", REPORT)
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    proc = cli("tag", str(path), "--at-headings", "--dry-run", check=True)
    assert "load_the_export" in proc.stdout
    assert f"--dry-run: {path} not written." in proc.stdout
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".ipynb") == ["churn.ipynb"]


def test_tag_without_a_way_to_tag_is_a_usage_error(cli, tmp_path: Path) -> None:
    path = write(tmp_path / "churn.ipynb", REPORT)
    proc = cli("tag", str(path))
    assert proc.returncode == 2
    assert "--at-headings" in proc.stderr


def test_the_split_leaves_its_input_unchanged_and_is_idempotent() -> None:
    nb = json.loads(json.dumps(SCRIPT))
    plan = split_at_headings(nb)
    assert nb == SCRIPT
    from cellpipe.compiling.split import apply_split

    again = split_at_headings(apply_split(nb, plan))
    assert again.tags == {} and [s.name for s in again.steps] == [s.name for s in plan.steps]
