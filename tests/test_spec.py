"""Spec: presets and their layer shapes, JSON/TOML round trip, --set overrides, one-line errors."""

from __future__ import annotations

import json

import pytest

from gansuite.common.errors import SpecError
from gansuite.common.overrides import apply_overrides
from gansuite.common.params import param_shapes
from gansuite.common.presets import PRESETS, preset
from gansuite.common.spec import BatchNorm, Conv2d, ConvTranspose2d, GANSpec, Init, NetSpec


def test_dcgan_layer_shapes_are_the_tutorials():
    spec = preset("dcgan")
    g = [s for s, l in zip(spec.generator.shapes(), spec.generator.layers) if isinstance(l, ConvTranspose2d)]
    d = [s for s, l in zip(spec.discriminator.shapes(), spec.discriminator.layers) if isinstance(l, Conv2d)]
    assert g == [(512, 4, 4), (256, 8, 8), (128, 16, 16), (64, 32, 32), (3, 64, 64)]
    assert d == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (1, 1, 1)]
    assert spec.latent_shape == (100, 1, 1)
    shapes = param_shapes(spec)
    assert shapes["G.0.weight"] == (100, 512, 4, 4)  # ConvTranspose: (in, out, kh, kw)
    assert shapes["D.0.weight"] == (64, 3, 4, 4)  # Conv: OIHW
    # parameter counts of the tutorial's printed models (weights + BN affine)
    n_g = sum(int(__import__("numpy").prod(s)) for k, s in shapes.items() if k.startswith("G.") and "running" not in k)
    n_d = sum(int(__import__("numpy").prod(s)) for k, s in shapes.items() if k.startswith("D.") and "running" not in k)
    assert (n_g, n_d) == (3_576_704, 2_765_568)


def test_gaussian_preset_is_d2l():
    spec = preset("gaussian")
    assert spec.generator.shapes() == [(2,)]
    assert spec.discriminator.shapes() == [(5,), (5,), (3,), (3,), (1,)]
    assert (spec.train.batch_size, spec.train.epochs) == (8, 20)
    assert (spec.train.optim_D.lr, spec.train.optim_G.lr) == (0.05, 0.005)
    assert (spec.loss.reduction, spec.loss.d_loss_scale) == ("sum", 0.5)
    assert spec.init.G.bias == spec.init.D.bias == Init("normal", 0.0, 0.02)  # d2l inits biases too


def test_seed_presets_carry_their_seeds_options():
    tf_tab, mx_tab = preset("gaussian-tensorflow"), preset("gaussian-mxnet")
    assert tf_tab.init.G.weight.scheme == "glorot_uniform" and tf_tab.init.G.bias.scheme == "zeros"
    assert tf_tab.train.optim_D.form == "eps_hat" and tf_tab.train.optim_D.eps == 1e-7
    assert mx_tab.loss.reduction == "per_example" and mx_tab.init.D.bias.scheme == "zeros"
    s003 = preset("dcgan-mnist")
    assert [l.out_channels for l in s003.generator.layers if hasattr(l, "out_channels")] == [1024, 512, 256, 128, 1]
    assert s003.init.D.bn_weight == Init("normal", 0.0, 0.02) and s003.init.D.bias.scheme == "torch_default"
    assert (s003.loss.d_loss_scale, s003.train.noise_batch) == (0.5, "batch_size")
    s004 = preset("dcgan-mxnet")
    bns = [l for l in s004.discriminator.layers if isinstance(l, BatchNorm)]
    assert all(b.fix_gamma and b.eps == 1e-5 + 1e-12 and b.running_var == "biased" for b in bns)
    assert (s004.train.d_order, s004.train.shuffle, s004.train.pad_last) == ("fake_first", False, True)
    assert "D.3.weight" not in param_shapes(s004) and "D.3.bias" in param_shapes(s004)  # gamma is the constant 1


def test_legacy_init_table_still_loads():
    """Checkpoints keep their spec: the one-table init written before per-net schemes still loads."""
    d = preset("dcgan").to_dict()
    d["init"] = {"weight_std": 0.02, "bias": "zero", "bn_weight_mean": 1.0, "bn_weight_std": 0.02}
    assert GANSpec.from_dict(d) == preset("dcgan")


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_round_trips_through_json(name):
    spec = preset(name)
    again = GANSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(again.to_json()) == json.loads(spec.to_json())


def test_spec_reads_toml():
    toml = """
name = "tiny-gauss"
source = "test"
[generator]
input_shape = [2]
layers = [{kind = "dense", in_features = 2, out_features = 2}]
[discriminator]
input_shape = [2]
layers = [{kind = "dense", in_features = 2, out_features = 4}, {kind = "leaky_relu", slope = 0.2},
          {kind = "dense", in_features = 4, out_features = 1}]
[loss]
reduction = "sum"
[train]
batch_size = 4
epochs = 1
optim_G = {lr = 0.01}
optim_D = {lr = 0.01}
[init]
[data]
kind = "gaussian"
n_examples = 16
"""
    spec = GANSpec.from_toml(toml)
    assert spec.discriminator.output_shape == (1,)
    assert spec.train.optim_G.beta2 == 0.999


def test_overrides_apply_and_validate():
    spec = apply_overrides(preset("dcgan"), ["train.batch_size=32", "train.optim_D.lr=1e-3", "train.drop_last=true"])
    assert spec.train.batch_size == 32 and spec.train.optim_D.lr == 1e-3 and spec.train.drop_last is True
    assert apply_overrides(preset("dcgan"), ["discriminator.layers.1.slope=0.1"]).discriminator.layers[1].slope == 0.1


@pytest.mark.parametrize("assignment,message", [
    ("train.batch_size=0", "train.batch_size: must be a positive integer, got 0"),
    ("train.batch_size=abc", "train.batch_size: expects an integer, got 'abc'"),
    ("train.epochs=-3", "train.epochs: must be a positive integer, got -3"),
    ("train.optim_G.lr=-1", "train.optim_G.lr: must be a positive number, got -1.0"),
    ("train.optim_D.beta1=1.0", "train.optim_D.beta1: must be in [0, 1), got 1.0"),
    ("train.optim_D.beta2=-0.1", "train.optim_D.beta2: must be in [0, 1), got -0.1"),
    ("loss.reduction=avg", "loss.reduction: must be one of mean, sum, per_example; got 'avg'"),
    ("train.optim_D.form=keras", "train.optim_D.form: must be one of torch, eps_hat; got 'keras'"),
    ("train.d_order=random", "train.d_order: must be one of real_first, fake_first; got 'random'"),
    ("train.d_backward=3", "train.d_backward: must be one of joint, separate; got '3'"),
    ("train.noise_batch=fixed", "train.noise_batch: must be one of real, batch_size; got 'fixed'"),
    ("train.pad_last=1", "train.pad_last: expects true or false, got '1'"),
    ("init.G.weight.scheme=xavier", "init.G.weight.scheme: must be one of normal, zeros, ones, torch_default, glorot_uniform; got 'xavier'"),
    ("init.D.bias.scheme=glorot_uniform", "init.D.bias.scheme: glorot_uniform is a weight init; allowed for biases: normal, zeros, ones, torch_default"),
    ("train.nope=1", "train.nope: unknown key 'nope' at 'train.nope'; allowed: batch_size, epochs, optim_G, optim_D, drop_last"),
    ("train=3", "train: is a section; set one of its fields"),
    ("noequals", "--set: expects key=value"),
    ("generator.layers.0.in_channels=7", "generator.layers[0].in_channels: is 7 but the input shape is (100, 1, 1)"),
    ("discriminator.layers.2.in_channels=65", "discriminator.layers[2].in_channels: is 65 but the input shape is (64, 32, 32)"),
    ("generator.layers.12.padding=0", "discriminator.input_shape: is (3, 64, 64) but the generator outputs (3, 66, 66)"),
    ("discriminator.layers.1.slope=1.5", "discriminator.layers[1].slope: must be in [0, 1), got 1.5"),
    ("generator.input_shape=[50, 1, 1]", "generator.layers[0].in_channels: is 100 but the input shape is (50, 1, 1)"),
    ("data.channels=2", "data.channels: must be one of 1, 3; got 2"),
    ("data.kind=celeba", "data.kind: must be one of gaussian, shapes, glyphs, idx, image_folder; got 'celeba'"),
    ("data.kind=idx", "data.path: is required for data kind 'idx'"),
])
def test_bad_values_give_one_line_errors_naming_the_field(assignment, message):
    with pytest.raises(SpecError) as info:
        apply_overrides(preset("dcgan"), [assignment])
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_unknown_layer_kind_and_model():
    d = preset("gaussian").to_dict()
    d["discriminator"]["layers"][1]["kind"] = "gelu"
    with pytest.raises(SpecError, match=r"^discriminator.layers\[1\].kind: unknown layer 'gelu'; allowed: dense"):
        GANSpec.from_dict(d)
    with pytest.raises(SpecError, match="^model: unknown model 'stylegan'; allowed: gaussian, gaussian-mxnet"):
        preset("stylegan")


def test_layer_validation_directly():
    with pytest.raises(SpecError, match="^padding: must be <= kernel - 1"):
        ConvTranspose2d(4, 4, 3, 2, 3)
    with pytest.raises(SpecError, match="^momentum: must be in"):
        BatchNorm(4, momentum=1.0)
    with pytest.raises(SpecError, match=r"^layers\[0\].kernel"):
        NetSpec((3, 2, 2), (Conv2d(3, 1, 4, 1, 0),))
