"""One training iteration in the tutorial's call order, with the spec's variants (see common/protocol.py)."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gansuite.common.draws import pass_masks
from gansuite.common.protocol import SCALARS, BuildOptions, dense_multi_step_refusal
from gansuite.common.spec import AdamSpec, GANSpec, LossSpec

from .models import _autocast


class _EpsHatAdam(torch.optim.Optimizer):
    """Adam in the "eps-hat" form of Keras and MXNet (AdamSpec.form="eps_hat"):
    ``p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``.

    torch.optim.Adam adds eps to sqrt(v_hat), after the bias correction, and has no switch for
    this form (rescaling eps by sqrt(1 - b2^t) per step is the same maths but not the same
    rounding). The step size is formed in float64 in Python, as MXNet's optimizer does, and the
    moments are updated as the oracle writes them (``b1 m + (1 - b1) g``). State keys and the
    per-parameter float ``step`` tensor are torch.optim.Adam's, so write_adam/read_adam serve both."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float],
                 eps: float) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            (b1, b2), lr, eps = group["betas"], group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:  # created lazily at the first step, as torch.optim.Adam does
                    st.update(step=torch.tensor(0.0, dtype=torch.float32), exp_avg=torch.zeros_like(p),
                              exp_avg_sq=torch.zeros_like(p))
                st["step"] += 1
                t = int(st["step"].item())
                m, v, g = st["exp_avg"], st["exp_avg_sq"], p.grad
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
                p.addcdiv_(m, v.sqrt().add_(eps), value=-alpha)


def make_adam(cfg: AdamSpec, params: Iterable[torch.nn.Parameter], mode: str) -> torch.optim.Optimizer:
    # form="torch": torch.optim.Adam is the spec's form already: lr * m_hat / (sqrt(v_hat) + eps).
    # weight_decay=0 and amsgrad=False are the defaults; set so nobody has to look them up.
    # Parity uses the single-tensor reference loop (foreach=False): same maths, fixed op order.
    # Fast mode uses the fused kernel for float32 (one kernel for every tensor of the net).
    params = list(params)
    if cfg.form == "eps_hat":  # Keras / MXNet: no torch.optim equivalent (see _EpsHatAdam)
        return _EpsHatAdam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    fused = mode == "fast" and params[0].dtype == torch.float32
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                            weight_decay=0.0, amsgrad=False, foreach=False if not fused else None,
                            fused=True if fused else None)


def bce(out: torch.Tensor, label: float, loss: LossSpec) -> torch.Tensor:
    """The spec's BCE on D's output. On a logit: BCE-with-logits (the tutorial's Sigmoid + BCELoss,
    identical unless |logit| > ~16). On D's Sigmoid output (``loss.on="probabilities"``, seed 002's
    ``nn.BCELoss()``): F.binary_cross_entropy, which clamps each log at -100 -- the spec's definition.
    "per_example" (MXNet's per-example loss + Trainer.step(B)) is back-propagated as the SUM; its
    1/B is applied to the parameter gradients afterwards (_rescale), as MXNet's rescale_grad."""
    target = torch.full_like(out, label)
    reduction = "sum" if loss.reduction == "per_example" else loss.reduction
    if loss.on == "probabilities":
        return F.binary_cross_entropy(out, target, reduction=reduction)
    return F.binary_cross_entropy_with_logits(out, target, reduction=reduction)


def _probability(out: torch.Tensor, loss: LossSpec) -> torch.Tensor:
    """D's output as a probability, for the D(x) / D(G(z)) scalars."""
    return out if loss.on == "probabilities" else torch.sigmoid(out)


def _rescale(module: torch.nn.Module, reduction: str, batch: int) -> None:
    """per_example: every parameter gradient times 1/B before Adam (PyTorch's losses have no such
    mode; MXNet's Trainer.step(B) / Module do it in the optimizer)."""
    if reduction == "per_example":
        scale = 1.0 / batch
        for p in module.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)


class _Draws:
    """The iteration's labels, fresh noise and dropout masks: the host's (parity, and fast mode fed
    from the host), and in fast mode whatever the host did not give (with device noise the template
    passes only the real labels) from the backend's device RNG, and PyTorch's own dropout when no
    masks were given (``own_dropout``). Parity mode's draws are complete (Backend.train_step checks)."""

    def __init__(self, state: Any, draws: dict[str, torch.Tensor], rows: int) -> None:
        spec, fast = state.spec, state.options.mode == "fast"
        self.draws = dict(draws)
        self.own_dropout = fast and not any(k.startswith("mask/") for k in draws)
        if not fast:
            return
        rng = state.rng
        if spec.conditional:
            for key in ("fake_labels", "fake_labels_gen"):
                if key not in self.draws:
                    self.draws[key] = torch.randint(0, spec.num_classes, (rows,), generator=rng, device=state.device)
        if spec.train.g_noise == "fresh" and "z_gen" not in self.draws:
            self.draws["z_gen"] = torch.randn((rows, *spec.latent_shape), generator=rng, device=state.device,
                                              dtype=state.dtype)

    def get(self, key: str) -> torch.Tensor | None:
        return self.draws.get(key)

    def masks(self, pass_name: str, net: str) -> dict[int, torch.Tensor]:
        return pass_masks(self.draws, pass_name, net)


def _d_passes(state: Any, real: torch.Tensor, z: torch.Tensor, draws: _Draws) -> tuple[torch.Tensor, ...]:
    """D's two passes and their backward(s), as train.d_order and train.d_backward say:
    real first (the tutorial) or fake first (seed 004: G(z), D(fake), D(real); only the order in
    which D's BN running statistics advance differs); one backward of the summed loss ("joint") or
    one backward per pass ("separate": the tutorial's errD_real.backward(); errD_fake.backward()),
    the two gradients summed by autograd's accumulation into .grad. z may have more rows than real
    (train.noise_batch="batch_size"): each BCE reduces over its own batch. A conditional GAN: D(real)
    sees the batch's labels, G and D(fake) the fake labels. Under mixed precision each pass's forwards
    run in their own autocast region (models._autocast) and the nets' outputs are cast back to the
    state's dtype inside it, so the BCE, the backward's entry and the scalars are float32."""
    G, D, loss, train = state.G_run, state.D_run, state.spec.loss, state.spec.train
    separate, own, dtype = train.d_backward == "separate", draws.own_dropout, state.dtype
    out: dict[str, torch.Tensor] = {}

    def real_pass() -> None:
        with _autocast(state):
            out["real"] = D(real, draws.get("labels"), draws.masks("real", "D"), own).reshape(-1).to(dtype)
        out["bce_real"] = bce(out["real"], loss.real_label, loss)
        if separate:
            (loss.d_loss_scale * out["bce_real"]).backward()

    def fake_pass() -> None:
        labels = draws.get("fake_labels")
        with _autocast(state):
            out["fake_img"] = G(z, labels, draws.masks("fake", "G"), own).to(dtype)  # reused by a "reuse" G step
            out["fake"] = D(out["fake_img"].detach(), labels, draws.masks("fake", "D"), own).reshape(-1).to(dtype)
        out["bce_fake"] = bce(out["fake"], loss.fake_label, loss)
        if separate:
            (loss.d_loss_scale * out["bce_fake"]).backward()

    for run in ((real_pass, fake_pass) if train.d_order == "real_first" else (fake_pass, real_pass)):
        run()
    loss_D = loss.d_loss_scale * (out["bce_real"] + out["bce_fake"])
    if not separate:
        loss_D.backward()
    return out["real"], out["fake"], out["fake_img"], loss_D


def train_iteration(state: Any, real: torch.Tensor, z: torch.Tensor, with_grads: bool,
                    draws: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """D step then G step, exactly the tutorial's sequence (seed 002: the G step on a fresh z).
    Returns device scalars (no sync) and, if asked, the gradients keyed by canonical name (after the
    per_example rescale: what Adam sees)."""
    G, D, opt_G, opt_D, loss = state.G_run, state.D_run, state.opt_G, state.opt_D, state.spec.loss
    grads: dict[str, torch.Tensor] | None = {} if with_grads else None
    d = _Draws(state, draws, z.shape[0])

    # -- D step: maximise log D(x) + log(1 - D(G(z))) --
    state.D.zero_grad(set_to_none=True)
    out_real, out_fake, fake, loss_D = _d_passes(state, real, z, d)
    _rescale(state.D, loss.reduction, real.shape[0])  # B = the real batch for D's step
    if grads is not None:
        grads.update({f"D.{k}": p.grad.detach().clone() for k, p in state.D.named_parameters()})
    opt_D.step()

    # -- G step: maximise log D(G(z)), through the updated D: the same fake, or G on a new z --
    # A new autocast region (mixed precision): D's bf16 weight copies are made from its updated weights.
    state.G.zero_grad(set_to_none=True)
    with _autocast(state):
        if state.spec.train.g_noise == "fresh":  # seed 002: z = torch.randn(...); fake_images = G(z)
            labels = d.get("fake_labels_gen")
            fake = G(d.get("z_gen"), labels, d.masks("gen", "G"), d.own_dropout).to(state.dtype)
        else:
            labels = d.get("fake_labels")
        out_gen = D(fake, labels, d.masks("gen", "D"), d.own_dropout).reshape(-1).to(state.dtype)
    loss_G = bce(out_gen, loss.real_label, loss)
    loss_G.backward()
    _rescale(state.G, loss.reduction, fake.shape[0])  # B = the G step's rows
    if grads is not None:
        grads.update({f"G.{k}": p.grad.detach().clone() for k, p in state.G.named_parameters()})
    opt_G.step()

    scalars = {
        "loss_D": loss_D.detach(),
        "loss_G": loss_G.detach(),
        "D_x": _probability(out_real.detach(), loss).mean(),
        "D_G_z1": _probability(out_fake.detach(), loss).mean(),
        "D_G_z2": _probability(out_gen.detach(), loss).mean(),
    }
    return scalars, grads


# -- The multi-step primitive (backend.train_epoch): k iterations in one compiled call ------------
# JAX's is a lax.scan and TensorFlow's a tf.while_loop over the stacked batches. PyTorch's is
# torch.compile over torch's scan operator (torch._higher_order_ops.scan), on a functional copy of
# the iteration: the parameters and both Adam moments as one flat vector each (views give each layer
# its tensor), gradients from torch.func.grad_and_value, Adam written out in the form of the spec.
# It is a fast-mode primitive for models whose nets are dense layers and elementwise activations
# (the Gaussian GAN): at 2x2 matrices a step is all dispatch overhead, which only such a loop removes.
# Three choices, each measured (2026-12-07, Gaussian GAN, batch 8, float32, one thread, AVX2 EPYC):
# * Inside the compiled graph a dense layer is a broadcast product and a sum, not F.linear: Inductor
#   then fuses the whole iteration (forwards, backwards, both Adam updates) into ONE C++ kernel,
#   where F.linear stays an external GEMM call per product: 21 against 56 us an iteration.
# * cpp_wrapper=True: Inductor's host code in C++ instead of Python: 21 against 48 us.
# * One scan over the iterations, not a Python loop unrolled by Dynamo: compilation is independent
#   of k (13 s, not 66 s for 8 unrolled iterations), and the scan length is a dynamic dimension, so
#   one compilation serves every chunk length the trainer asks for.
# * Activations feature-major between dense layers (_functional_net): 8.4 against 10.4 us (2026-12-08).
# What is left is mostly the allocation of the kernel's ~35 intermediate buffers an iteration (fast
# processes preload TCMalloc for it: common/registry.py). Inductor cannot pool them inside a while
# loop: memory_planning=True and aot_inductor.allow_stack_allocation=True both fail to compile the
# loop's C++ in torch 2.13 ("'while_loop_cond_graph_0_0_buf0' was not declared in this scope";
# "no match for 'operator=' (RAIIAtenTensorHandle and ArrayRefTensor<bool>)"), and unrolling 2 or 4
# iterations into the scan's body left the time per iteration unchanged (2026-12-08).

def _multi_step_refusal(spec: GANSpec, options: BuildOptions) -> str | None:
    """Why ``train_epoch`` cannot run ``spec`` under ``options``, or None (common/protocol's dense
    refusal): fast mode, no autocast inside the scan, no per-iteration draws, and nets of dense layers
    and elementwise activations only (not BatchNorm, with its running statistics, nor convolutions,
    which the broadcast form below would make slower)."""
    return dense_multi_step_refusal(spec, options, "PyTorch's compiled scan", "under autocast")


def _flat_layout(net: nn.Module, offset: int = 0) -> list[tuple[str, slice, torch.Size]]:
    """(state_dict key, slice of the flat vector, shape) per parameter of ``net``, in registration
    order, from ``offset`` on: the one layout both the compiled scan and :class:`_FlatState` use."""
    out = []
    for key, p in net.named_parameters():
        out.append((key, slice(offset, offset + p.numel()), p.shape))
        offset += p.numel()
    return out


def _functional_net(net: nn.Module, layout: list[tuple[str, slice, torch.Size]]) -> Any:
    """``net``'s forward on a flat parameter vector (dense layers and activations only), batch-first
    in and out. Between dense layers a 2-D activation is held feature-major, ``(features, rows)``."""
    where = {key: (sl, shape) for key, sl, shape in layout}

    def param(flat: torch.Tensor, key: str) -> torch.Tensor:
        sl, shape = where[key]
        return flat[sl].view(shape)

    def run(flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # Feature-major, the rows are the contiguous axis of every activation, so Inductor's C++
        # kernel runs the activations (tanh) as vector code along the rows; batch-first, their last
        # axis is the layer's 5 or 3 features, too short to vectorise, and each tanh was a scalar
        # libm call (20% of the iteration in perf). Measured 2026-12-08 (Gaussian GAN, batch 8,
        # float32, one thread, AVX-512 EPYC, TCMalloc): 8.4 against 10.4 us an iteration. A transpose
        # is only an index map inside the kernel; the sums over in_features run in the same order.
        feature_major = False
        for i, module in enumerate(net):
            if isinstance(module, nn.Linear) and (feature_major or x.dim() == 2):
                if not feature_major:
                    x, feature_major = x.t(), True
                # W @ x as a broadcast product and a sum over in_features: the same maths as
                # F.linear, which Inductor fuses into the iteration's kernel (see above).
                x = (param(flat, f"{i}.weight").unsqueeze(-1) * x.unsqueeze(0)).sum(1)
                if module.bias is not None:
                    x = x + param(flat, f"{i}.bias").unsqueeze(-1)
            elif isinstance(module, nn.Linear):  # on an N-D batch-first activation: its last axis
                x = (x.unsqueeze(-2) * param(flat, f"{i}.weight")).sum(-1)
                if module.bias is not None:
                    x = x + param(flat, f"{i}.bias")
            elif isinstance(module, (nn.Flatten, nn.Unflatten)):  # reshapes of the batch-first layout
                if feature_major:
                    x, feature_major = x.t(), False
                x = x.flatten(1) if isinstance(module, nn.Flatten) else x.unflatten(1, module.unflattened_size)
            elif isinstance(module, nn.LeakyReLU):
                x = F.leaky_relu(x, module.negative_slope)
            else:  # Tanh, ReLU, Sigmoid: parameter-free and elementwise, in either layout
                x = module(x)
        return x.t() if feature_major else x

    return run


def _adam(cfg: AdamSpec, p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
          t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Adam step of a flat vector at step ``t`` (already incremented), in the spec's form and in
    the grouping of the step-by-step optimisers above (torch.optim.Adam's single-tensor loop: m by
    lerp, p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps); or _EpsHatAdam's)."""
    b1, b2 = cfg.beta1, cfg.beta2
    c1, c2 = 1 - b1 ** t, 1 - b2 ** t
    if cfg.form == "eps_hat":
        m = m * b1 + g * (1 - b1)
        v = v * b2 + g * g * (1 - b2)
        return p - cfg.lr * torch.sqrt(c2) / c1 * m / (torch.sqrt(v) + cfg.eps), m, v
    m = torch.lerp(m, g, 1 - b1)
    v = v * b2 + g * g * (1 - b2)
    return p - (cfg.lr / c1) * m / (torch.sqrt(v) / torch.sqrt(c2) + cfg.eps), m, v


def _epoch_function(state: Any) -> Any:
    """The compiled ``(P, M, V, T, reals, zs) -> scalars`` of ``state``: P, M, V the flat params and
    moments of G then D, T the two Adam steps; updated in place, one row of scalars per iteration."""
    from torch._higher_order_ops.scan import scan  # torch's scan operator (lax.scan's counterpart)

    spec, loss = state.spec, state.spec.loss
    g_layout, d_layout = _flat_layout(state.G), _flat_layout(state.D)
    n_g = sum(sl.stop - sl.start for _, sl, _ in g_layout)
    G, D = _functional_net(state.G, g_layout), _functional_net(state.D, d_layout)
    opt_G, opt_D = spec.train.optim_G, spec.train.optim_D

    def iteration(P: torch.Tensor, M: torch.Tensor, V: torch.Tensor, T: torch.Tensor, real: torch.Tensor,
                  z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        gp, dp, rows = P[:n_g], P[n_g:], real.shape[0]
        fake = G(gp, z)

        def loss_d(dp_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # D's real and fake passes as ONE forward of the stacked rows: with no batch statistics
            # (no BatchNorm: _multi_step_refusal) they are the same two forwards; each BCE reduces
            # over its own rows. d_order and d_backward change nothing here (same gradients).
            out = D(dp_, torch.cat([real, fake.detach()])).reshape(-1)
            d_loss = loss.d_loss_scale * (bce(out[:rows], loss.real_label, loss) + bce(out[rows:], loss.fake_label, loss))
            return d_loss, out

        grad_d, (loss_D, out_d) = torch.func.grad_and_value(loss_d, has_aux=True)(dp)
        if loss.reduction == "per_example":  # MXNet's rescale_grad (_rescale)
            grad_d = grad_d / rows
        dp, dm, dv = _adam(opt_D, dp, grad_d, M[n_g:], V[n_g:], T[1])

        def loss_g(gp_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = D(dp, G(gp_, z)).reshape(-1)  # the same z through the updated D ("reuse")
            return bce(out, loss.real_label, loss), out

        grad_g, (loss_G, out_g) = torch.func.grad_and_value(loss_g, has_aux=True)(gp)
        if loss.reduction == "per_example":
            grad_g = grad_g / z.shape[0]
        gp, gm, gv = _adam(opt_G, gp, grad_g, M[:n_g], V[:n_g], T[0])
        scalars = torch.stack([loss_D, loss_G, _probability(out_d[:rows], loss).mean(),
                               _probability(out_d[rows:], loss).mean(), _probability(out_g, loss).mean()])
        return torch.cat([gp, dp]), torch.cat([gm, dm]), torch.cat([gv, dv]), scalars

    def body(carry: tuple[torch.Tensor, ...], batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[Any, torch.Tensor]:
        P, M, V, T = carry
        T = T + 1
        P, M, V, scalars = iteration(P, M, V, T, batch[0], batch[1])
        return (P, M, V, T), scalars

    def epoch(P: torch.Tensor, M: torch.Tensor, V: torch.Tensor, T: torch.Tensor, reals: torch.Tensor,
              zs: torch.Tensor) -> torch.Tensor:
        (P1, M1, V1, T1), scalars = scan(body, (P, M, V, T), (reals, zs))
        P.copy_(P1), M.copy_(M1), V.copy_(V1), T.copy_(T1)  # in place: the next call reads them
        return scalars

    # dynamic=False with the scan length marked dynamic by the caller: one graph for every length.
    # cpp_wrapper as a per-compile option, not the process-wide inductor config.
    return torch.compile(epoch, fullgraph=True, dynamic=False, options={"cpp_wrapper": True})


def _train_epoch(state: Any, reals: torch.Tensor, zs: torch.Tensor) -> dict[str, np.ndarray]:
    """backend.train_epoch on framework tensors ``(n, B, ...)``. The compiled scan updates three flat
    vectors in place, of which the modules' parameters and the optimisers' moments are views
    (:class:`_FlatState`), so export_params, read_adam, checkpoints and a later train_step see the
    state with no copy per call; only the Adam step counts are written back."""
    if state.epoch_fn is None:
        state.epoch_fn = _epoch_function(state)
    if state.flat is None or not state.flat.intact():
        state.flat = _FlatState(state)
    flat = state.flat
    T = torch.tensor([flat.step("G"), flat.step("D")], dtype=state.dtype, device=state.device)
    torch._dynamo.maybe_mark_dynamic(reals, 0)  # a length-1 call compiles its own graph (Dynamo
    torch._dynamo.maybe_mark_dynamic(zs, 0)  # specialises sizes 0 and 1), every other length shares one
    scalars = state.epoch_fn(flat.P, flat.M, flat.V, T, reals, zs)
    flat.set_steps(T.tolist())
    rows = scalars.to(torch.float64).cpu().numpy()
    return {key: rows[:, i] for i, key in enumerate(SCALARS)}


class _FlatState:
    """The flat parameter and moment vectors (G's tensors, then D's, in registration order) whose
    views the modules' parameters and the optimisers' moments become, as a flat-parameter
    optimiser keeps them. Rebuilt whenever a tensor has been replaced since (write_adam installs
    new moments; torch.optim.Adam creates them lazily at its first step)."""

    def __init__(self, state: Any) -> None:
        self.entries = [(net, p, opt) for net, module, opt in (("G", state.G, state.opt_G), ("D", state.D, state.opt_D))
                        for p in module.parameters()]
        g_layout = _flat_layout(state.G)
        slices = [sl for _, sl, _ in (*g_layout, *_flat_layout(state.D, g_layout[-1][1].stop))]
        with torch.no_grad():
            states = [_moments(opt, p) for _, p, opt in self.entries]
            self.P, self.M, self.V = (torch.cat([t.reshape(-1) for t in group]) for group in
                                      ([p for _, p, _ in self.entries], [st["exp_avg"] for st in states],
                                       [st["exp_avg_sq"] for st in states]))
            for (_, p, _), st, sl in zip(self.entries, states, slices):
                p.data = self.P[sl].view_as(p)
                st["exp_avg"] = self.M[sl].view_as(p)
                st["exp_avg_sq"] = self.V[sl].view_as(p)
        self.pointers = self._pointers()

    def _pointers(self) -> list[int]:
        out = []
        for _, p, opt in self.entries:
            st = opt.state.get(p, {})
            out += [p.data_ptr(), st["exp_avg"].data_ptr() if st else 0, st["exp_avg_sq"].data_ptr() if st else 0]
        return out

    def intact(self) -> bool:
        """Whether every parameter and moment is still its view of the flat vectors."""
        return self._pointers() == self.pointers

    def step(self, net: str) -> float:
        """The net's Adam step count (torch keeps one per parameter; all are equal)."""
        _, p, opt = next(e for e in self.entries if e[0] == net)
        return float(opt.state[p]["step"].item())

    def set_steps(self, steps: list[float]) -> None:
        with torch.no_grad():
            for net, p, opt in self.entries:
                opt.state[p]["step"].fill_(steps[0 if net == "G" else 1])  # in place: the fused optimiser's dtype


def _moments(opt: torch.optim.Optimizer, p: torch.Tensor) -> dict[str, torch.Tensor]:
    """``p``'s Adam state (step, exp_avg, exp_avg_sq), created as torch.optim.Adam does at its first step."""
    st = opt.state[p]
    if not st:
        st.update(step=torch.tensor(0.0, dtype=torch.float32), exp_avg=torch.zeros_like(p),
                  exp_avg_sq=torch.zeros_like(p))
    return st
