"""The models the suite ships, each citing the seed document it reproduces.

Seeds live in ``../shared/seeds``: 001 is d2l 20.1 (Gaussian GAN, three framework tabs),
000 the PyTorch DCGAN tutorial, 003 DCGAN on FashionMNIST, 004 MXNet's symbolic DCGAN, 002 a book
chapter (VAE, MLP GAN, conditional GAN on MNIST).
A preset that names a seed reproduces that seed's code; README lists what remains different.
"""

from __future__ import annotations

from typing import Callable

from .errors import SpecError
from .spec import (
    AdamSpec,
    BatchNorm,
    Conv2d,
    ConvTranspose2d,
    DataSpec,
    Dense,
    Dropout,
    EmbedConcat,
    Flatten,
    GANSpec,
    Init,
    InitSpec,
    LeakyReLU,
    LossSpec,
    NetInit,
    NetSpec,
    ReLU,
    Reshape,
    Sigmoid,
    Tanh,
    TrainSpec,
)


_NORMAL_002 = Init("normal", 0.0, 0.02)
_ALL_NORMAL = NetInit(weight=_NORMAL_002, bias=_NORMAL_002)  # d2l's PyTorch tab: every parameter
_TUTORIAL_INIT = NetInit(weight=_NORMAL_002, bias=Init("zeros"), bn_weight=Init("normal", 1.0, 0.02),
                         bn_bias=Init("zeros"))


def gaussian() -> GANSpec:
    """d2l 20.1 (seed 001), PyTorch tab: the reference the other tabs are held to."""
    return GANSpec(
        name="gaussian",
        source="seed 001: Dive into Deep Learning 20.1, Generative Adversarial Networks (PyTorch tab)",
        generator=NetSpec((2,), (Dense(2, 2),)),
        discriminator=NetSpec((2,), (Dense(2, 5), Tanh(), Dense(5, 3), Tanh(), Dense(3, 1))),
        # nn.BCEWithLogitsLoss(reduction='sum'); loss_D = (real + fake) / 2.
        loss=LossSpec(reduction="sum", d_loss_scale=0.5),
        train=TrainSpec(
            batch_size=8,
            epochs=20,
            optim_G=AdamSpec(lr=0.005, beta1=0.9, beta2=0.999, eps=1e-8),
            optim_D=AdamSpec(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8),
        ),
        # d2l: `for w in net.parameters(): nn.init.normal_(w, 0, 0.02)` reaches biases too.
        init=InitSpec(G=_ALL_NORMAL, D=_ALL_NORMAL),
        data=DataSpec(kind="gaussian", n_examples=1000),
    )


def dcgan(nz: int = 100, ngf: int = 64, ndf: int = 64, nc: int = 3, *, name: str = "dcgan",
          source: str = "seed 000: PyTorch DCGAN tutorial (CelebA, 64x64)", epochs: int = 5,
          batch_size: int = 128, data: DataSpec | None = None) -> GANSpec:
    """The tutorial's 64x64 DCGAN (seed 000). BatchNorm: PyTorch defaults, eps 1e-5, momentum 0.1."""
    g = NetSpec(
        (nz, 1, 1),
        (
            ConvTranspose2d(nz, ngf * 8, 4, 1, 0), BatchNorm(ngf * 8), ReLU(),        # 4x4
            ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1), BatchNorm(ngf * 4), ReLU(),   # 8x8
            ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1), BatchNorm(ngf * 2), ReLU(),   # 16x16
            ConvTranspose2d(ngf * 2, ngf, 4, 2, 1), BatchNorm(ngf), ReLU(),           # 32x32
            ConvTranspose2d(ngf, nc, 4, 2, 1), Tanh(),                                # 64x64
        ),
    )
    d = NetSpec(
        (nc, 64, 64),
        (
            Conv2d(nc, ndf, 4, 2, 1), LeakyReLU(0.2),                                 # 32x32
            Conv2d(ndf, ndf * 2, 4, 2, 1), BatchNorm(ndf * 2), LeakyReLU(0.2),        # 16x16
            Conv2d(ndf * 2, ndf * 4, 4, 2, 1), BatchNorm(ndf * 4), LeakyReLU(0.2),    # 8x8
            Conv2d(ndf * 4, ndf * 8, 4, 2, 1), BatchNorm(ndf * 8), LeakyReLU(0.2),    # 4x4
            # The tutorial ends in nn.Sigmoid() + nn.BCELoss; the spec keeps the logit and
            # uses BCE-with-logits: equal unless |logit| > ~16, where BCELoss clamps log at -100.
            Conv2d(ndf * 8, 1, 4, 1, 0),                                              # 1x1 logit
        ),
    )
    return GANSpec(
        name=name,
        source=source,
        generator=g,
        discriminator=d,
        loss=LossSpec(reduction="mean", d_loss_scale=1.0),  # errD = errD_real + errD_fake
        train=TrainSpec(
            batch_size=batch_size,
            epochs=epochs,
            optim_G=AdamSpec(lr=2e-4, beta1=0.5, beta2=0.999, eps=1e-8),
            optim_D=AdamSpec(lr=2e-4, beta1=0.5, beta2=0.999, eps=1e-8),
            d_backward="separate",  # errD_real.backward(); ... errD_fake.backward()
        ),
        # weights_init: conv N(0, 0.02); BatchNorm gamma N(1, 0.02), beta 0. No conv biases.
        init=InitSpec(G=_TUTORIAL_INIT, D=_TUTORIAL_INIT),
        # 10,000 glyph digits: 5 epochs at batch 128 are 390 iterations, which the tutorial's own
        # loop needs to make digits (README, "the default offline data").
        data=data or DataSpec(kind="glyphs", n_examples=10000, image_size=64, channels=nc),
    )


def gaussian_mxnet() -> GANSpec:
    """d2l 20.1 (seed 001), MXNet tab, as its code runs.

    ``net.initialize(init=init.Normal(0.02))`` reaches weights only: Gluon's Dense biases stay at
    their zero default. ``gluon.loss.SigmoidBCELoss()`` gives one loss per example and
    ``trainer.step(batch_size)`` rescales the gradients by 1/B: the ``per_example`` reduction.
    ``gluon.Trainer(..., 'adam', {'learning_rate': lr})``: MXNet's Adam (eps-hat, eps 1e-8).
    """
    mxnet_init = NetInit(weight=_NORMAL_002, bias=Init("zeros"))
    return _d2l_tab("gaussian-mxnet", "MXNet", "per_example", 1e-8, InitSpec(G=mxnet_init, D=mxnet_init))


def gaussian_tensorflow() -> GANSpec:
    """d2l 20.1 (seed 001), TensorFlow tab, as its code runs.

    ``net_G = tf.keras.layers.Dense(2)`` has no variables yet when the init loop
    ``for w in net_G.trainable_variables: w.assign(tf.random.normal(...))`` runs, so G keeps
    Keras's Glorot-uniform kernel and zero bias; ``net_D`` (built: ``input_shape=(2,)``) gets
    N(0, 0.02) everywhere. ``BinaryCrossentropy(from_logits=True, reduction=SUM)`` on squeezed
    ``(B,)`` vectors first averages over that last axis, and ``* batch_size`` turns the mean back
    into the PyTorch tab's sum. ``tf.keras.optimizers.Adam(learning_rate=lr)``: Keras's Adam
    (eps-hat, eps 1e-7).
    """
    glorot_G = NetInit(weight=Init("glorot_uniform"), bias=Init("zeros"))
    return _d2l_tab("gaussian-tensorflow", "TensorFlow", "sum", 1e-7, InitSpec(G=glorot_G, D=_ALL_NORMAL))


def _d2l_tab(name: str, tab: str, reduction: str, eps: float, init: InitSpec) -> GANSpec:
    """Another tab of d2l 20.1: the PyTorch tab's nets, data, batch, epochs and learning rates,
    with that tab's reduction, its framework's eps-hat Adam (and default eps) and its init."""
    base = gaussian()
    return GANSpec(
        name=name, source=f"seed 001: Dive into Deep Learning 20.1 ({tab} tab)",
        generator=base.generator, discriminator=base.discriminator,
        loss=LossSpec(reduction=reduction, d_loss_scale=0.5),
        train=TrainSpec(batch_size=8, epochs=20,
                        optim_G=AdamSpec(lr=0.005, beta1=0.9, beta2=0.999, eps=eps, form="eps_hat"),
                        optim_D=AdamSpec(lr=0.05, beta1=0.9, beta2=0.999, eps=eps, form="eps_hat")),
        init=init, data=base.data)


def dcgan_mnist(nz: int = 100, fg: int = 64, fd: int = 64, *, name: str = "dcgan-mnist", batch_size: int = 128,
                data: DataSpec | None = None, source: str = "seed 003: DCGAN on FashionMNIST, its own nets") -> GANSpec:
    """Seed 003's own nets (``Generator(Z_DIM, 1, 64)``, ``Discriminator(1, 64)``) and loop.

    * G is twice the tutorial's width: ``_block(z_dim, features_g * 16, 4, 1, 0)`` -> 1024-512-256-128.
    * G's last ``nn.ConvTranspose2d`` and D's first and last ``nn.Conv2d`` keep ``bias=True`` with
      PyTorch's default init (``initialize_weights`` touches ``.weight`` only); D's last conv has
      stride 2 (one window on its 4x4 input either way).
    * ``initialize_weights``: Conv, ConvTranspose AND BatchNorm weights ~ N(0, 0.02) (gamma mean 0).
    * ``loss_disc = (loss_disc_real + loss_disc_fake) / 2`` with ``nn.BCELoss()`` (mean).
    * ``noise = torch.randn(BATCH_SIZE, ...)``: 128 rows even when the last real batch is shorter.
    * ``DataLoader(dataset, batch_size=128, shuffle=True)``: last partial batch kept.
    """
    g = NetSpec(
        (nz, 1, 1),
        (
            ConvTranspose2d(nz, fg * 16, 4, 1, 0), BatchNorm(fg * 16), ReLU(),          # 4x4
            ConvTranspose2d(fg * 16, fg * 8, 4, 2, 1), BatchNorm(fg * 8), ReLU(),       # 8x8
            ConvTranspose2d(fg * 8, fg * 4, 4, 2, 1), BatchNorm(fg * 4), ReLU(),        # 16x16
            ConvTranspose2d(fg * 4, fg * 2, 4, 2, 1), BatchNorm(fg * 2), ReLU(),        # 32x32
            ConvTranspose2d(fg * 2, 1, 4, 2, 1, bias=True), Tanh(),                     # 64x64
        ),
    )
    d = NetSpec(
        (1, 64, 64),
        (
            Conv2d(1, fd, 4, 2, 1, bias=True), LeakyReLU(0.2),                          # 32x32
            Conv2d(fd, fd * 2, 4, 2, 1), BatchNorm(fd * 2), LeakyReLU(0.2),             # 16x16
            Conv2d(fd * 2, fd * 4, 4, 2, 1), BatchNorm(fd * 4), LeakyReLU(0.2),         # 8x8
            Conv2d(fd * 4, fd * 8, 4, 2, 1), BatchNorm(fd * 8), LeakyReLU(0.2),         # 4x4
            Conv2d(fd * 8, 1, 4, 2, 0, bias=True),                                      # 1x1 logit (Sigmoid: see README)
        ),
    )
    init = NetInit(weight=_NORMAL_002, bias=Init("torch_default"), bn_weight=_NORMAL_002, bn_bias=Init("zeros"))
    return GANSpec(
        name=name, source=source, generator=g, discriminator=d,
        loss=LossSpec(reduction="mean", d_loss_scale=0.5),
        train=TrainSpec(batch_size=batch_size, epochs=10,
                        optim_G=AdamSpec(lr=2e-4, beta1=0.5, beta2=0.999, eps=1e-8),
                        optim_D=AdamSpec(lr=2e-4, beta1=0.5, beta2=0.999, eps=1e-8),
                        noise_batch="batch_size"),
        init=InitSpec(G=init, D=init),
        data=data or DataSpec(kind="glyphs", n_examples=2048, image_size=64, channels=1))


def dcgan_mxnet(nz: int = 100, ngf: int = 64, ndf: int = 64, *, name: str = "dcgan-mxnet", batch_size: int = 64,
                data: DataSpec | None = None,
                source: str = "seed 004: MXNet's symbolic DCGAN on MNIST (mx.sym + mx.mod.Module)") -> GANSpec:
    """Seed 004's ``make_dcgan_sym(ngf, ndf, nc)`` and its Module loop, nc = 3.

    * ``BatchNorm(fix_gamma=True, eps=1e-5 + 1e-12)``: gamma held at 1; momentum 0.9 on the OLD
      value (= the spec's 0.1); MXNet's CPU op keeps the BIASED variance in ``moving_var``.
    * ``no_bias=True`` everywhere; ``mx.init.Normal(0.02)`` on weights, gamma 1, beta 0.
    * D sees the FAKE batch first (``label[:] = 0``, forward, backward, gradients copied), then the
      real one (forward, backward, gradients summed by hand), then one ``modD.update()``.
    * ``LogisticRegressionOutput``: backward (sigmoid - label) per example; ``Module`` rescales by
      1/batch: the ``per_example`` reduction. MXNet's Adam (eps-hat), lr 2e-4, beta1 0.5, wd 0.
    * ``NDArrayIter(X_train, batch_size=64)``: no shuffling, the last batch padded from the start.
    """
    bn = dict(eps=1e-5 + 1e-12, momentum=0.1, fix_gamma=True, running_var="biased")
    g = NetSpec(
        (nz, 1, 1),
        (
            ConvTranspose2d(nz, ngf * 8, 4, 1, 0), BatchNorm(ngf * 8, **bn), ReLU(),        # g1: 4x4
            ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1), BatchNorm(ngf * 4, **bn), ReLU(),   # g2: 8x8
            ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1), BatchNorm(ngf * 2, **bn), ReLU(),   # g3: 16x16
            ConvTranspose2d(ngf * 2, ngf, 4, 2, 1), BatchNorm(ngf, **bn), ReLU(),           # g4: 32x32
            ConvTranspose2d(ngf, 3, 4, 2, 1), Tanh(),                                       # g5: 64x64
        ),
    )
    d = NetSpec(
        (3, 64, 64),
        (
            Conv2d(3, ndf, 4, 2, 1), LeakyReLU(0.2),                                        # d1: 32x32
            Conv2d(ndf, ndf * 2, 4, 2, 1), BatchNorm(ndf * 2, **bn), LeakyReLU(0.2),        # d2: 16x16
            Conv2d(ndf * 2, ndf * 4, 4, 2, 1), BatchNorm(ndf * 4, **bn), LeakyReLU(0.2),    # d3: 8x8
            Conv2d(ndf * 4, ndf * 8, 4, 2, 1), BatchNorm(ndf * 8, **bn), LeakyReLU(0.2),    # d4: 4x4
            Conv2d(ndf * 8, 1, 4, 1, 0),                                                    # d5: 1x1 logit
        ),
    )
    init = NetInit(weight=_NORMAL_002, bias=Init("zeros"), bn_weight=Init("ones"), bn_bias=Init("zeros"))
    adam = AdamSpec(lr=2e-4, beta1=0.5, beta2=0.999, eps=1e-8, form="eps_hat")
    return GANSpec(
        name=name, source=source, generator=g, discriminator=d,
        loss=LossSpec(reduction="per_example", d_loss_scale=1.0),
        train=TrainSpec(batch_size=batch_size, epochs=100, optim_G=adam, optim_D=adam, shuffle=False,
                        pad_last=True, d_order="fake_first", d_backward="separate"),
        init=InitSpec(G=init, D=init),
        data=data or DataSpec(kind="glyphs", n_examples=2048, image_size=64, channels=3))


def dcgan_digits(nz: int = 32, ngf: int = 32, ndf: int = 32, *, name: str = "dcgan-digits", batch_size: int = 64,
                 epochs: int = 2, data: DataSpec | None = None) -> GANSpec:
    """Seed 000's DCGAN scaled to 32x32 grey digits, sized so that every backend learns in CI.

    Everything the tutorial does (init, BatchNorm, BCE, Adam 2e-4 / 0.5, D's two backwards, the
    call order) with one up/down-sampling block fewer (4 -> 8 -> 16 -> 32), nc = 1, ngf = ndf = 32
    (the tutorial: 64) and nz = 32 (the tutorial: 100). Chosen by measurement: on MNIST this size
    makes digits within a few hundred iterations on a 2-core CPU (the learning tests,
    tests/backend_contract.py), where the 64x64 presets need thousands. Default data: the
    procedural glyph digits (common/glyphs.py), 10000 examples; give --data for MNIST.
    """
    g = NetSpec(
        (nz, 1, 1),
        (
            ConvTranspose2d(nz, ngf * 4, 4, 1, 0), BatchNorm(ngf * 4), ReLU(),        # 4x4
            ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1), BatchNorm(ngf * 2), ReLU(),   # 8x8
            ConvTranspose2d(ngf * 2, ngf, 4, 2, 1), BatchNorm(ngf), ReLU(),           # 16x16
            ConvTranspose2d(ngf, 1, 4, 2, 1), Tanh(),                                 # 32x32
        ),
    )
    d = NetSpec(
        (1, 32, 32),
        (
            Conv2d(1, ndf, 4, 2, 1), LeakyReLU(0.2),                                  # 16x16
            Conv2d(ndf, ndf * 2, 4, 2, 1), BatchNorm(ndf * 2), LeakyReLU(0.2),        # 8x8
            Conv2d(ndf * 2, ndf * 4, 4, 2, 1), BatchNorm(ndf * 4), LeakyReLU(0.2),    # 4x4
            Conv2d(ndf * 4, 1, 4, 1, 0),                                              # 1x1 logit
        ),
    )
    tutorial = dcgan(batch_size=batch_size)
    return GANSpec(
        name=name, source="seed 000's DCGAN at 32x32, 1 channel, ngf = ndf = nz = 32 (CI-sized digits)",
        generator=g, discriminator=d, loss=tutorial.loss,
        train=TrainSpec(batch_size=batch_size, epochs=epochs, optim_G=tutorial.train.optim_G,
                        optim_D=tutorial.train.optim_D, d_backward=tutorial.train.d_backward),
        init=tutorial.init,
        data=data or DataSpec(kind="glyphs", n_examples=10000, image_size=32, channels=1))


#: Seed 002 leaves every init at PyTorch's default: nn.Linear's kaiming-uniform weights and
#: U(+-1/sqrt(fan_in)) biases, nn.Embedding's N(0, 1).
_TORCH_DEFAULT = NetInit(weight=Init("torch_default"), bias=Init("torch_default"), embedding=Init("torch_default"))


def _digits_28(n_examples: int = 10000) -> DataSpec:
    """Seed 002's MNIST shape (1x28x28, Normalize(0.5, 0.5) to [-1, 1]); offline default: glyph digits."""
    return DataSpec(kind="glyphs", n_examples=n_examples, image_size=28, channels=1)


def mlp_gan(latent: int = 64, hidden: int = 256, *, name: str = "mlp-gan", batch_size: int = 100,
            epochs: int = 200, data: DataSpec | None = None) -> GANSpec:
    """Seed 002, 8.3: the fully connected GAN on MNIST, as the chapter's code writes it.

    D: ``Linear(image_size, hidden), LeakyReLU(0.2), Linear(hidden, hidden), LeakyReLU(0.2),
    Linear(hidden, 1), Sigmoid()`` on ``images.reshape(batch_size, -1)``; G: ``Linear(latent,
    hidden), ReLU, Linear(hidden, hidden), ReLU, Linear(hidden, image_size), Tanh``. ``criterion``
    is BCELoss on D's probabilities (mean); ``d_loss = d_loss_real + d_loss_fake``; the G step draws
    a new ``z = torch.randn(batch_size, latent_size)`` and runs G again; z always has batch_size
    rows. Every init is PyTorch's default.

    Not in the excerpt, chosen: latent 64, hidden 256, batch 100, Adam(lr=0.0002) for both nets
    (betas and eps PyTorch's defaults), 200 epochs. The chapter's loop (``reset_grad()``,
    ``denorm``, the "Epoch [{}/{}], Step [{}/{}], d_loss" print) is line for line the widely used
    pytorch-tutorial GAN (yunjey), whose values these are; batch 100 also divides both MNIST
    splits exactly, which ``images.reshape(batch_size, -1)`` needs.
    """
    adam = AdamSpec(lr=0.0002)
    return GANSpec(
        name=name, source="seed 002, 8.3: the MLP GAN (nn.Sequential of Linear layers, Sigmoid + BCELoss)",
        generator=NetSpec((latent,), (Dense(latent, hidden), ReLU(), Dense(hidden, hidden), ReLU(),
                                      Dense(hidden, 784), Tanh(), Reshape((1, 28, 28)))),
        discriminator=NetSpec((1, 28, 28), (Flatten(), Dense(784, hidden), LeakyReLU(0.2), Dense(hidden, hidden),
                                            LeakyReLU(0.2), Dense(hidden, 1), Sigmoid())),
        loss=LossSpec(reduction="mean", d_loss_scale=1.0, on="probabilities"),
        train=TrainSpec(batch_size=batch_size, epochs=epochs, optim_G=adam, optim_D=adam,
                        noise_batch="batch_size", g_noise="fresh"),
        init=InitSpec(G=_TORCH_DEFAULT, D=_TORCH_DEFAULT),
        data=data or _digits_28())


def cgan(*, name: str = "cgan", batch_size: int = 64, epochs: int = 30, widths: tuple[int, ...] = (256, 512, 1024),
         dropout: float = 0.4, data: DataSpec | None = None) -> GANSpec:
    """Seed 002, 8.5: the conditional GAN, its Generator and Discriminator classes exactly.

    G: ``label_emb = nn.Embedding(10, 10)``; ``torch.cat([z, c], 1)`` (110) -> 256 -> 512 -> 1024
    -> 784, LeakyReLU(0.2) between, Tanh, ``out.view(B, 28, 28)``. D: ``x.view(B, 784)``, its own
    Embedding(10, 10), ``cat([x, c], 1)`` (794) -> 1024 -> 512 -> 256 -> 1, LeakyReLU(0.2) and
    ``nn.Dropout(0.4)`` after each hidden layer, Sigmoid. D's loss as the excerpt:
    ``criterion(real_validity, ones) + criterion(fake_validity, zeros)`` with ``fake_labels =
    torch.randint(0, 10, (batch_size,))``. Default inits.

    Not in the excerpt, chosen: ``criterion = nn.BCELoss()`` (mean; the MLP GAN's), the G step as
    the MLP GAN's (new z and new random labels through G, BCE against ones), z with the real
    batch's rows, Adam(lr=1e-4) for both nets, batch 64, 30 epochs: the values of the public
    notebook these classes come from, as far as we know it; the excerpt shows none of them.
    """
    h1, h2, h3 = widths
    adam = AdamSpec(lr=1e-4)
    g = NetSpec((100,), (EmbedConcat(10, 10), Dense(110, h1), LeakyReLU(0.2), Dense(h1, h2), LeakyReLU(0.2),
                         Dense(h2, h3), LeakyReLU(0.2), Dense(h3, 784), Tanh(), Reshape((1, 28, 28))))
    d = NetSpec((1, 28, 28), (Flatten(), EmbedConcat(10, 10), Dense(794, h3), LeakyReLU(0.2), Dropout(dropout),
                              Dense(h3, h2), LeakyReLU(0.2), Dropout(dropout), Dense(h2, h1), LeakyReLU(0.2),
                              Dropout(dropout), Dense(h1, 1), Sigmoid()))
    return GANSpec(
        name=name, source="seed 002, 8.5: the conditional GAN (label embeddings, dropout in D)",
        generator=g, discriminator=d,
        loss=LossSpec(reduction="mean", d_loss_scale=1.0, on="probabilities"),
        train=TrainSpec(batch_size=batch_size, epochs=epochs, optim_G=adam, optim_D=adam, g_noise="fresh"),
        init=InitSpec(G=_TORCH_DEFAULT, D=_TORCH_DEFAULT),
        data=data or _digits_28())


def _tiny_data(channels: int) -> DataSpec:
    return DataSpec(kind="glyphs", n_examples=256, image_size=64, channels=channels)


PRESETS: dict[str, Callable[[], GANSpec]] = {
    "gaussian": gaussian,
    "gaussian-mxnet": gaussian_mxnet,
    "gaussian-tensorflow": gaussian_tensorflow,
    "dcgan": dcgan,
    "dcgan-mnist": dcgan_mnist,
    "dcgan-mxnet": dcgan_mxnet,
    "dcgan-digits": dcgan_digits,
    "mlp-gan": mlp_gan,
    "cgan": cgan,
    # The same topologies at 1/8 width for fast tests: every layer kind, shape rule and option
    # is exercised at a fraction of the cost.
    "dcgan-tiny": lambda: dcgan(nz=16, ngf=8, ndf=8, name="dcgan-tiny", batch_size=16,
                                source="seed 000 at ngf=ndf=8, nz=16 (test size)", data=_tiny_data(3)),
    "dcgan-mnist-tiny": lambda: dcgan_mnist(nz=16, fg=4, fd=8, name="dcgan-mnist-tiny", batch_size=16,
                                            source="seed 003 at features_g=4, features_d=8, nz=16 (test size)",
                                            data=_tiny_data(1)),
    "dcgan-mxnet-tiny": lambda: dcgan_mxnet(nz=16, ngf=8, ndf=8, name="dcgan-mxnet-tiny", batch_size=16,
                                            source="seed 004 at ngf=ndf=8, nz=16 (test size)", data=_tiny_data(3)),
    "mlp-gan-tiny": lambda: mlp_gan(latent=16, hidden=32, name="mlp-gan-tiny", batch_size=16, data=_digits_28(256)),
    "cgan-tiny": lambda: cgan(name="cgan-tiny", batch_size=16, widths=(16, 32, 64), data=_digits_28(256)),
}


def preset(name: str) -> GANSpec:
    if name not in PRESETS:
        raise SpecError("model", f"unknown model {name!r}; allowed: {', '.join(PRESETS)}")
    return PRESETS[name]()
