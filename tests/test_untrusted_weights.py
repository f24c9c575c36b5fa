"""Weights files are data, never code.

torch-fidelity's Inception weights, whether named by a path, found in the torch hub cache or
downloaded, are taken only with the published sha256 and unpickled as tensors only. A generator
file's payload is checked field by field, and its network sizes bounded, before any layer is built.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
from pytest_httpserver import HTTPServer

from pipeline.core.params import PipelineError
from pipeline.evaluation import inception
from pipeline.evaluation.inception import INCEPTION_WEIGHTS, WEIGHTS_ENV, PublishedFile, load_features
from pipeline.models import networks
from pipeline.models.networks import Generator, NetConfig, load_generator, save_generator

CPU = torch.device("cpu")
WEIGHTS_URL_PATH = "/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
CONDITIONS = (("hair", ("black_hair", "blonde_hair")), ("eyes", ("blue_eyes", "red_eyes")))


class WritesMarker:
    """Unpickled, this object opens (so creates) `marker`: code that runs from a weights file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.marker), "w")


def one_line(error: pytest.ExceptionInfo[PipelineError]) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def pinned_to(data: bytes) -> PublishedFile:
    """INCEPTION_WEIGHTS as if these bytes were the published file."""
    return PublishedFile(INCEPTION_WEIGHTS.name, len(data), hashlib.sha256(data).hexdigest())


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "code-ran"


@pytest.fixture
def code_running_weights(tmp_path: Path, marker: Path) -> Path:
    """A pickle that looks like a state dict but runs code when fully unpickled."""
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save({"fc.weight": WritesMarker(marker)}, path)
    return path


@pytest.fixture
def hub_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache and no weights variable: the stage would download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints" / INCEPTION_WEIGHTS.name


@pytest.fixture
def weights_server(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    """A real local server standing in for torch-fidelity's release download."""
    monkeypatch.setattr(tf_inception, "URL_INCEPTION_V3", httpserver.url_for(WEIGHTS_URL_PATH))
    return httpserver


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Inception's architecture with random weights, saved as a plain state dict: the real file
    cannot be downloaded here; what is tested is the way a file reaches the network."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tf_inception.torch, "load", lambda *args, **kwargs: {})
        patch.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        torch.manual_seed(0)
        network = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                           feature_extractor_weights_path="unused")
    path = tmp_path_factory.mktemp("weights") / "inception.pth"
    torch.save(network.state_dict(), path)
    return path


# --- Inception weights ---------------------------------------------------------------------------


def test_the_pin_is_torch_fidelitys_published_file() -> None:
    assert Path(tf_inception.URL_INCEPTION_V3).name == INCEPTION_WEIGHTS.name
    assert INCEPTION_WEIGHTS.sha256.startswith("6726825d")  # torch hub's convention: in the name
    assert len(INCEPTION_WEIGHTS.sha256) == 64 and INCEPTION_WEIGHTS.size == 95_628_359


def test_a_configured_file_that_would_run_code_is_refused_unread(code_running_weights: Path,
                                                                 marker: Path) -> None:
    with pytest.raises(PipelineError) as error:
        load_features(str(code_running_weights), CPU)
    message = one_line(error)
    assert message.startswith(f"{code_running_weights}: not torch-fidelity's Inception weights")
    assert "sha256" in message
    assert not marker.exists()


def test_the_environment_variable_is_verified_the_same_way(code_running_weights: Path, marker: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WEIGHTS_ENV, str(code_running_weights))
    with pytest.raises(PipelineError, match="not torch-fidelity's Inception weights"):
        load_features(None, CPU)
    assert not marker.exists()


def test_even_the_pinned_bytes_are_loaded_as_tensors_only(code_running_weights: Path, marker: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the published file ever hold code, it still could not run: weights_only holds."""
    monkeypatch.setattr(inception, "INCEPTION_WEIGHTS", pinned_to(code_running_weights.read_bytes()))
    with pytest.raises(PipelineError) as error:
        load_features(str(code_running_weights), CPU)
    assert "not torch-fidelity's Inception weights" in one_line(error)
    assert not marker.exists()


def test_a_tampered_hub_cache_is_refused_unread(hub_home: Path, code_running_weights: Path, marker: Path,
                                                weights_server: HTTPServer) -> None:
    hub_home.parent.mkdir(parents=True)
    hub_home.write_bytes(code_running_weights.read_bytes())
    with pytest.raises(PipelineError) as error:
        load_features(None, CPU)
    message = one_line(error)
    assert message.startswith(f"{hub_home}: not torch-fidelity's Inception weights")
    assert not marker.exists()
    assert len(weights_server.log) == 0  # refused, not silently downloaded over


def test_a_download_with_other_bytes_is_refused_and_not_cached(hub_home: Path, code_running_weights: Path,
                                                               marker: Path,
                                                               weights_server: HTTPServer) -> None:
    weights_server.expect_request(WEIGHTS_URL_PATH).respond_with_data(code_running_weights.read_bytes())
    with pytest.raises(PipelineError) as error:
        load_features(None, CPU)
    message = one_line(error)
    assert "served a file with sha256" in message and "refusing it" in message
    assert not marker.exists()
    assert not hub_home.exists()


def test_a_download_is_read_no_further_than_the_published_length(hub_home: Path,
                                                                 weights_server: HTTPServer,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    published = b"w" * 1000
    monkeypatch.setattr(inception, "INCEPTION_WEIGHTS", pinned_to(published))
    weights_server.expect_request(WEIGHTS_URL_PATH).respond_with_data(published + b"x" * 5_000_000)
    with pytest.raises(PipelineError, match="refusing it"):
        load_features(None, CPU)
    assert not hub_home.exists()


@pytest.fixture
def served_weights(random_inception_weights: Path, weights_server: HTTPServer,
                   monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Random Inception weights, published (pinned) and served: the bytes a download gets."""
    data = random_inception_weights.read_bytes()
    monkeypatch.setattr(inception, "INCEPTION_WEIGHTS", pinned_to(data))
    weights_server.expect_request(WEIGHTS_URL_PATH).respond_with_data(data)
    return data


def test_a_verified_download_is_cached_then_used_offline(hub_home: Path, served_weights: bytes,
                                                         weights_server: HTTPServer) -> None:
    features = load_features(None, CPU)
    assert not isinstance(features, str)
    assert hub_home.read_bytes() == served_weights
    weights_server.clear()  # offline from here: the cache alone must serve
    again = load_features(None, CPU)
    assert not isinstance(again, str)
    with torch.no_grad():
        pool = again(torch.zeros(2, 3, 48, 48, dtype=torch.uint8))
    assert pool.shape == (2, 2048) and torch.isfinite(pool).all()
    assert len(weights_server.log) == 0


def test_a_cache_that_cannot_be_written_costs_only_the_caching(hub_home: Path, served_weights: bytes) -> None:
    hub_home.parent.parent.mkdir(parents=True)
    hub_home.parent.write_text("a file where the cache folder should be")
    assert not isinstance(load_features(None, CPU), str)


def test_local_weights_with_the_published_hash_give_features(random_inception_weights: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inception, "INCEPTION_WEIGHTS", pinned_to(random_inception_weights.read_bytes()))
    features = load_features(str(random_inception_weights), CPU)
    assert not isinstance(features, str)
    with torch.no_grad():
        pool = features(torch.zeros(2, 3, 48, 48, dtype=torch.uint8))
    assert pool.shape == (2, 2048) and torch.isfinite(pool).all()


# --- generator files -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conditional_payload(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A sound conditional generator file's payload, to be spoiled one field at a time."""
    config = NetConfig(conditions=CONDITIONS)
    path = tmp_path_factory.mktemp("generator") / "g.pt"
    save_generator(path, Generator(config), config, ema=True, epoch=3)
    return torch.load(path, weights_only=True)


def spoiled(payload: dict[str, Any], path: Path, **changes: Any) -> Path:
    """The payload with `changes` (config.<field> as config__<field>), saved to `path`."""
    payload = copy.deepcopy(payload)
    for key, value in changes.items():
        if key.startswith("config__"):
            payload["config"][key.removeprefix("config__")] = value
        else:
            payload[key] = value
    torch.save(payload, path)
    return path


@pytest.fixture
def no_network_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a generator fails the test: sizes must be refused before any layer is allocated."""
    def refuse(config: NetConfig) -> None:
        raise AssertionError(f"a generator was built for {config}")
    monkeypatch.setattr(networks, "Generator", refuse)


def test_a_sound_file_still_loads(conditional_payload: dict[str, Any], tmp_path: Path) -> None:
    generator, payload = load_generator(spoiled(conditional_payload, tmp_path / "g.pt"))
    assert generator.config.conditions == CONDITIONS
    assert payload["epoch"] == 3 and payload["ema"] is True


@pytest.mark.parametrize(("changes", "named"), [
    ({"epoch": "x"}, "epoch"),
    ({"epoch": -1}, "epoch"),
    ({"epoch": True}, "epoch"),
    ({"ema": "yes"}, "ema"),
    ({"state_dict": {1: torch.zeros(1)}}, "state_dict"),
    ({"raw_state_dict": {"net.0.weight": "not a tensor"}}, "raw_state_dict"),
    ({"config__conditions": ((1, ("black_hair", "blonde_hair")),)}, "conditions"),
    ({"config__conditions": "ab"}, "conditions"),
    ({"config__conditions": (("hair", (1, 2)),)}, "conditions"),
    ({"config__conditions": (("hair", ("black_hair", "black_hair")),)}, "conditions"),
    ({"config__conditions": (("hair", ("a", "b")), ("hair", ("c", "d")))}, "conditions"),
    ({"config__upsample": 7}, "upsample"),
    ({"config__conditioning": "telepathy"}, "conditioning"),
    ({"config__d_norm": "no"}, "d_norm"),
    ({"config__image_size": 48.0}, "image_size"),
    ({"config__nz": "100"}, "nz"),
    ({"config__ngf": 32.5}, "ngf"),
    ({"config__colour": "blue"}, "colour"),
])
def test_odd_payloads_are_one_line_naming_the_field(conditional_payload: dict[str, Any], tmp_path: Path,
                                                    changes: dict[str, Any], named: str) -> None:
    path = spoiled(conditional_payload, tmp_path / "odd.pt", **changes)
    with pytest.raises(PipelineError) as error:
        load_generator(path)
    message = one_line(error)
    assert message.startswith(f"{path}: unusable generator file: ") and named in message


def test_a_config_that_is_not_a_mapping_is_one_line(conditional_payload: dict[str, Any],
                                                    tmp_path: Path) -> None:
    path = spoiled(conditional_payload, tmp_path / "odd.pt", config=["not", "a", "mapping"])
    with pytest.raises(PipelineError, match="unusable generator file: config"):
        load_generator(path)


@pytest.mark.usefixtures("no_network_built")
@pytest.mark.parametrize(("changes", "named"), [
    ({"config__nz": 10**9}, "nz"),
    ({"config__ngf": 10**6}, "ngf"),
    ({"config__ndf": 10**6}, "ndf"),
    ({"config__nz": 0}, "nz"),
    ({"config__nc": 10**5}, "nc"),
    ({"config__num_classes": 10**7}, "num_classes"),
    ({"config__mbstd_group": 10**4}, "mbstd_group"),
    ({"config__conditions": tuple((f"g{i}", ("a", "b")) for i in range(10_000))}, "groups"),
    ({"config__conditions": (("hair", tuple(f"t{i}" for i in range(100_000))),)}, "tags"),
])
def test_network_sizes_are_bounded_before_any_allocation(conditional_payload: dict[str, Any], tmp_path: Path,
                                                         changes: dict[str, Any], named: str) -> None:
    path = spoiled(conditional_payload, tmp_path / "huge.pt", **changes)
    with pytest.raises(PipelineError) as error:
        load_generator(path)
    message = one_line(error)
    assert named in message and len(message) < 400  # the value is shown shortened, never in full
