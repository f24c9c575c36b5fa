"""Stage evaluate: FID, KID, face rate and a memorisation check of the generator against the data.

python -m pipeline.evaluate [--params params.yaml] [--generator models/generator.pt]
                            [--manifest data/manifest.csv] [--output metrics]

FID and KID compare generated faces with the val split through torch-fidelity's Inception (the
standard FID features). Its weights come from evaluate.inception_weights, $ANIME_FACE_INCEPTION_WEIGHTS
or the torch hub cache, else are downloaded once; with none of those, both are reported as
unavailable (null), never estimated some other way. The train stage scores its generator with the
same Evaluator while it trains (pipeline/evaluation/).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.cli import run_stage, stage_parser
from pipeline.core.devices import resolve_device
from pipeline.core.files import save_png, write_json
from pipeline.core.params import CropParams, EvaluateParams, read_section
from pipeline.data.faces import load_faces
from pipeline.evaluation.memorisation import memorisation, neighbour_sheet
from pipeline.evaluation.scoring import Evaluator, Scores
from pipeline.models.networks import load_generator

log = logging.getLogger("pipeline.evaluate")


def evaluate(params: EvaluateParams, crop: CropParams, generator_path: Path, manifest: Path,
             output: Path) -> Scores:
    """Write eval.json and nearest_neighbours.png for one generator; return the metrics."""
    device = resolve_device(params.device, "evaluate.device")
    generator, payload = load_generator(generator_path, device)
    size = generator.config.image_size
    val = load_faces(manifest, "val", size)
    train = load_faces(manifest, "train", size)
    evaluator = Evaluator.prepare(val, params, crop, device)
    samples = evaluator.sample(generator)
    scores = evaluator.score_images(samples)
    distances, neighbours = memorisation(samples, val[:params.samples], train, device)
    scores |= distances
    scores |= {"samples": len(samples), "val_faces": len(val), "train_faces": len(train),
               "generator_epoch": payload["epoch"]}
    shown = min(params.nearest, len(samples))
    save_png(neighbour_sheet(samples[:shown], train, neighbours[:shown]), output / "nearest_neighbours.png")
    write_json(output / "eval.json", scores)
    log.info("FID %s, KID %s, face rate %.3f (real %.3f), NN distance %.3f (val %.3f)",
             scores["fid"], scores["kid_mean"], scores["face_rate"], scores["face_rate_real"],
             scores["nn_distance_samples"], scores["nn_distance_val"])
    return scores


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--generator", type=Path, default=Path("models/generator.pt"),
                        help="generator to evaluate (default: %(default)s)")
    parser.add_argument("--manifest", type=Path, default=Path("data/manifest.csv"),
                        help="face manifest: val faces to compare with, train faces to search "
                             "(default: %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("metrics"),
                        help="folder for eval.json and nearest_neighbours.png (default: %(default)s)")
    args = parser.parse_args(argv)
    params = read_section("evaluate", args.params)
    crop = read_section("crop", args.params)
    evaluate(params, crop, args.generator, args.manifest, args.output)


if __name__ == "__main__":
    run_stage(main)
