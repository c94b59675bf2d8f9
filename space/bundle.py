"""Write the folder to upload as a Hugging Face Space: app.py, its Space card, requirements.txt and the package.

    python space/bundle.py --output_dir outputs/space        (make space)
    huggingface-cli upload --repo-type space USER/SPACE_NAME outputs/space .

A Space installs requirements.txt and runs app.py from the folder, so the package's folders go beside app.py
(importable from there) and requirements.txt lists the package's dependencies, read from setup.cfg so the two
cannot drift apart. The Space's `gradio` sdk brings gradio. Set the Space variable ACN_MODEL to the model's Hub id.
"""

import argparse
import configparser
import logging
import shutil
from pathlib import Path

from acn_mner.atomic import atomic_path, write_text

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SPACE_DIR = ROOT / "space"
SPACE_FILES = ("app.py", "README.md")  # README.md is the Space card: its YAML header configures the Space
PACKAGES = ("modeling_acn", "acn_mner")  # setup.cfg's packages


def install_requires(setup_cfg: Path = ROOT / "setup.cfg") -> list[str]:
    config = configparser.ConfigParser()
    config.read(setup_cfg, encoding="utf-8")
    return config["options"]["install_requires"].split()


def requirements_text() -> str:
    header = "# acn-mner's dependencies (setup.cfg install_requires), written by space/bundle.py\n"
    return header + "\n".join(install_requires()) + "\n"


def package_sources(root: Path = ROOT) -> list[Path]:
    """The package's Python files and `py.typed` markers, relative to `root`."""
    return sorted(
        path.relative_to(root)
        for package in PACKAGES
        for path in (root / package).rglob("*")
        if path.suffix == ".py" or path.name == "py.typed"
    )


def bundle_sources() -> list[tuple[Path, Path]]:
    """(source file, its path in the Space) for the Space's files at its root and the package's folders."""
    space_files = [(SPACE_DIR / name, Path(name)) for name in SPACE_FILES]
    return space_files + [(ROOT / relative, relative) for relative in package_sources()]


def write_bundle(output_dir: Path) -> list[Path]:
    """Write the Space's files into `output_dir` (replacing only files of the same names); return their paths."""
    written = []
    for source, relative in bundle_sources():
        with atomic_path(output_dir / relative) as temporary:
            shutil.copyfile(source, temporary)
        written.append(output_dir / relative)
    write_text(output_dir / "requirements.txt", requirements_text())
    return [*written, output_dir / "requirements.txt"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write the folder to upload as the acn-mner Hugging Face Space.")
    parser.add_argument(
        "--output_dir", type=Path, default=Path("outputs/space"), help="Folder to write the Space into."
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    files = write_bundle(args.output_dir)
    logger.info("wrote %d files of the Space into %s", len(files), args.output_dir)


if __name__ == "__main__":
    main()
