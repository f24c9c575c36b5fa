import pytest
import torch

from pipeline.core.params import PipelineError
from pipeline.models.networks import (
    Discriminator,
    Generator,
    MinibatchStddev,
    NetConfig,
    _upsampling,
    load_generator,
    save_generator,
)


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


def test_minibatch_stddev_tells_a_batch_of_one_face_from_a_varied_one():
    layer = MinibatchStddev(4)
    varied = torch.randn(8, 5, 3, 3)
    same = varied[:1].expand(8, -1, -1, -1).contiguous()
    assert layer(varied).shape == (8, 6, 3, 3)
    assert torch.equal(layer(varied)[:, :5], varied)
    assert float(layer(varied)[:, 5].min()) > 0.5
    assert float(layer(same)[:, 5].max()) < 1e-3
    assert layer(torch.randn(6, 5, 3, 3)).shape == (6, 6, 3, 3)  # 6 faces: groups of 2


@pytest.mark.parametrize("conditioning", ["acgan", "projection"])
def test_discriminator_with_minibatch_stddev(conditioning):
    config = NetConfig(ngf=8, ndf=8, mbstd_group=4, conditioning=conditioning,
                       conditions=(("hair", ("a", "b")),))
    discriminator = Discriminator(config)
    assert any(isinstance(m, MinibatchStddev) for m in discriminator.modules())
    outputs = discriminator(torch.randn(8, 3, 48, 48), torch.zeros(8, 1, dtype=torch.long))
    assert outputs.shape == ((8, 3) if conditioning == "acgan" else (8,))


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
@pytest.mark.parametrize("size", [48, 64])
def test_generator_upsampling(size, upsample):
    config = NetConfig(image_size=size, ngf=8, ndf=8, upsample=upsample)
    generator = Generator(config)
    assert generator(torch.randn(3, config.nz)).shape == (3, 3, size, size)
    strided = [m for m in generator.modules()
               if isinstance(m, torch.nn.ConvTranspose2d) and m.stride == (2, 2)]
    assert len(strided) == (4 if upsample == "transpose" else 0)


def test_resizing_draws_no_checkerboard_where_a_transposed_convolution_does():
    """On a flat input, a 4x4 stride-2 transposed convolution repeats its kernel's uneven overlap
    every other pixel; nearest resizing then a 3x3 convolution stays flat away from the border."""
    torch.manual_seed(0)
    flat = torch.ones(1, 4, 8, 8)
    for upsample, checkered in (("transpose", True), ("resize", False)):
        layers = torch.nn.Sequential(*_upsampling(4, 2, NetConfig(upsample=upsample)))
        inner = layers(flat)[:, :, 2:-2, 2:-2].detach()
        assert inner.shape[-1] == 12
        spread = float((inner - inner.mean((2, 3), keepdim=True)).abs().max())
        assert (spread > 1e-3) == checkered
