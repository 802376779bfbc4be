"""Training and evaluation pictures: the loss curve a run leaves, the evaluation sheet."""
import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from models.registry import get
from train.evaluate import evaluate, sheet_rows
from train.evaluate import test_split as fixed_split
from train.loop import load_config, train
from core.metrics import psnr
from train.plots import evaluation_sheet, loss_curve, read_metrics


def test_a_finished_run_leaves_a_loss_curve(tmp_path):
    cfg = load_config("uid", "tiny", {"steps": 10, "pool_size": 2, "out": str(tmp_path)})
    train(cfg, log=lambda s: None)
    png = cv2.imread(str(cfg.run_dir / "metrics.png"))
    assert png is not None and png.shape[1] > 300  # a real picture, not an empty file
    assert list(read_metrics(cfg.run_dir / "metrics.csv")["step"]) == [5.0, 10.0]


def test_a_bad_training_log_is_named(tmp_path):
    empty = tmp_path / "metrics.csv"
    empty.write_text("step,loss,lr,samples_per_s\n")
    with pytest.raises(ValueError, match="metrics.csv: the training log has no rows"):
        loss_curve(empty, tmp_path / "x.png")
    (tmp_path / "bad.csv").write_text("step,loss\n1,abc\n")
    with pytest.raises(ValueError, match="bad.csv: not a training log"):
        read_metrics(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="missing.csv: cannot read"):
        read_metrics(tmp_path / "missing.csv")
    assert not (tmp_path / "x.png").exists()


def test_sheet_rows_show_what_evaluate_scores(tmp_path):
    net = get("uid").build("tiny")
    examples = fixed_split("uid", count=2, size=32)
    rows = sheet_rows("uid", net, examples)
    assert [r["label"] for r in rows] == ["#0 deblur", "#0 refocus", "#1 deblur", "#1 refocus"]
    one = evaluate("uid", net, examples[:1], wiener=False)
    assert psnr(rows[0]["model"], rows[0]["target"]) == pytest.approx(one["deblur"]["model"]["psnr"], abs=1e-4)
    assert psnr(rows[1]["model"], rows[1]["target"]) == pytest.approx(one["refocus"]["model"]["psnr"], abs=1e-4)
    short = cv2.imread(str(evaluation_sheet(rows[:1], tmp_path / "one.png")))
    tall = cv2.imread(str(evaluation_sheet(rows, tmp_path / "four.png")))
    assert tall.shape[0] > 3 * short.shape[0]  # one figure row per example and task
    with pytest.raises(ValueError, match="no examples"):
        evaluation_sheet([], tmp_path / "none.png")


def test_srgb_images_are_drawn_as_stored():
    from synth.preview import plt, show_image

    img = np.full((4, 4, 3), 0.2, np.float32)
    fig, (a, b) = plt.subplots(1, 2)
    show_image(a, img, "linear")
    show_image(b, img, "stored sRGB", linear=False)
    assert np.allclose(b.images[0].get_array(), 0.2)  # unchanged
    assert np.all(a.images[0].get_array() > 0.4)  # sRGB-encoded: 0.2 linear is ~0.48
    plt.close(fig)


def test_save_images_without_a_checkpoint_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", "--model", "rdpd", "--count", "1", "--save-images", str(tmp_path)])
    assert result.exit_code != 0 and "--save-images needs --checkpoint" in result.output
    assert not any(tmp_path.iterdir())
