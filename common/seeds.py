"""The seed documents' systems: each one's preset, and where its own code is transcribed.

Every system in ``../shared/seeds`` is reproduced by a preset (common/presets.py) and
transcribed in its own framework and API as the document writes it (``benchmarks/peers``),
wrapped as a port (common/verify.py). The comparison runs each transcription from the
canonical start and holds every backend's run of the preset to it: the report's section
"seed code vs preset".
"""

from __future__ import annotations

from dataclasses import dataclass

from .trajectory import trajectory_iterations


@dataclass(frozen=True)
class SeedSystem:
    key: str  # short id, used in artifact names
    document: str  # which seed, which tab
    preset: str  # the preset that reproduces it
    framework: str  # the backend env its transcription runs in
    port: str  # module:Class of the transcription's port
    # Where the seed's own code cannot meet SEED_CODE in float64, the measured cause (its module
    # docstring and tests/test_backend_<framework>.py show it: modelled, the gap closes).
    known_gap: str = ""

    @property
    def iterations(self) -> int:
        """Gaussian GANs: d2l's full run; DCGANs: the comparison's short float64 trajectory."""
        return trajectory_iterations(self.preset)


SEED_SYSTEMS: tuple[SeedSystem, ...] = (
    SeedSystem("000-torch", "seed 000: the PyTorch DCGAN tutorial", "dcgan", "torch",
               "gansuite.benchmarks.peers.tutorial_torch:SeedPort"),
    SeedSystem("001-torch", "seed 001: d2l 20.1, PyTorch tab", "gaussian", "torch",
               "gansuite.benchmarks.peers.d2l_torch:SeedPort"),
    SeedSystem("001-mxnet", "seed 001: d2l 20.1, MXNet tab", "gaussian-mxnet", "mxnet",
               "gansuite.benchmarks.peers.d2l_mxnet:SeedPort",
               known_gap="MXNet's fused adam_update keeps lr, beta1, beta2 and eps as C floats even for float64 "
                         "weights (1 - 0.999f = 0.000999987): params 6.7e-6 off after one iteration; an oracle "
                         "with MXNet's float32 constants agrees to 6.3e-13"),
    SeedSystem("001-tensorflow", "seed 001: d2l 20.1, TensorFlow tab", "gaussian-tensorflow", "tensorflow",
               "gansuite.benchmarks.peers.d2l_tensorflow:SeedPort",
               known_gap="Keras's Adam rounds beta_1 and beta_2 through float32 in its bias corrections even in "
                         "float64 (0.9990000128746033): params 1.05e-5 off after one iteration; an oracle with "
                         "those betas agrees to 7e-14"),
    SeedSystem("002-mlp-torch", "seed 002: the book chapter's MLP GAN, 8.3 (PyTorch)", "mlp-gan", "torch",
               "gansuite.benchmarks.peers.seed002_torch:MlpGanPort"),
    SeedSystem("002-cgan-torch", "seed 002: the book chapter's conditional GAN, 8.5 (PyTorch)", "cgan", "torch",
               "gansuite.benchmarks.peers.seed002_torch:CganPort"),
    SeedSystem("002-vae-torch", "seed 002: the book chapter's VAE, 8.1 (PyTorch)", "vae", "torch",
               "gansuite.benchmarks.peers.seed002_vae_torch:VaeSeedCode"),
    SeedSystem("003-torch", "seed 003: DCGAN on FashionMNIST (PyTorch)", "dcgan-mnist", "torch",
               "gansuite.benchmarks.peers.seed003_torch:SeedPort"),
    SeedSystem("004-mxnet", "seed 004: MXNet's symbolic DCGAN (mx.sym + mx.mod.Module)", "dcgan-mxnet", "mxnet",
               "gansuite.benchmarks.peers.seed004_mxnet:SeedPort",
               known_gap="MXNet's symbolic operators keep float32 constants in float64 graphs: LeakyReLU computes "
                         "float32(x) * 0.2f on its negative side, BatchNorm's momentum is 0.9f, adam_update's "
                         "hyper-parameters are C floats: D(x) 3.1e-8 off; with those modelled the tiny preset "
                         "agrees to 1e-12 after one iteration. Over 3 iterations at full size Adam's first steps turn "
                         "those float32 differences in near-zero gradients into O(lr) moves (parameters 0.24)"),
)


def systems_for(framework: str) -> list[SeedSystem]:
    return [s for s in SEED_SYSTEMS if s.framework == framework]
