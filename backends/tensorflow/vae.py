"""TensorFlow / Keras 3 primitives of the VAE template (common/vae_backend.py), in the template's order.

backends/torch/vae.py side by side, the framework differences:

* the nets are the GANs' Keras ``SpecNet``s (models.build_net), their variables found by the GANs'
  mapping (layout.module_key: layer i of net E is the Keras layer ``"E.<i>"``, a Dense's weight its
  ``kernel``, stored ``(in, out)``; layout.param_to_framework transposes before write_tensor);
* there is no ``loss.backward()`` filling ``.grad``: one ``tf.GradientTape`` over the forward and
  the loss, asked for the gradient of the total w.r.t. every variable (fresh each call, so the
  seed's ``zero_grad`` has nothing to clear);
* PyTorch's ``F.binary_cross_entropy`` has no Keras equivalent (keras.losses.BinaryCrossentropy
  clips p to [1e-7, 1 - 1e-7]): the GAN path's train._bce_probabilities, the clamped logs with
  PyTorch's backward as a tf.custom_gradient, already elementwise in a target TENSOR, so the VAE's
  soft targets x in [0, 1] use it unchanged;
* Adam is the GAN path's SpecAdam (train.make_adam), not keras.optimizers.Adam (other eps
  placement, float32-rounded lr and betas in float64), over all four nets' variables: Keras keeps
  ONE step counter per optimiser (``iterations``), the canonical state's one step;
* compilation as the GAN path (train._make_step): the iteration, the forward and decode are tf.functions
  without XLA in parity mode (bit-identical to eager with grappler's float rewrites off,
  backend.configure; extra={"eager": True} runs them op by op) and XLA-compiled
  (``jit_compile``: by default on a GPU, and on a CPU too since the VAE has no convolution:
  train._fast_uses_xla) in fast mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import tensorflow as tf

from gansuite.common.protocol import BuildOptions
from gansuite.common.vae import VAE_NETS, VAESpec, vae_param_shapes
from gansuite.common.vae_backend import VAEBackendState, vae_layer_of

from .layout import module_key
from .models import SpecNet, build_net
from .train import SpecAdam, _bce_probabilities, _fast_uses_xla, make_adam


@dataclass
class TensorflowVAEState(VAEBackendState):
    nets: dict[str, SpecNet]  # E, mu, logvar, Dec
    variables: dict[str, keras.Variable]  # canonical name -> Keras variable, canonical order (fc1..fc5)
    opt: SpecAdam  # one Adam over all four nets: the seed's Adam(model.parameters())
    run: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]  # the forward
    decode_fn: Callable[[tf.Tensor], tf.Tensor]  # Dec alone, the seed's model.decode(z)
    step_fn: Callable[..., tuple[dict[str, tf.Tensor], dict[str, tf.Tensor] | None]]  # the iteration
    jit_compile: bool
    graph: bool  # run and step_fn are tf.functions


def _vae_forward(nets: dict[str, SpecNet], x: tf.Tensor,
                 eps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The seed's ``forward``: encode, ``reparameterize`` with the given eps, decode. No BatchNorm or
    Dropout in a VAE (common/vae.py VAE_LAYERS), so ``training`` changes nothing; True as the seed's
    model in train mode."""
    h = nets["E"].run(x, True)
    mu, log_var = nets["mu"].run(h, True), nets["logvar"].run(h, True)
    # `log_var / 2` and `1 + ...` below: TF converts the Python number to the tensor's dtype
    # (2, 1 and -0.5 are exact in float32 and float64), as torch's scalar ops do.
    std = tf.exp(log_var / 2)
    z = mu + eps * std
    return nets["Dec"].run(z, True), mu, log_var


def _compile(fn: Callable, options: BuildOptions) -> tuple[Callable, bool, bool]:
    """``(fn compiled as the GAN step is, jit_compile, graph)``: train._make_step's rule. Parity: a
    tf.function without XLA (extra={"eager": True}: plain eager); fast: XLA unless
    extra={"jit_compile": False}. autograph=False: no tensor-dependent Python control flow."""
    fast = options.mode == "fast"
    # The GAN step's rule for a model without convolutions: XLA on a GPU and on a CPU (measured there).
    jit = _fast_uses_xla(options, convolutional=False) if fast else False
    graph = fast or not options.extra.get("eager", False)
    return (tf.function(fn, jit_compile=jit, autograph=False) if graph else fn), jit, graph


def create_state(spec: VAESpec, options: BuildOptions, dtype: tf.dtypes.DType, device: str) -> TensorflowVAEState:
    with tf.device(device):
        nets = {net: build_net(spec.net(net), net, dtype, options.mode) for net in VAE_NETS}
        # The GANs' mapping (models._canonical_variables, which reads a GANSpec's layers): the
        # canonical name's Keras layer and attribute, in canonical order E, mu, logvar, Dec.
        variables: dict[str, keras.Variable] = {}
        for name in vae_param_shapes(spec):
            layer_name, attr = module_key(name, vae_layer_of(spec, name))
            variables[name] = getattr(nets[name.split(".")[0]].get_layer(layer_name), attr)
        # Built now over every variable (SpecAdam's moments must exist before write_adam and before
        # a tf.function traces: Keras cannot create variables inside one).
        opt = make_adam(spec.train.optim, list(variables.values()), options.mode)

    def forward_fn(x: tf.Tensor, eps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        return _vae_forward(nets, x, eps)

    def decode_fn(z: tf.Tensor) -> tf.Tensor:
        return nets["Dec"].run(z, True)

    def step(x: tf.Tensor, eps: tf.Tensor,
             with_grads: bool) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor] | None]:
        """The seed's loop body; returns tensors (no host sync). The losses are computed before
        opt.apply, so they are those at the parameters before the step."""
        # The tf.Variables behind the Keras variables: GradientTape.watch accepts only TF types.
        tf_vars = [v.value for v in variables.values()]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(tf_vars)
            x_reconst, mu, log_var = _vae_forward(nets, x, eps)
            # size_average=False is reduction="sum": the clamped per-element BCE (PyTorch's backward
            # (p - x) / max(p (1 - p), 1e-12) via its custom gradient), summed over batch and pixels.
            reconst_loss = tf.reduce_sum(_bce_probabilities(x_reconst, x))
            # mu.pow(2) as tf.square (mu * mu, exact as torch's pow(2)).
            kl_div = -0.5 * tf.reduce_sum(1 + log_var - tf.square(mu) - tf.exp(log_var))
            loss = reconst_loss + kl_div
        grads = tape.gradient(loss, tf_vars)  # fresh every call: the seed's zero_grad + backward
        opt.apply(grads, list(variables.values()))  # increments the one `iterations` counter
        out = dict(zip(variables, grads)) if with_grads else None
        return {"reconstruction": reconst_loss, "kl": kl_div, "total": loss}, out

    run, jit, graph = _compile(forward_fn, options)
    decode_compiled, _, _ = _compile(decode_fn, options)
    step_fn, _, _ = _compile(step, options)
    return TensorflowVAEState(spec, options, dtype, device, nets, variables, opt, run, decode_compiled, step_fn, jit,
                              graph)


def write_tensor(state: TensorflowVAEState, name: str, value: tf.Tensor) -> None:
    state.variables[name].assign(value)


def read_tensor(state: TensorflowVAEState, name: str) -> keras.Variable:
    return state.variables[name]


def write_adam(state: TensorflowVAEState, step: int, m: dict[str, tf.Tensor], v: dict[str, tf.Tensor]) -> None:
    # Keras keeps ONE step counter per optimiser (`iterations`), as the canonical state does
    # (PyTorch keeps one per parameter).
    state.opt.iterations.assign(int(step))
    for name, var in state.variables.items():
        m_var, v_var = state.opt.moments(var)
        m_var.assign(m[name])
        v_var.assign(v[name])


def read_adam(state: TensorflowVAEState) -> tuple[int, dict[str, keras.Variable], dict[str, keras.Variable]]:
    m, v = {}, {}
    for name, var in state.variables.items():
        m[name], v[name] = state.opt.moments(var)  # built by make_adam: zeros before the first step
    return int(state.opt.iterations.numpy()), m, v


def forward(state: TensorflowVAEState, x: tf.Tensor, eps: tf.Tensor) -> tuple[tf.Tensor, ...]:
    # No tape is recording (torch's no_grad) and a VAE has no running statistics to update.
    with tf.device(state.device):
        return state.run(x, eps)


def decode(state: TensorflowVAEState, z: tf.Tensor) -> tf.Tensor:
    # The decoder alone (the seed's model.decode(z), sampled grids); no tape records it (torch's
    # no_grad), and it is compiled as the forward is (its own tf.function: Keras nets are not
    # sub-graphs of the forward's function that could be called alone).
    with tf.device(state.device):
        return state.decode_fn(z)


def train_iteration(state: TensorflowVAEState, x: tf.Tensor, eps: tf.Tensor,
                    with_grads: bool) -> tuple[dict[str, float], dict[str, tf.Tensor] | None]:
    # with_grads is a Python bool: a tf.function traces once per value (and per batch shape).
    with tf.device(state.device):
        scalars, grads = state.step_fn(x, eps, with_grads)
    return {k: float(v.numpy()) for k, v in scalars.items()}, grads
