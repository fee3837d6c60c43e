"""The pipeline, sweep files and the status command, without SLURM (stand-in transfer scripts)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from maskalign import jobs
from maskalign import pipeline as pl
from maskalign.config import ConfigError, config_dir, load_config
from maskalign.launch import get_args_parser
from maskalign.records import Record, checkpoint_ref, write_record
from maskalign.sweeps import load_sweep
from maskalign.tasks import TaskJob, get_task, upstream_checkpoint
from maskalign.tasks.job import CheckpointError
from maskalign.transfer.cli import build_spec

REPO = Path(__file__).resolve().parents[1]
FAKE = "fake_transfer"  # the module that registers the stand-in tasks fake_a ... fake_d, probe


def parse(*argv: str):
    return get_args_parser(add_help=False).parse_args(list(argv))


# --- stages ---------------------------------------------------------------------------------------

def test_stages_are_ordered_upstream_first_and_checked() -> None:
    stages = pl.parse_stages("robustness,finetune,linprobe,coco,ade20k")
    assert [s.name for s in stages] == ["finetune", "linprobe", "coco", "ade20k", "robustness"]
    assert stages[-1].after == "finetune"
    mine = pl.parse_stages(f"fake_b={FAKE},fake_a={FAKE}")
    assert [(s.name, s.after) for s in mine] == [("fake_a", "pretrain"), ("fake_b", "fake_a")]
    for bad, match in (("robustness", "add finetune"), ("nope", "unknown stage"), ("finetune,finetune", "twice"),
                       ("", "no stage"), ("x=path/to/s.py", "not a script path"),
                       (f"nosuch={FAKE}", "registers no task 'nosuch'"), ("x=no_such_module_zz", "cannot import"),
                       (f"loop_x={FAKE},loop_y={FAKE}", "circle")):
        with pytest.raises(pl.ConfigError, match=match):
            pl.parse_stages(bad)


def test_stage_args_split_into_cluster_flags_and_task_arguments() -> None:
    base = parse("--gpus-per-node", "0", "--time", "60")
    task = get_task("finetune")
    ns = pl.split_stage_args(base, "--time 2-00:00:00 --config maskalign_vitb16 optim.epochs=1 --cpus-per-task 4",
                             task)
    assert ns.time == "2-00:00:00" and ns.cpus_per_task == 4 and ns.gpus_per_node == 0
    assert ns.config == "maskalign_vitb16" and ns.overrides == ["optim.epochs=1"]
    assert base.time == "60"  # the pipeline's own flags are untouched
    coco = pl.split_stage_args(base, "--data demo --eval-only train.max_iter=2", get_task("coco"))
    assert (coco.data, coco.eval_only, coco.overrides) == ("demo", True, ["train.max_iter=2"])
    for text in ("--name x", "--output-dir /o", "name=x"):
        with pytest.raises(pl.ConfigError, match="the pipeline sets the run folder"):
            pl.split_stage_args(base, text, task)
    stages = pl.parse_stages("finetune,coco")
    assert pl.parse_stage_args(["finetune=a=1", "finetune=b=2"], stages) == {"finetune": "a=1 b=2"}
    with pytest.raises(pl.ConfigError, match="STAGE='ARGS'"):
        pl.parse_stage_args(["linprobe=x"], stages)


def test_a_stage_is_the_tasks_own_job_in_the_pipelines_run_folder(tmp_path: Path) -> None:
    task = get_task("finetune")
    ns = pl.split_stage_args(parse("--local"), "optim.epochs=1", task)
    spec = build_spec(task, ns, None, run="run1", output_root=str(tmp_path))
    assert spec.folder == tmp_path / "finetune" / "run1"
    assert (spec.resolved["name"], spec.resolved["output_dir"], spec.resolved["optim"]["epochs"]) == \
        ("run1", str(tmp_path), 1)
    with pytest.raises(CheckpointError, match="pre-training encoder .* does not exist"):
        TaskJob(spec, task.module)()
    with pytest.raises(ConfigError, match="unknown config key 'optim.nope'"):  # checked before submission
        build_spec(task, pl.split_stage_args(parse(), "optim.nope=1", task), None, run="r", output_root="/o")
    with pytest.raises(pl.ConfigError, match="^pipeline: finetune: command line: unknown config key"):
        pl.plan_pipeline([pl.parse_stages("finetune")[0]], [pl.PretrainRun("r", "/o")], parse(),
                         {"finetune": "optim.nope=1"})


def test_robustness_consumes_the_checkpoint_named_in_finetunes_record(tmp_path: Path) -> None:
    ft = tmp_path / "finetune" / "r"
    ft.mkdir(parents=True)
    with pytest.raises(CheckpointError, match="cannot read .*record.json"):
        upstream_checkpoint("finetune", tmp_path, "r")
    (ft / "checkpoint.pth").write_bytes(b"x")
    write_record(ft, Record(run_id="finetune/r", task="finetune", method="m", backbone="b", supervision="s",
                            checkpoint=checkpoint_ref(ft / "checkpoint.pth")))
    assert upstream_checkpoint("finetune", tmp_path, "r") == (ft / "checkpoint.pth").resolve()
    (ft / "checkpoint.pth").unlink()
    with pytest.raises(CheckpointError, match="names no existing checkpoint"):
        upstream_checkpoint("finetune", tmp_path, "r")


def _pretrained(root: Path, run: str) -> Path:
    d = root / "pretrain" / run
    d.mkdir(parents=True)
    (d / "encoder.pth").write_bytes(b"enc")
    return d


def test_local_pipeline_runs_in_order_and_skips_what_cannot_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _pretrained(tmp_path, "r")
    stages = pl.parse_stages(f"fake_a={FAKE},fake_b={FAKE},fake_c={FAKE},fake_d={FAKE}")
    args = {"fake_c": "fail=1"}
    out = pl.run_pipeline(stages, [pl.PretrainRun("r", str(tmp_path))], parse("--local"), args, slurm=False)
    status = {o.stage: o.status for o in out}
    assert status == {"fake_a": "done", "fake_b": "done", "fake_c": "failed", "fake_d": "skipped"}
    started_b = json.loads((tmp_path / "fake_b" / "r" / "started.json").read_text())
    assert started_b["ckpt"] == str((tmp_path / "fake_a" / "r" / "product.pth").resolve())
    started_a = json.loads((tmp_path / "fake_a" / "r" / "started.json").read_text())
    assert started_a["local"] and started_a["ckpt"] == str(tmp_path / "pretrain" / "r" / "encoder.pth")
    assert started_b["time"] >= started_a["time"]
    text = capsys.readouterr()
    assert "skipping fake_d/r: fake_c/r failed" in text.out
    assert "fake task fake_c: failing on purpose" in text.err


def test_failed_pretraining_skips_every_stage(tmp_path: Path) -> None:
    stages = pl.parse_stages(f"fake_a={FAKE}")
    out = pl.run_pipeline(stages, [pl.PretrainRun("r", str(tmp_path), ok=False)], parse("--local"), {}, slurm=False)
    assert [(o.status, o.detail) for o in out] == [("skipped", "pretrain/r failed")]


# --- sweeps ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sweep", sorted(config_dir("sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_sweep_file_resolves_to_configs(sweep: Path) -> None:
    s = load_sweep(sweep)
    cfg_dir = config_dir("pretrain")
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
    assert s.base_path(config_dir("pretrain")) == str(tmp_path / "mine.yaml")
    assert s.name == "s"


def test_submit_dry_run_of_a_sweep_with_a_pipeline_runs_nothing(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "s.yaml").write_text("base: default\nruns: [{name: a, overrides: [seed=1]}, {name: b}]\n")
    # no sbatch; the stand-in tasks' module on the path
    env = {**os.environ, "PATH": str(Path(sys.executable).parent),
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}
    res = subprocess.run([sys.executable, str(REPO / "pretrain" / "submit.py"), "--dry-run", "--sweep",
                          str(tmp_path / "s.yaml"), f"output_dir={tmp_path}", "--pipeline", f"fake_a={FAKE}"],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    assert "dry run of pretrain:s (2 runs)" in res.stdout and "name: a" in res.stdout and "seed: 1" in res.stdout
    assert "would run pretrain:s (2 runs) on this machine, one after another (no SLURM here" in res.stdout
    assert "fake_a/a: planned" in res.stdout and "fake_a/b: planned" in res.stdout
    assert f"ckpt: {tmp_path}/pretrain/a/encoder.pth" in res.stdout  # looked up when the job starts
    assert not (tmp_path / "pretrain").exists()


# --- status ---------------------------------------------------------------------------------------

def _record(folder: Path, metrics: dict[str, float]) -> None:
    """A whole record (``jobs status`` reads it as any reader does: a partial one is a bad record)."""
    write_record(folder, Record(run_id=f"pretrain/{folder.name}", task="pretrain", method="maskalign",
                                backbone="ViT-B/16", supervision="CLIP-B/16", metrics=metrics))


def _run(root: Path, kind: str, name: str) -> Path:
    d = root / kind / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("name: x\noptim:\n  epochs: 4\n  blr: 1\n")
    return d


def test_status_reads_the_jobs_own_files(tmp_path: Path) -> None:
    done = _run(tmp_path, "pretrain", "done")
    _record(done, {"final_loss": 0.25})
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
    _record(d, {"final_loss": 0.5})
    assert jobs.main(["status", str(tmp_path), "--no-slurm", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["state"] == "done" and row["kind"] == "pretrain"
    assert jobs.main(["status", str(tmp_path / "nope")]) == 2


# --- flags anywhere -------------------------------------------------------------------------------

def _script(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_script_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_submit_takes_flags_between_config_and_overrides(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    submit = _script(REPO / "pretrain" / "submit.py")
    orders = (["maskalign_vitb16_clipb16_200ep", "--local", "data.root=X", "optim.epochs=1", "--dry-run"],
              ["maskalign_vitb16_clipb16_200ep", "data.root=X", "optim.epochs=1", "--dry-run", "--local"],
              ["--dry-run", "--local", "maskalign_vitb16_clipb16_200ep", "data.root=X", "optim.epochs=1"])
    parsed = [vars(submit.parse_args(argv)) for argv in orders]
    assert parsed[0] == parsed[1] == parsed[2]
    assert parsed[0]["config"] == "maskalign_vitb16_clipb16_200ep" and parsed[0]["overrides"] == \
        ["data.root=X", "optim.epochs=1"] and parsed[0]["local"] and parsed[0]["dry_run"]
    args = submit.parse_args([*orders[0], f"output_dir={tmp_path}"])
    assert submit.main(args) == 0
    out = capsys.readouterr().out
    assert "root: X" in out and "epochs: 1" in out and "would run pretrain:maskalign_vitb16_clipb16_200ep" in out
    assert not (tmp_path / "pretrain").exists()


def test_submit_takes_the_flags_of_every_script(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--config, --output-dir, --name and --data as on the transfer scripts; the positional config is a shorthand."""
    submit = _script(REPO / "pretrain" / "submit.py")
    flags = submit.parse_args(["--config", "demo_mae", "--output-dir", str(tmp_path), "--name", "n", "--data",
                               str(tmp_path / "imnet"), "--dry-run", "--local", "optim.epochs=1"])
    short = submit.parse_args(["demo_mae", "--output-dir", str(tmp_path), "--name", "n", "--data",
                               str(tmp_path / "imnet"), "--dry-run", "--local", "optim.epochs=1"])
    assert vars(flags) == vars(short)
    assert submit.main(flags) == 0
    out = capsys.readouterr().out
    assert f"run folder: {tmp_path}/pretrain/n" in out and f"root: {tmp_path}/imnet" in out
    assert "dataset: imagenet" in out and "method: mae" in out and "would run pretrain:n" in out
    assert not (tmp_path / "pretrain").exists()
    with pytest.raises(SystemExit, match="two configs"):
        submit.parse_args(["--config", "demo_mae", "maskalign_vitb16_clipb16_200ep"])


@pytest.mark.parametrize("script", ["finetune.py", "linprobe.py", "robustness.py", "coco_vitdet.py",
                                    "ade20k_upernet.py"])
def test_every_transfer_script_takes_flags_anywhere(script: str) -> None:
    mod = _script(REPO / "transfer" / script)
    p = mod.get_args_parser()
    a = vars(p.parse_intermixed_args(["--ckpt", "c.pth", "a.b=1", "--local", "c=2", "--output-dir", "/o"]))
    b = vars(p.parse_intermixed_args(["a.b=1", "c=2", "--output-dir", "/o", "--ckpt", "c.pth", "--local"]))
    assert a == b and a["overrides"] == ["a.b=1", "c=2"] and a["local"] and a["ckpt"] == "c.pth"
    assert mod.TASK in {"finetune", "linprobe", "robustness", "coco", "ade20k"}


def test_a_bad_stage_argument_fails_before_pretraining_starts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    submit = _script(REPO / "pretrain" / "submit.py")
    args = submit.get_args_parser().parse_intermixed_args(
        ["--local", f"output_dir={tmp_path}", "name=r", "--pipeline", "finetune,linprobe",
         "--stage-args", "linprobe=optim.nope=1"])
    assert submit.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: pipeline: linprobe: command line: unknown config key 'optim.nope'"]
    assert not (tmp_path / "pretrain").exists()
