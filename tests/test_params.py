from dataclasses import fields
from pathlib import Path
from typing import get_args, get_type_hints

import pytest
import yaml

from pipeline.core.cli import run_stage
from pipeline.core.params import (
    MAX_SEED,
    SECTIONS,
    SERVE_SETTINGS,
    ParamError,
    RenderParams,
    TrainParams,
    parse_section,
    read_section,
)

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"  # the project's own, wherever pytest runs


def test_defaults_file_is_valid():
    for section in ("scrape", "crop", "manifest", "train", "evaluate", "render"):
        read_section(section, PARAMS)


@pytest.mark.parametrize(
    ("section", "values", "named"),
    [
        ("scrape", {"source": "myspace"}, "scrape.source"),
        ("scrape", {"rate": -1}, "scrape.rate"),
        ("scrape", {"rate": 0}, "scrape.rate"),
        ("scrape", {"base_url": "ftp://x"}, "scrape.base_url"),
        ("scrape", {"user_agent": "faces/1.0\r\nX-Injected: 1"}, "scrape.user_agent"),
        ("scrape", {"user_agent": "faces/1.0 \u00e9t\u00e9"}, "scrape.user_agent"),
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
    raw = yaml.safe_load(PARAMS.read_text())
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


# --- params are refused before any work ------------------------------------------------------------

SEEDS = [("scrape", "demo_seed"), ("train", "seed"), ("evaluate", "seed"), ("render", "seed")]


def typed_fields(kind):
    """(section, field) of every param read as `kind` (optional ones included)."""
    found = []
    for section, cls in SECTIONS.items():
        for name, hint in get_type_hints(cls).items():
            if hint is kind or kind in get_args(hint):
                found.append((section, name))
    return found


def one_line_error(section, values):
    with pytest.raises(ParamError) as error:
        parse_section(section, values)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_the_defaults_are_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    test_defaults_file_is_valid()
    test_params_yaml_holds_exactly_the_code_defaults()


def test_a_misspelt_section_is_refused_with_the_section_it_meant(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("trian:\n  epochs: 5\n")
    with pytest.raises(ParamError) as error:
        read_section("train", path)
    assert str(error.value) == "trian: unknown section; did you mean train?"


def test_an_unknown_section_without_a_close_name_lists_the_sections(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("hyperparameters:\n  epochs: 5\n")
    with pytest.raises(ParamError) as error:
        read_section("train", path)
    assert str(error.value) == f"hyperparameters: unknown section; known: {', '.join(SECTIONS)}"


def test_a_misspelt_key_suggests_the_key_it_meant():
    assert one_line_error("train", {"epochz": 5}) == "train.epochz: unknown param; did you mean epochs?"
    assert one_line_error("crop", {"Size": 64}) == "crop.Size: unknown param; did you mean size?"


def test_an_unknown_key_without_a_close_name_lists_the_keys():
    message = one_line_error("render", {"colour_scheme": "dark"})
    known = ", ".join(f.name for f in fields(RenderParams))
    assert message == f"render.colour_scheme: unknown param; known: {known}"


@pytest.mark.parametrize("text", ["- train\n- crop\n", "just words\n", "1: 2\ntrian: {}\n",
                                  "train:\n  7: 1\n  epochz: 2\n", "a: 1" + "0" * 5000 + "\n"])
def test_a_file_of_the_wrong_shape_is_one_line(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamError) as error:
        read_section("train", path)
    assert "\n" not in str(error.value)


def test_an_empty_section_takes_the_defaults_and_a_list_is_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\nrender: {}\n")
    assert read_section("train", path) == TrainParams()
    path.write_text("train: []\n")
    with pytest.raises(ParamError, match="^train: must be a mapping of settings$"):
        read_section("train", path)


def test_every_stage_refuses_a_bad_param_of_any_section_before_any_work(tmp_path, capsys):
    """A grid too large for the render stage stops the manifest stage already, not after training."""
    from pipeline.manifest import main

    params = tmp_path / "params.yaml"
    params.write_text("render:\n  grid: 1000\n")
    outputs = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        run_stage(main, ["--params", str(params), "--input", str(outputs / "faces"),
                         "--posts", str(outputs / "posts.jsonl"), "--output", str(outputs / "m.csv"),
                         "--stats", str(outputs / "s.json"), "--tags", str(outputs / "t.json")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: render.grid: must be in [1, 64] (grid x grid faces in one picture), got 1000"]
    assert not outputs.exists()


def test_a_tag_value_named_any_is_refused():
    """`any` is every group's value for an unlabelled face: a tag of that name could never be asked for."""
    message = one_line_error("train", {"conditions": {"hair": ["red_hair", "any"]}})
    assert message.startswith("train.conditions.hair: 'any' ")


def test_a_tag_with_spaces_is_refused():
    """A post's tags are split on whitespace: a tag holding a space never matches a face."""
    message = one_line_error("train", {"conditions": {"hair": ["red hair", "blue_hair"]}})
    assert message.startswith("train.conditions.hair: 'red hair' ")
    assert one_line_error("train", {"conditions": {"hair": ["", "blue_hair"]}}).startswith(
        "train.conditions.hair: '' ")


@pytest.mark.parametrize("group", ["n", "seed", "temperature"])
def test_a_tag_group_named_like_a_serve_setting_is_refused(group):
    message = one_line_error("train", {"conditions": {group: ["red_hair", "blue_hair"]}})
    assert message.startswith(f"train.conditions.{group}: ")
    assert "n, seed, temperature" in message


def test_the_serve_settings_are_the_serve_pages_own():
    from pipeline.serving.faces import SETTINGS

    assert tuple(SETTINGS) == SERVE_SETTINGS


@pytest.mark.parametrize(("section", "key"), SEEDS)
@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 2**64, 2**64 + 5])
def test_a_seed_out_of_range_is_refused(section, key, seed):
    message = one_line_error(section, {key: seed})
    assert message == f"{section}.{key}: must be a whole number from 0 to {MAX_SEED}, got {seed}"


@pytest.mark.parametrize(("section", "key"), SEEDS)
def test_the_whole_seed_range_is_accepted(section, key):
    assert getattr(parse_section(section, {key: 0}), key) == 0
    assert getattr(parse_section(section, {key: MAX_SEED}), key) == MAX_SEED
    torch_largest_seed = 2**64 - 1  # stages add small offsets to a seed: MAX_SEED leaves room for them
    assert MAX_SEED + 10**9 <= torch_largest_seed


def test_every_seed_is_named():
    assert sorted(name for name in typed_fields(int) if "seed" in name[1]) == sorted(SEEDS)


@pytest.mark.parametrize(("section", "key"), typed_fields(float))
@pytest.mark.parametrize("text", [".inf", "-.inf", ".nan", "1" + "0" * 400])
def test_every_float_must_be_finite(tmp_path, section, key, text):
    path = tmp_path / "params.yaml"
    path.write_text(f"{section}:\n  {key}: {text}\n")
    with pytest.raises(ParamError) as error:
        read_section(section, path)
    message = str(error.value)
    assert message.startswith(f"{section}.{key}: must be a finite number, got ")
    assert "\n" not in message and len(message) < 120


@pytest.mark.parametrize(("section", "key"), typed_fields(int))
def test_every_whole_number_has_a_maximum(section, key):
    message = one_line_error(section, {key: 2**64})
    assert message.startswith(f"{section}.{key}: ")
    assert len(message) < 160


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("crop", {"size": 4096}, "crop.size: must be in [16, 1024] (the side of each saved face, in "
                                 "pixels), got 4096"),
        ("crop", {"workers": 100_000}, "crop.workers: must be in [0, 256] (0: all cores), got 100000"),
        ("render", {"grid": 65}, "render.grid: must be in [1, 64] (grid x grid faces in one picture), "
                                 "got 65"),
        ("scrape", {"timeout": 1e9}, "scrape.timeout: must be in (0, 3600] seconds, got 1000000000.0"),
        ("scrape", {"deadline": 1e9}, "scrape.deadline: must be in [scrape.timeout (30.0), 86400] "
                                      "seconds, got 1000000000.0"),
        ("scrape", {"retries": 2000}, "scrape.retries: must be in [0, 20], got 2000"),
        ("scrape", {"rate": 1e-9}, "scrape.rate: must be null (the source's own) or in [0.001, 1000] "
                                   "requests per second, got 1e-09"),
        ("train", {"lr": 5.0}, "train.lr: must be in (0, 1], got 5.0"),
        ("train", {"batch_size": 10**6}, "train.batch_size: must be in [1, 4096], got 1000000"),
        ("train", {"mode_seeking": -1}, "train.mode_seeking: must be in [0, 100] (0: off), got -1.0"),
        ("crop", {"scale_factor": 1.001}, "crop.scale_factor: must be in [1.01, 2] (each smaller step "
                                          "scans many more scales), got 1.001"),
    ],
)
def test_sizes_have_sane_maxima_named_in_the_message(section, values, message):
    assert one_line_error(section, values) == message


@pytest.mark.parametrize("section", list(SECTIONS))
def test_the_largest_allowed_values_are_accepted(section):
    """Each maximum is itself allowed: the bounds refuse only what lies beyond them."""
    largest = {("crop", "size"): 1024, ("crop", "workers"): 256, ("render", "grid"): 64,
               ("train", "lr"): 1.0, ("train", "batch_size"): 4096, ("scrape", "retries"): 20,
               ("scrape", "timeout"): 3600.0, ("scrape", "deadline"): 86400.0, ("scrape", "rate"): 1000.0}
    values = {key: value for (owner, key), value in largest.items() if owner == section}
    assert parse_section(section, values) == SECTIONS[section](**values)
