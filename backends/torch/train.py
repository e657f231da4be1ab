"""One training iteration in the tutorial's call order, with the spec's variants (see common/protocol.py)."""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
import torch.nn.functional as F

from gansuite.common.draws import pass_masks
from gansuite.common.spec import AdamSpec, LossSpec

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
