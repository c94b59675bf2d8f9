"""acn-explain and `explain_tweet`: the attention picture, its panels per variant, the tagged text, and refusals."""

import numpy as np
import pytest
from PIL import Image

from acn_mner.explain import draw_explanation, explain_tweet, main, tagged_text
from tests.pipeline_fixtures import TWEET, striped_image, tiny_pipeline


def assert_drawn(path, min_colors=50):
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        pixels = np.asarray(picture.convert("RGB"))  # (height, width, 3)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) >= min_colors and pixels.std() > 10


def test_acn_explain_writes_a_picture(tmp_path):
    folder = tmp_path / "model"
    tiny_pipeline().save_pretrained(folder)
    striped_image().save(tmp_path / "photo.png")
    output = tmp_path / "out" / "explain.png"
    main(
        [
            "--model",
            str(folder),
            "--text",
            TWEET,
            "--image",
            str(tmp_path / "photo.png"),
            "--output",
            str(output),
            "--device",
            "cpu",
        ]
    )
    assert_drawn(output)


def test_explain_function_shows_entity_words_and_gates(tmp_path):
    pipe = tiny_pipeline()
    result = explain_tweet(pipe, "Obama visits Paris", striped_image(), tmp_path / "a.png")
    assert result["visual_attentions"].shape == (3, 7, 7)
    assert result["visual_attentions"].sum(axis=(1, 2)) == pytest.approx(np.ones(3), abs=1e-5)
    assert_drawn(tmp_path / "a.png")
    without_image = explain_tweet(pipe, "Obama visits Paris", None, tmp_path / "b.png")
    assert without_image["filtration_gates"].tolist() == [0.0, 0.0, 0.0]
    assert_drawn(tmp_path / "b.png", min_colors=5)


def test_concat_fusion_has_no_fusion_gate_panel(tmp_path):
    pipe = tiny_pipeline(fusion="concat")
    result = pipe("Obama visits Paris", image=striped_image(), output_attentions=True)
    assert result["fusion_gates"] is None
    draw_explanation(result, striped_image()).savefig(tmp_path / "c.png")
    assert_drawn(tmp_path / "c.png")


def test_tagged_text_brackets_entities():
    words = ["RT", "Barack", "Obama", "in", "Paris"]
    assert tagged_text(words, ["O", "B-PER", "I-PER", "O", "B-LOC"]) == "RT [Barack Obama]PER in [Paris]LOC"


def test_explain_refuses_a_text_only_model(tmp_path):
    with pytest.raises(
        ValueError, match="output_attentions=True needs a model with images; this one has use_image=False"
    ):
        explain_tweet(tiny_pipeline(use_image=False), "Obama", None, tmp_path / "x.png")


@pytest.mark.bad_input(
    "an acn-explain or Space app tweet of hundreds of words",
    "the picture draws the first `MAX_DRAWN_WORDS` words (text and gate bars) and says `the first 40 of 200 words`",
)
def test_a_tweet_of_many_words_draws_at_most_the_word_limit_and_says_so(tmp_path):
    from matplotlib.text import Text

    from acn_mner import explain

    limit = explain.MAX_DRAWN_WORDS
    result = tiny_pipeline()(" ".join(["Obama"] * 200), image=striped_image(), output_attentions=True)
    figure = draw_explanation(result, striped_image())
    gates = ("fusion gate (visual share)", "filtration gate")
    bars = [len(axes.patches) for axes in figure.axes if axes.get_ylabel() in gates]
    assert bars == [limit, limit]
    texts = " ".join(text.get_text() for text in figure.findobj(Text) if text.get_visible())
    assert f"the first {limit} of 200 words" in texts
    # the drawn words: in the tagged text, under the bars of both gates and over the attention panels
    assert texts.count("Obama") <= 3 * limit + explain.MAX_ATTENTION_PANELS
    figure.savefig(tmp_path / "many.png")
    assert_drawn(tmp_path / "many.png")


def rendered_panel(photo, attention):
    """`draw_attention` on axes that fill a figure the photo's size: pixel (x, y) of the canvas is the photo's."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from acn_mner.explain import draw_attention

    figure = Figure(figsize=(photo.width / 100, photo.height / 100), dpi=100)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    caption = draw_attention(axes, photo, attention)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(int), caption  # (height, width, rgb)


def test_attention_panel_keeps_the_photo_colours_outside_the_attended_region():
    """The photo's own colours wherever the attention is nil (a colour map used to tint the whole photo blue), a
    tint on the attended region, and that region outlined."""
    photo = Image.new("RGB", (224, 224), (30, 190, 40))  # the demo's LOC green
    attention = np.zeros((7, 7))
    attention[2, 3] = 1.0
    pixels, caption = rendered_panel(photo, attention)
    unattended = pixels[150:220, 5:90]  # rows 5-6, columns 0-2: no attention
    assert np.abs(unattended - np.array([30, 190, 40])).max() <= 2
    attended = pixels[2 * 32 + 8 : 3 * 32 - 8, 3 * 32 + 8 : 4 * 32 - 8]  # inside region (2, 3), off its outline
    assert np.abs(attended - np.array([30, 190, 40])).max(-1).min() > 60
    outline = pixels[2 * 32 + 8 : 3 * 32 - 8, 3 * 32 - 1 : 3 * 32 + 2]  # the region's left edge
    assert (outline > 200).all(-1).any()
    assert caption == "100% on 1 outlined region"


def test_top_regions_are_the_fewest_that_hold_half_the_attention():
    from itertools import combinations

    from acn_mner.explain import top_regions

    rng = np.random.default_rng(0)
    for _ in range(20):
        attention = rng.dirichlet(np.full(6, 0.3)).reshape(2, 3)
        fewest = next(
            size
            for size in range(1, 7)
            if any(attention.ravel()[list(chosen)].sum() >= 0.5 for chosen in combinations(range(6), size))
        )
        regions = top_regions(attention)
        assert len(regions) == fewest and attention.ravel()[regions].sum() >= 0.5


def test_a_spread_attention_map_is_not_drawn_as_a_focus():
    photo = Image.new("RGB", (224, 224), (120, 120, 120))
    pixels, caption = rendered_panel(photo, np.full((7, 7), 1 / 49))
    assert caption == "attention spread: half on 25 of 49 regions"
    assert (np.abs(pixels - pixels[112, 112]).max(-1) <= 2).mean() > 0.99  # one even tint, no outlines
