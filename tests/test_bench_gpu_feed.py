"""Smoke test of bench/gpu_feed.py: every feed trains a few steps of a tiny network on the same data."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("torch")


@pytest.mark.slow
def test_gpu_feed_runs_every_feed_for_a_few_steps_and_reports_rates_and_waiting(capsys):
    import torch

    from bench.gpu_feed import main, resnet

    # The full-size network is ResNet-18's: 11.2 M parameters for one input channel and two classes.
    assert round(sum(p.numel() for p in resnet().parameters()) / 1e6, 1) == 11.2
    only = ["medload", "DICOM decode"]
    try:
        import monai  # noqa: F401

        only.append("CacheDataset")
    except ImportError:
        pass
    results = main(
        [
            "--steps",
            "2",
            "--warmup",
            "1",
            "--batch",
            "4",
            "--workers",
            "0",
            "--slices",
            "16",
            "--size",
            "32",
            "--model",
            "tiny",
            "--only",
            *only,
        ]
    )
    assert len(results) == len(only) + 2  # three medload feeds
    for name, r in results.items():
        assert r["images_s"] > 0 and 0 <= r["wait"] < 1 and math.isfinite(r["loss"]), name
    out = capsys.readouterr().out
    assert "images/s" in out and ("no CUDA device" in out or torch.cuda.is_available())
