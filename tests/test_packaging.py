"""setup.cfg, LICENSE and the package agree; the lower bounds cover what the code uses."""

import configparser
from pathlib import Path

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
    for name, too_old, first_good in [("datasets", "3.6.0", "4.0.0"), ("torch", "2.5.1", "2.6.0"),
                                      ("transformers", "4.57.0", "5.0.0"), ("huggingface-hub", "0.36.0", "1.0.0")]:  # fmt: skip
        assert not requirements[name].specifier.contains(too_old), name
        assert requirements[name].specifier.contains(first_good), name
