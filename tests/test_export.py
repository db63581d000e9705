"""`fmnist export --format onnx`: ONNX Runtime agrees with fmnist's own forward pass.

Per architecture fmnist builds (briefly fitted, so its outputs are not near-uniform), on
1,000 test images: max |p_onnx - p_fmnist| <= 1e-4 and the same argmax, with one view and
with the best recipe's 18. On trained runs, the whole test set: the exported model's accuracy
is the run's recorded one. A model that cannot be exported says why and writes nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fmnist.data import CLASS_NAMES

if os.environ.get("CI"):  # installed by the test extra: missing is a failure there
    import onnx
    import onnxruntime as ort
else:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

from conftest import run_cli

TOLERANCE = 1e-4  # max abs probability difference, ONNX Runtime against fmnist.predict_proba
FIT_IMAGES = 256  # a brief fit (8 steps): weights that are no longer the initial draw
PARITY_IMAGES = 1000
ARCHITECTURES = {  # the ModelSpec fields of each kind fmnist trains, small
    "mlp": {"hidden": (32,)},
    "standardized gelu mlp": {"hidden": (32, 16), "standardize": True, "activation": "gelu", "dropout": 0.1},
    "cnn": {"arch": "cnn", "conv_filters": (8, 16), "hidden": (32,)},
    "strided pool-first cnn": {
        "arch": "cnn",
        "conv_filters": (8, 16),
        "conv_strides": (1, 2),
        "conv_repeats": (2, 1),
        "pool_first": True,
        "hidden": (16,),
    },
    "whitened cnn": {"arch": "cnn", "conv_filters": (8, 16), "whiten": True, "hidden": (16,)},
    "vgg": {"arch": "vgg", "conv_filters": (8, 16, 16)},
    "ensemble": {"hidden": (16,), "members": 3, "activation": "selu"},
    "raw pixels": {"hidden": (16,), "normalize": False, "activation": "swish"},
}
EIGHTEEN = ("identity", "flip", "left", "right", "up", "down", "up-left", "up-right", "down-left", "down-right",
            "flip-left", "flip-right", "flip-up", "flip-down", "flip-up-left", "flip-up-right", "flip-down-left",
            "flip-down-right")  # fmt: skip


def _session(path_or_bytes):
    return ort.InferenceSession(path_or_bytes, providers=["CPUExecutionProvider"])


def _accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    probs = _session(str(path)).run(None, {"pixels": x})[0]
    return float((probs.argmax(axis=1) == y).mean())


@pytest.mark.parametrize("kind", list(ARCHITECTURES))
def test_every_architecture_agrees_with_predict_proba(kind, dataset, tmp_path):
    import fmnist
    from fmnist import augment, models
    from fmnist.export import to_onnx

    (x_train, y_train), (x_test, _) = dataset
    spec = models.ModelSpec(**ARCHITECTURES[kind])
    model = models.compile_model(models.build_model(spec, x_train=x_train[:FIT_IMAGES]))
    fmnist.fit(model, x_train[:FIT_IMAGES], y_train[:FIT_IMAGES], epochs=1, batch_size=32, verbose=0, seed=0)
    x = x_test[:PARITY_IMAGES]
    for views in [("identity",), *([augment.SHIFTED_AND_MIRRORED] if kind == "ensemble" else [])]:
        path = to_onnx(model, tmp_path / f"{len(views)}.onnx", views=views)
        onnx.checker.check_model(str(path), full_check=True)
        exported = _session(str(path)).run(None, {"pixels": x})[0]
        expected = fmnist.predict_proba(model, x, views=views)
        assert exported.shape == (PARITY_IMAGES, 10) and exported.dtype == np.float32
        assert np.abs(exported - expected).max() <= TOLERANCE, (kind, views, np.abs(exported - expected).max())
        assert (exported.argmax(axis=1) == expected.argmax(axis=1)).all(), (kind, views)
        assert expected.std(axis=0).max() > 1e-3, "the same output for every image: a weak comparison"


def test_views_in_the_graph_are_fmnists_views(tmp_path):
    """Each view alone, on images where every pixel differs, against augment.view."""
    from fmnist import augment
    from fmnist.onnx_graph import _Graph, _views

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (3, 28, 28)).astype(np.float32)
    for name in EIGHTEEN:
        g = _Graph()
        out = _views(g, "x", (name,))
        graph = onnx.helper.make_graph(
            [*g.nodes, onnx.helper.make_node("Identity", [out], ["y"])], "v",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, 28, 28])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3, 28, 28])], initializer=g.initializers,
        )  # fmt: skip
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
        model.ir_version = 8
        got = _session(model.SerializeToString()).run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, np.asarray(augment.view(x, name)), err_msg=name)
    assert set(EIGHTEEN) == set(augment.SHIFTED_AND_MIRRORED)


def test_seed_run_exports_with_its_test_accuracy(seed_run, dataset, tmp_path, capsys):
    from fmnist import runs

    _, (x_test, y_test) = dataset
    code, out, err = run_cli(["export", str(seed_run), "--out", str(tmp_path / "seed.onnx")], capsys)
    assert code == 0, err
    path = tmp_path / "seed.onnx"
    assert str(path) in out and "1 view" in out
    onnx.checker.check_model(str(path), full_check=True)
    metrics = runs.read_object(seed_run / runs.METRICS_FILE)
    expected = metrics.get("accuracy_single_view", metrics["accuracy"])
    assert abs(_accuracy(path, x_test, y_test) - expected) <= 1e-4
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["class_names"] == '["' + '", "'.join(CLASS_NAMES) + '"]'
    assert meta["views"] == '["identity"]' and abs(float(meta["test_accuracy"]) - expected) < 1e-6
    (inp,), (output,) = model.graph.input, model.graph.output
    assert (inp.name, inp.type.tensor_type.elem_type) == ("pixels", onnx.TensorProto.UINT8)
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 28, 28]
    assert output.name == "probabilities" and output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.fixture(scope="module")
def views_run(dataset, tmp_path_factory) -> Path:
    """A run trained in seconds whose config evaluates with three test-time views."""
    from typer.testing import CliRunner

    from fmnist import cli

    out = tmp_path_factory.mktemp("runs") / "views"
    args = ["train", "--limit", "1000", "--epochs", "1", "--hidden", "16", "--out", str(out)]
    args += ["--eval-view", "identity", "--eval-view", "flip", "--eval-view", "left"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    return out


def test_views_bake_in_the_runs_headline_accuracy(views_run, dataset, capsys):
    from fmnist import runs
    from fmnist.export import metadata

    _, (x_test, y_test) = dataset
    metrics = runs.read_object(views_run / runs.METRICS_FILE)
    code, _, err = run_cli(["export", str(views_run), "--views"], capsys)
    assert code == 0, err
    path = views_run / "model.onnx"  # the default place
    assert metadata(path)["views"] == ["identity", "flip", "left"]
    assert abs(_accuracy(path, x_test, y_test) - metrics["accuracy"]) <= 1e-4
    code, _, err = run_cli(["export", str(views_run)], capsys)  # the default: one view
    assert code == 0, err
    assert metadata(path)["views"] == ["identity"]
    assert abs(_accuracy(path, x_test, y_test) - metrics["accuracy_single_view"]) <= 1e-4


def test_a_layer_it_cannot_write_is_one_line_and_nothing_written(tmp_path, capsys):
    from fmnist._backend import keras
    from fmnist.errors import ModelError
    from fmnist.export import to_onnx

    model = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
            keras.layers.LayerNormalization(),
            keras.layers.Softmax(),
        ]
    )
    with pytest.raises(ModelError, match="LayerNormalization") as info:
        to_onnx(model, tmp_path / "x.onnx")
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
    model.save(tmp_path / "odd.keras")
    code, _, err = run_cli(["export", str(tmp_path / "odd.keras"), "--out", str(tmp_path / "odd.onnx")], capsys)
    assert code == 2 and "LayerNormalization" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.keras"]


def _small_model():
    from fmnist._backend import keras

    return keras.Sequential([keras.Input((28, 28)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                             keras.layers.Dense(10, activation="softmax")])  # fmt: skip


def test_a_bf16_model_is_refused_in_one_line_and_nothing_written(tmp_path):
    """A run trained with --precision bf16 computes in bfloat16; an exported graph computes in float32, so its
    probabilities would not be the run's: refused, saying why."""
    from fmnist.accelerator import precision_scope
    from fmnist.errors import ModelError
    from fmnist.export import to_onnx

    with precision_scope("bf16"):
        model = _small_model()
    with pytest.raises(ModelError, match="compute in float32; this model computes in bfloat16") as info:
        to_onnx(model, tmp_path / "x.onnx")
    assert "\n" not in str(info.value) and "--precision bf16" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_the_file_is_readable_by_all_and_the_page_says_the_graphs_accuracy(tmp_path):
    """to_onnx writes 0644 like the web folder; the page's accuracy is the graph's metadata's: none for
    views that are not the run's."""
    from fmnist.export import onnx_model, page_html, to_onnx

    model = _small_model()
    assert (to_onnx(model, tmp_path / "m.onnx").stat().st_mode & 0o777) == 0o644
    facts = {"name": "r", "views": ("identity", "flip", "left"), "accuracy": 0.9, "accuracy_single_view": 0.8}
    for views, shown in [(("identity",), "80.00%"), (("identity", "flip", "left"), "90.00%"),
                         (("identity", "flip"), "not measured")]:  # fmt: skip
        assert shown in page_html(facts, onnx_model(model, views, facts)), views


def test_missing_extra_names_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    code, _, err = run_cli(["export", str(tmp_path), "--out", str(tmp_path / "m.onnx")], capsys)
    assert code == 2 and "pip install 'fmnist[export]'" in err and len(err.strip().splitlines()) == 1, err


def test_help_imports_neither_onnx_nor_jax():
    code = (
        "import sys; sys.argv = ['fmnist', 'export', '--help']\n"
        "from fmnist import cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'onnx', 'onnxruntime', 'jax', 'keras'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--views" in out and "--ort-web" in out
    assert out.strip().splitlines()[-1] == "[]", out
