"""The pipeline, sweep files and the status command, without SLURM (stand-in transfer scripts)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from maskalign import jobs
from maskalign import pipeline as pl
from maskalign.config import load_config
from maskalign.launcher import get_args_parser
from maskalign.sweeps import load_sweep

REPO = Path(__file__).resolve().parents[1]
FAKE = str(REPO / "tests" / "fake_transfer.py")


def parse(*argv: str):
    return get_args_parser(add_help=False).parse_args(list(argv))


# --- stages ---------------------------------------------------------------------------------------

def test_stages_are_ordered_upstream_first_and_checked() -> None:
    stages = pl.parse_stages("robustness,finetune,linprobe,coco,ade20k")
    assert [s.name for s in stages] == ["finetune", "linprobe", "coco", "ade20k", "robustness"]
    assert stages[-1].after == "finetune"
    mine = pl.parse_stages(f"b={FAKE}@a,a={FAKE}")
    assert [(s.name, s.after) for s in mine] == [("a", "pretrain"), ("b", "a")]
    for bad, match in (("robustness", "add finetune"), ("nope", "unknown stage"), ("finetune,finetune", "twice"),
                       ("", "no stage"), ("finetune=x.py", "new identifier"), (f"a={FAKE}@b,b={FAKE}@a", "circle")):
        with pytest.raises(pl.PipelineError, match=match):
            pl.parse_stages(bad)


def test_stage_args_split_into_cluster_flags_and_script_arguments() -> None:
    base = parse("--gpus-per-node", "0", "--time", "60")
    ns, rest = pl.split_stage_args(base, "--time 2-00:00:00 --config maskalign_vitb16 optim.epochs=1 --cpus-per-task 4")
    assert ns.time == "2-00:00:00" and ns.cpus_per_task == 4 and ns.gpus_per_node == 0
    assert rest == ["--config", "maskalign_vitb16", "optim.epochs=1"]
    assert base.time == "60"  # the pipeline's own flags are untouched
    stages = pl.parse_stages("finetune,coco")
    assert pl.parse_stage_args(["finetune=a=1", "finetune=b=2"], stages) == {"finetune": "a=1 b=2"}
    with pytest.raises(pl.PipelineError, match="STAGE='ARGS'"):
        pl.parse_stage_args(["linprobe=x"], stages)


def test_stage_command_follows_the_transfer_script_contract(tmp_path: Path) -> None:
    task = pl.StageTask(pl.STAGES["finetune"], "run1", str(tmp_path), ["--config", "x"])
    assert task.command("/c/encoder.pth")[1:] == [str(REPO / "transfer" / "finetune.py"), "--ckpt", "/c/encoder.pth",
                                                  "--local", f"output_dir={tmp_path}", "name=run1", "--config", "x"]
    assert task.out_dir == tmp_path / "finetune" / "run1"
    with pytest.raises(pl.PipelineError, match="pre-training encoder .* does not exist"):
        task()


def test_robustness_consumes_the_checkpoint_named_in_finetunes_record(tmp_path: Path) -> None:
    ft = tmp_path / "finetune" / "r"
    ft.mkdir(parents=True)
    with pytest.raises(pl.PipelineError, match="cannot read .*record.json"):
        pl.upstream_checkpoint(pl.STAGES["robustness"], tmp_path, "r")
    (ft / "checkpoint.pth").write_bytes(b"x")
    (ft / "record.json").write_text(json.dumps({"checkpoint": {"path": str(ft / "checkpoint.pth")}}))
    assert pl.upstream_checkpoint(pl.STAGES["robustness"], tmp_path, "r") == ft / "checkpoint.pth"


def _pretrained(root: Path, run: str) -> Path:
    d = root / "pretrain" / run
    d.mkdir(parents=True)
    (d / "encoder.pth").write_bytes(b"enc")
    return d


def test_local_pipeline_runs_in_order_and_skips_what_cannot_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _pretrained(tmp_path, "r")
    stages = pl.parse_stages(f"a={FAKE},b={FAKE}@a,c={FAKE},d={FAKE}@c,e={tmp_path / 'missing.py'},f={FAKE}@e")
    args = {"a": "kind=a", "b": "kind=b", "c": "kind=c fail=1", "d": "kind=d"}
    out = pl.run_pipeline(stages, [pl.PretrainRun("r", str(tmp_path))], parse("--local"), args, slurm=False)
    status = {o.stage: o.status for o in out}
    assert status == {"a": "done", "b": "done", "c": "failed", "d": "skipped", "e": "skipped", "f": "skipped"}
    started_b = json.loads((tmp_path / "b" / "r" / "started.json").read_text())
    assert started_b["ckpt"] == str((tmp_path / "a" / "r" / "product.pth").resolve())
    started_a = json.loads((tmp_path / "a" / "r" / "started.json").read_text())
    assert started_a["local"] and started_a["ckpt"] == str(tmp_path / "pretrain" / "r" / "encoder.pth")
    text = capsys.readouterr()
    assert "skipping e/r: " in text.out and "does not exist (yet)" in text.out
    assert "skipping d/r: c/r failed" in text.out


def test_failed_pretraining_skips_every_stage(tmp_path: Path) -> None:
    stages = pl.parse_stages(f"a={FAKE}")
    out = pl.run_pipeline(stages, [pl.PretrainRun("r", str(tmp_path), ok=False)], parse("--local"), {}, slurm=False)
    assert [(o.status, o.detail) for o in out] == [("skipped", "pretrain/r failed")]


# --- sweeps ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sweep", sorted((REPO / "pretrain" / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_sweep_file_resolves_to_configs(sweep: Path) -> None:
    s = load_sweep(sweep)
    cfg_dir = REPO / "pretrain" / "configs"
    for run in s.runs:
        cfg = load_config(s.base_path(cfg_dir), [*run.overrides, f"name={run.name}"], cfg_dir)
        assert cfg.name == run.name


@pytest.mark.parametrize("text,match", [
    ("runs: []\n", "'base'"), ("base: default\nruns: []\n", "non-empty"),
    ("base: default\nruns: [{overrides: []}]\n", "no 'name'"),
    ("base: default\nruns: [{name: a}, {name: a}]\n", "twice"),
    ("base: default\nruns: [{name: 'a/b'}]\n", "folder name"),
    ("base: default\nruns: [{name: a, overrides: [seed]}]\n", "key=value"),
    ("base: default\nruns: [{name: a, extra: 1}]\n", "unknown key"),
    ("base: default\nbogus: 1\nruns: [{name: a}]\n", "unknown key"),
    ("base: [\n", "cannot parse"),
])
def test_bad_sweep_files_are_one_line_errors(tmp_path: Path, text: str, match: str) -> None:
    from maskalign.config import ConfigError

    f = tmp_path / "s.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_sweep(f)


def test_sweep_base_may_sit_beside_the_sweep_file(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("base: default.yaml\nseed: 3\n")
    (tmp_path / "s.yaml").write_text("base: mine\nruns: [{name: a}]\n")
    s = load_sweep(tmp_path / "s.yaml")
    assert s.base_path(REPO / "pretrain" / "configs") == str(tmp_path / "mine.yaml")
    assert s.name == "s"


def test_submit_dry_run_of_a_sweep_with_a_pipeline_runs_nothing(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "s.yaml").write_text("base: default\nruns: [{name: a, overrides: [seed=1]}, {name: b}]\n")
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no sbatch
    res = subprocess.run([sys.executable, str(REPO / "pretrain" / "submit.py"), "--dry-run", "--sweep",
                          str(tmp_path / "s.yaml"), f"output_dir={tmp_path}", "--pipeline", f"x={FAKE}"],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    assert "dry run of pretrain:s (2 runs)" in res.stdout and "name: a" in res.stdout and "seed: 1" in res.stdout
    assert "would run pretrain:s (2 runs) on this machine, one after another (no SLURM here" in res.stdout
    assert "x/a: planned" in res.stdout and "x/b: planned" in res.stdout
    assert not (tmp_path / "pretrain").exists()


# --- status ---------------------------------------------------------------------------------------

def _run(root: Path, kind: str, name: str) -> Path:
    d = root / kind / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("name: x\noptim:\n  epochs: 4\n  blr: 1\n")
    return d


def test_status_reads_the_jobs_own_files(tmp_path: Path) -> None:
    done = _run(tmp_path, "pretrain", "done")
    (done / "record.json").write_text(json.dumps({"metrics": {"final_loss": 0.25}}))
    (done / "log.jsonl").write_text("".join(json.dumps({"epoch": e, "loss": 1.0}) + "\n" for e in range(4)))
    stopped = _run(tmp_path, "pretrain", "stopped")
    (stopped / "log.jsonl").write_text(json.dumps({"epoch": 0}) + "\n" + json.dumps({"epoch": 1}) + "\n")
    (stopped / "checkpoint.pth").write_bytes(b"x")
    failed = _run(tmp_path, "finetune", "failed")
    logs = failed / "submitit" / "12"
    logs.mkdir(parents=True)
    (logs / "12_0_log.err").write_text(
        "submitit INFO (t) - Starting with JobEnvironment(job_id=12)\n"
        "submitit ERROR (t) - Submitted job triggered an exception\nTraceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\nmaskalign.checkpoint.CheckpointError: /x.pth: checkpoint not found\n')
    (failed / "job.json").write_text(json.dumps({"job_id": "12"}))
    pending = tmp_path / "robustness" / "pending"
    pending.mkdir(parents=True)
    (pending / "job.json").write_text(json.dumps({"job_id": "13"}))
    (tmp_path / "pretrain" / "_arrays" / "s").mkdir(parents=True)  # not a run

    rows = {r.run: r for r in jobs.collect(tmp_path, use_slurm=False)}
    assert set(rows) == {"done", "stopped", "failed", "pending"}
    assert (rows["done"].state, rows["done"].progress, rows["done"].detail) == ("done", "4/4", "final_loss 0.25")
    assert (rows["stopped"].state, rows["stopped"].progress) == ("stopped", "2/4")
    assert rows["failed"].state == "failed" and "CheckpointError: /x.pth: checkpoint not found" in rows["failed"].detail
    # Without squeue nothing says whether job 13 ever ran: "unknown", not a reassuring "submitted".
    assert rows["pending"].state == "unknown" and rows["pending"].job_id == "13"
    assert "cannot ask SLURM from here" in rows["pending"].detail

    slurm = {"13": ("PENDING", "Dependency"), "12": ("FAILED", "NonZeroExitCode")}
    rows = {r.run: r for r in (jobs.run_status(p, slurm) for p in jobs.find_runs(tmp_path))}
    assert (rows["pending"].state, rows["pending"].detail) == ("pending", "Dependency")
    assert rows["failed"].state == "failed" and "CheckpointError" in rows["failed"].detail
    cancelled = {"13": ("CANCELLED", "DependencyNeverSatisfied")}
    assert jobs.run_status(pending, cancelled).state == "cancelled"
    table = jobs.format_table(list(rows.values()))
    assert table.splitlines()[0].split() == ["KIND", "RUN", "STATE", "PROGRESS", "JOB", "DETAIL"]


def test_status_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = _run(tmp_path, "pretrain", "a")
    (d / "record.json").write_text(json.dumps({"metrics": {"final_loss": 0.5}}))
    assert jobs.main(["status", str(tmp_path), "--no-slurm", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["state"] == "done" and row["kind"] == "pretrain"
    assert jobs.main(["status", str(tmp_path / "nope")]) == 2
