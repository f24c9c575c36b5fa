from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from pipeline.core.params import SECTIONS, ParamError, TrainParams, parse_section, read_section


def test_defaults_file_is_valid():
    for section in ("scrape", "crop", "manifest", "train", "evaluate", "render"):
        read_section(section, "params.yaml")


@pytest.mark.parametrize(
    ("section", "values", "named"),
    [
        ("scrape", {"source": "myspace"}, "scrape.source"),
        ("scrape", {"rate": -1}, "scrape.rate"),
        ("scrape", {"rate": 0}, "scrape.rate"),
        ("scrape", {"base_url": "ftp://x"}, "scrape.base_url"),
        ("train", {"image_size": 50}, "train.image_size"),
        ("train", {"epochs": 0}, "train.epochs"),
        ("train", {"label_smoothing": 0.3}, "train.label_smoothing"),
        ("train", {"device": "tpu"}, "train.device"),
        ("train", {"flip": "yes"}, "train.flip"),
        ("train", {"epochs": "ten"}, "train.epochs"),
        ("train", {"learning_rate": 0.1}, "train.learning_rate"),
        ("crop", {"scale_factor": 1.0}, "crop.scale_factor"),
        ("manifest", {"val_fraction": 1.5}, "manifest.val_fraction"),
    ],
)
def test_bad_param_names_itself(section, values, named):
    with pytest.raises(ParamError) as error:
        parse_section(section, values)
    message = str(error.value)
    assert message.startswith(named)
    assert "\n" not in message


def test_ints_are_accepted_for_floats():
    assert parse_section("scrape", {"rate": 2}).rate == 2.0


def test_missing_keys_take_defaults():
    assert parse_section("train", {"epochs": 3}) == TrainParams(epochs=3)


def test_missing_params_file(tmp_path):
    with pytest.raises(ParamError, match="params file not found"):
        read_section("train", tmp_path / "nope.yaml")


def test_params_yaml_holds_exactly_the_code_defaults():
    """params.yaml is the defaults, written out for DVC: every field, each at its dataclass value."""
    raw = yaml.safe_load(Path("params.yaml").read_text())
    assert set(raw) == set(SECTIONS)
    for name, cls in SECTIONS.items():
        assert set(raw[name]) == {f.name for f in fields(cls)}, name
        assert parse_section(name, raw[name]) == cls(), name


def test_nulls_and_numbers_follow_the_annotation():
    assert parse_section("scrape", {"rate": None}).rate is None
    assert parse_section("scrape", {"rate": 2}).rate == 2.0  # YAML's int where a float is meant
    with pytest.raises(ParamError, match="scrape.rate: must be a float"):
        parse_section("scrape", {"rate": "fast"})
    with pytest.raises(ParamError, match="train.epochs: must not be null"):
        parse_section("train", {"epochs": None})
