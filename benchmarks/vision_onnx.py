"""The VGG-16 image trunk four ways: eager float32, eager int8 (torch.ao), ONNX Runtime float32 (`vision.onnx`) and
ONNX Runtime static int8 (`vision_int8.onnx`, `acn-export --int8 --calibration_images`).

    OMP_NUM_THREADS=1 python benchmarks/vision_onnx.py [--images 32] [--batch_size 8] [--calibration_images 16]
        [--output outputs/benchmarks/vision_onnx.json]

The trunk has random weights (its speed does not depend on them); the pixels are those of noisy 640x480 JPEGs,
preprocessed as the pipeline does. Both int8 trunks are calibrated on the same `--calibration_images` pictures
(other than the timed ones). Reports images/s over `--images` pictures in batches of `--batch_size` (one thread:
`torch.set_num_threads(1)` and ONNX Runtime's intra-op threads set to 1; the best of three passes) and each trunk's
relative error against eager float32's region features, ||got - fp32|| / ||fp32||, with the CPU's flags.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from acn_mner.benchmarking import print_table, write_json
from acn_mner.cpu import cpu_capabilities
from acn_mner.onnx_export import export_onnx
from modeling_acn import (
    AcnConfig,
    AcnForTokenClassification,
    AcnImageProcessor,
    AcnPipeline,
    AcnProcessor,
    AcnTokenizer,
)
from modeling_acn.onnx_runtime_acn import VISION_ONNX_INT8_FILE, AcnOnnxModel, import_onnxruntime

LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-OTHER", "I-OTHER")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32, help="Pictures timed.")
    parser.add_argument("--batch_size", type=int, default=8, help="Pictures per trunk call.")
    parser.add_argument("--calibration_images", type=int, default=16, help="Pictures that calibrate both int8 trunks.")
    parser.add_argument("--output", default="outputs/benchmarks/vision_onnx.json", help="JSON file for every figure.")
    return parser.parse_args(argv)


def noisy_pixels(count: int, seed: int) -> torch.Tensor:
    """`count` noisy 640x480 pictures through a JPEG round trip, preprocessed: `(count, 3, 224, 224)`."""
    generator = np.random.default_rng(seed)
    pictures = []
    with tempfile.TemporaryDirectory() as folder:
        for number in range(count):
            path = Path(folder) / f"{number}.jpg"
            Image.fromarray(generator.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(path, quality=90)
            pictures.append(Image.open(path).convert("RGB"))
    return AcnImageProcessor()(images=pictures, return_tensors="pt")["pixel_values"]


def images_per_second(features, pixels: torch.Tensor, batch_size: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(3):
        started = time.perf_counter()
        out = torch.cat([torch.as_tensor(features(batch)) for batch in pixels.split(batch_size)])
        best = min(best, time.perf_counter() - started)
    return len(pixels) / best, out


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    onnxruntime = import_onnxruntime()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    torch.manual_seed(0)
    tokenizer = AcnTokenizer.from_corpus([["Obama", "visits", "Paris"]])
    sizes = {
        "vocab_size": len(tokenizer),
        "char_vocab_size": tokenizer.char_vocab_size,
        "id2label": dict(enumerate(LABELS)),
    }
    model = AcnForTokenClassification(AcnConfig(**sizes, vision_precision="fp32")).eval()
    calibration, timed = noisy_pixels(args.calibration_images, seed=1), noisy_pixels(args.images, seed=2)
    with tempfile.TemporaryDirectory() as folder:
        saved, exported = Path(folder) / "model", Path(folder) / "onnx"
        AcnPipeline(model=model, processor=AcnProcessor(AcnImageProcessor(), tokenizer), device="cpu").save_pretrained(
            saved
        )
        export_onnx(saved, exported, int8=True, calibration_pixels=calibration)
        onnx_fp32 = AcnOnnxModel.from_pretrained(exported, session_options=options)
        onnx_int8 = AcnOnnxModel.from_pretrained(
            exported, session_options=options, vision_onnx_file=VISION_ONNX_INT8_FILE
        )
        int8_model = AcnForTokenClassification(AcnConfig(**sizes, vision_precision="int8")).eval()
        int8_model.load_state_dict(model.state_dict(), strict=False)
        int8_model.calibrate_vision(calibration)
        trunks = {
            "eager float32": model.get_image_features,
            "eager int8 (torch.ao)": int8_model.get_image_features,
            "ONNX Runtime float32 (vision.onnx)": onnx_fp32.get_image_features,
            "ONNX Runtime static int8 (vision_int8.onnx)": onnx_int8.get_image_features,
        }
        results, reference = {}, None
        with torch.inference_mode():
            for name, features in trunks.items():
                speed, out = images_per_second(features, timed, args.batch_size)
                reference = out if reference is None else reference
                error = float((out.float() - reference).norm() / reference.norm())
                results[name] = {"images_per_second": speed, "relative_error": error}
    report = {
        "capabilities": cpu_capabilities(),
        "images": args.images,
        "batch_size": args.batch_size,
        "results": results,
    }
    write_json(args.output, report)
    base = results["eager float32"]["images_per_second"]
    print(f"CPU flags: {cpu_capabilities()}")
    rows = {
        name: {
            "images/s": f"{result['images_per_second']:.2f}",
            "vs eager float32": f"{result['images_per_second'] / base:.2f}x",
            "relative error of the features": f"{result['relative_error']:.4f}",
        }
        for name, result in results.items()
    }
    print_table(f"Image trunks, {args.images} pictures in batches of {args.batch_size}", rows, name_header="trunk")


if __name__ == "__main__":
    main()
