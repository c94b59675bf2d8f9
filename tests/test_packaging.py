"""setup.cfg, LICENSE and the package agree; the lower bounds cover what the code uses; a wheel holds the model and
library packages alone, and the layers import each other one way only."""

import ast
import configparser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import modeling_acn

ROOT = Path(__file__).resolve().parents[1]


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def install_requires() -> dict[str, Requirement]:
    lines = setup_cfg()["options"]["install_requires"].strip().splitlines()
    return {requirement.name.lower().replace("_", "-"): requirement for requirement in map(Requirement, lines)}


def test_license_file_is_the_license_setup_cfg_declares():
    metadata = setup_cfg()["metadata"]
    assert metadata["license"] == "Apache-2.0" and metadata["license_files"] == "LICENSE"
    header = (ROOT / "LICENSE").read_text().split()[:4]
    assert header == ["Apache", "License", "Version", "2.0,"]


def test_version_comes_from_the_package():
    assert setup_cfg()["metadata"]["version"] == "attr: modeling_acn.__version__"
    assert modeling_acn.__version__.count(".") == 2


def test_lower_bounds_exclude_versions_without_what_the_code_uses():
    requirements = install_requires()
    # datasets.List (the corpus loader's features) arrived in datasets 4; transformers 5 needs torch 2.6
    for name, too_old, first_good in [
        ("datasets", "3.6.0", "4.0.0"),
        ("torch", "2.5.1", "2.6.0"),
        ("transformers", "4.57.0", "5.0.0"),
        ("huggingface-hub", "0.36.0", "1.0.0"),
    ]:
        assert not requirements[name].specifier.contains(too_old), name
        assert requirements[name].specifier.contains(first_good), name


@pytest.mark.slow
def test_wheel_installs_exactly_the_model_and_library_packages(tmp_path):
    """What `pip install .` puts into site-packages: the model package, the library (with its metric module) and the
    console commands, and no other top-level import name."""
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside setup.cfg
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "outputs", "build", "*.egg-info", "__pycache__")
    )
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("acn_mner-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(
            archive.read(name).decode() for name in names if name.endswith(".dist-info/entry_points.txt")
        )
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {
        "modeling_acn",
        "acn_mner",
    }
    assert "acn_mner/metrics/seqeval_mner/seqeval_mner.py" in names
    assert {"modeling_acn/py.typed", "acn_mner/py.typed"} <= set(names)  # PEP 561: type checkers read the annotations
    assert {"modeling_acn/vision_acn.py", "modeling_acn/quantization_acn.py", "acn_mner/feature_cache.py"} <= set(names)
    commands = dict(line.split(" = ") for line in entry_points.splitlines() if " = " in line)
    assert commands == {
        "acn-predict": "acn_mner.predict:cli",
        "acn-explain": "acn_mner.explain:cli",
        "acn-dataset": "acn_mner.dataset_command:cli",
        "acn-train": "acn_mner.train:cli",
        "acn-export": "acn_mner.onnx_export:cli",
    }


def test_the_model_package_imports_nothing_from_the_library_scripts_or_tests():
    """Remote code travels alone: modeling_acn imports only itself (relatively) and third-party packages; the library
    imports no script or test module."""
    local = {"acn_mner", "dataset_script", "examples", "benchmarks", "tests", "space"}
    for package, forbidden in (("modeling_acn", local), ("acn_mner", local - {"acn_mner"})):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    assert node.module.split(".")[0] not in forbidden, f"{path}: from {node.module} import ..."
                elif isinstance(node, ast.Import):
                    assert not {alias.name.split(".")[0] for alias in node.names} & forbidden, f"{path}: import ..."
            if package == "modeling_acn":
                assert "from modeling_acn" not in path.read_text(encoding="utf-8"), (
                    f"{path}: absolute import of its own package"
                )


def test_nothing_edits_sys_path():
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("modeling_acn", "acn_mner", "dataset_script", "examples", "benchmarks", "tests", "space")
        for path in (ROOT / folder).rglob("*.py")
        if re.search(r"sys\.path\.(insert|append)", path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
