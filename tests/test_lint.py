"""`make lint` guards the tree: it passes on the project as committed and fails, naming the file, on a planted long
line, an unused import or a type error. It runs on a copy of the tracked files, with this environment's tools."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(sys.executable).parent  # the environment's bin/: ruff and mypy beside python
# each planted after two blank lines, as the formatter wants at the top level, so that the check that names it fails
PLANTS = {
    "long line": ("acn_mner/corpus.py", "\n\n# " + "a comment far too long for the line length" * 4 + "\n", "E501"),
    "unused import": ("acn_mner/corpus.py", "\n\nimport difflib\n", "F401"),
    "type error": ("modeling_acn/configuration_acn.py", '\n\nPLANTED: int = "not a number"\n', "assignment"),
}


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory) -> Path:
    if shutil.which("make") is None or not (TOOLS / "ruff").exists() or not (TOOLS / "mypy").exists():
        pytest.skip("make, ruff or mypy is missing: make setup installs ruff and mypy (the dev extra)")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    copy = tmp_path_factory.mktemp("lint") / "project"
    for name in files.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    return copy


def make_lint(project: Path, cache: Path) -> subprocess.CompletedProcess:
    """`make lint` in `project` with this environment's tools (`STAMP=`: nothing is installed)."""
    return subprocess.run(
        ["make", "lint", f"BIN={TOOLS}", "STAMP="],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=900,
        env={"PATH": f"{TOOLS}:/usr/bin:/bin", "MYPY_CACHE_DIR": str(cache), "HOME": str(project)},
    )


@pytest.mark.slow
def test_make_lint_passes_on_the_tree_and_fails_on_each_planted_problem(project_copy, tmp_path):
    clean = make_lint(project_copy, tmp_path / "mypy_cache")
    assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr[-3000:]
    for what, (name, line, code) in PLANTS.items():
        path = project_copy / name
        original = path.read_text()
        path.write_text(original + line)
        try:
            planted = make_lint(project_copy, tmp_path / "mypy_cache")
        finally:
            path.write_text(original)
        output = planted.stdout + planted.stderr
        assert planted.returncode != 0, f"make lint passed with a planted {what}"
        assert name in output and code in output, f"{what}: {output[-2000:]}"
