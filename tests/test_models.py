import pytest
import torch

from pipeline.core.params import PipelineError
from pipeline.models.networks import Discriminator, Generator, NetConfig, load_generator, save_generator


@pytest.mark.parametrize("size", [48, 64])
def test_shapes(size):
    config = NetConfig(image_size=size, ngf=8, ndf=8)
    generator, discriminator = Generator(config), Discriminator(config)
    images = generator(torch.randn(5, config.nz))
    assert images.shape == (5, 3, size, size)
    assert images.min() >= -1 and images.max() <= 1
    assert discriminator(images).shape == (5,)


def test_dcgan_layers():
    """Radford et al.: no pooling, no dense layers; BN + ReLU + tanh in G, LeakyReLU in D."""
    config = NetConfig(ngf=8, ndf=8)
    g_types = {type(m) for m in Generator(config).modules()}
    d_types = {type(m) for m in Discriminator(config).modules()}
    assert torch.nn.ConvTranspose2d in g_types and torch.nn.Tanh in g_types
    assert torch.nn.ReLU in g_types and torch.nn.BatchNorm2d in g_types
    assert torch.nn.LeakyReLU in d_types and torch.nn.Conv2d in d_types
    for types in (g_types, d_types):
        assert not types & {torch.nn.Linear, torch.nn.MaxPool2d, torch.nn.AvgPool2d}


def test_generator_round_trip(tmp_path):
    config = NetConfig(image_size=64, ngf=8)
    generator = Generator(config).eval()
    save_generator(tmp_path / "g.pt", generator, config, ema=True, epoch=3)
    loaded, payload = load_generator(tmp_path / "g.pt")
    z = torch.randn(2, config.nz)
    assert torch.equal(loaded(z), generator(z))
    assert payload["epoch"] == 3 and payload["ema"] is True


def test_load_generator_errors(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        load_generator(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError, match="not a readable generator"):
        load_generator(tmp_path / "junk.pt")
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    with pytest.raises(PipelineError, match="not a generator written by this project"):
        load_generator(tmp_path / "foreign.pt")
