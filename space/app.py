"""The acn-mner Space: tag a tweet and its photo with ACN in the browser, and see where the model looked.

    python space/app.py [--model FOLDER_OR_HUB_ID] [--trust_remote_code] [--host 127.0.0.1] [--port 7860]

`make app` runs it on the model `make demo` trains (`MODEL=folder_or_hub_id make app` for another). The page
takes a tweet and a photo (uploaded, or an http(s) URL) and shows the tweet with its entities highlighted by type, a
table of the entities with their scores, one row per word with its tag, score and two gates, and the picture of
`acn-explain` (the photo under each entity word's visual attention, and the gates as bars). Its examples are the
first tweets of the demo corpus's test split, drawn again by `acn_mner/demo_corpus.py`.

On a Hugging Face Space the model comes from the Space variable `ACN_MODEL` (and `ACN_TRUST_REMOTE_CODE=1` to
run the model folder's own code rather than this package's classes).

What a visitor sends goes through the project's doors: an uploaded photo is read by acn-predict's image reader (the
same pixels, limits and refusals; gradio's own decoder never sees it) and may have at most `MAX_UPLOAD_BYTES`, a
photo URL is downloaded within the image processor's deadline, and a tweet has at most `MAX_TWEET_CHARACTERS`.
`CONCURRENT_REQUESTS` visitors are served at once: a slow download does not hold up the others, while the model and
the picture take one request at a time.
"""

import argparse
import io
import logging
import os
import signal
import sys
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import gradio as gr
import numpy as np
from gradio.data_classes import ImageData
from matplotlib.colors import to_hex
from PIL import Image

from acn_mner import demo_corpus
from acn_mner.explain import draw_explanation, entity_colors
from acn_mner.predict import RowError, open_image, parse_device
from modeling_acn import AcnPipeline
from modeling_acn.image_processing_acn import MAX_DOWNLOAD_BYTES, is_image_url

logger = logging.getLogger(__name__)

DEFAULT_MODEL = (
    "outputs/demo/acn"  # the ACN folder `make demo` writes (examples/run_demo.py, --output_dir outputs/demo)
)
MODEL_VARIABLE = "ACN_MODEL"
TRUST_REMOTE_CODE_VARIABLE = "ACN_TRUST_REMOTE_CODE"
DEMO_SEED = 0  # the seed `make demo` builds its corpus with
DEMO_TEST_SPLIT = 2  # the test split's stream number in demo_corpus.write_demo_corpus
NUM_EXAMPLES = 8
ENTITY_HEADERS = ["entity", "type", "score"]
WORD_HEADERS = ["word", "tag", "score", "fusion gate", "filtration gate"]
SCORE_DIGITS = 3
UPLOAD_CACHE = (3600, 3600)  # gradio's delete_cache: every hour, uploads older than an hour go; all at shutdown
MAX_UPLOAD_BYTES = MAX_DOWNLOAD_BYTES  # an uploaded photo may be as large as one at a URL (20 MiB)
MAX_TWEET_CHARACTERS = 1000  # a tweet has at most 280; room for a pasted thread, and a bound on a request's time
CONCURRENT_REQUESTS = 4  # requests served at once; their downloads overlap, their model runs and pictures take turns


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


def tag_tweet(
    pipe: AcnPipeline,
    text: str,
    image: Image.Image | None,
    image_url: str | None = None,
    model_lock: AbstractContextManager | None = None,
) -> tuple:
    """The page's outputs for one tweet and photo (uploaded, or at `image_url`): the highlighted tweet and its type
    colours, the entity rows, the word rows and the explanation picture. `model_lock`, shared by the app's requests,
    is held while the model runs and the picture is drawn: matplotlib is not thread-safe, and the pipeline does not
    say that it is."""
    if not text or not text.strip():
        raise gr.Error("Type a tweet first.")
    if len(text) > MAX_TWEET_CHARACTERS:
        raise gr.Error(f"The tweet has {len(text)} characters; this page tags tweets of up to {MAX_TWEET_CHARACTERS}.")
    if image_url and image_url.strip():
        if image is not None:
            raise gr.Error("Give the photo either as a file or as a URL, not both.")
        image = photo_from_url(pipe, image_url.strip())
    with model_lock or nullcontext():
        try:
            result = pipe(text, image=image, output_attentions=True)
        except ValueError as error:
            raise gr.Error(str(error)) from None
        picture = explanation_picture(result, image)
    return (
        highlighted_tweet(text, result["entities"]),
        type_colors(result["tags"]),
        entity_rows(result["entities"]),
        word_rows(result),
        picture,
    )


def highlighted_tweet(text: str, entities: list[dict]) -> dict:
    """HighlightedText's value: the tweet with each entity's character span labelled by its type."""
    spans = [{"entity": entity["entity_group"], "start": entity["start"], "end": entity["end"]} for entity in entities]
    return {"text": text, "entities": spans}


def type_colors(tags: list[str]) -> dict[str, str]:
    """Each entity type's colour in the explanation picture, as a hex string."""
    return {
        tag.partition("-")[2]: to_hex(color) for tag, color in zip(tags, entity_colors(tags), strict=True) if tag != "O"
    }


def entity_rows(entities: list[dict]) -> list[list]:
    return [[entity["word"], entity["entity_group"], round(entity["score"], SCORE_DIGITS)] for entity in entities]


def word_rows(result: dict) -> list[list]:
    """One row per word: tag, tag score, fusion gate (visual share; None for fusion='concat') and filtration gate."""
    fusion = result["fusion_gates"]
    return [
        [
            word,
            tag,
            round(score, SCORE_DIGITS),
            None if fusion is None else round(float(fusion[index]), SCORE_DIGITS),
            round(float(result["filtration_gates"][index]), SCORE_DIGITS),
        ]
        for index, (word, tag, score) in enumerate(zip(result["words"], result["tags"], result["scores"], strict=True))
    ]


def explanation_picture(result: dict, image: Image.Image | None) -> Image.Image:
    """acn-explain's picture of the result, rendered to an image."""
    buffer = io.BytesIO()
    draw_explanation(result, image).savefig(buffer, dpi=100, format="png")
    buffer.seek(0)
    return Image.open(buffer)


def read_upload(upload: ImageData | None) -> Image.Image | None:
    """An uploaded photo read as acn-predict reads a file (`open_image`: the project's image reader, with its byte
    and pixel limits checked before decoding, its modes, upright and in RGB); a `gr.Error` naming the upload and the
    reason when it cannot be read."""
    if upload is None:
        return None
    try:
        return open_image(Path(upload.path))
    except RowError as error:
        raise gr.Error(str(error).replace(upload.path, upload.orig_name or "the upload")) from None


def photo_input() -> gr.Image:
    """The photo's upload box. Its `preprocess` is `read_upload`, so gradio's own decoder never reads an upload (set
    on the instance: a subclass of a gradio component makes gradio write a `.pyi` stub beside this file)."""
    photo = gr.Image(label="Photo", type="pil", image_mode=None, sources=["upload"], format="png", elem_id="photo")
    photo.preprocess = read_upload
    return photo


def build_app(pipe: AcnPipeline, examples: list[list[str]], model_name: str) -> gr.Blocks:
    model_lock = threading.Lock()
    # uploads are deleted an hour after they arrive, and all of them when the app stops (not right after use: pressing
    # Tag again sends the same upload)
    with gr.Blocks(title="ACN multimodal NER", analytics_enabled=False, delete_cache=UPLOAD_CACHE) as app:
        gr.Markdown(
            "# ACN: named entities in a tweet, read with its photo\n"
            f"Model: `{model_name}`. Type a tweet, add its photo or the photo's URL (or none: the text alone is "
            "tagged), press Tag."
        )
        with gr.Row():
            with gr.Column():
                tweet = gr.Textbox(label="Tweet", lines=2, max_length=MAX_TWEET_CHARACTERS, elem_id="tweet")
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
            label="Visual attention of each entity word, and the gates",
            type="pil",
            format="png",
            interactive=False,
            elem_id="explanation",
        )
        gr.Examples(examples=examples, inputs=[tweet, photo], label="Tweets from the demo corpus's test split")

        def show(text, image, image_url):
            value, colors, *tables_and_picture = tag_tweet(pipe, text, image, image_url, model_lock)
            return gr.HighlightedText(value=value, color_map=colors), *tables_and_picture

        outputs = [highlighted, entities, words, picture]
        button.click(show, [tweet, photo, photo_url], outputs, concurrency_limit=CONCURRENT_REQUESTS)
    return app


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Serve the ACN demo page: a tweet and a photo in, entities and attention out."
    )
    parser.add_argument(
        "--model",
        default=os.environ.get(MODEL_VARIABLE) or DEFAULT_MODEL,
        help=(
            f"Folder or Hub id of the model (default: ${MODEL_VARIABLE}, else {DEFAULT_MODEL}, written by `make demo`)."
        ),
    )
    parser.add_argument(
        "--trust_remote_code",
        action="store_true",
        default=os.environ.get(TRUST_REMOTE_CODE_VARIABLE) == "1",
        help=(
            "Run the model folder's own code instead of the installed classes "
            f"(default: ${TRUST_REMOTE_CODE_VARIABLE}=1)."
        ),
    )
    parser.add_argument(
        "--host", help="Address to serve on (default: $GRADIO_SERVER_NAME, which a Space sets, else 127.0.0.1)."
    )
    parser.add_argument(
        "--port", type=int, help="Port to serve on (default: $GRADIO_SERVER_PORT, else the first free one from 7860)."
    )
    parser.add_argument("--device", help="Torch device, e.g. cpu or cuda:0 (default: the first GPU if any).")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse_args(argv)
    pipe = load_pipeline(args.model, args.trust_remote_code, parse_device(args.device))
    app = build_app(pipe, demo_examples(), args.model)
    signal.signal(signal.SIGTERM, stop_serving)
    try:
        serve(app, args.host, args.port)
    except KeyboardInterrupt:  # a stop while launch was still starting (e.g. checking its own URL) skips its close
        app.close()


def serve(app: gr.Blocks, host: str | None = None, port: int | None = None, **options) -> None:
    """`app.launch` on `host` and `port` (None: gradio's defaults) with the app's upload limit: gradio refuses an
    upload of more than `MAX_UPLOAD_BYTES` while it arrives (HTTP 413), before it is stored. `options`: more of
    `launch`'s arguments."""
    app.launch(server_name=host, server_port=port, footer_links=[], max_file_size=MAX_UPLOAD_BYTES, **options)


def stop_serving(signum, frame):
    """SIGTERM (a Space or a service manager stopping the app) as Ctrl-C: gradio then closes its server, whose
    shutdown deletes the uploads, instead of the process ending on the spot."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
