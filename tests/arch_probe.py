"""Prune a model every way the API offers and classify what happened.

``probe(model, example_inputs)`` works on deep copies and returns an :class:`Outcome`:

- ``"pruned"``: at least one prune returned, and after every returned prune the model
  still ran forward (same output structure, shapes and dtypes as the dense model, finite
  where the dense output was) and backward (the sum of the outputs), with every parameter
  that had a gradient in the dense model getting one of its own shape.
- ``"refused"``: nothing could be pruned, and every refusal was clear (a
  ``tp.PruningError``, or a ``TraceError``/``ValueError``/``TypeError`` with a message from
  ``build_dependency``) and left the model exactly as it was.
- ``"silent"``: a prune (or the build) returned normally and left a model that no longer
  runs, changed an output shape or lost a gradient; or a refusal left the model changed.
- ``"crash"``: any other exception from the engine.

Each probe works on its own deep copy:

1. Groups. Every group of ``DG.get_all_groups()``, about half of its units each, through
   ``DG.get_pruning_group(root, fn, idxs)`` + ``check_pruning_group`` + ``prune()``, through
   ``group.prune(idxs)``, or rooted at a layer that reads the channels (its
   ``prune_*_in_channels``), chosen at random, while iterating over groups made before any
   of them was pruned. Then a second round on the same graph (a third of every group), a
   reload check (``tp.load_state_dict(fresh_dense_copy, tp.state_dict(pruned))`` gives the
   same outputs), a run in the other train/eval mode, and a third round on a graph rebuilt
   from the pruned model. Random variants: norms as extra root types, one ignored layer
   (whose outputs must keep their width), and groups made and pruned under ``torch.no_grad``
   or ``torch.inference_mode``.
2. ``tp.pruner.MetaPruner(..., MagnitudeImportance(p=2), pruning_ratio=0.5).step()``, or a
   variant (global, isomorphic, round_to, two iterative steps, head pruning, another
   importance, the interactive step, ratio 0.8), then the same checks.

The random choices come from ``seed``; ``Outcome.notes`` lists the ones that matter for a repro.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import traceback
from dataclasses import dataclass, field

import torch
from random_architectures import call
from torch import nn

import lightning_prune.engine as tp

OUTCOMES = ("pruned", "refused", "silent", "crash")
_REFUSALS_AT_BUILD = (tp.TraceError, ValueError, TypeError)  # PruningError is a ValueError


@dataclass
class Outcome:
    outcome: str
    stage: str = ""  # where the first failure happened: "build", "group <root>", "meta"...
    error: str = ""  # first line of that failure
    groups: int = 0  # groups found by get_all_groups (first round)
    pruned: int = 0  # group prunes that returned (both rounds)
    refused: int = 0  # group prunes refused cleanly
    meta: str = ""  # what MetaPruner.step did: "pruned", "no-op", "refused: ...", ...
    notes: list[str] = field(default_factory=list)
    trace: str = ""  # traceback of the first failure, for repros

    @property
    def passed(self) -> bool:
        return self.outcome in ("pruned", "refused")

    def first_line(self) -> str:
        return self.error.splitlines()[0] if self.error else ""


class _Refused(Exception):
    """check_pruning_group said no."""


class _Failure(Exception):
    """Raised inside the probe to stop at the first silent break or crash."""

    def __init__(self, outcome: str, stage: str, error: str, trace: str = ""):
        super().__init__(error)
        self.outcome, self.stage, self.error, self.trace = outcome, stage, error, trace


# ---------------------------------------------------------------------------------------
# model state and output checks
# ---------------------------------------------------------------------------------------


def state_of(model: nn.Module) -> dict:
    """Everything a refusal must leave as it was: tensors (values, shapes) and plain int attributes."""
    tensors = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    attrs = {}
    for name, mod in model.named_modules():
        for k, v in vars(mod).items():
            if isinstance(v, int | bool | tuple) and not k.startswith("_"):
                attrs[f"{name}.{k}"] = v
    return {"tensors": tensors, "attrs": attrs,
            "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()}}


def state_diff(before: dict, model: nn.Module) -> str | None:
    """``None`` when ``model`` is exactly in state ``before``, else what differs."""
    now = state_of(model)
    if now["tensors"].keys() != before["tensors"].keys():
        return f"state_dict keys changed: {sorted(set(now['tensors']) ^ set(before['tensors']))[:4]}"
    for k, v in before["tensors"].items():
        w = now["tensors"][k]
        if v.shape != w.shape:
            return f"{k} changed shape {tuple(v.shape)} -> {tuple(w.shape)}"
        if v.dtype != w.dtype or not torch.equal(v, w):
            return f"{k} changed value"
    for k, v in before["attrs"].items():
        if now["attrs"].get(k, v) != v:
            return f"attribute {k} changed {v} -> {now['attrs'][k]}"
    if now["requires_grad"] != before["requires_grad"]:
        return "requires_grad of a parameter changed"
    return None


def spec(out) -> object:
    """The structure of an output: nested tuples/dicts of (shape, dtype)."""
    if isinstance(out, torch.Tensor):
        return ("T", tuple(out.shape), out.dtype)
    if isinstance(out, tuple | list):
        return (type(out).__name__, tuple(spec(o) for o in out))
    if isinstance(out, dict):
        return ("dict", tuple((k, spec(v)) for k, v in out.items()))
    return ("leaf", type(out).__name__)


def tensors_of(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, tuple | list):
        return [t for o in out for t in tensors_of(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in tensors_of(o)]
    return []


@dataclass
class Reference:
    spec: object
    finite: list[bool]
    grad_params: dict[str, bool]  # name -> got a gradient in the dense model


def reference(model: nn.Module, inputs) -> Reference:
    m = copy.deepcopy(model)
    out = call(m, inputs)
    ts = tensors_of(out)
    loss = sum(t.float().sum() for t in ts if t.requires_grad)
    if isinstance(loss, torch.Tensor):
        loss.backward()
    return Reference(spec(out), [bool(torch.isfinite(t).all()) for t in ts if t.is_floating_point()],
                     {n: p.grad is not None for n, p in m.named_parameters()})


def check_runs(model: nn.Module, inputs, ref: Reference) -> str | None:
    """``None`` when ``model`` still runs forward and backward like the dense model."""
    try:
        out = call(model, inputs)
    except Exception as err:  # noqa: BLE001 - any failure is the finding
        return f"forward fails: {type(err).__name__}: {err}\n{_where(err)}"
    got = spec(out)
    if got != ref.spec:
        return f"output changed: {_spec_str(ref.spec)} -> {_spec_str(got)}"
    ts = tensors_of(out)
    finite = [bool(torch.isfinite(t).all()) for t in ts if t.is_floating_point()]
    if any(a and not b for a, b in zip(ref.finite, finite)):
        return "output is no longer finite"
    loss = sum(t.float().sum() for t in ts if t.requires_grad)
    if not isinstance(loss, torch.Tensor):
        return "no output requires grad any more" if any(ref.grad_params.values()) else None
    try:
        loss.backward()
    except Exception as err:  # noqa: BLE001
        return f"backward fails: {type(err).__name__}: {err}\n{_where(err)}"
    for name, p in model.named_parameters():
        if ref.grad_params.get(name) and p.grad is None:
            return f"{name} gets no gradient any more"
        if p.grad is not None and p.grad.shape != p.shape:
            return f"{name}.grad has shape {tuple(p.grad.shape)}, the parameter {tuple(p.shape)}"
    return None


def _where(err: BaseException) -> str:
    """The last frames of the failure in the model's own code (not torch's)."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "/torch/" not in f.filename]
    return "  at " + " < ".join(f"{f.name} ({f.filename.rsplit('/', 1)[-1]}:{f.lineno}): {f.line}"
                                for f in reversed(frames[-2:]))


def _spec_str(s) -> str:
    if s[0] == "T":
        return "x".join(map(str, s[1])) or "scalar"
    if s[0] == "dict":
        return "{" + ", ".join(f"{k}: {_spec_str(v)}" for k, v in s[1]) + "}"
    if s[0] in ("tuple", "list"):
        return "(" + ", ".join(_spec_str(v) for v in s[1]) + ")"
    return s[1]


def _err(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _tb(err: BaseException) -> str:
    return "".join(traceback.format_exception(type(err), err, err.__traceback__, limit=-6))


# ---------------------------------------------------------------------------------------
# the probe
# ---------------------------------------------------------------------------------------


def _build(model: nn.Module, inputs, stage: str) -> tp.DependencyGraph | None:
    """The graph, or ``None`` on a clean refusal; raises ``_Failure`` otherwise."""
    before = state_of(model)
    try:
        DG = tp.DependencyGraph().build_dependency(model, example_inputs=inputs)
    except _REFUSALS_AT_BUILD as err:
        if not str(err):
            raise _Failure("crash", stage, f"{type(err).__name__} without a message", _tb(err)) from err
        diff = state_diff(before, model)
        if diff:
            raise _Failure("silent", stage, f"refused ({_err(err)}) but the model changed: {diff}", _tb(err)) from err
        return None
    except Exception as err:  # noqa: BLE001
        raise _Failure("crash", stage, _err(err), _tb(err)) from err
    diff = state_diff(before, model)
    if diff:
        raise _Failure("silent", stage, f"build_dependency changed the model: {diff}")
    return DG


def _prune_one(DG, model, inputs, ref, group, frac: float, rng: random.Random, res: Outcome, rnd: int,
               context=contextlib.nullcontext) -> None:
    """Prune about ``frac`` of ``group``'s units (the prune itself under ``context``), then check the model."""
    try:
        units = group.units
        name = group.root_name
    except tp.PruningError:
        res.refused += 1
        return
    except Exception as err:  # noqa: BLE001
        raise _Failure("crash", f"round {rnd}: group.units", _err(err), _tb(err)) from err
    if len(units) < 2:
        return
    chosen = sorted(rng.sample(range(len(units)), max(1, int(len(units) * frac))))
    idxs = sorted(i for u in chosen for i in units[u])
    root = group[0].dep
    how = rng.choice(["get_pruning_group", "group.prune", "via_in_channels"])
    if how == "via_in_channels":  # root the same channels at a layer that reads them
        try:
            readers = [(dep, ix) for dep, ix in group if "in_channels" in getattr(dep.handler, "__name__", "")
                       and isinstance(dep.target.module, nn.Module)]
            if not readers:
                how = "get_pruning_group"
            else:
                dep, ix = rng.choice(readers)
                keep = set(chosen)
                idxs = sorted({v for v, u in zip(ix, ix.units) if u in keep}) or [ix[0]]
                root = dep
                name = f"{name} via {DG.name_of(dep.target.module)}.in"
        except Exception as err:  # noqa: BLE001
            raise _Failure("crash", f"round {rnd}: group items of {name}", _err(err), _tb(err)) from err
    stage = f"round {rnd}: group {name} ({len(idxs)} idxs, {how})"
    before = state_of(model)
    try:
        with context():
            if how == "group.prune":
                group.prune(idxs)
            else:
                sub = DG.get_pruning_group(root.target.module, root.handler, idxs)
                if not DG.check_pruning_group(sub):
                    raise _Refused
                sub.prune()
    except _Refused:
        diff = state_diff(before, model)
        if diff:
            raise _Failure("silent", stage, f"check_pruning_group changed the model: {diff}") from None
        res.refused += 1
        return
    except tp.PruningError as err:
        diff = state_diff(before, model)
        if diff:
            raise _Failure("silent", stage, f"refused ({_err(err)}) but the model changed: {diff}", _tb(err)) from err
        res.refused += 1
        return
    except Exception as err:  # noqa: BLE001
        raise _Failure("crash", stage, _err(err), _tb(err)) from err
    res.pruned += 1
    problem = check_runs(model, inputs, ref)
    if problem:
        raise _Failure("silent", stage, problem)
    if rng.random() < 0.5:  # else the next prune must slice the gradients left in place
        model.zero_grad(set_to_none=True)


_NORM_ROOTS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.PReLU,
               nn.modules.instancenorm._InstanceNorm)


def _check_other_mode(model: nn.Module, inputs, ref: Reference, stage: str) -> None:
    """The pruned model must also run in the other mode (eval after train, train after eval)."""
    modes = {name: mod.training for name, mod in model.named_modules()}
    model.train(not model.training)
    # the other mode may use other layers (train-only heads), so no check of which get gradients
    other = Reference(ref.spec, ref.finite, {})
    try:
        problem = check_runs(model, inputs, other)
    finally:
        for name, mod in model.named_modules():
            mod.training = modes[name]
    if problem:
        raise _Failure("silent", f"{stage} ({'eval' if model.training else 'train'} mode)", problem)


def _probe_groups(model, inputs, ref, rng, res: Outcome) -> None:
    m = copy.deepcopy(model)
    DG = _build(m, inputs, "build")
    if DG is None:
        res.notes.append("build refused")
        return
    roots = None
    if rng.random() < 0.3:
        roots = (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention, nn.LSTM, nn.GRU, nn.Embedding,
                 *_NORM_ROOTS)
        res.notes.append("norm roots")
    ignored, ignored_width = [], None
    if rng.random() < 0.3:
        prunable = [mod for mod in m.modules()
                    if isinstance(mod, nn.modules.conv._ConvNd | nn.Linear) and DG.get_out_channels(mod)]
        if prunable:
            ignored = [rng.choice(prunable)]
            ignored_width = DG.get_out_channels(ignored[0])
            res.notes.append(f"ignored {DG.name_of(ignored[0])}")
    context = rng.choice([contextlib.nullcontext, contextlib.nullcontext, torch.no_grad, torch.inference_mode])
    if context is not contextlib.nullcontext:
        res.notes.append(f"pruned under {context.__name__}")
    for rnd, frac in ((1, 0.5), (2, 1 / 3)):
        try:
            with context():
                groups = list(DG.get_all_groups(ignored_layers=ignored, root_module_types=roots))
        except Exception as err:  # noqa: BLE001
            raise _Failure("crash", f"round {rnd}: get_all_groups", _err(err), _tb(err)) from err
        if rnd == 1:
            res.groups = len(groups)
        for g in groups:  # made before any prune of this round: each is re-derived after the earlier ones
            _prune_one(DG, m, inputs, ref, g, frac, rng, res, rnd, context)
    if ignored and DG.get_out_channels(ignored[0]) != ignored_width:
        raise _Failure("silent", "groups", f"ignored layer {DG.name_of(ignored[0])} lost output channels: "
                       f"{ignored_width} -> {DG.get_out_channels(ignored[0])}")
    if not res.pruned:
        return
    _check_other_mode(m, inputs, ref, "groups")
    _check_reload(model, m, inputs, "groups")
    # round 3: a new graph of the pruned model, and one more prune of its first group
    DG2 = _build(m, inputs, "round 3: rebuild")
    if DG2 is not None:
        try:
            groups = list(DG2.get_all_groups())
        except Exception as err:  # noqa: BLE001
            raise _Failure("crash", "round 3: get_all_groups", _err(err), _tb(err)) from err
        for g in groups[:2]:
            _prune_one(DG2, m, inputs, ref, g, 0.25, rng, res, 3)


def _check_reload(dense: nn.Module, pruned: nn.Module, inputs, stage: str) -> None:
    """``tp.state_dict`` of the pruned model loads into a fresh dense copy and gives the same outputs."""
    fresh = copy.deepcopy(dense)
    try:
        tp.load_state_dict(fresh, tp.state_dict(pruned))
    except Exception as err:  # noqa: BLE001
        raise _Failure("crash", f"{stage}: reload", _err(err), _tb(err)) from err
    modes = {name: mod.training for name, mod in pruned.named_modules()}
    pruned.eval()
    fresh.eval()
    try:
        with torch.no_grad():
            a, b = tensors_of(call(pruned, inputs)), tensors_of(call(fresh, inputs))
    except Exception as err:  # noqa: BLE001
        raise _Failure("silent", f"{stage}: reload", f"the reloaded model fails: {_err(err)}") from err
    finally:
        for name, mod in pruned.named_modules():
            mod.training = modes[name]
    if len(a) != len(b) or any(x.shape != y.shape or not torch.allclose(x, y, rtol=1e-4, atol=1e-5)
                               for x, y in zip(a, b)):
        raise _Failure("silent", f"{stage}: reload", "tp.load_state_dict(fresh, tp.state_dict(pruned)) "
                       "gives other outputs than the pruned model")


_META_VARIANTS = (
    {}, {}, {}, {"global_pruning": True}, {"round_to": 2}, {"iterative_steps": 2}, {"isomorphic": True},
    {"prune_num_heads": True, "head_pruning_ratio": 0.5}, {"importance": "lamp"}, {"importance": "fpgm"},
    {"importance": "random"}, {"importance": "bn_scale"}, {"importance": "taylor"}, {"interactive": True},
    {"pruning_ratio": 0.8},
)


def _probe_meta(model, inputs, ref, rng, res: Outcome) -> None:
    m = copy.deepcopy(model)
    opts = dict(rng.choice(_META_VARIANTS))
    res.notes.append(f"meta {opts}" if opts else "meta default")
    interactive = opts.pop("interactive", False)
    steps = opts.get("iterative_steps", 1)
    kwargs = {"importance": tp.importance.MagnitudeImportance(p=2), "pruning_ratio": 0.5, **opts}
    if kwargs["importance"] == "taylor":  # Taylor scores read the gradients of a backward pass
        out = call(m, inputs)
        loss = sum(t.float().sum() for t in tensors_of(out) if t.requires_grad)
        if isinstance(loss, torch.Tensor):
            loss.backward()
        del out, loss  # a live autograd graph keeps the old parameter shapes (docs/engine.md, Limits)
    before = state_of(m)
    n_before = sum(p.numel() for p in m.parameters())
    try:
        pruner = tp.pruner.MetaPruner(m, inputs, **kwargs)
        for _ in range(steps):
            if interactive:
                for g in pruner.step(interactive=True):
                    before_group = state_of(m)
                    try:
                        g.prune()
                    except tp.PruningError as err:  # one group refused: the rest of the step goes on
                        diff = state_diff(before_group, m)
                        if diff:
                            raise _Failure("silent", "meta", f"group refused ({_err(err)}) but the model "
                                           f"changed: {diff}", _tb(err)) from err
            else:
                pruner.step()
    except _REFUSALS_AT_BUILD as err:
        diff = state_diff(before, m)
        if diff or not str(err):
            raise _Failure("silent" if diff else "crash", "meta",
                           f"refused ({_err(err)}) but the model changed: {diff}" if diff else _err(err),
                           _tb(err)) from err
        res.meta = f"refused: {str(err).splitlines()[0]}"
        return
    except Exception as err:  # noqa: BLE001
        raise _Failure("crash", "meta", _err(err), _tb(err)) from err
    n_after = sum(p.numel() for p in m.parameters())
    res.meta = "pruned" if n_after < n_before else "no-op"
    problem = check_runs(m, inputs, ref)
    if problem:
        raise _Failure("silent", "meta", problem)
    _check_other_mode(m, inputs, ref, "meta")


def probe(model: nn.Module, example_inputs, seed: int = 0, meta: bool = True) -> Outcome:
    """Prune deep copies of ``model`` every way and classify the result (see the module doc)."""
    rng = random.Random(seed)
    ref = reference(model, example_inputs)
    res = Outcome("refused")
    try:
        _probe_groups(model, example_inputs, ref, rng, res)
        if meta:
            _probe_meta(model, example_inputs, ref, rng, res)
    except _Failure as f:
        res.outcome, res.stage, res.error, res.trace = f.outcome, f.stage, f.error, f.trace
        if f.stage.startswith("meta"):
            res.stage = f"{f.stage} [{res.notes[-1]}]"
        return res
    res.outcome = "pruned" if res.pruned or res.meta == "pruned" else "refused"
    return res


def tally(outcomes: list[Outcome]) -> dict[str, int]:
    counts = {k: 0 for k in OUTCOMES}
    for o in outcomes:
        counts[o.outcome] += 1
    return counts


def tally_line(outcomes: list[Outcome]) -> str:
    c = tally(outcomes)
    n = len(outcomes)
    rate = 100.0 * (c["pruned"] + c["refused"]) / n if n else math.nan
    return (f"pruned {c['pruned']} / refused {c['refused']} / silent {c['silent']} / crash {c['crash']} "
            f"of {n}, pass rate {rate:.1f}%")
