"""One model per timm family, pruned and classified: ``pruned``, ``refused``, ``silent`` or ``crash``.

A *family* is a module of ``timm.models`` that registers models (``timm.list_modules()``).
Each is represented by its cheapest model: the one with the smallest ``params x input
pixels`` (a stand-in for its MACs) at its default input size, counted by building every
model of the family on the meta device. That takes about 10 minutes for all of timm
1.0.31, so the picks are pinned in :data:`TIMM_FAMILY_PICKS`; a family that the installed
timm has but the pins do not (or whose pinned model it lacks) is counted on the spot, and
:func:`family_picks` with ``repick=True`` counts them all.

:func:`check_family_model` builds one model (random init, nothing downloaded) at its
default input size (``timm.data.resolve_model_data_config``), prunes ``ratio`` of every
group's channels through the zoo's code path (:func:`.zoo.prune_by_ratio`) and sorts the
outcome into

* ``pruned``: at least one group pruned, and the pruned model runs forward (and backward,
  where the forward is real) with the same output shapes;
* ``refused``: the engine raised :class:`~lightning_prune.engine.PruningError` (for the
  whole model, or for every group) and left the model as it was;
* ``silent``: pruning returned, but the model no longer runs, its output shapes changed,
  or a refusal left it changed;
* ``crash``: any other exception from building the graph or pruning (a ``TraceError`` on
  a model that runs is one: the engine could not follow a forward that works);
* ``skipped``: timm itself cannot build or run the model on CPU at random init; not
  counted;
* ``timeout``: the model took longer than the per-model limit; counted, not passed.

Small models run a real forward before and after pruning; big ones (more MACs than
``real_forward_gmacs``) run a meta-device forward instead, which checks every shape but
no values. :mod:`.zoo_report`'s torchvision table is unchanged; :func:`markdown_report`
here writes the family table (``docs/zoo_timm.md``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..engine import DependencyGraph, PruningError
from . import zoo

_LOG = logging.getLogger(__name__)

__all__ = [
    "FAMILY_COLUMNS", "FamilyPick", "FamilyResult", "STATUSES", "TIMM_FAMILY_PICKS", "check_family_model",
    "family_picks", "markdown_report", "meta_cost", "pick_family_model", "run_families", "tally",
    "timm_families", "write_markdown",
]

#: Outcome of one model, in the order of the tally.
STATUSES = ("pruned", "refused", "silent", "crash", "timeout", "skipped")

#: The cheapest model (smallest params x input pixels, counted on meta) of each family of
#: timm 1.0.31. Families missing here, or whose model the installed timm lacks, are counted
#: when asked for.
TIMM_FAMILY_PICKS: dict[str, str] = {
    "beit": "beit_base_patch16_224", "byoanet": "halonet_h1", "byobnet": "test_byobnet",
    "cait": "cait_xxs24_224", "coat": "coat_tiny", "convit": "convit_tiny", "convmixer": "convmixer_768_32",
    "convnext": "test_convnext", "cpubone": "cpubone_nano", "crossvit": "crossvit_tiny_240",
    "csatv2": "csatv2", "cspnet": "cs3darknet_focus_s", "cspnext": "cspnext_tiny", "davit": "davit_tiny",
    "deepseek_vit": "deepseek_vit_412m", "deit": "deit_tiny_patch16_224", "densenet": "densenet121",
    "dla": "dla46x_c", "dpn": "dpn48b", "edgenext": "edgenext_xx_small", "efficientformer": "efficientformer_l1",
    "efficientformer_v2": "efficientformerv2_s0", "efficientnet": "test_efficientnet",
    "efficientvim": "efficientvim_m1", "efficientvit_mit": "efficientvit_b0", "efficientvit_msra": "efficientvit_m0",
    "eva": "eva02_tiny_patch14_224", "fasternet": "fasternet_t0", "fastvit": "fastvit_t8",
    "focalnet": "focalnet_tiny_srf", "gcvit": "gcvit_xxtiny", "gemma4_vit": "gemma4_vit_167m",
    "ghostnet": "ghostnet_050", "hardcorenas": "hardcorenas_b", "hgnet": "hgnetv2_b0", "hiera": "hiera_tiny_224",
    "hieradet_sam2": "hieradet_small", "hrnet": "hrnet_w18_small", "iformer": "iformer_t",
    "inception_next": "inception_next_atto", "inception_resnet_v2": "inception_resnet_v2",
    "inception_v3": "inception_v3", "inception_v4": "inception_v4", "lcnetv2": "lcnetv2_small",
    "levit": "levit_128s", "lowformer": "lowformer_b0", "mambaout": "test_mambaout", "maxxvit": "test_coatnet",
    "metaformer": "poolformerv2_s12", "mlp_mixer": "gmlp_ti16_224", "mobilenetv3": "mobilenetv3_small_050",
    "mobilenetv5": "mobilenetv5_base", "mobilevit": "mobilevit_xxs", "mvitv2": "mvitv2_tiny",
    "naflexvit": "naflexvit_base_patch16_parfac_gap", "nasnet": "nasnetalarge", "nest": "nest_tiny",
    "nextvit": "nextvit_small", "nfnet": "test_nfnet", "pit": "pit_ti_224", "pnasnet": "pnasnet5large",
    "pvt_v2": "pvt_v2_b0", "qwen3_vit": "qwen3_vit_88m", "rdnet": "rdnet_tiny", "regnet": "regnetx_002",
    "repghost": "repghostnet_050", "repvit": "repvit_m1", "res2net": "res2next50", "resnest": "resnest14d",
    "resnet": "test_resnet", "resnetv2": "resnetv2_18", "rexnet": "rexnet_100", "selecsls": "selecsls42",
    "senet": "legacy_seresnet18", "sequencer": "sequencer2d_s", "shvit": "shvit_s1", "sknet": "skresnet18",
    "starnet": "starnet_s050", "swiftformer": "swiftformer_xs", "swin_transformer": "swin_tiny_patch4_window7_224",
    "swin_transformer_v2": "swinv2_tiny_window16_256", "swin_transformer_v2_cr": "swinv2_cr_tiny_224",
    "tiny_vit": "tiny_vit_5m_224", "tnt": "tnt_s_legacy_patch16_224", "tresnet": "tresnet_m",
    "twins": "twins_svt_small", "vgg": "vgg11", "visformer": "visformer_tiny", "vision_transformer": "test_vit",
    "vision_transformer_hybrid": "vit_tiny_r_s16_p8_224", "vision_transformer_relpos": "test_vit_relpos",
    "vision_transformer_sam": "samvit_base_patch16_224", "vitamin": "vitamin_small_224", "volo": "volo_d1_224",
    "vovnet": "ese_vovnet19b_slim_dw", "xception": "legacy_xception", "xception_aligned": "xception41p",
    "xcit": "xcit_nano_12_p8_224",
}

#: Columns of the Markdown table written by :func:`markdown_report`.
FAMILY_COLUMNS = (
    "family", "model", "input", "status", "params before (M)", "params after (M)", "MACs before (G)",
    "MACs after (G)", "groups pruned", "graph build (ms)", "total (s)", "note",
)

TORCHVISION_FAMILY = "torchvision"


# --------------------------------------------------------------------------- picking


@dataclass
class FamilyPick:
    """The model that stands for ``family``: ``how`` is ``"pinned"`` or ``"counted"``."""

    family: str
    model: str
    members: int
    how: str = "pinned"


def timm_families() -> list[str]:
    """Every module of ``timm.models`` that registers at least one model."""
    import timm

    return [m for m in timm.list_modules() if timm.list_models(module=m)]


def timm_input_size(model: nn.Module) -> tuple[int, int, int]:
    """``(C, H, W)`` of the model's default input (``timm.data.resolve_model_data_config``)."""
    import timm.data

    return tuple(int(s) for s in timm.data.resolve_model_data_config(model)["input_size"])


def meta_cost(name: str) -> tuple[int, tuple[int, int, int]]:
    """(parameters, default input size) of timm model ``name``, built on the meta device (no memory, no init)."""
    import timm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
    return sum(p.numel() for p in model.parameters()), timm_input_size(model)


def pick_family_model(family: str) -> FamilyPick:
    """The cheapest model of ``family``: smallest params x input pixels, then fewest params, then name.

    Models that cannot even be built on meta are left out; a family where none can be
    built gets its first model (its check will then report why).
    """
    import timm

    names = timm.list_models(module=family)
    costs = []
    for name in names:
        try:
            params, (_, h, w) = meta_cost(name)
        except Exception as err:  # noqa: BLE001 - such a model is simply not a candidate
            _LOG.debug("%s: not built on meta (%s)", name, err)
            continue
        costs.append((params * h * w, params, name))
    best = min(costs)[2] if costs else names[0]
    return FamilyPick(family, best, len(names), "counted")


def family_picks(families: Sequence[str] | None = None, repick: bool = False) -> list[FamilyPick]:
    """One :class:`FamilyPick` per family (all of the installed timm's when ``families`` is None).

    The pinned pick is used when the installed timm still has that model in that family;
    otherwise (or with ``repick``) the family is counted with :func:`pick_family_model`.
    """
    import timm

    known = timm_families()
    if families is None:
        families = known
    unknown = [f for f in families if f not in known]
    if unknown:
        raise ValueError(f"timm {timm.__version__} has no model family {', '.join(unknown)}; "
                         f"families are the modules of timm.list_modules()")
    picks = []
    for family in families:
        members = timm.list_models(module=family)
        pinned = TIMM_FAMILY_PICKS.get(family)
        if not repick and pinned in members:
            picks.append(FamilyPick(family, pinned, len(members)))
        else:
            picks.append(pick_family_model(family))
    return picks


# --------------------------------------------------------------------------- one model


@dataclass
class FamilyResult:
    """What :func:`check_family_model` found for one model (``status`` is one of :data:`STATUSES`)."""

    family: str
    model: str
    status: str = "crash"
    input_size: tuple[int, ...] = ()
    members: int = 0
    params_before: int = 0
    params_after: int = 0
    macs_before: int | None = None
    macs_after: int | None = None
    groups: int = 0
    pruned_groups: int = 0
    refused_groups: int = 0
    build_s: float = 0.0
    total_s: float = 0.0
    forward: str = ""  # "real" or "meta"
    stage: str = ""  # where it stopped: build, forward, graph, prune, check
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def counted(self) -> bool:
        return self.status != "skipped"

    @property
    def passed(self) -> bool:
        return self.status in ("pruned", "refused")

    @property
    def note(self) -> str:
        parts = []
        if self.error:
            parts.append(f"{self.stage}: {self.error}" if self.stage else self.error)
        if self.refused_groups and self.status != "refused":
            plural = "s" if self.refused_groups > 1 else ""
            parts.append(f"{self.refused_groups} group{plural} refused, kept whole")
        if self.forward == "meta":
            parts.append("meta-device forward")
        parts.extend(self.notes)
        return "; ".join(parts)


class ModelTimeout(BaseException):
    """Raised by the per-model alarm. A BaseException, so no ``except Exception`` on the way swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`ModelTimeout` after ``seconds`` of wall time (main thread on POSIX; else no limit).

    The alarm interrupts Python code, so one long native op runs to its end first.
    """
    usable = (seconds and seconds > 0 and hasattr(signal, "setitimer")
              and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
              and _in_main_thread())
    if not usable:
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise ModelTimeout(f"over the {seconds:g} s limit")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _first_line(err: BaseException, limit: int = 240) -> str:
    text = str(err).strip().splitlines()[0][:limit] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, tuple | list):
        return [t for v in obj for t in _tensors(v)]
    return []


def _map(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return type(obj)(_map(v, fn) for v in obj)
    return obj


@contextlib.contextmanager
def _on_meta(model: nn.Module) -> Iterator[None]:
    """Run ``model`` with shape-only (meta) parameters and buffers; everything is put back after.

    Tied tensors stay tied; attributes a forward binds on its modules (caches) are undone.
    """
    saved_attrs = [(vars(m), dict(vars(m))) for m in model.modules()]
    memo: dict[int, torch.Tensor] = {}
    swapped: list[tuple[nn.Module, str, torch.Tensor]] = []
    try:
        for m in model.modules():
            for kind in ("_parameters", "_buffers"):
                for name, t in list(getattr(m, kind).items()):
                    if t is None:
                        continue
                    new = memo.get(id(t))
                    if new is None:
                        new = torch.empty_like(t, device="meta")
                        if kind == "_parameters":
                            new = nn.Parameter(new, requires_grad=t.requires_grad)
                        memo[id(t)] = new
                    swapped.append((m, name, t))
                    setattr(m, name, new)
        yield
    finally:
        for m, name, original in reversed(swapped):
            setattr(m, name, original)
        for attrs, before in saved_attrs:
            for key in [k for k in attrs if k not in before]:
                del attrs[key]
            for key, value in before.items():
                if attrs.get(key, _MISSING) is not value:
                    attrs[key] = value


_MISSING = object()


def call_model(model: nn.Module, inputs: Any) -> Any:
    """The engine's calling convention: a dict as keyword arguments, a tuple/list as positional ones."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def _forward(model: nn.Module, inputs: Any, how: str, backward: bool = False) -> Any:
    """The output signature of one forward (real or on meta); with ``backward`` also a real backward."""
    if how == "meta":
        with torch.no_grad(), _on_meta(model):
            out = call_model(model, _map(inputs, lambda t: torch.empty_like(t, device="meta")))
        return zoo._outputs_signature(out)
    with torch.set_grad_enabled(backward):
        out = call_model(model, inputs)
        sig = zoo._outputs_signature(out)
        leaves = [t for t in _tensors(out) if t.requires_grad and t.dtype.is_floating_point]
        if backward and leaves:
            sum(t.float().sum() for t in leaves).backward()
    return sig


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _build(name: str, family: str) -> tuple[nn.Module, Any]:
    """The random-init model and its default example input."""
    if family == TORCHVISION_FAMILY:
        task = zoo.task_of(name)
        model = zoo.build_model(name, task).eval()
        return model, zoo.example_inputs_for(name, task, None, model=model)
    import timm

    model = timm.create_model(name, pretrained=False).eval()
    return model, torch.randn(1, *timm_input_size(model))


def check_family_model(name: str, family: str, ratio: float = 0.5, timeout_s: float | None = 300.0,
                       real_forward_gmacs: float = 8.0, members: int = 0) -> FamilyResult:
    """Prune timm model ``name`` (of ``family``; ``"torchvision"`` for a torchvision name) and classify it.

    Never raises (but for KeyboardInterrupt): the outcome is in the result.
    """
    res = FamilyResult(family, name, members=members)
    start = time.perf_counter()
    try:
        with time_limit(timeout_s), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _check(res, name, family, ratio, real_forward_gmacs)
    except ModelTimeout as err:
        res.status, res.error = "timeout", str(err)
    finally:
        res.total_s = time.perf_counter() - start
        gc.collect()
    return res


def _check(res: FamilyResult, name: str, family: str, ratio: float, real_forward_gmacs: float) -> None:
    res.stage = "build"
    torch.manual_seed(0)
    try:
        model, inputs = _build(name, family)
    except Exception as err:  # noqa: BLE001 - timm cannot build it here: not the engine's doing
        res.status, res.error = "skipped", _first_line(err)
        return
    res.input_size = tuple(inputs.shape[1:]) if isinstance(inputs, torch.Tensor) else ()
    res.params_before = sum(p.numel() for p in model.parameters())
    res.macs_before, macs_error = zoo.count_macs(model, inputs)
    if macs_error:
        res.notes.append(f"MACs n/a ({macs_error})")
    small = (res.macs_before is not None and res.macs_before <= real_forward_gmacs * 1e9) or (
        res.macs_before is None and res.params_before <= 30e6)
    res.forward = "real" if small else "meta"

    res.stage = "forward"
    try:
        before = _forward(model, inputs, res.forward)
    except Exception as err:  # noqa: BLE001
        if res.forward == "real":
            res.status, res.error = "skipped", f"the unpruned model does not run: {_first_line(err)}"
            return
        res.forward = "real"  # a meta forward is not what the model supports: do it for real
        try:
            before = _forward(model, inputs, "real")
        except Exception as err2:  # noqa: BLE001
            res.status, res.error = "skipped", f"the unpruned model does not run: {_first_line(err2)}"
            return
    shapes_before = _shapes(model)

    refusal = None
    res.stage = "graph"
    try:
        t0 = time.perf_counter()
        trace_inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        graph = DependencyGraph().build_dependency(model, trace_inputs)
        res.build_s = time.perf_counter() - t0
        res.stage = "prune"
        reasons: list[str] = []
        res.groups, res.pruned_groups, res.refused_groups = zoo.prune_by_ratio(graph, ratio, [], reasons)
        if reasons:
            res.notes.append(f"first refusal: {reasons[0][:160]}")
        del graph
    except PruningError as err:
        refusal = err
    except Exception as err:  # noqa: BLE001 - an engine failure: the point of the sweep
        res.status, res.error = "crash", _first_line(err)
        return
    res.params_after = sum(p.numel() for p in model.parameters())

    if refusal is not None or res.pruned_groups == 0:
        # The whole model refused (or no group could be pruned): it must be exactly as it was.
        if refusal is not None:
            res.error = _first_line(refusal)
        elif not res.refused_groups:
            res.error = f"no group to prune ({res.groups} groups, none with 2+ units at ratio {ratio:g})"
        else:
            res.stage, res.error = "prune", "every group refused"
        res.status = "refused"
        changed = _shapes(model) != shapes_before
        try:
            after = _forward(model, inputs, res.forward)
        except Exception as err:  # noqa: BLE001
            res.status, res.error = "silent", f"{res.error}; then the model no longer runs: {_first_line(err)}"
            return
        if changed or after != before:
            res.status = "silent"
            res.error += "; but the refusal left the model changed"
        return

    res.stage = "check"
    try:
        after = _forward(model, inputs, res.forward, backward=res.forward == "real")
    except Exception as err:  # noqa: BLE001 - pruning returned, the model is broken
        res.status, res.error = "silent", f"the pruned model does not run: {_first_line(err)}"
        return
    if after != before:
        res.status, res.error = "silent", f"output shapes changed: {before} -> {after}"
        return
    if res.params_after >= res.params_before:
        res.notes.append("params did not fall")
    res.macs_after, _ = zoo.count_macs(model, inputs)
    res.status, res.stage = "pruned", ""


# --------------------------------------------------------------------------- sweep and report


def run_families(entries: Sequence[tuple[str, str, int]], ratio: float = 0.5, timeout_s: float | None = 300.0,
                 real_forward_gmacs: float = 8.0,
                 on_result: Callable[[int, FamilyResult], None] | None = None) -> list[FamilyResult]:
    """:func:`check_family_model` on each ``(family, model, members)`` in turn, in one process."""
    zoo._warm_up()
    results = []
    for i, (family, name, members) in enumerate(entries, 1):
        res = check_family_model(name, family, ratio, timeout_s, real_forward_gmacs, members)
        results.append(res)
        if on_result is not None:
            on_result(i, res)
    return results


def tally(results: Sequence[FamilyResult]) -> dict[str, Any]:
    """Counts per status, with ``pass_rate`` ((pruned + refused) / counted) and ``pruned_rate``."""
    counts: dict[str, Any] = {s: sum(r.status == s for r in results) for s in STATUSES}
    counted = sum(r.counted for r in results)
    counts["counted"] = counted
    counts["pass_rate"] = (counts["pruned"] + counts["refused"]) / counted if counted else 0.0
    counts["pruned_rate"] = counts["pruned"] / counted if counted else 0.0
    return counts


def tally_line(results: Sequence[FamilyResult]) -> str:
    t = tally(results)
    return (f"pruned {t['pruned']} / refused {t['refused']} / silent {t['silent']} / crash {t['crash']}"
            f" (timeout {t['timeout']}, skipped {t['skipped']}); pass rate {t['pass_rate']:.1%} "
            f"({t['pruned'] + t['refused']}/{t['counted']}), pruned {t['pruned_rate']:.1%}")


def progress_line(i: int, n: int, r: FamilyResult) -> str:
    macs = (f"{r.macs_before / 1e9:7.3f}G -> {r.macs_after / 1e9:7.3f}G" if r.macs_before and r.macs_after
            else f"{'n/a':>19s}")
    return (f"[{i:3d}/{n}] {r.family:26s} {r.model:36s} {r.status:7s} params {r.params_before / 1e6:7.2f}M -> "
            f"{r.params_after / 1e6:7.2f}M MACs {macs} groups {r.pruned_groups}/{r.groups} "
            f"({r.total_s:5.1f} s) {r.note[:200]}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _num(value: int | float | None, scale: float, digits: int = 2) -> str:
    return "n/a" if not value else f"{value / scale:.{digits}f}"


def report_row(r: FamilyResult) -> str:
    built = r.build_s > 0
    family = f"{r.family} ({r.members})" if r.members else r.family
    status = f"skipped: {r.error}" if r.status == "skipped" else r.status
    cells = [
        family, r.model, "x".join(map(str, r.input_size)) or "n/a", _cell(status),
        _num(r.params_before, 1e6), _num(r.params_after, 1e6) if r.status == "pruned" else "n/a",
        _num(r.macs_before, 1e9, 3), _num(r.macs_after, 1e9, 3),
        f"{r.pruned_groups}/{r.groups}" if built else "n/a",
        f"{r.build_s * 1000:.0f}" if built else "n/a",
        f"{r.total_s:.1f}", _cell("" if r.status == "skipped" else r.note),
    ]
    return "| " + " | ".join(cells) + " |"


def markdown_report(results: Sequence[FamilyResult], *, ratio: float, command: str,
                    environment: dict[str, str], timeout_s: float | None, real_forward_gmacs: float,
                    wall_s: float | None = None) -> str:
    """The family table: a header saying how it was made and the tally, then one row per model."""
    picks = "pinned for timm 1.0.31 in `lightning_prune.bench.zoo_families.TIMM_FAMILY_PICKS`"
    counted = sorted({r.family for r in results if r.family != TORCHVISION_FAMILY
                      and TIMM_FAMILY_PICKS.get(r.family) != r.model})
    if counted:
        picks += f"; counted on the spot for {', '.join(counted)}"
    wall = f" The sweep took {wall_s / 60:.1f} minutes of wall time." if wall_s else ""
    limit = f"{timeout_s:g} s" if timeout_s else "none"
    lines = [
        "# Prunability of one model per timm family",
        "",
        f"Generated by `{command}` on {environment['date']} with {environment['versions']}, "
        f"{environment['cpus']} CPU cores, {environment['threads']} torch threads "
        f"(load average {environment['load']} at the start).{wall}",
        "",
        "A family is a module of `timm.models` that registers models (`timm.list_modules()`; the number "
        "in brackets is how many models it has). Each is represented by its cheapest model: the smallest "
        f"parameters x input pixels at its default input size, counted by building every model on the meta "
        f"device ({picks}). Every model is built with random init "
        "(`timm.create_model(name, pretrained=False)`, nothing downloaded) and fed one random image of its "
        "default input size (`timm.data.resolve_model_data_config`); torchvision models, where present, "
        "as in `docs/zoo_report.md`.",
        "",
        f"Every group loses {ratio:g} of its channels, weakest by L2 magnitude (the code path of "
        "`docs/zoo_report.md`). Status:",
        "",
        "* **pruned**: at least one group pruned, and the pruned model runs forward with the same output "
        "shapes (and backward, where the forward is real);",
        "* **refused**: the engine raised `PruningError` for the whole model, or for every group, and the "
        "model is exactly as it was (groups refused in a model that was otherwise pruned are only counted "
        "in the note);",
        "* **silent**: pruning returned but the model no longer runs, or its output shapes changed (or a "
        "refusal left it changed);",
        "* **crash**: any other exception while building the graph or pruning (a `TraceError` on a model "
        "that runs counts here);",
        f"* **timeout**: over the per-model limit of {limit} (wall time, checked between Python calls); "
        "counted, not passed;",
        "* **skipped: reason**: timm itself cannot build or run the model on CPU at random init; not counted.",
        "",
        f"Models of at most {real_forward_gmacs:g} GMACs run a real forward before and after pruning; "
        "bigger ones a meta-device forward (shapes only), said in the note. MACs are counted by "
        "`lightning_prune.engine.utils.count_ops_and_params`; graph build is one "
        "`DependencyGraph.build_dependency` call; total is the whole check of the model, build included.",
        "",
        f"**{tally_line(results)}** at ratio {ratio:g}. The pass rate is (pruned + refused) / counted, "
        "where counted leaves out the skipped models and includes the timeouts.",
        "",
        "| " + " | ".join(FAMILY_COLUMNS) + " |",
        "|" + "|".join("---:" if ("(M)" in c or "(G)" in c or "(ms)" in c or "(s)" in c or c == "groups pruned")
                       else "---" for c in FAMILY_COLUMNS) + "|",
    ]
    lines.extend(report_row(r) for r in results)
    return "\n".join(lines) + "\n"


def write_markdown(path: str | os.PathLike[str], results: Sequence[FamilyResult], **kwargs: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(markdown_report(results, **kwargs))
