"""One training iteration in the tutorial's call order (see common/protocol.py).

A custom step with ``tf.GradientTape``, as d2l's TensorFlow tab writes it, not
``model.fit``: the iteration has two optimisers, three D forwards and one G
forward whose output feeds both losses, which ``fit`` cannot express.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import keras
import tensorflow as tf

from gansuite.common.protocol import BuildOptions
from gansuite.common.spec import AdamSpec, GANSpec


class SpecAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with the spec's update, in the spec's form (``AdamSpec.form``):
    PyTorch's (``"torch"``: eps AFTER bias correction) or the eps-hat form (``"eps_hat"``).

    Keras 3.15 (keras/src/optimizers/adam.py) differs from the spec in four ways:

    * eps placement: ``w -= alpha * m / (sqrt(v) + eps)`` with ``alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)``,
      the paper's "epsilon hat", i.e. PyTorch's ``eps * sqrt(1 - b2^t)`` on the other side
      (31.6x larger than PyTorch's eps at t=1). That IS the spec's ``form="eps_hat"`` (Keras's and
      MXNet's), which this class computes too, from exact constants (next point);
    * default ``epsilon=1e-7``, not 1e-8 (set from the spec below);
    * ``ops.cast(self.beta_1, dtype)`` / ``ops.cast(self.beta_2, dtype)`` go through float32 (tf.cast
      of a Python float makes a float32 tensor first), and ``learning_rate`` lives in a
      float32 variable: in float64 both are rounded (see the test for the measured effect), so
      stock Keras is not even the eps-hat form exactly in float64;
    * ``m += (g - m) * (1 - b1)``: equal in exact arithmetic, written as the oracle writes it here.

    Only ``update_step`` is replaced; the moments, the ONE step counter per optimiser
    (``iterations``) and ``apply`` are Keras's own.
    """

    def __init__(self, cfg: AdamSpec, name: str):
        # Every default that could change the maths, set explicitly: no weight decay (Keras's is
        # decoupled when set), no AMSGrad, no clipping, no EMA, no loss scaling, no accumulation.
        super().__init__(learning_rate=float(cfg.lr), beta_1=float(cfg.beta1), beta_2=float(cfg.beta2),
                         epsilon=float(cfg.eps), amsgrad=False, weight_decay=None, clipnorm=None, clipvalue=None,
                         global_clipnorm=None, use_ema=False, loss_scale_factor=None,
                         gradient_accumulation_steps=None, name=name)
        # Keras keeps learning_rate in a variable of backend.floatx() = float32 whatever the model's
        # dtype: in float64 that rounds 2e-4 to 2.0000000949949026e-4 (relative 4.7e-8), far above the
        # float64 tolerance once it multiplies the update. The update reads the exact Python float.
        self.exact_lr = float(cfg.lr)
        self.form = cfg.form

    def moments(self, variable: keras.Variable) -> tuple[keras.Variable, keras.Variable]:
        """(m, v) of one model variable."""
        i = self._get_variable_index(variable)
        return self._momentums[i], self._velocities[i]

    def update_step(self, gradient: tf.Tensor, variable: keras.Variable, learning_rate: tf.Tensor) -> None:
        # tf.constant(python_float, dtype), never tf.cast(python_float, dtype): tf.cast first makes a
        # float32 tensor, so in float64 beta2 = 0.999 would become 0.9990000128746033 and 1 - beta2
        # would be off by 1.3e-5 relative (measured on v).
        dtype = variable.dtype
        g = tf.cast(gradient, dtype)
        b1, b2 = tf.constant(self.beta_1, dtype), tf.constant(self.beta_2, dtype)
        one_minus_b1, one_minus_b2 = tf.constant(1.0 - self.beta_1, dtype), tf.constant(1.0 - self.beta_2, dtype)
        # Bias corrections in float64 whatever the model dtype, as PyTorch computes them (Python floats):
        # 1 - float32(0.999)**1 is 1.3e-5 away from 1 - 0.999.
        t = tf.cast(self.iterations + 1, tf.float64)  # apply() increments iterations after all updates
        m, v = self.moments(variable)
        m_new = b1 * m + one_minus_b1 * g
        v_new = b2 * v + one_minus_b2 * g * g
        self.assign(m, m_new)
        self.assign(v, v_new)
        eps = tf.constant(self.epsilon, dtype)
        if self.form == "eps_hat":
            # Keras's own (and MXNet's) form, with exact constants: the step size
            # alpha = lr * sqrt(1 - b2^t) / (1 - b1^t) formed in float64 first, as MXNet's optimizer
            # does in Python and the oracle does (common/oracle.adam_update), then one rounding to
            # the model's dtype. Keras's stock update forms it from the float32 learning-rate
            # variable and float32-rounded betas (see the class docstring).
            lr64 = tf.constant(self.exact_lr, tf.float64)
            alpha = tf.cast(lr64 * tf.sqrt(1.0 - tf.pow(tf.constant(self.beta_2, tf.float64), t))
                            / (1.0 - tf.pow(tf.constant(self.beta_1, tf.float64), t)), dtype)
            self.assign_sub(variable, alpha * m_new / (tf.sqrt(v_new) + eps))
            return
        correction1 = tf.cast(1.0 - tf.pow(tf.constant(self.beta_1, tf.float64), t), dtype)
        correction2 = tf.cast(1.0 - tf.pow(tf.constant(self.beta_2, tf.float64), t), dtype)
        lr = tf.constant(self.exact_lr, dtype)
        self.assign_sub(variable, lr * (m_new / correction1) / (tf.sqrt(v_new / correction2) + eps))


def make_adam(cfg: AdamSpec, params: list[keras.Variable], mode: str) -> SpecAdam:
    """The spec's Adam over ``params`` (one net's trainable variables, canonical order); the same in both
    modes (``mode`` unused: XLA compiles the update in fast mode as part of the step)."""
    # Built now, on the canonical-order variable list, so the moments exist before a checkpoint
    # is loaded into them and before any tf.function traces (variables cannot be created there).
    # Named after the net ("adam_G": Keras paths are "<model>/<layer>/<variable>"), which only makes
    # the moments' variable paths readable; no number depends on it.
    opt = SpecAdam(cfg, "adam_" + params[0].path.split("/", 1)[0])
    opt.build(params)
    return opt


def bce(logits: tf.Tensor, label: float, reduction: str) -> tf.Tensor:
    # BCE-with-logits on the raw logit, reduced as the spec says. keras.losses.BinaryCrossentropy
    # defaults to from_logits=False (clips probabilities to [1e-7, 1 - 1e-7]) and to the
    # "sum_over_batch_size" reduction; neither is used. TF's formula is the oracle's:
    # max(x, 0) - x*t + log(1 + exp(-|x|)). "per_example" is back-propagated as the batch sum and
    # reported as it; its 1/B is applied to the parameter gradients afterwards (_rescale).
    target = tf.fill(tf.shape(logits), tf.cast(label, logits.dtype))
    per_example = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
    return tf.reduce_mean(per_example) if reduction == "mean" else tf.reduce_sum(per_example)


def train_iteration(state: Any, real: tf.Tensor, z: tf.Tensor,
                    with_grads: bool) -> tuple[dict[str, Any], dict[str, tf.Tensor] | None]:
    """One iteration: ``state.step_fn`` (a tf.function, or the eager step), scalars fetched to the host.

    The first call with an input signature is timed for the benchmark harness (settings()):
    tracing alone, then tracing + (XLA) compilation + one step; later calls reuse the function."""
    with tf.device(state.device):
        signature = (tuple(real.shape), tuple(z.shape), bool(with_grads))
        if not state.graph or signature in state.traced:
            return _to_host(state.step_fn(real, z, with_grads))
        t0 = time.perf_counter()
        state.step_fn.get_concrete_function(real, z, with_grads)
        t1 = time.perf_counter()
        out = _to_host(state.step_fn(real, z, with_grads))
        t2 = time.perf_counter()
        if state.compile_s is None:
            state.trace_s, state.compile_s = t1 - t0, t2 - t0
        state.traced.add(signature)
        return out


def _to_host(result: tuple[dict[str, tf.Tensor], dict[str, tf.Tensor] | None]
             ) -> tuple[dict[str, Any], dict[str, tf.Tensor] | None]:
    scalars, grads = result
    return {k: v.numpy() for k, v in scalars.items()}, grads


def _rescale(grads: list[tf.Tensor], reduction: str, rows: tf.Tensor | int) -> list[tf.Tensor]:
    """The per-example reduction's 1/B on the parameter gradients (B = ``rows``), before Adam, as
    MXNet's ``Trainer.step(B)`` / Module's ``rescale_grad = 1/B`` apply it; other reductions unchanged.
    Keras has no such knob (``model.fit`` losses are reduced before differentiation)."""
    if reduction != "per_example":
        return grads
    if isinstance(rows, int):  # the static batch size: one constant 1/B, rounded once, as the oracle's
        scales = {g.dtype: tf.constant(1.0 / rows, g.dtype) for g in grads}
        return [g * scales[g.dtype] for g in grads]
    return [g * tf.cast(1.0 / tf.cast(rows, tf.float64), g.dtype) for g in grads]


def _rows(x: tf.Tensor) -> tf.Tensor | int:
    """Rows of a batch: static when the traced shape knows them (a tf.function retraces per shape)."""
    return x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]


def _make_step(options: BuildOptions, spec: GANSpec, G: keras.Model, D: keras.Model,
               G_params: dict[str, keras.Variable], D_params: dict[str, keras.Variable], opt_G: SpecAdam,
               opt_D: SpecAdam) -> tuple[Callable, bool, bool]:
    """The iteration as a function of ``(real, z, with_grads)``: ``(step_fn, jit_compile, graph)``, where
    ``step_fn`` is a tf.function (``graph``; XLA-compiled if ``jit_compile``) or the eager Python step.

    ``G_params`` / ``D_params``: canonical name -> trainable variable, canonical order.
    Every forward passes ``training=True``: BatchNorm uses batch statistics and updates its
    running ones in all four forwards, as PyTorch's train mode does.

    The spec's options: ``train.d_order`` (D's real pass before or after G(z) and D(fake): only
    the order of D's BN running-stat updates changes), ``train.d_backward`` (one gradient of the
    summed loss, or one per pass summed by hand), ``loss.reduction == "per_example"`` (1/B on
    the gradients: B the real rows for D, z's rows for G). ``real`` and ``z`` may have different
    rows (``train.noise_batch``): every reduction runs over its own batch.
    """
    loss, train = spec.loss, spec.train
    real_first, separate = train.d_order == "real_first", train.d_backward == "separate"

    def step(real: tf.Tensor, z: tf.Tensor,
             with_grads: bool) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor] | None]:
        """D step then G step, exactly the tutorial's sequence. Returns tensors (no host sync)."""
        # The tf.Variables behind the Keras variables: GradientTape.watch accepts only TF types.
        g_vars, d_vars = [v.value for v in G_params.values()], [v.value for v in D_params.values()]
        # One tape per net, each watching only its own variables: tape_D then never records G(z)
        # (PyTorch's fake.detach()), and tape_G records G(z) once, here, for the G step below.
        with tf.GradientTape(watch_accessed_variables=False) as tape_G:
            tape_G.watch(g_vars)

            # -- D step: maximise log D(x) + log(1 - D(G(z))) --
            # persistent: the "separate" backward asks the tape for two gradients.
            with tf.GradientTape(watch_accessed_variables=False, persistent=separate) as tape_D:
                tape_D.watch(d_vars)
                if real_first:  # the tutorial: D(real), G(z), D(fake)
                    out_real = tf.reshape(D(real, training=True), [-1])
                fake = G(z, training=True)  # the only G forward of the iteration; reused below
                out_fake = tf.reshape(D(tf.stop_gradient(fake), training=True), [-1])
                if not real_first:  # seed 004: G(z), D(fake), then D(real)
                    out_real = tf.reshape(D(real, training=True), [-1])
                l_real = bce(out_real, loss.real_label, loss.reduction)
                l_fake = bce(out_fake, loss.fake_label, loss.reduction)
                loss_D = loss.d_loss_scale * (l_real + l_fake)
                if separate:
                    scaled = {"real": loss.d_loss_scale * l_real, "fake": loss.d_loss_scale * l_fake}
            with tape_G.stop_recording():  # D's gradient and update are no part of G's graph
                if separate:
                    # Two backward passes, in the order of the forwards, their gradients summed
                    # (the tutorial's errD_real.backward(); errD_fake.backward(); seed 004's
                    # copied-and-added gradients). a + b == b + a in IEEE: the order is not a number.
                    first, second = ("real", "fake") if real_first else ("fake", "real")
                    g_first = tape_D.gradient(scaled[first], d_vars)
                    g_second = tape_D.gradient(scaled[second], d_vars)
                    grads_D = [a + b for a, b in zip(g_first, g_second)]
                    del tape_D
                else:
                    grads_D = tape_D.gradient(loss_D, d_vars)
                grads_D = _rescale(grads_D, loss.reduction, _rows(real))
                opt_D.apply(grads_D, list(D_params.values()))

            # -- G step: maximise log D(G(z)), through the updated D, same fake --
            # Not D.trainable = False (Keras's GAN idiom): that would also switch D's BatchNorm to
            # inference mode. D's variables are simply not differentiated here.
            out_gen = tf.reshape(D(fake, training=True), [-1])
            loss_G = bce(out_gen, loss.real_label, loss.reduction)
        grads_G = _rescale(tape_G.gradient(loss_G, g_vars), loss.reduction, _rows(z))
        opt_G.apply(grads_G, list(G_params.values()))

        grads = None
        if with_grads:  # the gradients Adam saw (rescaled for per_example)
            grads = {**dict(zip(D_params, grads_D)), **dict(zip(G_params, grads_G))}
        scalars = {
            "loss_D": loss_D,
            "loss_G": loss_G,
            "D_x": tf.reduce_mean(tf.sigmoid(out_real)),
            "D_G_z1": tf.reduce_mean(tf.sigmoid(out_fake)),
            "D_G_z2": tf.reduce_mean(tf.sigmoid(out_gen)),
        }
        return scalars, grads

    fast = options.mode == "fast"
    jit = bool(options.extra.get("jit_compile", True)) if fast else False
    # Parity mode runs the same Python step as a tf.function WITHOUT XLA by default: with
    # grappler's float rewrites off (backend.configure) the graph runs the same kernels on the same
    # values as eager, bit-identical (tests/test_backend_tensorflow.py), at ~1/10 of eager
    # Keras's per-step cost. extra={"eager": True} runs it op by op for debugging.
    graph = fast or not options.extra.get("eager", False)
    # autograph=False: the step has no tensor-dependent Python control flow to convert.
    return (tf.function(step, jit_compile=jit, autograph=False) if graph else step), jit, graph


def _make_noise(rng: tf.random.Generator, latent_shape: tuple[int, ...], dtype: tf.dtypes.DType,
                jit_compile: bool) -> Callable[[int], tf.Tensor]:
    """Fast mode's device noise: ``batch_size`` -> N(0, 1) of shape ``(batch_size, *latent_shape)`` from ``rng``.

    XLA lowers the stateful Philox normal op to other draws than TF's own kernel (same seed, same
    generator: entirely different numbers, measured), and the noise used to be drawn inside the
    XLA-compiled step. So with ``jit_compile`` it is drawn by an XLA-compiled function of its own:
    the same draws as in the step (measured: bit-identical), while the step takes ``z`` as an input
    (the template draws it first). Without XLA, eager and graph draws are the same."""

    def draw(batch_size: int) -> tf.Tensor:
        return rng.normal((batch_size, *latent_shape), dtype=dtype)

    return tf.function(draw, jit_compile=True, autograph=False) if jit_compile else draw
