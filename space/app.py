"""The acn-mner Space: tag a tweet and its photo with ACN in the browser, and see where the model looked.

    python space/app.py [--model FOLDER_OR_HUB_ID] [--trust_remote_code] [--host 127.0.0.1] [--port 7860]

`make app` runs it on the model `make demo` trains (`MODEL=folder_or_hub_id make app` for another). The page
takes a tweet and a photo (uploaded, or an http(s) URL) and shows the tweet with its entities highlighted by type, a
table of the entities with their scores, one row per word with its tag, score and two gates, and the picture of
`acn-explain` (the photo under each entity word's visual attention, and the gates as bars). Its examples are the
first tweets of the demo corpus's test split, drawn again by `acn_mner/demo_corpus.py`.

On a Hugging Face Space the model comes from the Space variable `ACN_MODEL` (and `ACN_TRUST_REMOTE_CODE=1` to
run the model folder's own code rather than this package's classes).
"""

import argparse
import io
import logging
import os
import signal
import sys
from pathlib import Path

import gradio as gr
import numpy as np
from matplotlib.colors import to_hex
from PIL import Image, UnidentifiedImageError

from acn_mner import demo_corpus
from acn_mner.explain import draw_explanation, entity_colors
from acn_mner.predict import RowError, open_image, parse_device
from modeling_acn import AcnPipeline
from modeling_acn.image_processing_acn import is_image_url

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "outputs/demo/acn"  # the ACN folder `make demo` writes (examples/run_demo.py, --output_dir outputs/demo)
MODEL_VARIABLE = "ACN_MODEL"
TRUST_REMOTE_CODE_VARIABLE = "ACN_TRUST_REMOTE_CODE"
DEMO_SEED = 0  # the seed `make demo` builds its corpus with
DEMO_TEST_SPLIT = 2  # the test split's stream number in demo_corpus.write_demo_corpus
NUM_EXAMPLES = 8
ENTITY_HEADERS = ["entity", "type", "score"]
WORD_HEADERS = ["word", "tag", "score", "fusion gate", "filtration gate"]
SCORE_DIGITS = 3
UPLOAD_CACHE = (3600, 3600)  # gradio's delete_cache: every hour, uploads older than an hour go; all at shutdown


def load_pipeline(model: str, trust_remote_code: bool = False, device=None) -> AcnPipeline:
    """The pipeline of a model folder or Hub id; the app needs a model that reads images (for its attention)."""
    if model == DEFAULT_MODEL and not Path(model).is_dir():
        raise SystemExit(
            f"no model at {model!r}: run `make demo` first, or give a folder or Hub id with --model "
            f"(MODEL=... make app, or the {MODEL_VARIABLE} variable)"
        )
    pipe = AcnPipeline.from_pretrained(model, device=device, trust_remote_code=trust_remote_code)
    if not pipe.model.config.use_image:
        raise SystemExit(f"the app shows visual attention and needs a model with images; {model!r} has use_image=False")
    return pipe


def demo_examples(count: int = NUM_EXAMPLES, seed: int = DEMO_SEED) -> list[list]:
    """`[tweet, image]` of the first `count` tweets of the demo corpus's test split.

    The corpus draws a split's tweets first and then its images in order from one generator, so drawing the first
    `count` images again gives the corpus's own JPEG files, decoded here.
    """
    rng = np.random.default_rng([seed, DEMO_TEST_SPLIT])
    tweets = demo_corpus.generate_split(rng, "test", demo_corpus.SPLIT_SIZES["test"])[:count]
    return [[" ".join(tweet.tokens), demo_jpeg(rng, tweet.figure_type)] for tweet in tweets]


def demo_jpeg(rng: np.random.Generator, figure_type: str) -> Image.Image:
    """The next demo corpus image, through the corpus's JPEG encoding."""
    return Image.open(io.BytesIO(demo_corpus.jpeg_bytes(demo_corpus.draw_image(rng, figure_type))))


def photo_from_url(pipe: AcnPipeline, url: str) -> Image.Image:
    """The photo at an http(s) URL, upright and in RGB, downloaded within the pipeline's image processor's timeout
    and byte limit; a `gr.Error` naming the URL and the reason when it cannot be. Nothing else is read: a path
    typed here would be a file of the server."""
    if not is_image_url(url):
        raise gr.Error(f"The photo's URL must start with http:// or https://, got {url!r}.")
    try:
        return open_image(url, pipe.processor.image_processor)
    except RowError as error:
        raise gr.Error(str(error)) from None


def tag_tweet(pipe: AcnPipeline, text: str, image: Image.Image | None, image_url: str | None = None) -> tuple:
    """The page's outputs for one tweet and photo (uploaded, or at `image_url`): the highlighted tweet and its type
    colours, the entity rows, the word rows and the explanation picture."""
    if not text or not text.strip():
        raise gr.Error("Type a tweet first.")
    if image_url and image_url.strip():
        if image is not None:
            raise gr.Error("Give the photo either as a file or as a URL, not both.")
        image = photo_from_url(pipe, image_url.strip())
    try:
        result = pipe(text, image=image, output_attentions=True)
    except ValueError as error:
        raise gr.Error(str(error)) from None
    return (
        highlighted_tweet(text, result["entities"]),
        type_colors(result["tags"]),
        entity_rows(result["entities"]),
        word_rows(result),
        explanation_picture(result, image),
    )


def highlighted_tweet(text: str, entities: list[dict]) -> dict:
    """HighlightedText's value: the tweet with each entity's character span labelled by its type."""
    spans = [{"entity": entity["entity_group"], "start": entity["start"], "end": entity["end"]} for entity in entities]
    return {"text": text, "entities": spans}


def type_colors(tags: list[str]) -> dict[str, str]:
    """Each entity type's colour in the explanation picture, as a hex string."""
    return {tag.partition("-")[2]: to_hex(color) for tag, color in zip(tags, entity_colors(tags)) if tag != "O"}


def entity_rows(entities: list[dict]) -> list[list]:
    return [[entity["word"], entity["entity_group"], round(entity["score"], SCORE_DIGITS)] for entity in entities]


def word_rows(result: dict) -> list[list]:
    """One row per word: tag, tag score, fusion gate (visual share; None for fusion='concat') and filtration gate."""
    fusion = result["fusion_gates"]
    return [
        [word, tag, round(score, SCORE_DIGITS), None if fusion is None else round(float(fusion[index]), SCORE_DIGITS),
         round(float(result["filtration_gates"][index]), SCORE_DIGITS)]
        for index, (word, tag, score) in enumerate(zip(result["words"], result["tags"], result["scores"]))
    ]  # fmt: skip


def explanation_picture(result: dict, image: Image.Image | None) -> Image.Image:
    """acn-explain's picture of the result, rendered to an image."""
    buffer = io.BytesIO()
    draw_explanation(result, image).savefig(buffer, dpi=100, format="png")
    buffer.seek(0)
    return Image.open(buffer)


def refuse_non_pictures(preprocess):
    """A photo input's `preprocess` whose refusal of an upload that is no picture says so: gradio's own raises PIL's
    `UnidentifiedImageError`, which the page shows as an empty "Error". (Wrapped on the instance: a subclass of a
    gradio component makes gradio write a `.pyi` stub beside this file.)"""

    def checked(payload):
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as error:
            name = getattr(payload, "orig_name", None) or "the upload"
            reason = "not an image format this app can read" if isinstance(error, UnidentifiedImageError) else str(error)
            raise gr.Error(f"{name}: {reason}. Upload a photo (JPEG, PNG, GIF, WebP, ...).") from None

    return checked


def photo_input() -> gr.Image:
    photo = gr.Image(label="Photo", type="pil", image_mode="RGB", sources=["upload"], format="png", elem_id="photo")
    photo.preprocess = refuse_non_pictures(photo.preprocess)
    return photo


def build_app(pipe: AcnPipeline, examples: list[list[str]], model_name: str) -> gr.Blocks:
    # uploads are deleted an hour after they arrive, and all of them when the app stops
    with gr.Blocks(title="ACN multimodal NER", analytics_enabled=False, delete_cache=UPLOAD_CACHE) as app:
        gr.Markdown(
            "# ACN: named entities in a tweet, read with its photo\n"
            f"Model: `{model_name}`. Type a tweet, add its photo or the photo's URL (or none: the text alone is "
            "tagged), press Tag."
        )
        with gr.Row():
            with gr.Column():
                tweet = gr.Textbox(label="Tweet", lines=2, elem_id="tweet")
                photo = photo_input()
                photo_url = gr.Textbox(
                    label="Or the photo's URL (http:// or https://)", max_lines=1, elem_id="photo_url"
                )
                button = gr.Button("Tag", variant="primary", elem_id="tag")
            with gr.Column():
                highlighted = gr.HighlightedText(label="Entities", show_legend=True, elem_id="highlighted")
                entities = gr.Dataframe(
                    headers=ENTITY_HEADERS, label="Entities and scores", interactive=False, elem_id="entities"
                )
        words = gr.Dataframe(
            headers=WORD_HEADERS, label="Words: tag, score and the two gates", interactive=False, elem_id="words"
        )
        picture = gr.Image(
            label="Visual attention of each entity word, and the gates", type="pil", format="png", interactive=False,
            elem_id="explanation",
        )  # fmt: skip
        gr.Examples(examples=examples, inputs=[tweet, photo], label="Tweets from the demo corpus's test split")

        def show(text, image, image_url):
            value, colors, *tables_and_picture = tag_tweet(pipe, text, image, image_url)
            return gr.HighlightedText(value=value, color_map=colors), *tables_and_picture

        button.click(show, [tweet, photo, photo_url], [highlighted, entities, words, picture])
    return app


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the ACN demo page: a tweet and a photo in, entities and attention out.")
    parser.add_argument(
        "--model", default=os.environ.get(MODEL_VARIABLE) or DEFAULT_MODEL,
        help=f"Folder or Hub id of the model (default: ${MODEL_VARIABLE}, else {DEFAULT_MODEL}, written by `make demo`).",
    )  # fmt: skip
    parser.add_argument(
        "--trust_remote_code", action="store_true", default=os.environ.get(TRUST_REMOTE_CODE_VARIABLE) == "1",
        help=f"Run the model folder's own code instead of the installed classes (default: ${TRUST_REMOTE_CODE_VARIABLE}=1).",
    )  # fmt: skip
    parser.add_argument(
        "--host", help="Address to serve on (default: $GRADIO_SERVER_NAME, which a Space sets, else 127.0.0.1)."
    )
    parser.add_argument("--port", type=int, help="Port to serve on (default: $GRADIO_SERVER_PORT, else the first free one from 7860).")
    parser.add_argument("--device", help="Torch device, e.g. cpu or cuda:0 (default: the first GPU if any).")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse_args(argv)
    pipe = load_pipeline(args.model, args.trust_remote_code, parse_device(args.device))
    app = build_app(pipe, demo_examples(), args.model)
    signal.signal(signal.SIGTERM, stop_serving)
    try:
        app.launch(server_name=args.host, server_port=args.port, footer_links=[])
    except KeyboardInterrupt:  # a stop while launch was still starting (e.g. checking its own URL) skips its close
        app.close()


def stop_serving(signum, frame):
    """SIGTERM (a Space or a service manager stopping the app) as Ctrl-C: gradio then closes its server, whose
    shutdown deletes the uploads, instead of the process ending on the spot."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
