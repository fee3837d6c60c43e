"""``bench/gpu_check.py``: the peak table, and a ``--dry-run`` end to end on CPU whose JSON holds
every section's figures (the GPU figures themselves need a GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"


def _module():
    sys.path.insert(0, str(REPO / "bench"))
    import gpu_check

    return gpu_check


@pytest.mark.parametrize("name,peak", [("NVIDIA H200", 989.4), ("NVIDIA H100 80GB HBM3", 989.4),
                                       ("NVIDIA H100 PCIe", 756.0)])
def test_bf16_dense_peaks_are_half_the_sparse_datasheet_figures(monkeypatch, name: str, peak: float) -> None:
    gc = _module()
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: name)
    got, source = gc.peak_tflops(torch.device("cuda"))
    assert got == pytest.approx(peak) and "datasheet" in source
    if "PCIe" not in name:
        assert got == pytest.approx(1979 / 2, rel=1e-3)  # datasheet: 1,979 TFLOP/s with 2:4 sparsity


def test_unknown_section_is_one_line(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--dry-run", "--sections", "nope"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode != 0 and "--sections: unknown nope" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_dry_run_writes_every_section(tmp_path: Path, full_demo_teacher: Path) -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--dry-run"],
                         capture_output=True, text=True, timeout=1500, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    check_dry_run(json.loads((tmp_path / "gpu_check.json").read_text()))


def check_dry_run(out: dict) -> None:
    """What a dry run's JSON must hold."""
    assert out["dry_run"] is True and out["device"] == "cpu"
    s = out["sections"]
    assert set(s) == {"pretrain_step", "compile", "decode", "vitdet", "upernet", "ddp"}
    assert not [k for k, v in s.items() if "error" in v], {k: v.get("error") for k, v in s.items()}

    step = s["pretrain_step"]
    assert set(step["methods"]) == {"maskalign", "fd", "mae", "crossmae"}
    for m in step["methods"].values():
        assert m["sec_per_iter"] > 0 and m["flops_per_image"] > m["fwd_flops_per_image"] > 0
        assert m["images_per_s"] == pytest.approx(step["batch"] / m["sec_per_iter"])
        assert m["mfu"] == pytest.approx(m["flops_per_image"] * step["batch"] / m["sec_per_iter"] / 1e12
                                         / step["peak_tflops"])
    # FD sees every token (mask ratio 0) where MaskAlign sees 30%: more FLOPs, with the same teacher.
    ma, fd = step["methods"]["maskalign"], step["methods"]["fd"]
    assert step["fd_over_maskalign_flops"] == pytest.approx(fd["flops_per_image"] / ma["flops_per_image"])
    assert step["fd_over_maskalign_flops"] > 1.2
    assert fd["teacher_flops_per_image"] == pytest.approx(ma["teacher_flops_per_image"])
    assert s["compile"]["backend"] == "eager" and s["compile"]["compiled_sec_per_iter"] > 0
    d = s["decode"]
    assert d["cpu_images_per_s"] > 0 and d["gpu_images_per_s"] > 0 and d["cpu_per_core_images_per_s"] > 0
    assert d["cpu_cores_to_feed_maskalign"] == pytest.approx(ma["images_per_s"] / d["cpu_per_core_images_per_s"])
    for job in ("vitdet", "upernet"):
        assert "skipped" in s[job] or (s[job]["wall_s"] > 0 and s[job]["iters"] == 2), s[job]
    if "skipped" not in s["vitdet"]:
        assert s["vitdet"]["iterations_logged"] == 2
    ddp = s["ddp"]
    assert ddp["worker"]["backend"] == "gloo" and ddp["worker"]["world"] == 1 and ddp["worker"]["finite"]
    assert len(ddp["worker"]["losses"]) == 3 and ddp["engine_tensorboard"] and ddp["engine_loss"] > 0
