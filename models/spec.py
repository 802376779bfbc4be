"""The model contract (ARCHITECTURE.md, "Model spec"): what every consumer needs to build, feed,
train, score and read a model. Each ``models/<name>.py`` defines one :class:`ModelSpec`; nothing
outside ``models/`` branches on a model's name, it asks the spec instead.

Conventions the spec's functions share:
- **fields**: the physical quantities a sample or a capture provides, H x W x C (or H x W)
  float32, linear: ``left``, ``right``, ``combined`` (DP views and their mean), ``sharp``,
  ``coc`` (signed CoC, px), ``focus_mask``, ``refocused`` (the scene rendered with the target
  focus), ``wide``, ``ultrawide`` (aligned to W), ``defocus_wide``, ``defocus_target`` (|CoC|,
  px), ``occlusion``, ``radial`` (r / r_corner of the full frame).
- **inputs / targets**: named after the spec's tensors, C x H x W float32 (no batch axis);
  a sequence model's examples carry a time axis in front (T x C x H x W).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

from typing import TYPE_CHECKING

import numpy as np

from core.errors import UserError

if TYPE_CHECKING:  # PyTorch is imported where a spec builds or runs a network, never to read one
    import torch
    from torch import nn

VARIANTS = ("paper", "mobile", "tiny")
INF = float("inf")
IMG = (0.0, 1.0)  # value range of images and masks


class UnknownModelError(UserError, KeyError):
    """Raised by ``models.registry.get`` for a name that is not registered; the message lists valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class DataSpec:
    """The data a model trains on and runs on.

    ``renderer``: which of the engine's sample renderers makes its synthetic examples
    (``synth.samples.RENDERERS``). ``capture``: what a capture must hold, ``dual_pixel``
    (left/right views) or ``dual_camera`` (W + UW + disparity). ``fields``: the fields its
    inputs are made of. ``refocus``: its examples need a focus mask and a refocus target.
    ``test_options``: renderer options the fixed test split cycles through (example i takes
    option i mod n), e.g. DC2's half all-in-focus, half refocus.
    """

    renderer: str
    capture: str
    fields: tuple[str, ...]
    refocus: bool = False
    test_options: tuple[dict, ...] = ()


@dataclass(frozen=True)
class EvalTask:
    """One scored task: output ``output`` against target ``target``, next to doing nothing.

    ``before`` names the do-nothing image (a key of the example's targets, else of its inputs),
    scored as ``before_label``. ``when`` = (meta key, value) limits the task to those examples.
    ``wiener``: also score Wiener deconvolution with the true PSF (synthetic DP examples carry
    the CoC and the PSF parameters). ``alternative``: another input scored as a do-nothing image
    (``alternative_label``), plus the per-pixel oracle between ``before`` and it.
    """

    name: str
    output: str
    target: str
    before: str
    before_label: str
    when: tuple[str, object] | None = None
    wiener: bool = False
    alternative: str | None = None
    alternative_label: str = ""
    oracle_label: str = ""

    def applies(self, meta: dict) -> bool:
        return self.when is None or meta.get(self.when[0]) == self.when[1]


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output tensor (always NCHW float32).

    ``channels`` is an int, or a per-variant mapping (RDPD state). ``scale`` is the spatial
    size relative to the model input (1/16 for RDPD state, 1/2 ... 1/8 for DC2 side outputs).
    ``value_range`` may hold infinities for unbounded tensors (``to_dict`` writes them as None).
    ``spatial`` fixes H x W whatever the image size (a text query's 1 x 1 embedding, a score);
    such a tensor is never tiled or cropped.
    """

    name: str
    channels: int | Mapping[str, int]
    value_range: tuple[float, float]
    description: str
    layout: str = "NCHW"
    recurrent: bool = False
    scale: float = 1.0
    spatial: tuple[int, int] | None = None

    def channels_for(self, variant: str) -> int:
        if isinstance(self.channels, Mapping):
            if variant not in self.channels:
                raise UserError(f"unknown variant {variant!r}; valid: {', '.join(self.channels)}")
            return int(self.channels[variant])
        return int(self.channels)

    def shape(self, variant: str, height: int, width: int, batch: int = 1) -> tuple[int, int, int, int]:
        if self.spatial is not None:
            return (batch, self.channels_for(variant), *self.spatial)
        h, w = height * self.scale, width * self.scale
        if h != int(h) or w != int(w):
            raise UserError(f"{self.name}: {height}x{width} is not divisible by 1/{1 / self.scale:g}")
        return (batch, self.channels_for(variant), int(h), int(w))

    def to_dict(self, variant: str | None = None) -> dict:
        lo, hi = self.value_range
        d = {
            "name": self.name,
            "channels": self.channels_for(variant) if variant else (
                dict(self.channels) if isinstance(self.channels, Mapping) else self.channels),
            "value_range": [None if math.isinf(lo) else lo, None if math.isinf(hi) else hi],
            "layout": self.layout,
            "dtype": "float32",
            "recurrent": self.recurrent,
            "scale": self.scale,
            "spatial": list(self.spatial) if self.spatial else None,
            "description": self.description,
        }
        return d


@dataclass(frozen=True)
class ModelSpec:
    """Everything a consumer needs to build, feed and read one model."""

    name: str
    description: str
    builder: Callable[[str], nn.Module]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    main_output: str
    example_fn: Callable[..., dict]
    aux_outputs: tuple[str, ...] = ()  # returned after ``outputs`` in training mode only (loss terms)
    # module paths (``model.named_modules()`` names) whose ops stay float in static int8 exports:
    # each target maps them to its own exclusion (ONNX name scopes, PT2E module stacks, LiteRT names)
    int8_float_modules: tuple[str, ...] = ()
    variants: tuple[str, ...] = VARIANTS
    size_multiple: int = 16
    state_map: dict[str, str] = field(default_factory=dict)  # recurrent input -> output feeding it
    paper_params: float | None = None  # the paper's figure (parameters), for tables
    paper_note: str = ""
    # -- data, training and scoring (see the module docstring for fields/inputs/targets) --------
    data: DataSpec | None = None
    inputs_from_fields: Callable[[dict], dict] | None = None  # fields of one frame -> inputs
    targets_from_fields: Callable[[dict], dict] | None = None  # fields of one frame -> targets
    before_image: Callable[[dict], np.ndarray] | None = None  # inputs -> the "before" RGB (C x H x W)
    radial_input: tuple[str, int] | None = None  # (input, channel) holding the radial map, if any
    disparity_output: str | None = None  # an output holding a signed defocus/disparity map (point/box prompts)
    refocus_output: str | None = None  # the output refocused on the focus mask (prompt figures, benchmarks)
    loss: Callable[[dict, dict], dict] | None = None  # (outputs, targets) -> {"loss": ..., terms}
    eval_tasks: tuple[EvalTask, ...] = ()

    # -- names --------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def recurrent_inputs(self) -> list[str]:
        return [t.name for t in self.inputs if t.recurrent]

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name, f"{self.name} input")

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name, f"{self.name} output")

    # -- building -----------------------------------------------------------------------------
    def check_variant(self, variant: str) -> None:
        if variant not in self.variants:
            raise UserError(f"unknown variant {variant!r} for {self.name}; valid: {', '.join(self.variants)}")

    def check_size(self, height: int, width: int) -> None:
        m = self.size_multiple
        if height <= 0 or width <= 0 or height % m or width % m:
            raise UserError(
                f"{self.name} needs height and width that are positive multiples of {m}, got {height}x{width}"
            )

    def build(self, variant: str = "mobile") -> nn.Module:
        """A fresh model in eval mode (initialisation follows the global torch seed)."""
        self.check_variant(variant)
        model = self.builder(variant).eval()
        model.spec_variant = variant  # read by forward() for the recurrent state's shape
        return model

    # -- recurrent state and running ------------------------------------------------------------
    @property
    def is_sequence(self) -> bool:
        """Whether the model streams state from frame to frame (its examples are clips)."""
        return bool(self.state_map)

    def zero_state(self, variant: str, height: int, width: int, batch: int = 1) -> dict[str, torch.Tensor]:
        """The recurrent inputs at the first frame: zeros of their shapes."""
        import torch

        shapes = self.input_shapes(variant, height, width, batch)
        return {n: torch.zeros(shapes[n]) for n in self.recurrent_inputs}

    def forward(self, model, inputs: dict[str, torch.Tensor], variant: str | None = None) -> dict[str, torch.Tensor]:
        """Named outputs of ``model`` (a module, or a DDP wrapper: it is only called) on batched
        named inputs. A sequence model takes clips (B x T x C x H x W) of its non-recurrent inputs,
        runs them from a zero state feeding each state output back (``state_map``), and returns
        its non-state outputs stacked over T. ``variant`` defaults to the one ``build`` made."""
        import torch

        if not self.is_sequence:  # a model in training mode may add its aux outputs
            names = self.output_names + list(self.aux_outputs)
            return dict(zip(names, model(*[inputs[n] for n in self.input_names])))
        variant = variant or getattr(getattr(model, "module", model), "spec_variant", None)
        if variant is None:
            raise ValueError(f"{self.name}: pass variant= to forward() for a model not made by ModelSpec.build")
        clip = next(inputs[n] for n in self.input_names if n not in self.state_map)
        b, t, _, h, w = clip.shape
        state = {k: v.to(clip) for k, v in self.zero_state(variant, h, w, b).items()}
        frames: dict[str, list] = {}
        for i in range(t):
            step = {n: state[n] if n in self.state_map else inputs[n][:, i] for n in self.input_names}
            out = dict(zip(self.output_names, model(*[step[n] for n in self.input_names])))
            state = {n: out[o] for n, o in self.state_map.items()}
            for n, v in out.items():
                if n not in self.state_map.values():
                    frames.setdefault(n, []).append(v)
        return {n: torch.stack(v, 1) for n, v in frames.items()}

    def pack(self, fields: dict) -> tuple[dict, dict]:
        """(inputs, targets) of one frame from its fields (C x H x W float32)."""
        return self.inputs_from_fields(fields), self.targets_from_fields(fields)

    # -- shapes and examples --------------------------------------------------------------------
    def input_shapes(self, variant: str, height: int, width: int, batch: int = 1) -> dict[str, tuple]:
        self.check_variant(variant)
        self.check_size(height, width)
        return {t.name: t.shape(variant, height, width, batch) for t in self.inputs}

    def output_shapes(self, variant: str, height: int, width: int, batch: int = 1) -> dict[str, tuple]:
        self.check_variant(variant)
        self.check_size(height, width)
        return {t.name: t.shape(variant, height, width, batch) for t in self.outputs}

    def example_inputs(self, height: int, width: int, variant: str = "mobile", batch: int = 1,
                       seed: int = 0, **kwargs) -> dict[str, torch.Tensor]:
        """Realistic inputs in ``spec.inputs`` order: images in [0, 1], radial map ``r/r_corner``,
        defocus maps >= 0, binary masks; deterministic for a given ``seed``."""
        import torch

        shapes = self.input_shapes(variant, height, width, batch)
        g = torch.Generator().manual_seed(int(seed))
        out = self.example_fn(shapes, g, **kwargs)
        return {name: out[name].contiguous() for name in self.input_names}

    def to_dict(self, variant: str | None = None) -> dict:
        """JSON-ready description (for artifact manifests)."""
        return {
            "name": self.name,
            "description": self.description,
            "variants": list(self.variants),
            "variant": variant,
            "inputs": [t.to_dict(variant) for t in self.inputs],
            "outputs": [t.to_dict(variant) for t in self.outputs],
            "main_output": self.main_output,
            "size_multiple": self.size_multiple,
            "state_map": dict(self.state_map),
        }


def _by_name(specs: list[TensorSpec], name: str, what: str) -> TensorSpec:
    for t in specs:
        if t.name == name:
            return t
    raise KeyError(f"no {what} named {name!r}; valid: {', '.join(t.name for t in specs)}")



def stack_chw(*arrays: np.ndarray) -> np.ndarray:
    """H x W (x C) arrays -> their channels stacked, C x H x W float32, in one copy (``chw`` of
    each then a concatenation copies a 3 MP capture's 7 channels twice)."""
    views = [np.asarray(a)[None] if np.ndim(a) == 2 else np.moveaxis(np.asarray(a), 2, 0) for a in arrays]
    return np.concatenate(views, axis=0, dtype=np.float32)


def chw(a: np.ndarray) -> np.ndarray:
    """H x W (x C) -> C x H x W float32, contiguous."""
    a = np.asarray(a)
    return np.ascontiguousarray((a[..., None] if a.ndim == 2 else a).transpose(2, 0, 1), dtype=np.float32)
