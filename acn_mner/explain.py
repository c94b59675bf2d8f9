"""acn-explain: a PNG showing where ACN looks and how much the image counts, for one tweet and its image.

Top row: the photo, in its own colours, under the word-guided visual attention of each entity word (of every word
when the tweet has no entity): each of the 7x7 regions tinted in one hue, as opaque as its share of the word's
attention, and the fewest regions that hold half the attention outlined, their number and share in a caption (a map
spread over many regions says so rather than pointing anywhere). Then the tagged tweet, and one bar per word for the
fusion gate (share of the visual feature in the fused feature, averaged over hidden units) and for the filtration
gate (how much of the multimodal feature reaches the tagger). The paper's Figure 1, for any tweet; of a long
tweet, its first `MAX_DRAWN_WORDS` words, and the picture says so.
"""

import argparse
import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from modeling_acn import AcnPipeline
from modeling_acn.image_processing_acn import is_image_url
from modeling_acn.pipeline_acn import entity_spans

from .atomic import atomic_path
from .command_line import ArgumentParser, folder_or_hub_id, one_line_errors
from .output_check import refuse_overwriting_inputs
from .predict import open_image, parse_device

logger = logging.getLogger(__name__)

MAX_ATTENTION_PANELS = 8  # more maps than this get too small to read
MAX_DRAWN_WORDS = 40  # more bars than this get too narrow to label (and 10,000 took a minute to draw)
PANEL_INCHES = 2.6
DISPLAY_SIDE = 336  # pixels of the longest image side in the picture
ATTENTION_RGB = (1.0, 0.0, 1.0)  # magenta: none of the demo figures' colours, and rare in photos
MAX_ATTENTION_ALPHA = 0.6  # the most attended region's tint; the photo still shows through it
HALF_ATTENTION = 0.5  # the outlined regions hold at least this share of the attention
# A map whose half needs more regions than this (a quarter of the 49) points nowhere: the panel says so, outlines none
MAX_FOCUSED_REGIONS = 12
OUTLINE_COLOR = "white"
TEXT_WRAP = 110  # characters per line of the tagged tweet
OUTSIDE_COLOR = "0.55"  # grey for words outside entities


def explain_tweet(
    pipe: AcnPipeline,
    text: str | list[str],
    image: str | Path | Image.Image | None,
    output: Path,
    is_split_into_words: bool = False,
    allow_private_urls: bool = False,
) -> dict[str, Any]:
    """Tag a tweet, draw its explanation picture to `output` (PNG) and return the pipeline's result.

    Args:
        pipe: an `AcnPipeline` whose model has images (`use_image=True`).
        text: the tweet, or a list of words with `is_split_into_words=True`.
        image: a file path or an http(s) URL, a PIL image or None.
        allow_private_urls: fetch an image URL on a loopback, private or link-local address too.
        output: path of the PNG to write.
    """
    if isinstance(image, (str, Path)):
        image = open_image(image if is_image_url(image) else Path(image), pipe.image_processor, allow_private_urls)
    result = pipe(text, image=image, output_attentions=True, is_split_into_words=is_split_into_words)
    figure = draw_explanation(result, image)
    with atomic_path(output) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    return result


def draw_explanation(result: dict, image: Image.Image | None) -> Figure:
    """The explanation figure of one pipeline result (`output_attentions=True`) and the tweet's image: of the first
    `MAX_DRAWN_WORDS` words, with a title saying so when the tweet has more."""
    shown = min(len(result["words"]), MAX_DRAWN_WORDS)
    words, tags = result["words"][:shown], result["tags"][:shown]
    fusion_gates = None if result["fusion_gates"] is None else result["fusion_gates"][:shown]
    filtration_gates = result["filtration_gates"][:shown]
    panels = [index for index, tag in enumerate(tags) if tag != "O"] or list(range(len(words)))
    panels = panels[:MAX_ATTENTION_PANELS] if image is not None else []
    columns = max(len(panels), 1)
    figure = Figure(figsize=(max(10.0, PANEL_INCHES * columns), 9.0), layout="constrained")
    grid = figure.add_gridspec(4, columns, height_ratios=(3.0, 0.8, 1.4, 1.4))
    colors = entity_colors(tags)
    if shown < len(result["words"]):
        figure.suptitle(f"the first {shown} of {len(result['words'])} words are shown", fontsize=11)
    if image is None:
        draw_message(figure.add_subplot(grid[0, :]), "no image: the tweet is tagged from its text alone")
    else:
        display = image.convert("RGB")
        display.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
        for column, index in enumerate(panels):
            axes = figure.add_subplot(grid[0, column])
            caption = draw_attention(axes, display, result["visual_attentions"][index])
            axes.set_title(f"{words[index]}\n{tags[index]}", color=colors[index], fontsize=10)
            axes.text(0.5, -0.02, caption, transform=axes.transAxes, ha="center", va="top", fontsize=8)
    draw_tagged_text(figure.add_subplot(grid[1, :]), words, tags)
    draw_gate_bars(figure.add_subplot(grid[2, :]), words, tags, colors, fusion_gates, "fusion gate (visual share)")
    draw_gate_bars(figure.add_subplot(grid[3, :]), words, tags, colors, filtration_gates, "filtration gate")
    return figure


def top_regions(attention: np.ndarray, share: float = HALF_ATTENTION) -> list[int]:
    """Row-major indices of the fewest regions of a `(rows, columns)` attention map that hold `share` of it."""
    flat = attention.ravel() / max(float(attention.sum()), 1e-12)  # (regions,)
    order = np.argsort(-flat, kind="stable")  # (regions,)
    count = int(np.searchsorted(np.cumsum(flat[order]), share - 1e-9)) + 1
    return sorted(int(index) for index in order[:count])


def attention_layer(attention: np.ndarray) -> np.ndarray:
    """`(rows, columns, 4)` RGBA: one hue, each region as opaque as its attention relative to the largest."""
    layer = np.zeros((*attention.shape, 4))  # (rows, columns, rgba)
    layer[..., :3] = ATTENTION_RGB
    layer[..., 3] = MAX_ATTENTION_ALPHA * attention / max(float(attention.max()), 1e-12)
    return layer


def attention_title(attention: np.ndarray, regions: list[int]) -> str:
    held = float(attention.ravel()[regions].sum() / max(float(attention.sum()), 1e-12))
    if len(regions) > MAX_FOCUSED_REGIONS:
        return f"attention spread: half on {len(regions)} of {attention.size} regions"
    return f"{held:.0%} on {len(regions)} outlined region{'s' if len(regions) > 1 else ''}"


def draw_attention(axes: Axes, image: Image.Image, attention: np.ndarray) -> str:
    """The photo in its own colours, the attention's tint over its regions, and the regions holding half of it
    outlined (none when half takes more than `MAX_FOCUSED_REGIONS`). Returns the panel's caption."""
    width, height = image.size
    rows, columns = attention.shape
    axes.imshow(image, extent=(0, width, height, 0))
    axes.imshow(attention_layer(attention), extent=(0, width, height, 0), interpolation="nearest")
    regions = top_regions(attention)
    if len(regions) <= MAX_FOCUSED_REGIONS:
        cell_width, cell_height = width / columns, height / rows
        for region in regions:
            row, column = divmod(region, columns)
            axes.add_patch(
                Rectangle(
                    (column * cell_width, row * cell_height),
                    cell_width,
                    cell_height,
                    fill=False,
                    edgecolor=OUTLINE_COLOR,
                    linewidth=1.5,
                )
            )
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_axis_off()
    return attention_title(attention, regions)


def entity_colors(tags: list[str]) -> list:
    """One colour per word: its entity type's colour, grey outside entities."""
    types = sorted({tag.partition("-")[2] for tag in tags if tag != "O"})
    palette = colormaps["tab10"]
    return [OUTSIDE_COLOR if tag == "O" else palette(types.index(tag.partition("-")[2]) % palette.N) for tag in tags]


def tagged_text(words: list[str], tags: list[str]) -> str:
    """The tweet with each entity bracketed and typed: `[Obama]PER visits [Paris]LOC`."""
    pieces = list(words)
    for entity_type, first, last in entity_spans(tags):
        pieces[first] = "[" + pieces[first]
        pieces[last] = pieces[last] + "]" + entity_type
    return " ".join(pieces)


def draw_tagged_text(axes: Axes, words: list[str], tags: list[str]) -> None:
    axes.text(0.0, 0.5, textwrap.fill(tagged_text(words, tags), TEXT_WRAP), va="center", fontsize=11, wrap=True)
    axes.set_axis_off()


def draw_gate_bars(
    axes: Axes, words: list[str], tags: list[str], colors: list, gates: np.ndarray | None, title: str
) -> None:
    if gates is None:
        draw_message(axes, f"{title}: not in this model (fusion='concat')")
        return
    positions = np.arange(len(words))
    axes.bar(positions, gates, color=colors)
    axes.set_ylim(0.0, 1.0)
    axes.set_ylabel(title, fontsize=9)
    axes.set_xticks(positions, [f"{word}\n{tag}" for word, tag in zip(words, tags, strict=True)], fontsize=8)


def draw_message(axes: Axes, message: str) -> None:
    axes.text(0.5, 0.5, message, ha="center", va="center", fontsize=11)
    axes.set_axis_off()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description="Draw ACN's visual attention and gates for one tweet and image.")
    parser.add_argument(
        "--model", required=True, type=folder_or_hub_id, help="Folder or Hub id with the model and its processor."
    )
    parser.add_argument(
        "--trust_remote_code",
        action="store_true",
        help="Load the model and processor with the classes of the folder's own code, which then runs (by default the "
        "installed acn-mner classes load it and none of its code runs).",
    )
    parser.add_argument("--text", required=True, help="The tweet.")
    parser.add_argument(
        "--image", help="The tweet's image, a file or an http(s) URL; without it only the tagged text and gates show."
    )
    parser.add_argument("--output", required=True, type=Path, help="PNG file to write.")
    parser.add_argument("--device", help="Torch device, e.g. cpu or cuda:0 (default: the first GPU if any).")
    parser.add_argument(
        "--allow_private_urls",
        action="store_true",
        help="Fetch an --image URL on a loopback, private or link-local address too (your own network); by default "
        "only public addresses are fetched.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse_args(argv)
    refuse_overwriting_inputs(args.output, {"--image file": args.image, "model folder": args.model}.items())
    pipe = AcnPipeline.from_pretrained(
        args.model, device=parse_device(args.device), trust_remote_code=args.trust_remote_code
    )
    result = explain_tweet(pipe, args.text, args.image, args.output, allow_private_urls=args.allow_private_urls)
    logger.info("%s -> %s", tagged_text(result["words"], result["tags"]), args.output)


cli = one_line_errors(main)  # the console command

if __name__ == "__main__":
    cli()
