"""One training iteration in the tutorial's call order, with the spec's variants (see common/protocol.py).

A custom step with ``tf.GradientTape``, as d2l's TensorFlow tab writes it, not
``model.fit``: the iteration has two optimisers, three D forwards and one G
forward whose output feeds both losses, which ``fit`` cannot express.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from gansuite.common.draws import mask_key, pass_masks, passes_of
from gansuite.common.errors import GanSuiteError
from gansuite.common.layout import channels_last_shape
from gansuite.common.protocol import DEVICES, SCALARS, BuildOptions
from gansuite.common.spec import AdamSpec, Dropout, GANSpec, LossSpec


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


#: PyTorch's binary_cross_entropy (aten/src/ATen/native/Loss.cpp), as common/oracle_layers.py has them:
#: each log clamped at -100, and the backward's denominator max((1 - p) p, 1e-12).
_BCE_LOG_CLAMP = -100.0
_BCE_BACKWARD_EPS = 1e-12


def bce(out: tf.Tensor, label: float, loss: LossSpec) -> tf.Tensor:
    """The spec's BCE on D's output, reduced as the spec says. On a logit: BCE-with-logits, TF's formula
    being the oracle's, max(x, 0) - x*t + log(1 + exp(-|x|)). On D's Sigmoid output
    (``loss.on="probabilities"``, seed 002's ``nn.BCELoss()``): PyTorch's BCELoss (_bce_probabilities).
    keras.losses.BinaryCrossentropy is used for neither: it defaults to from_logits=False, and on
    probabilities it clips p to [1e-7, 1 - 1e-7] (a loss of at most 16.1 where PyTorch's reaches 100,
    and a zero gradient outside the clip), with the "sum_over_batch_size" reduction.
    "per_example" is back-propagated as the batch sum and reported as it; its 1/B is applied to the
    parameter gradients afterwards (_rescale)."""
    # tf.constant(label, dtype), not tf.cast(label, dtype): tf.cast of a Python float goes through float32.
    target = tf.fill(tf.shape(out), tf.constant(label, out.dtype))
    if loss.on == "probabilities":
        per_example = _bce_probabilities(out, target)
    else:
        per_example = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=out)
    return tf.reduce_mean(per_example) if loss.reduction == "mean" else tf.reduce_sum(per_example)


def _bce_probabilities(p: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
    """PyTorch's BCELoss per element, ``-(t max(log p, -100) + (1 - t) max(log(1 - p), -100))`` (log1p(-p),
    as the oracle writes log(1 - p)), with PyTorch's own backward ``(p - t) / max((1 - p) p, 1e-12)``.

    A custom gradient because the tape's derivative of the clamped logs is another function where a
    log is clamped: p rounded to exactly 1 (a float32 sigmoid of a logit above ~17) makes
    max(log1p(-p), -100) the constant -100, whose derivative the tape takes as 0 (D stops learning
    from that example), where PyTorch's formula gives p / 1e-12. Elsewhere both are the exact derivative."""
    clamp = tf.constant(_BCE_LOG_CLAMP, p.dtype)

    @tf.custom_gradient
    def per_element(p: tf.Tensor) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
        value = -(t * tf.maximum(tf.math.log(p), clamp) + (1.0 - t) * tf.maximum(tf.math.log1p(-p), clamp))

        def grad(dy: tf.Tensor) -> tf.Tensor:
            return dy * ((p - t) / tf.maximum((1.0 - p) * p, tf.constant(_BCE_BACKWARD_EPS, p.dtype)))

        return value, grad

    return per_element(p)


def _probability(out: tf.Tensor, loss: LossSpec) -> tf.Tensor:
    """D's output as a probability, for the D(x) / D(G(z)) scalars."""
    return out if loss.on == "probabilities" else tf.sigmoid(out)


def train_iteration(state: Any, real: tf.Tensor, z: tf.Tensor, with_grads: bool,
                    draws: dict[str, tf.Tensor]) -> tuple[dict[str, Any], dict[str, tf.Tensor] | None]:
    """One iteration: ``state.step_fn`` (a tf.function, or the eager step), scalars fetched to the host.

    ``draws`` (labels, the G step's fresh z, dropout masks: common/draws.py, already in this layout)
    are the step's fourth argument, a dict of tensors, so a tf.function traces once per set of keys
    and shapes, not per call. Fast mode draws what the caller did not give (_complete_draws).

    The first call with an input signature is timed for the benchmark harness (settings()):
    tracing alone, then tracing + (XLA) compilation + one step; later calls reuse the function."""
    with tf.device(state.device):
        draws = _complete_draws(state, real, z, draws)
        signature = (tuple(real.shape), tuple(z.shape), bool(with_grads),
                     tuple((k, tuple(v.shape)) for k, v in sorted(draws.items())))
        if not state.graph or signature in state.traced:
            return _to_host(state.step_fn(real, z, with_grads, draws))
        t0 = time.perf_counter()
        state.step_fn.get_concrete_function(real, z, with_grads, draws)
        t1 = time.perf_counter()
        out = _to_host(state.step_fn(real, z, with_grads, draws))
        t2 = time.perf_counter()
        if state.compile_s is None:
            state.trace_s, state.compile_s = t1 - t0, t2 - t0
        state.traced.add(signature)
        return out


def _needed_draws(spec: GANSpec, real_rows: int, rows: int) -> dict[str, tuple[str, tuple[int, ...], float]]:
    """Every draw one iteration of ``spec`` takes, keyed as common/draws.py keys them: ``key -> (kind,
    shape in this backend's layout (masks of a conv layer NHWC), dropout p)``; kind is "labels",
    "noise" or "mask". ``real_rows``: the real batch's rows, ``rows``: the noise rows."""
    need: dict[str, tuple[str, tuple[int, ...], float]] = {}
    fresh = spec.train.g_noise == "fresh"
    if spec.conditional:
        need["labels"] = ("labels", (real_rows,), 0.0)
        need["fake_labels"] = ("labels", (rows,), 0.0)
        if fresh:
            need["fake_labels_gen"] = ("labels", (rows,), 0.0)
    if fresh:
        need["z_gen"] = ("noise", (rows, *channels_last_shape(spec.latent_shape)), 0.0)
    for net, net_spec in (("G", spec.generator), ("D", spec.discriminator)):
        shapes = [net_spec.input_shape, *net_spec.shapes()]
        for i, layer in enumerate(net_spec.layers):
            if isinstance(layer, Dropout):
                for pass_name in passes_of(spec, net):
                    n = real_rows if pass_name == "real" else rows
                    need[mask_key(pass_name, net, i)] = ("mask", (n, *channels_last_shape(shapes[i])), layer.p)
    return need


def _complete_draws(state: Any, real: tf.Tensor, z: tf.Tensor, draws: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The draws the step takes: the caller's (parity mode: all of them, else a one-line error naming the
    missing ones, as the oracle's) and, in fast mode, whatever the caller did not give drawn on the
    device from the backend's seeded Philox generator (state.draws_fn): the fake labels, the G step's z
    and every dropout mask, and the real batch's labels too when none are given (the backend cannot
    know them; a caller training a CGAN in fast mode passes ``draws={"labels": ...}``). Keys the spec
    does not use are dropped, so the step's signature stays that of the spec."""
    need = _needed_draws(state.spec, int(real.shape[0]), int(z.shape[0]))
    given = {k: v for k, v in draws.items() if k in need}
    missing = tuple(k for k in need if k not in given)
    if not missing:
        return given
    if state.options.mode == "parity":
        raise GanSuiteError(f"draws: model {state.spec.name!r} needs {', '.join(missing)} from common/draws.py "
                            "(Streams.batch(i).draws)")
    return {**given, **state.draws_fn(int(real.shape[0]), int(z.shape[0]), missing)}


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


def _dense(grads: list[tf.Tensor | tf.IndexedSlices]) -> list[tf.Tensor]:
    """The tape's gradients as dense tensors. An embedding table's gradient is ``tf.IndexedSlices`` (the
    gradient of tf.gather: one row per example and pass); converting sums each class's rows
    (unsorted_segment_sum, in row order), the oracle's ``np.add.at``. Adam and the exported gradients
    take the dense table."""
    return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]


def _fast_uses_xla(options: BuildOptions, convolutional: bool) -> bool:
    """Fast mode compiles with XLA (``jit_compile=True``) on a GPU, and on a CPU for models without
    a convolution, unless ``extra={"jit_compile": ...}`` says otherwise. Chosen by measurement (2-core
    Zen 4 CPU, TF 2.21, oneDNN on, float32, the benchmark harness):

    * convolutional (full-size DCGAN, batch 64): XLA 44.9 img/s with oneDNN off and 43.8 with it on
      (XLA's CPU backend does not call oneDNN's convolutions); a plain tf.function, 61.2 img/s;
    * dense-only, where a step is a chain of small ops and the graph executor's per-op dispatch is
      the cost XLA's fusion removes (2026-12-06): the Gaussian GAN at batch 8, 4,527 vs 2,227
      examples/s a step and 103,843 vs 16,497 in ``train_epoch``'s loop (6.3x); at batch 512,
      168,707 vs 154,714; seed 002's MLP GAN at batch 100, 7,747 vs 6,380; its VAE at batch 128,
      14,350 vs 13,166, at batch 16 3,378 vs 2,624.

    On a GPU XLA fuses the BatchNorm and Adam element-wise chains, the reason it was fast mode in
    the first place."""
    default = DEVICES[options.device] == "cuda" or not convolutional
    return bool(options.extra.get("jit_compile", default))


def _make_step(options: BuildOptions, spec: GANSpec, G: Any, D: Any,
               G_params: dict[str, keras.Variable], D_params: dict[str, keras.Variable], opt_G: SpecAdam,
               opt_D: SpecAdam) -> tuple[Callable, bool, bool]:
    """The iteration as a function of ``(real, z, with_grads, draws)``: ``(step_fn, jit_compile, graph)``, where
    ``step_fn`` is a tf.function (``graph``; XLA-compiled if ``jit_compile``) or the eager Python step.

    ``G`` / ``D``: models.SpecNet. ``G_params`` / ``D_params``: canonical name -> trainable variable,
    canonical order. Every forward runs with ``training=True``: BatchNorm uses batch statistics and
    updates its running ones in every forward, as PyTorch's train mode does. Each forward gets its
    pass's labels and dropout masks from ``draws`` (common/draws.py's keys): D(real) the batch's
    labels and ``mask/real/D.*``, G and D(fake) the fake labels and ``mask/fake/*``, the G step
    ``fake_labels_gen`` and ``mask/gen/*`` with ``train.g_noise="fresh"``.

    The spec's options: ``train.d_order`` (D's real pass before or after G(z) and D(fake): only
    the order of D's BN running-stat updates changes), ``train.d_backward`` (one gradient of the
    summed loss, or one per pass summed by hand), ``loss.reduction == "per_example"`` (1/B on
    the gradients: B the real rows for D, z's rows for G). ``real`` and ``z`` may have different
    rows (``train.noise_batch``): every reduction runs over its own batch. ``train.g_noise="fresh"``
    (seed 002): the G step runs G again, on ``draws["z_gen"]``, after D's Adam step.
    """
    loss, train = spec.loss, spec.train
    real_first, separate = train.d_order == "real_first", train.d_backward == "separate"
    fresh = train.g_noise == "fresh"

    def step(real: tf.Tensor, z: tf.Tensor, with_grads: bool,
             draws: dict[str, tf.Tensor]) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor] | None]:
        """D step then G step, exactly the tutorial's sequence. Returns tensors (no host sync)."""
        # The tf.Variables behind the Keras variables: GradientTape.watch accepts only TF types.
        g_vars, d_vars = [v.value for v in G_params.values()], [v.value for v in D_params.values()]
        labels, fake_labels = draws.get("labels"), draws.get("fake_labels")  # None: an unconditional GAN
        # One tape per net, each watching only its own variables: tape_D then never records G(z)
        # (PyTorch's fake.detach()), and tape_G records G(z) once, here, for the G step below.
        with tf.GradientTape(watch_accessed_variables=False) as tape_G:
            tape_G.watch(g_vars)

            # -- D step: maximise log D(x) + log(1 - D(G(z))) --
            # persistent: the "separate" backward asks the tape for two gradients.
            with tf.GradientTape(watch_accessed_variables=False, persistent=separate) as tape_D:
                tape_D.watch(d_vars)
                if real_first:  # the tutorial: D(real), G(z), D(fake)
                    out_real = tf.reshape(D.run(real, True, labels, pass_masks(draws, "real", "D")), [-1])
                # G's D-step forward, recorded by tape_G too: the "reuse" G step differentiates through it
                fake = G.run(z, True, fake_labels, pass_masks(draws, "fake", "G"))
                out_fake = tf.reshape(D.run(tf.stop_gradient(fake), True, fake_labels,
                                            pass_masks(draws, "fake", "D")), [-1])
                if not real_first:  # seed 004: G(z), D(fake), then D(real)
                    out_real = tf.reshape(D.run(real, True, labels, pass_masks(draws, "real", "D")), [-1])
                l_real = bce(out_real, loss.real_label, loss)
                l_fake = bce(out_fake, loss.fake_label, loss)
                loss_D = loss.d_loss_scale * (l_real + l_fake)
                if separate:
                    scaled = {"real": loss.d_loss_scale * l_real, "fake": loss.d_loss_scale * l_fake}
            with tape_G.stop_recording():  # D's gradient and update are no part of G's graph
                if separate:
                    # Two backward passes, in the order of the forwards, their gradients summed
                    # (the tutorial's errD_real.backward(); errD_fake.backward(); seed 004's
                    # copied-and-added gradients). a + b == b + a in IEEE: the order is not a number.
                    first, second = ("real", "fake") if real_first else ("fake", "real")
                    g_first = _dense(tape_D.gradient(scaled[first], d_vars))
                    g_second = _dense(tape_D.gradient(scaled[second], d_vars))
                    grads_D = [a + b for a, b in zip(g_first, g_second)]
                    del tape_D
                else:
                    grads_D = _dense(tape_D.gradient(loss_D, d_vars))
                grads_D = _rescale(grads_D, loss.reduction, _rows(real))
                opt_D.apply(grads_D, list(D_params.values()))

            # -- G step: maximise log D(G(z)), through the updated D: the same fake, or G on a new z --
            # Not D.trainable = False (Keras's GAN idiom): that would also switch D's BatchNorm to
            # inference mode. D's variables are simply not differentiated here.
            if fresh:  # seed 002: z = torch.randn(...); fake_images = G(z), after D's step
                gen_labels = draws.get("fake_labels_gen")
                fake = G.run(draws["z_gen"], True, gen_labels, pass_masks(draws, "gen", "G"))
            else:
                gen_labels = fake_labels
            out_gen = tf.reshape(D.run(fake, True, gen_labels, pass_masks(draws, "gen", "D")), [-1])
            loss_G = bce(out_gen, loss.real_label, loss)
        grads_G = _rescale(_dense(tape_G.gradient(loss_G, g_vars)), loss.reduction, _rows(fake))  # B: G step's rows
        opt_G.apply(grads_G, list(G_params.values()))

        grads = None
        if with_grads:  # the gradients Adam saw (rescaled for per_example)
            grads = {**dict(zip(D_params, grads_D)), **dict(zip(G_params, grads_G))}
        scalars = {
            "loss_D": loss_D,
            "loss_G": loss_G,
            "D_x": tf.reduce_mean(_probability(out_real, loss)),
            "D_G_z1": tf.reduce_mean(_probability(out_fake, loss)),
            "D_G_z2": tf.reduce_mean(_probability(out_gen, loss)),
        }
        return scalars, grads

    fast = options.mode == "fast"
    jit = _fast_uses_xla(options, spec.convolutional) if fast else False
    # Parity mode runs the same Python step as a tf.function WITHOUT XLA by default: with
    # grappler's float rewrites off (backend.configure) the graph runs the same kernels on the same
    # values as eager, bit-identical (tests/test_backend_tensorflow.py), at ~1/10 of eager
    # Keras's per-step cost. extra={"eager": True} runs it op by op for debugging.
    graph = fast or not options.extra.get("eager", False)
    # autograph=False: the step has no tensor-dependent Python control flow to convert.
    return (tf.function(step, jit_compile=jit, autograph=False) if graph else step), jit, graph


def _train_epoch(state: Any, reals: tf.Tensor, zs: tf.Tensor | None) -> dict[str, np.ndarray]:
    """backend.train_epoch: ``len(reals)`` iterations as ONE call of a tf.function, a ``tf.while_loop``
    over the stacked batches (the way Keras's ``steps_per_execution`` runs several ``train_step``s
    per call), each iteration ``state.step_fn`` itself: the same step, the same Adam, the same
    BatchNorm updates as as many ``train_step`` calls, without a Python round trip per iteration.
    ``zs`` None: each iteration's z from the device generator (fast mode). It takes no other draws:
    a model that needs some (fresh z, dropout) runs in fast mode only, on device draws; parity
    mode, and a conditional GAN (its real labels come with the data), are refused."""
    spec = state.spec
    real_rows = int(reals.shape[1])
    rows = spec.train.noise_rows(real_rows) if zs is None else int(zs.shape[1])  # train_step's device noise rows
    needed = tuple(_needed_draws(spec, real_rows, rows))
    if spec.conditional or (state.options.mode == "parity" and needed):
        raise GanSuiteError(f"train_epoch: model {spec.name!r} needs per-iteration draws (" +
                            ("the real batch's labels" if spec.conditional else "fresh z, dropout masks") +
                            "), which train_epoch does not take" + ("" if spec.conditional else " in parity mode") +
                            "; use train_step" + ("" if spec.conditional else ", or fast mode (device draws)"))
    key = (tuple(reals.shape), None if zs is None else tuple(zs.shape))
    if key not in state.epoch_fns:
        state.epoch_fns[key] = _make_epoch(state, rows, needed, zs is None)
    with tf.device(state.device):
        scalars = state.epoch_fns[key](reals, zs if zs is not None else tf.zeros([0], state.dtype))
    return {k: np.asarray(v.numpy(), dtype=np.float64) for k, v in scalars.items()}


def _make_epoch(state: Any, rows: int, needed: tuple[str, ...], device_z: bool) -> Callable:
    """The tf.function of :func:`_train_epoch` for one stack shape (XLA-compiled with the step when
    the step is: a while loop inside one cluster)."""

    def epoch(reals: tf.Tensor, zs: tf.Tensor) -> dict[str, tf.Tensor]:
        n = tf.shape(reals)[0]
        arrays = {k: tf.TensorArray(state.dtype, size=n) for k in SCALARS}

        def body(i: tf.Tensor, arrays: dict[str, tf.TensorArray]) -> tuple[tf.Tensor, dict[str, tf.TensorArray]]:
            real = reals[i]
            z = state.noise_fn(rows) if device_z else zs[i]
            draws = state.draws_fn(int(real.shape[0]), rows, needed) if needed else {}
            scalars, _ = state.step_fn(real, z, False, draws)
            return i + 1, {k: arrays[k].write(i, tf.cast(scalars[k], state.dtype)) for k in SCALARS}

        _, arrays = tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), arrays))
        return {k: a.stack() for k, a in arrays.items()}

    return tf.function(epoch, jit_compile=state.jit_compile, autograph=False)


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


def _make_draws(rng: tf.random.Generator, spec: GANSpec, dtype: tf.dtypes.DType,
                jit_compile: bool) -> Callable[[int, int, tuple[str, ...]], dict[str, tf.Tensor]]:
    """Fast mode's own draws: ``(real_rows, rows, keys)`` -> those of common/draws.py's draws (train._needed_draws)
    from ``rng``, the backend's seeded Philox generator: labels uniform in 0..k-1 (int64), the fresh z
    N(0, 1), dropout masks ``(u >= p) / (1 - p)`` with u ~ U[0, 1), pre-scaled as the host's. Outside
    the XLA step, XLA-compiled on its own, for the reason _make_noise gives; the step then multiplies
    by the masks whoever drew them (one code path, one trace for host-fed and device draws)."""

    def draw(real_rows: int, rows: int, keys: tuple[str, ...]) -> dict[str, tf.Tensor]:
        need, out = _needed_draws(spec, real_rows, rows), {}
        for key in keys:
            kind, shape, p = need[key]
            if kind == "labels":
                out[key] = rng.uniform(shape, minval=0, maxval=spec.num_classes, dtype=tf.int64)
            elif kind == "noise":
                out[key] = rng.normal(shape, dtype=dtype)
            else:
                keep = rng.uniform(shape, dtype=dtype) >= tf.constant(p, dtype)
                out[key] = tf.cast(keep, dtype) * tf.constant(1.0 / (1.0 - p), dtype)
        return out

    return tf.function(draw, jit_compile=True, autograph=False) if jit_compile else draw
