"""Losses of the VAE-GAN after Larsen et al. 2016, with the prior std as an annealed parameter.

- KL: posterior q = N(mu, (noise * sigma)^2) (z = mu + sigma * eps, eps ~ N(0, noise^2), as in the film),
  prior p = N(0, noise^2). Per latent dimension KL = -log sigma + (sigma^2 - 1) / 2 + mu^2 / (2 noise^2),
  averaged over dimensions and batch (the film averaged too).
- similarity: mean squared distance between discriminator features of input and reconstruction, the mean
  over each configured layer's elements, averaged over layers (a sum over ~150k features explodes).
- GAN: binary cross-entropy on logits of real (label 1), reconstructed and prior-sampled (label 0) images.
- pixel: mean absolute error of the reconstruction (not in Larsen et al.; anchors colour and layout, and
  leads the CPU recipe's first phase, when the discriminator has not joined yet).
- structure: 1 - SSIM of the reconstruction (Wang et al. 2004, the window autoencoded.metrics scores with),
  differentiable. L1 alone settles on the blur that minimises it; SSIM pays for local contrast and edges,
  the "mixed L1 + SSIM" loss of Zhao et al. 2017 ("Loss functions for image restoration with neural
  networks").
- saturation: the mean square of the encoder's pre-tanh mean beyond +-SATURATION_KNEE. The noise of the
  early training makes the encoder push its tanh to +-1 (a bit survives any noise), where its gradient
  vanishes: the latent freezes into bits that no later step can refine and that flip instead of moving
  when the input moves (what was measured: docs/models.md, "Figures behind the code's choices").
- KL scaled by noise^2 (`kl_noise_scaled`): the film's KL pulls mu toward 0 as 1/noise^2 while the noise
  is lowered, so at noise 0.05 it weighs 400x what it did at 1 and squeezes the latent. Times noise^2 its
  pull on mu stays mu^2 / 2 whatever the noise, and lowering the noise only sharpens the posterior, which
  is what the film lowered it for: that similar frames separate.

Each term is one `Term` in TERMS, declared with the knobs it reads: the TrainConfig field (and config.json
key) of its weight in each network's objective, the `train` option that sets it and its default where an
architecture names none. TrainConfig, the `train` options and the loop's construction of `VAEGANLoss` all
derive from TERMS, so a new term is one entry here (or one `register` call) and the loop logs it by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from autoencoded.posterior import LatentPlan, Posterior

SATURATION_KNEE = 1.5  # tanh(1.5) = 0.905: past it the gradient through the tanh is below 0.18


def saturation(pre_mu: torch.Tensor) -> torch.Tensor:
    return F.relu(pre_mu.float().abs() - SATURATION_KNEE).pow(2).mean()


def kl_divergence(mu: torch.Tensor, log_sigma: torch.Tensor, noise: float, noise_scaled: bool = False) -> torch.Tensor:
    """The KL of a learned code's (mu, log_sigma) to the prior of std `noise` (autoencoded.posterior)."""
    return Posterior(mu, log_sigma, LatentPlan(mu.shape[-1])).kl(noise, noise_scaled)


def _gaussian_taps(device, dtype) -> torch.Tensor:
    g = torch.exp(-(torch.arange(11, dtype=torch.float32) - 5.0) ** 2 / (2 * 1.5**2))
    return (g / g.sum()).to(device=device, dtype=dtype)


def structural_similarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of two image batches in [-1, 1] (N,C,H,W), per channel with an 11x11 Gaussian window of
    sigma 1.5 over the valid region: autoencoded.metrics' figure, in torch so that it can be trained on.
    The window is separable, so it runs as a column pass and a row pass (22 taps instead of 121)."""
    x = (x.float() + 1) / 2
    y = (y.float() + 1) / 2
    c = x.shape[1]
    g = _gaussian_taps(x.device, x.dtype)
    col = g.view(1, 1, 11, 1).expand(c, 1, 11, 1)
    row = g.view(1, 1, 1, 11).expand(c, 1, 1, 11)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, col, groups=c), row, groups=c)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))).mean()


def similarity(feats_real: list[torch.Tensor], feats_recon: list[torch.Tensor], layers) -> torch.Tensor:
    terms = [F.mse_loss(feats_recon[i].float(), feats_real[i].detach().float()) for i in layers]
    return torch.stack(terms).mean()


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


@dataclass
class Balance:
    """The equilibrium/margin rule (Larsen et al.): which updates to make this step."""

    train_dis: bool
    train_dec_gan: bool


def balance(bce_real: float, bce_fake: float, equilibrium: float = 0.68, margin: float = 0.35,
            enabled: bool = True) -> Balance:
    """Skip the discriminator when it wins by the margin (either cost below eq - margin); drop the decoder's
    GAN term when the discriminator loses badly (either cost above eq + margin); if both would be skipped,
    do both."""
    if not enabled:
        return Balance(True, True)
    train_dis = not (bce_real < equilibrium - margin or bce_fake < equilibrium - margin)
    train_dec = not (bce_real > equilibrium + margin or bce_fake > equilibrium + margin)
    if not train_dis and not train_dec:
        return Balance(True, True)
    return Balance(train_dis, train_dec)


@dataclass
class DiscriminatorOutputs:
    """The discriminator's logits on real, reconstructed and prior-sampled images, and its features of the
    real and reconstructed ones (each a list over its conv layers)."""

    real: torch.Tensor
    recon: torch.Tensor
    prior: torch.Tensor
    feats_real: list[torch.Tensor]
    feats_recon: list[torch.Tensor]




# ---- the terms: each declares its knobs, the objectives it weighs in and the networks it reads ------------

NETWORKS = ("encoder", "decoder", "discriminator")
OBJECTIVE_NAMES = {"encoder": "enc", "decoder": "dec", "discriminator": "dis"}  # their names in the logs


@dataclass(frozen=True)
class Knob:
    """A setting of the objective, declared by the term that reads it: `field` is its TrainConfig field and
    config.json key, `--FIELD` (dashes for underscores) its `train` option, `default` its value where an
    architecture (training/archs.py) names none."""

    field: str
    help: str  # the option's help; a number's gets each architecture's default appended
    default: float | bool = 0.0
    switch: str = ""  # a yes/no knob's two option names ("--on/--off"), whose help is taken as it is

    @property
    def option(self) -> str:
        return "--" + self.field.replace("_", "-")


@dataclass
class Seen:
    """What one micro-batch's passes produced, as the terms read it."""

    x: torch.Tensor  # the target
    recon: torch.Tensor
    mu: torch.Tensor  # the learned code's posterior (the layout, computed, has none)
    log_sigma: torch.Tensor
    noise: float
    pre_mu: torch.Tensor | None  # the encoder's mean before its bound (None: not given)
    dis: DiscriminatorOutputs | None  # None while the discriminator has not joined
    sim_layers: tuple[int, ...]
    settings: Mapping[str, float | bool]  # every knob's value, by field
    values: dict[str, torch.Tensor] = field(default_factory=dict)  # the terms computed so far, by name


@dataclass(frozen=True)
class Term:
    """One named loss term: its value, and its weight in each network's objective it takes part in."""

    name: str  # its name in the logs (metrics.jsonl, TensorBoard's loss/NAME)
    value: Callable[[Seen], torch.Tensor | None]  # None: what it reads is absent
    weights: Mapping[str, Knob | None]  # network -> the knob of its weight in that objective (None: weight 1)
    # the networks whose parameters the value depends on: the one-backward shortcut is checked against it
    reads: frozenset[str]
    adversarial: bool = False  # reads the discriminator's outputs, so it is absent until the discriminator joins
    balanced: bool = False  # the equilibrium/margin rule may drop it from the decoder's objective
    optional: bool = False  # computed (and logged) only when one of its weights is not 0
    settings: tuple[Knob, ...] = ()  # other knobs its value reads

    def knobs(self) -> list[Knob]:
        return [k for k in self.weights.values() if k is not None] + list(self.settings)


KL_WEIGHT = Knob("kl_weight", "KL weight")
PIXEL_WEIGHT = Knob("pixel_weight", "Pixel L1 weight")
SSIM_WEIGHT = Knob("ssim_weight", "Weight of 1 - SSIM of the reconstruction")
SATURATION_WEIGHT = Knob("saturation_weight", "Weight of the penalty on the encoder's mean past tanh's knee, which "
                         "keeps the latent a smooth code rather than bits")
SIM_WEIGHT = Knob("sim_weight", "Encoder similarity weight")
GAMMA = Knob("gamma", "Decoder weight of the similarity")
GAN_WEIGHT = Knob("gan_weight", "Decoder GAN weight")
KL_NOISE_SCALED = Knob("kl_noise_scaled", "KL times noise^2, so its pull on mu holds as the noise falls (lite), or "
                       "the film's plain KL (broad2016).", default=False, switch="--kl-noise-scaled/--kl-plain")

ENC, DEC, ALL = frozenset({"encoder"}), frozenset({"encoder", "decoder"}), frozenset(NETWORKS)

# the order is that of the computation and of each objective's sum, the reconstruction first: a run gives the
# losses bit for bit that it gave before the terms were a table
TERMS: dict[str, Term] = {t.name: t for t in (
    Term("pix", lambda s: (s.recon.float() - s.x.float()).abs().mean(),
         {"encoder": PIXEL_WEIGHT, "decoder": PIXEL_WEIGHT}, DEC),
    Term("structure", lambda s: 1.0 - structural_similarity(s.recon, s.x),
         {"encoder": SSIM_WEIGHT, "decoder": SSIM_WEIGHT}, DEC, optional=True),
    Term("kl", lambda s: kl_divergence(s.mu, s.log_sigma, s.noise, bool(s.settings["kl_noise_scaled"])),
         {"encoder": KL_WEIGHT}, ENC, settings=(KL_NOISE_SCALED,)),
    Term("saturation", lambda s: None if s.pre_mu is None else saturation(s.pre_mu),
         {"encoder": SATURATION_WEIGHT}, ENC, optional=True),
    Term("sim", lambda s: similarity(s.dis.feats_real, s.dis.feats_recon, s.sim_layers),
         {"encoder": SIM_WEIGHT, "decoder": GAMMA}, ALL, adversarial=True),
    Term("bce_real", lambda s: bce(s.dis.real, 1.0), {}, frozenset({"discriminator"}), adversarial=True),
    Term("bce_recon", lambda s: bce(s.dis.recon, 0.0), {}, ALL, adversarial=True),
    Term("bce_prior", lambda s: bce(s.dis.prior, 0.0), {}, ALL, adversarial=True),
    Term("gan_dec", lambda s: (bce(s.dis.recon, 1.0) + bce(s.dis.prior, 1.0)) / 2,
         {"decoder": GAN_WEIGHT}, ALL, adversarial=True, balanced=True),
    Term("dis", lambda s: (s.values["bce_real"] + s.values["bce_recon"] + s.values["bce_prior"]) / 3,
         {"discriminator": None}, ALL, adversarial=True),
)}


#: names a knob must not take, and what holds them: the run's own settings (training/config.py reserves its
#: fields), which a knob of the same name would silently shadow
RESERVED: dict[str, str] = {}


def reserve(names, holder: str) -> None:
    """`names` are `holder`'s: register() refuses a knob that would take one of them."""
    RESERVED.update(dict.fromkeys(names, holder))


def register(term: Term) -> None:
    """Add a term (a plugin's, a test's): its knobs become TrainConfig fields and `train` options, and the
    loop logs it. A knob's field must not name another knob, nor a setting of the run (RESERVED)."""
    # the run's settings reserve their names when config.py is imported, which a plugin may come before
    from autoencoded.training import config  # noqa: F401
    if term.name in TERMS:
        raise ValueError(f"loss term {term.name!r} is registered already")
    taken = knobs()
    for k in term.knobs():
        if k.field in taken and taken[k.field] is not k:
            raise ValueError(f"loss term {term.name!r}: knob {k.field!r} is another term's")
        if k.field in RESERVED:
            raise ValueError(f"loss term {term.name!r}: knob {k.field!r} is a {RESERVED[k.field]}; name it "
                             "something else")
    TERMS[term.name] = term


def knobs() -> dict[str, Knob]:
    """Every term's knobs by field, in the terms' order: what TrainConfig and the `train` options derive from."""
    out: dict[str, Knob] = {}
    for term in TERMS.values():
        for k in term.knobs():
            out.setdefault(k.field, k)
    return out


@dataclass
class Objectives:
    encoder: torch.Tensor
    decoder: torch.Tensor
    discriminator: torch.Tensor | None  # None while the discriminator has not joined
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # every named term, for the logs
    # the encoder's objective differs from the decoder's only by terms that do not read the decoder, so one
    # backward pass of the encoder's objective gives the decoder's gradients too (checked, see VAEGANLoss)
    decoder_shares_encoder: bool = False


def _total(parts: list[torch.Tensor]) -> torch.Tensor | None:
    total = None
    for p in parts:
        total = p if total is None else total + p
    return total


class VAEGANLoss:
    """The VAE-GAN objective (Larsen et al. 2016) with pixel anchors, as the three networks' losses, from the
    terms in TERMS; with the built-in ones:
    - encoder: kl_weight x KL + pixel_weight x pixel + ssim_weight x structure + saturation_weight x saturation
      (of `pre_mu`, the encoder's mean before its tanh) + sim_weight x similarity
    - decoder: pixel_weight x pixel + ssim_weight x structure + gamma x similarity + gan_weight x GAN (when the
      balance allows)
    - discriminator: (BCE real + BCE recon + BCE prior) / 3
    Without discriminator outputs (the pixel-led phase) the adversarial terms are absent. Built with keywords,
    one per knob (training/config.py's `loss_settings`); a knob left out takes its default."""

    def __init__(self, sim_layers: tuple[int, ...], **settings: float | bool) -> None:
        known = knobs()
        unknown = set(settings) - set(known)
        if unknown:
            raise TypeError(f"unknown loss settings: {', '.join(sorted(unknown))}")
        self.sim_layers = tuple(sim_layers)
        self.settings = {f: settings.get(f, k.default) for f, k in known.items()}

    def __call__(self, x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor,
                 noise: float, dis: DiscriminatorOutputs | None = None, decoder_gan: bool = True,
                 pre_mu: torch.Tensor | None = None) -> Objectives:
        seen = Seen(x, recon, mu, log_sigma, noise, pre_mu, dis, self.sim_layers, self.settings)
        parts: dict[str, list[torch.Tensor]] = {net: [] for net in NETWORKS}
        rec: list[torch.Tensor] = []  # the encoder's reconstruction terms, logged as "rec"
        shares = True
        for term in TERMS.values():
            if term.adversarial and dis is None:
                continue
            weights = {net: (1.0 if k is None else float(self.settings[k.field])) for net, k in term.weights.items()}
            if term.optional and not any(weights.values()):
                continue
            value = term.value(seen)
            if value is None:
                continue
            seen.values[term.name] = value
            joined = {net: k for net, k in term.weights.items() if not (net == "decoder" and term.balanced
                                                                       and not decoder_gan)}
            for net, k in joined.items():
                weighted = value if k is None else weights[net] * value
                parts[net].append(weighted)
                if net == "encoder" and "decoder" in term.reads:
                    rec.append(weighted)
            # one backward pass serves both only if each term that reads the decoder weighs the same in both
            if "decoder" in term.reads and joined.get("encoder", ...) is not joined.get("decoder", ...):
                shares = False
        objectives = {net: _total(ps) for net, ps in parts.items()}
        terms = dict(seen.values)
        terms.update({OBJECTIVE_NAMES[net]: obj for net, obj in objectives.items() if obj is not None})
        terms["rec"] = _total(rec)
        return Objectives(objectives["encoder"], objectives["decoder"], objectives["discriminator"], terms,
                          decoder_shares_encoder=shares)
