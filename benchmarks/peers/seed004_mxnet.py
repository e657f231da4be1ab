"""Seed 004 (MXNet's symbolic DCGAN, ``mx.sym`` + ``mx.mod.Module``) as a checked port of ``dcgan-mxnet``.

Kept from the seed: ``make_dcgan_sym`` verbatim (``mx.sym.Deconvolution`` / ``Convolution`` /
``BatchNorm(fix_gamma=True, eps=1e-5 + 1e-12)`` / ``LeakyReLU(slope=0.2)`` / ``Activation`` /
``LogisticRegressionOutput``), the two ``mx.mod.Module``s bound as the seed binds them (``modG``
with ``data_names=('rand',)`` and no labels; ``modD`` with ``label_names=('label',)`` and
``inputs_need_grad=True``), ``init_optimizer('adam', {'learning_rate': 2e-4, 'wd': 0., 'beta1':
0.5})`` (MXNet's Adam; ``Module`` sets ``rescale_grad = 1/batch_size``), and the loop body of
``for t, batch in enumerate(train_iter)`` verbatim in :meth:`SeedPort.train_step`: G forward,
D on ``outG`` with label 0 forward/backward, the gradients copied, D on the real batch with label
1 forward/backward, the copies added by hand, ``modD.update()``, D on ``outG`` with label 1
forward/backward, ``diffD = modD.get_input_grads()``, ``modG.backward(diffD)``, ``modG.update()``.

Replaced: ``rand_iter.next()`` and the ``NDArrayIter`` batch by the given ``z`` and ``real``
(wrapped in ``mx.io.DataBatch``); ``init_params(mx.init.Normal(0.02))``'s draws by the canonical
tensors, loaded with ``set_params`` (arg_params: the weights, ``gamma`` = 1 -- fix_gamma holds it
there and it is not a canonical tensor --, ``beta``; aux_params: ``moving_mean`` / ``moving_var``
from ``running_mean`` / ``running_var``), exported back without gamma. Left out: the metrics,
the monitor, the visualisation and the checkpoints. ``ctx = mx.cpu()`` (the seed: ``mx.gpu(0)``).

Losses: the seed computes none (its ``fentropy`` metric is a mean with ``+1e-12``). Reported
here, from the ``LogisticRegressionOutput`` outputs p = sigmoid(logit) after each forward, as
the ``per_example`` reduction reports them (the batch SUM; the 1/B lives in rescale_grad):
``loss_D = sum_real -log p + sum_fake -log(1 - p)`` and ``loss_G = sum -log p`` on D after its
step. ``discriminate`` returns those probabilities (``outputs = "probabilities"``).

dtype: ``float64`` binds both Modules with float64 ``DataDesc``s for ``rand``, ``data`` and
``label``; every op here has a float64 CPU kernel, so the whole graph, its parameters, gradients
and Adam moments are float64 (the seed's ``label = mx.nd.zeros((batch_size,))`` gets the
dtype so the float64 Module is fed float64 labels: 0 and 1 are exact either way).

What differs from the float64 oracle, measured (tests/test_backend_mxnet.py), and why -- true
properties of the seed's code, each a C++ ``float`` operator parameter applied in a float64 graph:

* ``LeakyReLU(act_type='leaky', slope=0.2)``: ``LeakyReLUParam.slope`` is a float and the
  kernel (``mshadow_op::xelu``) computes the negative side as ``float(x) * float(slope)``, in
  float32 whatever the dtype (measured: ``y == float64(float32(x) * 0.2f)`` exactly); its
  derivative is 0.2f. D's outputs are ~1e-8 off the oracle (forward check: 1.1e-8 on
  dcgan-mxnet-tiny, 3.1e-8 on dcgan-mxnet at batch 8).
* ``BatchNorm``'s ``momentum`` (default 0.9) is a float: ``moving = moving * 0.9f + stat *
  (1 - 0.9f)``, so the running statistics are ~1e-7 off (1 - 0.9f = 0.100000024). MXNet's CPU op
  updates them in BACKWARD, from the statistics saved by the last forward, with the biased
  variance (recovered as ``1/invstd^2 - eps``): after every forward/backward pair, the spec's
  order (fake first).
* MXNet's Adam (``adam_update``): lr (the step ``lr * sqrt(1-b2^t)/(1-b1^t)``, formed in Python,
  then passed as a string and parsed by dmlc's own strtof, which is not always the nearest float:
  one ulp off at t = 3, 4, 5 for lr 2e-4), ``beta2`` (0.999f: ``1 - beta2`` is 0.000999987, v 1.3e-5
  off) and ``epsilon`` are floats (beta1 = 0.5 and rescale_grad = 1/B are exact), so parameters
  after a step are off by ~6e-6 of the update, and more where Adam's first step amplifies a
  near-zero gradient.

Measured (float64, vs the oracle): dcgan-mxnet-tiny forward G 2.5e-15, D 1.1e-8; one iteration
losses 9.6e-7, parameters 2.6e-4. dcgan-mxnet (the compare spec, batch 8): forward G 2.4e-15,
D 3.1e-8; one iteration losses 7.5e-6, parameters 7.3e-4; 3 iterations: losses 6.6e-4,
parameters 0.24 (Adam's first steps turning the float32 differences in near-zero gradients into
O(lr) moves). The test reproduces the tiny port to <= 1e-12 after one iteration and <= 1e-10
over 4 with the float64 oracle given exactly those float constants (LeakyReLU in float32 with
0.2f, momentum 1 - 0.9f, a numpy model of the Adam kernel with MXNet's parsed constants), which
pins every difference on them; at full size the same model gives 8.5e-12 after one iteration
(losses 8e-16) and 9.5e-10, 1.9e-9 after two and three (roundoff of a different operation
order, amplified as above; not traced further).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

with warnings.catch_warnings():
    # mxnet 1.9's import touches numpy aliases and distutils that numpy 1.23 deprecates.
    warnings.simplefilter("ignore", DeprecationWarning)
    import mxnet as mx

from gansuite.common.spec import BatchNorm, Conv2d, ConvTranspose2d, GANSpec, NetSpec


def make_dcgan_sym(ngf, ndf, nc, no_bias=True, fix_gamma=True, eps=1e-5 + 1e-12):
    BatchNorm = mx.sym.BatchNorm
    # 生成网络G
    # 输入生成网络G的变量,这个是潜在空间
    rand = mx.sym.Variable('rand')
    g1 = mx.sym.Deconvolution(rand, name='g1', kernel=(4,4), num_filter=ngf*8, no_bias=no_bias)
    gbn1 = BatchNorm(g1, name='gbn1', fix_gamma=fix_gamma, eps=eps)
    gact1 = mx.sym.Activation(gbn1, name='gact1', act_type='relu')
    g2 = mx.sym.Deconvolution(gact1, name='g2', kernel=(4,4), stride=(2,2), pad=(1,1), num_filter=ngf*4, no_bias=no_bias)
    gbn2 = BatchNorm(g2, name='gbn2', fix_gamma=fix_gamma, eps=eps)
    gact2 = mx.sym.Activation(gbn2, name='gact2', act_type='relu')
    g3 = mx.sym.Deconvolution(gact2, name='g3', kernel=(4,4), stride=(2,2), pad=(1,1), num_filter=ngf*2, no_bias=no_bias)
    gbn3 = BatchNorm(g3, name='gbn3', fix_gamma=fix_gamma, eps=eps)
    gact3 = mx.sym.Activation(gbn3, name='gact3', act_type='relu')
    g4 = mx.sym.Deconvolution(gact3, name='g4', kernel=(4,4), stride=(2,2), pad=(1,1), num_filter=ngf, no_bias=no_bias)
    gbn4 = BatchNorm(g4, name='gbn4', fix_gamma=fix_gamma, eps=eps)
    gact4 = mx.sym.Activation(gbn4, name='gact4', act_type='relu')
    g5 = mx.sym.Deconvolution(gact4, name='g5', kernel=(4,4), stride=(2,2), pad=(1,1), num_filter=nc, no_bias=no_bias)
    # 生成网络G最后得到一张相片
    gout = mx.sym.Activation(g5, name='gact5', act_type='tanh')
    # 判别网络D,这里里的结构与一般的分类网络区别不大
    data = mx.sym.Variable('data')
    label = mx.sym.Variable('label')
    d1 = mx.sym.Convolution(data, name='d1', kernel=(4,4), stride=(2,2), pad=(1,1), num_filter=ndf, no_bias=no_bias)
    dact1 = mx.sym.LeakyReLU(d1, name='dact1', act_type='leaky', slope=0.2)
    d2 = mx.sym.Convolution(dact1, name='d2', kernel=(4,4), stride=(2,2), pad=(1,1), num_filter=ndf*2, no_bias=no_bias)
    dbn2 = BatchNorm(d2, name='dbn2', fix_gamma=fix_gamma, eps=eps)
    dact2 = mx.sym.LeakyReLU(dbn2, name='dact2', act_type='leaky', slope=0.2)
    d3 = mx.sym.Convolution(dact2, name='d3', kernel=(4,4), stride=(2,2), pad=(1,1), num_filter=ndf*4, no_bias=no_bias)
    dbn3 = BatchNorm(d3, name='dbn3', fix_gamma=fix_gamma, eps=eps)
    dact3 = mx.sym.LeakyReLU(dbn3, name='dact3', act_type='leaky', slope=0.2)
    d4 = mx.sym.Convolution(dact3, name='d4', kernel=(4,4), stride=(2,2), pad=(1,1), num_filter=ndf*8, no_bias=no_bias)
    dbn4 = BatchNorm(d4, name='dbn4', fix_gamma=fix_gamma, eps=eps)
    dact4 = mx.sym.LeakyReLU(dbn4, name='dact4', act_type='leaky', slope=0.2)
    d5 = mx.sym.Convolution(dact4, name='d5', kernel=(4,4), num_filter=1, no_bias=no_bias)
    d5 = mx.sym.Flatten(d5)
    # 用逻辑回归计算最后的loss
    dloss = mx.sym.LogisticRegressionOutput(data=d5, label=label, name='dloss')
    # 返回这G与D这两个网络
    return gout, dloss


def _seed_names(net: NetSpec, prefix: str) -> dict[int, str]:
    """Spec layer index -> the seed's symbol name: convolutions ``g1..g5`` / ``d1..d5`` in order,
    each BatchNorm named after the convolution before it (``gbn1`` after ``g1``, ``dbn2`` after ``d2``)."""
    names, convs = {}, 0
    for i, layer in enumerate(net.layers):
        if isinstance(layer, (Conv2d, ConvTranspose2d)):
            convs += 1
            names[i] = f"{prefix}{convs}"
        elif isinstance(layer, BatchNorm):
            names[i] = f"{prefix}bn{convs}"
    return names


#: canonical tensor -> (the seed's parameter suffix, aux state or not)
_TENSORS = {"weight": ("weight", False), "bias": ("beta", False), "running_mean": ("moving_mean", True),
            "running_var": ("moving_var", True)}


class SeedPort:
    """Seed 004's Modules and loop body, driven from the canonical start (module docstring)."""

    outputs = "probabilities"  # LogisticRegressionOutput: D ends in a sigmoid

    def __init__(self, spec: GANSpec, params: dict[str, np.ndarray], dtype: str) -> None:
        G, D = spec.generator, spec.discriminator
        nz, nc = G.input_shape[0], D.input_shape[0]
        ngf, ndf = G.layers[0].out_channels // 8, D.layers[0].out_channels
        batch_size, ctx = spec.train.batch_size, mx.cpu()
        self.ctx, self.dtype = ctx, np.dtype(dtype)
        self.names = {f"G.{i}": n for i, n in _seed_names(G, "g").items()}
        self.names.update({f"D.{i}": n for i, n in _seed_names(D, "d").items()})

        symG, symD = make_dcgan_sym(ngf, ndf, nc)
        self.label = mx.nd.zeros((batch_size,), ctx=ctx, dtype=dtype)  # the seed's, in dtype
        # =============module G=============
        modG = mx.mod.Module(symbol=symG, data_names=('rand',), label_names=None, context=ctx)
        modG.bind(data_shapes=[mx.io.DataDesc('rand', (batch_size, nz, 1, 1), dtype)])  # rand_iter.provide_data
        # =============module D=============
        modD = mx.mod.Module(symbol=symD, data_names=('data',), label_names=('label',), context=ctx)
        modD.bind(data_shapes=[mx.io.DataDesc('data', (batch_size, nc, 64, 64), dtype)],
                  label_shapes=[mx.io.DataDesc('label', (batch_size,), dtype)],
                  inputs_need_grad=True)
        for mod, net in ((modG, "G"), (modD, "D")):
            # Replaces init_params(initializer=mx.init.Normal(0.02)): the canonical tensors.
            mod.set_params(*self._seed_params(spec, params, net))
            mod.init_optimizer(
                optimizer='adam',
                optimizer_params={
                    'learning_rate': spec.train.optim_G.lr if net == "G" else spec.train.optim_D.lr,
                    'wd': 0.,
                    'beta1': spec.train.optim_G.beta1 if net == "G" else spec.train.optim_D.beta1,
                })
        self.modG, self.modD = modG, modD

    def _seed_params(self, spec: GANSpec, params: dict[str, np.ndarray], net: str):
        """(arg_params, aux_params) in the seed's names; gamma = 1 for every fix_gamma BatchNorm."""
        arg, aux = {}, {}
        for name, value in params.items():
            layer, tensor = name.rsplit(".", 1)
            if not layer.startswith(net + "."):
                continue
            suffix, is_aux = _TENSORS[tensor]
            (aux if is_aux else arg)[f"{self.names[layer]}_{suffix}"] = self._array(value)
            if tensor == "bias" and layer in self.names and "bn" in self.names[layer]:
                arg[f"{self.names[layer]}_gamma"] = mx.nd.ones(value.shape, ctx=self.ctx, dtype=self.dtype)
        return arg, aux

    def _array(self, x: np.ndarray) -> mx.nd.NDArray:
        return mx.nd.array(np.ascontiguousarray(x), ctx=self.ctx, dtype=self.dtype)

    def generate(self, z: np.ndarray) -> np.ndarray:
        # is_train=True: BatchNorm on the batch statistics (the seed's G only ever runs so). MXNet's
        # CPU BatchNorm moves its running statistics in backward only: a forward changes nothing.
        self.modG.forward(mx.io.DataBatch([self._array(z)]), is_train=True)
        return self.modG.get_outputs()[0].asnumpy().astype(np.float64)

    def discriminate(self, x: np.ndarray) -> np.ndarray:
        self.modD.forward(mx.io.DataBatch([self._array(x)], [self.label]), is_train=True)
        return self.modD.get_outputs()[0].asnumpy().astype(np.float64).reshape(-1)

    def train_step(self, real: np.ndarray, z: np.ndarray) -> dict[str, float]:
        """One pass of the seed's ``for t, batch in enumerate(train_iter)`` body (metrics left out)."""
        modG, modD, label = self.modG, self.modD, self.label
        rbatch = mx.io.DataBatch([self._array(z)])  # replaces rand_iter.next()
        batch = mx.io.DataBatch([self._array(real)])  # replaces the NDArrayIter batch
        # 首先生成对抗样本
        modG.forward(rbatch, is_train=True)
        outG = modG.get_outputs()
        # update discriminator on fake
        label[:] = 0
        modD.forward(mx.io.DataBatch(outG, [label]), is_train=True)
        modD.backward()
        #modD.update()
        gradD = [[grad.copyto(grad.context) for grad in grads] for grads in modD._exec_group.grad_arrays]
        p_fake = self._probabilities()  # where the seed calls modD.update_metric(mD, [label])
        # update discriminator on real
        label[:] = 1
        batch.label = [label]
        modD.forward(batch, is_train=True)
        modD.backward()
        for gradsr, gradsf in zip(modD._exec_group.grad_arrays, gradD):
            for gradr, gradf in zip(gradsr, gradsf):
                gradr += gradf
        modD.update()
        p_real = self._probabilities()  # modD.update_metric(mD, [label])
        # update generator
        label[:] = 1
        modD.forward(mx.io.DataBatch(outG, [label]), is_train=True)
        modD.backward()
        diffD = modD.get_input_grads()
        modG.backward(diffD)
        modG.update()
        p_gen = self._probabilities()  # mG.update([label], modD.get_outputs())
        loss_D = float(np.sum(-np.log(p_real)) + np.sum(-np.log1p(-p_fake)))
        return {"loss_D": loss_D, "loss_G": float(np.sum(-np.log(p_gen)))}

    def _probabilities(self) -> np.ndarray:
        """D's LogisticRegressionOutput, sigmoid(logit) per example, as float64 on the host."""
        return self.modD.get_outputs()[0].asnumpy().astype(np.float64).reshape(-1)

    def export_params(self) -> dict[str, np.ndarray]:
        """The canonical tensors from both Modules (gamma omitted: fix_gamma holds it at 1)."""
        # MXNet's CPU BatchNorm writes moving_mean/moving_var from inside its BACKWARD op, but the
        # engine does not order a later read of those arrays after that write. Measured: after the backend had run in the same process,
        # get_params() (its copies of the aux arrays) returned G's statistics of the previous
        # iteration, every iteration (the "one-iteration lag" of the comparison report); a
        # fresh process usually wins the race. waitall() finishes every pending op first.
        mx.nd.waitall()
        out = {}
        for mod, net in ((self.modG, "G"), (self.modD, "D")):
            arg, aux = mod.get_params()
            for layer, seed in self.names.items():
                if not layer.startswith(net + "."):
                    continue
                tensors = ("bias", "running_mean", "running_var") if "bn" in seed else ("weight",)
                for tensor in tensors:
                    suffix, is_aux = _TENSORS[tensor]
                    out[f"{layer}.{tensor}"] = (aux if is_aux else arg)[f"{seed}_{suffix}"].asnumpy().astype(np.float64)
        return out

    @staticmethod
    def versions() -> dict[str, Any]:
        return {"mxnet": mx.__version__}
