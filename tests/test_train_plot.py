"""The loss plot is optional: without matplotlib (an extra) training still finishes, plot skipped."""

from __future__ import annotations

import builtins
import json
import logging

from genpi.train.trainer import plot_losses


def _loss_log(tmp_path):
    path = tmp_path / "loss.jsonl"
    rows = [{"step": 1, "loss": 2.0, "sft_loss": 2.1}, {"step": 2, "loss": 1.5, "sft_loss": 1.6}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_plot_losses_writes_a_png(tmp_path):
    png = tmp_path / "loss.png"
    plot_losses(_loss_log(tmp_path), png)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_plot_losses_is_skipped_without_matplotlib(tmp_path, monkeypatch, caplog):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    png = tmp_path / "loss.png"
    with caplog.at_level(logging.INFO, logger="genpi.train.trainer"):
        plot_losses(_loss_log(tmp_path), png)
    assert not png.exists()
    assert "matplotlib is not installed" in caplog.text
