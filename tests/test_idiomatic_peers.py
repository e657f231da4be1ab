"""The idiomatic DCGAN peers (benchmarks/peers/keras_dcgan.py, flax_dcgan.py, gluon_dcgan.py):
each trains and samples at a tiny size with finite losses, and has exactly the tutorial's
trainable parameters (the spec's count per net), which shows the architecture is the tutorial's.

Which tests run follows tests/conftest.py: an env that sets ``GANSUITE_BACKENDS`` runs the test
of each framework it lists, where a peer that fails to import is a FAILURE, and skips the
others (their frameworks are not installed there); without the variable, a test whose
framework is missing here is skipped with the registry's reason.
"""

from __future__ import annotations

import importlib
import json
import math
import os

import numpy as np
import pytest

from gansuite.common.params import param_shapes, trainable_names
from gansuite.common.presets import dcgan
from gansuite.common.registry import available

_declared = os.environ.get("GANSUITE_BACKENDS")
EXPECTED = None if _declared is None else {b.strip() for b in _declared.split(",") if b.strip()}

BATCH = 4


def _gate(backend: str) -> None:
    if EXPECTED is None:
        ok, reason = available(backend)
        if not ok:
            pytest.skip(reason)
    elif backend not in EXPECTED:
        pytest.skip(f"{backend} is not a backend of this env (GANSUITE_BACKENDS={_declared!r})")


def _tiny_spec():
    return dcgan(nz=16, ngf=8, ndf=8)  # nc = 3


def _spec_counts(spec) -> dict[str, int]:
    shapes = param_shapes(spec)
    return {net: sum(math.prod(shapes[name]) for name in trainable_names(spec, net)) for net in ("G", "D")}


def _check_peer(backend: str, module: str, framework: str, g_forwards: int):
    _gate(backend)
    spec = _tiny_spec()
    cls = importlib.import_module(f"gansuite.benchmarks.peers.{module}").Peer
    assert (cls.mode, cls.framework, cls.g_forwards) == ("peer-idiomatic", framework, g_forwards)
    peer = cls(spec, BATCH, "cpu", 0)
    peer.train(2)
    peer.sample(1)
    peer.sync()
    losses = np.asarray(peer.D_losses + peer.G_losses, dtype=np.float64)
    assert losses.size >= 2 and np.all(np.isfinite(losses)), losses
    assert peer.trainable_counts() == _spec_counts(spec)
    # what the harness records with every row must serialise
    json.dumps({"peer": peer.settings(), "versions": peer.versions()})
    return peer


def test_keras_dcgan_peer():
    _gate("tensorflow")
    from gansuite.benchmarks.peers import keras_dcgan

    traces = []
    original = keras_dcgan.GAN.train_step

    def counted(self, data):  # the Python body runs once per trace of Keras's train function
        traces.append(1)
        return original(self, data)

    keras_dcgan.GAN.train_step = counted
    try:
        peer = _check_peer("tensorflow", "keras_dcgan", "tensorflow", 2)
        first = len(traces)
        peer.train(1)  # a second fit call reuses Keras's cached train_function: no retrace
        assert len(traces) == first >= 1
    finally:
        keras_dcgan.GAN.train_step = original
    assert int(peer.gan.d_optimizer.iterations) == int(peer.gan.g_optimizer.iterations) == 3
    assert len(peer.D_losses) == 2  # one epoch mean per fit call


def test_flax_dcgan_peer():
    peer = _check_peer("jax", "flax_dcgan", "jax", 2)
    assert len(peer.D_losses) == len(peer.G_losses) == 2
    assert int(peer.g_state.step) == int(peer.d_state.step) == 2


def test_gluon_dcgan_peer():
    peer = _check_peer("mxnet", "gluon_dcgan", "mxnet", 1)
    assert len(peer.D_losses) == len(peer.G_losses) == 2
