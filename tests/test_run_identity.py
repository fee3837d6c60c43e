"""Run identity: one run folder per source and config; no record names one file beside another's numbers.

The toy task below behaves like fine-tuning where it matters: it loads ``--ckpt`` with the real
loader, "trains" a number out of the encoder's weights, keeps it in its folder (a resumable
checkpoint) and writes a record through the real recorder. Before run identities, a second file
in the same folder got the same default run, resumed the first one's number and recorded it under
its own name and sha256.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from encoder_formats import deit3, mae

from maskalign.records import file_sha256, read_record
from maskalign.tasks import JobSpec, RunContext, Task, register_task
from maskalign.tasks.identity import IDENTITY_FILENAME, default_run_name, source_name
from maskalign.transfer import cli
from maskalign.transfer.source import load_pretrained


def _score(spec: JobSpec) -> float:
    """A number that only this encoder gives: the sum of its patch-embedding weights."""
    src = load_pretrained(str(spec.ckpt))
    return float(src.state["patch_embed.proj.weight"].double().sum())


@register_task
class ResumingToyTask(Task):
    name = "toy_identity"
    description = "resumes its number from its folder, like a fine-tune resumes its checkpoint"
    metrics = ("toy_top1",)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        spec = ctx.spec
        state = spec.folder / "checkpoint.json"
        spec.folder.mkdir(parents=True, exist_ok=True)
        if state.is_file():  # resume: the folder's own progress wins, as in transfer/trainer.py
            value = json.loads(state.read_text())["value"]
        else:
            value = _score(spec)
            state.write_text(json.dumps({"value": value}))
        return {"metrics": {"toy_top1": value}}  # the job writes the record, naming ctx.source


def _run(ckpt: Path, root: Path, *extra: str) -> int:
    """The tiny encoders have 64-wide towers: their head count is given after ``#``."""
    return cli.run("toy_identity", ["--ckpt", f"{ckpt}#num_heads=2", "--output-dir", str(root), "--local", *extra])


@pytest.fixture
def two_files(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "encoders"  # both published files kept in one folder, as a user does
    folder.mkdir()
    return mae(folder)[0], deit3(folder)[0]


def test_two_files_in_one_folder_get_two_runs_with_their_own_numbers(two_files, tmp_path: Path) -> None:
    a, b = two_files
    root = tmp_path / "out"
    assert _run(a, root) == 0 and _run(b, root) == 0
    folders = sorted(p.parent for p in (root / "toy_identity").glob("*/record.json"))
    assert [f.name for f in folders] == ["deit3-default", "mae_pretrain-default"]
    for path, folder in ((a, root / "toy_identity" / "mae_pretrain-default"),
                         (b, root / "toy_identity" / "deit3-default")):
        rec = read_record(folder / "record.json")
        assert rec.source_checkpoint["sha256"] == file_sha256(path)
        expected = float(torch.load(path, weights_only=False)["model"]["patch_embed.proj.weight"].double().sum())
        assert rec.metrics["toy_top1"] == pytest.approx(expected)
        assert json.loads((folder / IDENTITY_FILENAME).read_text())["source"]["sha256"] == file_sha256(path)


def test_a_run_name_reused_with_another_file_is_refused_in_one_line(two_files, tmp_path: Path, capsys) -> None:
    a, b = two_files
    root = tmp_path / "out"
    assert _run(a, root, "--name", "shared") == 0
    before = (root / "toy_identity" / "shared" / "record.json").read_text()
    capsys.readouterr()
    assert _run(b, root, "--name", "shared") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(a.resolve()) in err[0] and str(b.resolve()) in err[0], err
    assert (root / "toy_identity" / "shared" / "record.json").read_text() == before
    # the same file again is the same run: it resumes (and re-records) without complaint
    assert _run(a, root, "--name", "shared") == 0


def test_a_finished_folder_without_identity_is_checked_against_its_record(two_files, tmp_path: Path, capsys) -> None:
    a, b = two_files
    root = tmp_path / "out"
    assert _run(a, root, "--name", "old") == 0
    (root / "toy_identity" / "old" / IDENTITY_FILENAME).unlink()  # a folder from before identities
    assert _run(b, root, "--name", "old") == 2
    assert "sha256" in capsys.readouterr().err


def test_the_job_itself_refuses_another_source(two_files, tmp_path: Path) -> None:
    """A queued job (pipeline, SLURM) checks again when it starts: the CLI check is not the only one."""
    from maskalign.tasks import TaskJob
    from maskalign.tasks.identity import RunFolderError

    a, b = two_files
    spec = JobSpec(task="toy_identity", ckpt=f"{a}#num_heads=2", output_root=str(tmp_path / "out"), run="r")
    TaskJob(spec, __name__)()
    with pytest.raises(RunFolderError, match="belongs to"):
        TaskJob(spec.with_(ckpt=f"{b}#num_heads=2"), __name__)()


def test_same_stem_in_two_folders_gets_its_own_name(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a, _ = deit3(tmp_path / "x")
    b, _ = deit3(tmp_path / "y", img_size=64)  # another file with the same name
    root = tmp_path / "out"
    assert _run(a, root) == 0 and _run(b, root) == 0
    names = {p.parent.name for p in (root / "toy_identity").glob("*/record.json")}
    assert names == {"deit3-default", f"deit3-{file_sha256(b)[:8]}-default"}


def test_run_names_never_stack_and_generic_stems_keep_their_folder(tmp_path: Path) -> None:
    assert default_run_name("vit_s-default", None, "default") == "vit_s-default"
    assert default_run_name("vit_s-default", "fast.yaml", "default") == "vit_s-default-fast"
    assert source_name(tmp_path / "mae_vit_small" / "checkpoint.pth") == "mae_vit_small-checkpoint"
    assert source_name("timm:vit_small_patch16_224.augreg_in21k") == "vit_small_patch16_224.augreg_in21k"
    assert source_name(tmp_path / "a.pth", {"run": "demo"}) == "demo"


def test_evaluate_plans_one_run_per_encoder_protocol_and_seed(two_files, tmp_path: Path, capsys) -> None:
    """A dry run: both files, three protocols, two seeds; robustness in its fine-tune's folder."""
    from maskalign import evaluate

    a, b = two_files
    rc = evaluate.run(["--ckpt", f"{a}#num_heads=2", "--ckpt", f"{b}#num_heads=2", "--output-dir", str(tmp_path),
                       "--seeds", "0,1", "--dry-run", "--local"])
    out = capsys.readouterr().out
    assert rc == 0 and "2 encoders, 12 runs to do" in out, out
    for run in ("mae_pretrain-default-seed0", "mae_pretrain-default-seed1", "deit3-default-seed0",
                "deit3-default-seed1"):
        for task in ("finetune", "linprobe", "robustness"):
            assert f"run folder: {tmp_path / task / run}\n" in out, (task, run)
    assert "seed: 1" in out or "seed=1" in out
