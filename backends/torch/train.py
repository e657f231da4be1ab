"""One training iteration in the tutorial's call order (see common/protocol.py)."""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F

from gansuite.common.spec import AdamSpec


def make_adam(cfg: AdamSpec, params: Iterable[torch.nn.Parameter], mode: str) -> torch.optim.Adam:
    # torch.optim.Adam is the spec's form already: lr * m_hat / (sqrt(v_hat) + eps).
    # weight_decay=0 and amsgrad=False are the defaults; set so nobody has to look them up.
    # Parity uses the single-tensor reference loop (foreach=False): same maths, fixed op order.
    # Fast mode uses the fused kernel for float32 (one kernel for every tensor of the net).
    params = list(params)
    fused = mode == "fast" and params[0].dtype == torch.float32
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                            weight_decay=0.0, amsgrad=False, foreach=False if not fused else None,
                            fused=True if fused else None)


def bce(logits: torch.Tensor, label: float, reduction: str) -> torch.Tensor:
    # BCE-with-logits on the raw logit (the tutorial: Sigmoid + BCELoss, identical unless |logit| > ~16).
    target = torch.full_like(logits, label)
    return F.binary_cross_entropy_with_logits(logits, target, reduction=reduction)


def train_iteration(state: Any, real: torch.Tensor, z: torch.Tensor,
                    with_grads: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """D step then G step, exactly the tutorial's sequence. Returns device scalars (no sync) and,
    if asked, the gradients keyed by canonical name."""
    G, D, opt_G, opt_D, loss = state.G_run, state.D_run, state.opt_G, state.opt_D, state.spec.loss
    grads: dict[str, torch.Tensor] | None = {} if with_grads else None

    # -- D step: maximise log D(x) + log(1 - D(G(z))) --
    state.D.zero_grad(set_to_none=True)
    out_real = D(real).reshape(-1)
    fake = G(z)  # the only G forward of the iteration; reused below
    out_fake = D(fake.detach()).reshape(-1)
    loss_D = loss.d_loss_scale * (bce(out_real, loss.real_label, loss.reduction)
                                  + bce(out_fake, loss.fake_label, loss.reduction))
    loss_D.backward()
    if grads is not None:
        grads.update({f"D.{k}": p.grad.detach().clone() for k, p in state.D.named_parameters()})
    opt_D.step()

    # -- G step: maximise log D(G(z)), through the updated D, same fake --
    state.G.zero_grad(set_to_none=True)
    out_gen = D(fake).reshape(-1)
    loss_G = bce(out_gen, loss.real_label, loss.reduction)
    loss_G.backward()
    if grads is not None:
        grads.update({f"G.{k}": p.grad.detach().clone() for k, p in state.G.named_parameters()})
    opt_G.step()

    scalars = {
        "loss_D": loss_D.detach(),
        "loss_G": loss_G.detach(),
        "D_x": torch.sigmoid(out_real.detach()).mean(),
        "D_G_z1": torch.sigmoid(out_fake.detach()).mean(),
        "D_G_z2": torch.sigmoid(out_gen.detach()).mean(),
    }
    return scalars, grads
