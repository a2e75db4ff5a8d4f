"""The benchmark: config parsing, CSV/JSON schemas, error isolation, methods and reports."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_prune.bench.analysis import latency_trends, pareto_front
from lightning_prune.bench.cli import parse_bench_config
from lightning_prune.bench.config import BenchConfig, ModelSpec
from lightning_prune.bench.methods import METHODS, MethodContext, PruneTarget, PruningMethod, get_method
from lightning_prune.bench.outputs import write_outputs
from lightning_prune.bench.plots import PLOT_FILES
from lightning_prune.bench.results import BASE_FIELDS, SCHEMA_VERSION, RunResult, csv_fields
from lightning_prune.bench.runner import run_benchmark
from lightning_prune.cli import cli_main
from lightning_prune.lightning import DigitsDataModule, ImageClassifier
from lightning_prune.models import SmallResNet

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("bench_*.yaml"))


# ---------------------------------------------------------------- config parsing
def test_yaml_config_parses_into_typed_objects(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(
        "models:\n"
        "  - name: small_resnet\n"
        "    kwargs: {width: 8}\n"
        "  - name: resnet18\n"
        "    input_shape: [1, 3, 32, 32]\n"
        "    ignored_layers: [layer4]\n"
        "methods: [magnitude, masking]\n"
        "ratios: [0.25, 0.5]\n"
        "target: macs\n"
        "datamodule:\n"
        "  class_path: lightning_prune.lightning.DigitsDataModule\n"
        "  init_args: {batch_size: 16, channels: 3}\n")
    cfg = parse_bench_config(["--config", str(path), "--repeats", "7"])
    assert isinstance(cfg, BenchConfig)
    assert cfg.models == [ModelSpec("small_resnet", kwargs={"width": 8}),
                          ModelSpec("resnet18", input_shape=[1, 3, 32, 32], ignored_layers=["layer4"])]
    assert (cfg.methods, cfg.ratios, cfg.target, cfg.repeats) == (["magnitude", "masking"], [0.25, 0.5], "macs", 7)
    assert isinstance(cfg.datamodule, DigitsDataModule)
    assert (cfg.datamodule.batch_size, cfg.datamodule.channels) == (16, 3)


@pytest.mark.parametrize("args, match", [
    (["--methods", "[magnitude, nope]"], "unknown benchmark method 'nope'"),
    (["--ratios", "[0.5, 1.5]"], "ratios"),
    (["--batch_sizes", "[0]"], "batch_sizes"),
    (["--target", "flops"], "target"),
    (["--accuracy", "false"], "input_shape"),
])
def test_bad_configs_name_the_argument(args, match):
    with pytest.raises((ValueError, SystemExit)) as info:
        parse_bench_config(args)
    if info.type is ValueError:
        assert match in str(info.value)


def test_bad_values_raise_the_explained_error_directly():
    with pytest.raises(ValueError, match="unknown benchmark method 'nope'.*valid: .*magnitude"):
        BenchConfig(methods=["nope"])
    with pytest.raises(ValueError, match="`ratios` must be in"):
        BenchConfig(ratios=[1.0])


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_bench_config_in_configs_parses(config):
    cfg = cli_main(["bench", "--config", str(config)], run=False)
    assert isinstance(cfg, BenchConfig) and cfg.models and cfg.methods


# ---------------------------------------------------------------- schemas
def _row(method: str, kind: str, ratio: float | None, ms: float, acc: float | None, **kw) -> RunResult:
    stats = {"median_ms": ms, "iqr_ms": ms / 10, "p25_ms": ms * 0.95, "p75_ms": ms * 1.05}
    return RunResult(model="m", method=method, kind=kind, target="ratio", ratio=ratio, params=100, macs=1e6,
                     accuracy=acc, latency={1: dict(stats), 8: dict(stats)}, **kw)


def test_csv_and_json_follow_the_schema(tmp_path):
    cfg = BenchConfig(batch_sizes=[1, 8], output_dir=str(tmp_path), plots=False)
    from lightning_prune.bench.runner import BenchRun

    run = BenchRun(config=cfg, environment={"date": "d", "torch": "t", "torchvision": "tv", "lightning": "l",
                                            "python": "p", "platform": "x", "cpu_count": 2, "threads": 2,
                                            "device": "cpu"},
                   results=[_row("dense", "dense", None, 2.0, 0.9, widths={"a": 4}),
                            _row("magnitude", "structural", 0.5, 1.0, float("nan"), speedup={1: 2.0, 8: 2.0}),
                            RunResult(model="m", method="taylor", kind="structural", ratio=0.5, status="error",
                                      error="ValueError: boom")],
                   profiles={"m / dense": "table"})
    paths = write_outputs(run)
    with open(paths["csv"]) as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    per_bs = ("latency_ms", "latency_iqr_ms", "speedup", "speedup_p25", "speedup_p75", "dense_latency_ms")
    assert reader.fieldnames == csv_fields([1, 8]) == [*BASE_FIELDS, *(f"{c}_bs{b}" for b in (1, 8) for c in per_bs)]
    assert [r["method"] for r in rows] == ["dense", "magnitude", "taylor"]
    assert float(rows[1]["speedup_bs8"]) == 2.0 and rows[2]["status"] == "error" and rows[2]["latency_ms_bs1"] == ""
    doc = json.loads(paths["json"].read_text())  # strict JSON: NaN became null
    assert doc["schema_version"] == SCHEMA_VERSION
    assert set(doc) == {"schema_version", "config", "environment", "runs", "profiles"}
    assert doc["config"]["batch_sizes"] == [1, 8] and doc["config"]["datamodule"] is None
    assert [r["method"] for r in doc["runs"]] == ["dense", "magnitude", "taylor"]
    assert set(doc["runs"][0]) >= set(BASE_FIELDS) | {"latency", "speedup", "speedup_p25", "speedup_p75",
                                                      "dense_latency", "timing", "widths", "profile_top"}
    assert doc["runs"][0]["latency"]["8"]["median_ms"] == 2.0 and doc["runs"][0]["widths"] == {"a": 4}
    assert doc["runs"][1]["accuracy"] is None
    assert doc["profiles"] == {"m / dense": "table"}
    report = paths["report"].read_text()
    assert "| taylor |" in report and "ValueError: boom" in report


# ---------------------------------------------------------------- analysis
def test_pareto_front_keeps_only_undominated_runs():
    rows = [_row("dense", "dense", None, 10.0, 0.99), _row("a", "structural", 0.3, 6.0, 0.98),
            _row("a", "structural", 0.5, 4.0, 0.95), _row("b", "structural", 0.5, 5.0, 0.94),  # dominated by a@0.5
            _row("m", "masking", 0.5, 10.5, 0.99)]  # slower than dense, not more accurate
    front = pareto_front(rows, 8)
    assert [(r.method, r.ratio) for r in front] == [("a", 0.5), ("a", 0.3), ("dense", None)]


def test_latency_trends_order_runs_from_least_to_most_pruned():
    rows = [_row("dense", "dense", None, 10.0, None), _row("s", "structural", 0.7, 3.0, None),
            _row("s", "structural", 0.3, 7.0, None), _row("m", "masking", 0.3, 10.1, None),
            _row("m", "masking", 0.7, 10.2, None)]
    by_method = {t.method: t for t in latency_trends(rows, "m", 8, "ratio")}
    assert by_method["s"].ratios == (0.3, 0.7) and by_method["s"].falls and by_method["s"].speedup == pytest.approx(10 / 3)
    assert not by_method["m"].falls
    noisy = [_row("dense", "dense", None, 10.0, None), _row("m", "masking", 0.3, 10.0, None),
             _row("m", "masking", 0.7, 9.5, None)]  # 5% is within noise, not a fall
    assert not latency_trends(noisy, "m", 8, "ratio")[0].falls
    budget = [_row("dense", "dense", None, 10.0, None), _row("s", "structural", 0.8, 8.0, None),
              _row("s", "structural", 0.4, 4.0, None)]
    (trend,) = latency_trends(budget, "m", 8, "macs")  # a smaller kept fraction is more pruned
    assert trend.ratios == (0.8, 0.4) and trend.falls


# ---------------------------------------------------------------- methods
def _ctx(**kw) -> MethodContext:
    return MethodContext(example_input=torch.zeros(1, 1, 8, 8), datamodule=None, ignored_layers=[], **kw)


def test_masking_zeroes_weights_but_keeps_every_shape_and_the_classifier():
    net = SmallResNet(width=8)
    module = ImageClassifier(net, input_shape=[1, 1, 8, 8])
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    fc = net.fc.weight.detach().clone()
    get_method("masking").apply(module, PruneTarget("ratio", 0.5), _ctx())
    assert {k: v.shape for k, v in net.state_dict().items()} == shapes  # no weight_orig / weight_mask left
    convs = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d)]
    zero = sum(int((w == 0).sum()) for w in convs) / sum(w.numel() for w in convs)
    assert zero == pytest.approx(PruneTarget("ratio", 0.5).weight_sparsity(), abs=0.01)  # 0.75
    torch.testing.assert_close(net.fc.weight, fc)


def test_structural_method_shrinks_the_network_and_keeps_the_output_shape():
    net = SmallResNet(width=8)
    module = ImageClassifier(net, input_shape=[1, 1, 8, 8])
    before = sum(p.numel() for p in net.parameters())
    get_method("magnitude").apply(module, PruneTarget("ratio", 0.5), _ctx())
    assert net.stem[0].out_channels == 4 and sum(p.numel() for p in net.parameters()) < before
    out = net(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)
    out.sum().backward()


def test_gradient_methods_without_data_explain_what_to_change():
    module = ImageClassifier(SmallResNet(width=8), input_shape=[1, 1, 8, 8])
    with pytest.raises(ValueError, match="needs training data"):
        get_method("taylor").apply(module, PruneTarget("ratio", 0.5), _ctx())


# ---------------------------------------------------------------- runner: error isolation, files
class Exploding(PruningMethod):
    kind = "structural"

    def apply(self, module, target, ctx):
        raise RuntimeError("this method always fails")


def test_failures_are_isolated_and_every_file_is_written(tmp_path, monkeypatch):
    import matplotlib.image

    monkeypatch.setitem(METHODS, "exploding", Exploding)
    cfg = BenchConfig(models=[ModelSpec("small_resnet", input_shape=[1, 1, 8, 8], kwargs={"width": 8}),
                              ModelSpec("no_such_model", input_shape=[1, 1, 8, 8]),
                              ModelSpec("small_resnet", input_shape=[1, 1, 8, 8], kwargs={"width": 16})],
                      methods=["magnitude", "exploding", "masking"], ratios=[0.5], batch_sizes=[1, 4],
                      accuracy=False, warmup=1, warmup_seconds=0, settle=None, repeats=3, min_run_time=0.005,
                      threads=1, profile_top=5,
                      chrome_trace=True, output_dir=str(tmp_path))
    lines: list[str] = []
    run = run_benchmark(cfg, progress=lines.append)
    assert len(lines) == 3 * (1 + 3) and lines[-1].startswith("[ 12/12]")
    status = {(r.model, r.method): r.status for r in run.results}
    assert status[("small_resnet", "dense")] == status[("small_resnet#2", "masking")] == "ok"
    assert status[("small_resnet", "exploding")] == "error"
    assert status[("no_such_model", "dense")] == "error"
    assert "unknown model 'no_such_model'" in next(r.error for r in run.results if r.model == "no_such_model")
    assert "this method always fails" in next(r.error for r in run.results if r.method == "exploding")
    ok = {(r.model, r.method): r for r in run.results if r.ok}
    assert ok[("small_resnet#2", "magnitude")].params < ok[("small_resnet#2", "dense")].params
    masked = ok[("small_resnet#2", "masking")]
    assert masked.params == ok[("small_resnet#2", "dense")].params and masked.nonzero_params < masked.params
    assert masked.macs_fraction == 1.0 and ok[("small_resnet#2", "magnitude")].macs_fraction < 0.5
    assert set(run.profiles) == {f"{m} / {k}" for m in ("small_resnet", "small_resnet#2")
                                 for k in ("dense", "magnitude @ 0.5", "masking @ 0.5")}
    assert "aten::" in run.profiles["small_resnet / dense"]
    traces = sorted(tmp_path.glob("trace_*.json"))
    assert len(traces) == 6 and all("traceEvents" in json.loads(t.read_text()) for t in traces)

    paths = write_outputs(run, command="lightning-prune bench --test")
    for name in ("results.csv", "results.json", "report.md", *PLOT_FILES):
        assert (tmp_path / name).stat().st_size > 0
    for name in PLOT_FILES:  # the plots open as images
        image = matplotlib.image.imread(tmp_path / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert len([k for k in paths if k.startswith("profile:")]) == 6
    report = paths["report"].read_text()
    assert "## Failures" in report and "no_such_model" in report and "exploding" in report
    assert "## small_resnet#2" in report and "Top operators" in report
    assert all(math.isfinite(r.size_mb) for r in run.results if r.ok)


def test_digits_accuracy_with_finetune_through_the_callback_and_sparse_training(tmp_path):
    cfg = BenchConfig(models=[ModelSpec("small_resnet", kwargs={"width": 8})],
                      methods=["magnitude", "sparse_group_norm"], ratios=[0.5], batch_sizes=[16],
                      train_epochs=2, finetune_epochs=1, sparse_epochs=1, warmup=1, warmup_seconds=0, settle=None, repeats=3,
                      min_run_time=0.005, threads=1,
                      profile=False, plots=False, output_dir=str(tmp_path))
    run = run_benchmark(cfg, progress=None)
    rows = {r.method: r for r in run.results}
    assert all(r.ok for r in run.results), [r.error for r in run.results]
    assert rows["dense"].accuracy > 0.5  # 2 epochs of real digits: far above chance (0.1)
    for method in ("magnitude", "sparse_group_norm"):
        assert rows[method].params < rows["dense"].params
        assert rows[method].accuracy is not None and rows[method].accuracy_delta is not None
        assert rows[method].widths["stem.0"] == 4


# ---------------------------------------------------------------- model names
def test_models_by_builtin_name_torchvision_name_and_class_path():
    from lightning_prune.bench.models import build_model

    small = build_model(ModelSpec("small_resnet", kwargs={"width": 8}), [1, 3, 8, 8], num_classes=5)
    assert small.stem[0].in_channels == 3 and small.fc.out_features == 5
    tv = build_model(ModelSpec("torchvision:resnet18", kwargs={"num_classes": 7}), [1, 3, 32, 32], 10)
    assert tv.fc.out_features == 7
    by_path = build_model(ModelSpec("lightning_prune.models.SmallResNet", kwargs={"width": 4}), [1, 1, 8, 8], 10)
    assert isinstance(by_path, SmallResNet) and by_path.stem[0].out_channels == 4
    with pytest.raises(ValueError, match="cannot import 'Nope'"):
        build_model(ModelSpec("lightning_prune.models.Nope"), [1, 1, 8, 8], 10)


def test_timm_models_build_when_timm_is_installed():
    from lightning_prune.bench.models import build_model

    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs timm"):
            build_model(ModelSpec("timm:resnet18"), [1, 3, 32, 32], 10)
        return
    model = build_model(ModelSpec("timm:resnet18", kwargs={"num_classes": 3}), [1, 3, 32, 32], 10).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
