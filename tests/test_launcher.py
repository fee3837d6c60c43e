"""The launcher's pure logic: flags, time limits, node lists, sbatch parameters, dry runs, local runs."""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from maskalign import launch as L
from maskalign.distributed import expand_nodelist, first_host, master_port, process_env
from maskalign.errors import ConfigError
from maskalign.launch import flags as F
from maskalign.launch import slurm as S

REPO = Path(__file__).resolve().parents[1]


def parse(*argv: str) -> argparse.Namespace:
    return L.get_args_parser(add_help=False).parse_args(list(argv))


# --- time limits --------------------------------------------------------------------------------

@pytest.mark.parametrize("text,minutes", [
    ("90", 90), ("72:00:00", 4320), ("1:30:00", 90), ("10:30", 11), ("10:00", 10), ("2-00:00:00", 2880),
    ("1-12", 2160), ("1-12:30", 2190), ("0:0:1", 1), (" 45 ", 45),
])
def test_time_limits_in_slurm_formats(text: str, minutes: int) -> None:
    assert L.parse_time_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "abc", "1h", "-5", "1:2:3:4", "1-", "2 days", "0", "0:00:00", "1.5"])
def test_unparseable_or_empty_time_limit_is_one_clear_error(text: str) -> None:
    with pytest.raises(ConfigError, match="time limit"):
        L.parse_time_minutes(text)


# --- node lists and the process environment -----------------------------------------------------

@pytest.mark.parametrize("nodelist,hosts", [
    ("gpu[012-015,020],cpu1", ["gpu012", "gpu013", "gpu014", "gpu015", "gpu020", "cpu1"]),
    ("node1", ["node1"]),
    ("a1,b2", ["a1", "b2"]),
    ("n[8-10]", ["n8", "n9", "n10"]),
    ("n[08-10]", ["n08", "n09", "n10"]),
    ("rack[1-2]-node[01-02]", ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]),
    ("gpu-a100-[1,3]", ["gpu-a100-1", "gpu-a100-3"]),
])
def test_node_lists_expand(nodelist: str, hosts: list[str]) -> None:
    assert expand_nodelist(nodelist) == hosts
    assert first_host(nodelist) == hosts[0]


@pytest.mark.parametrize("bad", ["", "gpu[1-", "gpu]1[", "n[3-1]", "n[a-b]", "n[]"])
def test_bad_node_lists_raise(bad: str) -> None:
    with pytest.raises(ValueError):
        expand_nodelist(bad)


def test_process_env_from_slurm_variables() -> None:
    env = {"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8",
           "SLURM_JOB_NODELIST": "gpu[012-015]", "SLURM_JOB_ID": "123456"}
    pe = process_env(env)
    assert (pe.rank, pe.local_rank, pe.world_size, pe.source) == (5, 1, 8, "slurm")
    assert pe.master_addr == "gpu012" and pe.master_port == master_port("123456") == 20000 + 123456 % 20000
    assert pe.torchrun_vars() == {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "MASTER_ADDR": "gpu012",
                                  "MASTER_PORT": str(pe.master_port)}


def test_process_env_prefers_torchrun_and_ignores_a_bare_allocation() -> None:
    pe = process_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1234",
                      "SLURM_PROCID": "0", "SLURM_NTASKS": "4"})
    assert (pe.rank, pe.world_size, pe.master_addr, pe.master_port, pe.source) == (1, 2, "h", 1234, "torchrun")
    # A shell inside salloc has SLURM_NTASKS but no SLURM_PROCID, and a batch script run without
    # srun has SLURM_PROCID=0 but no step: one process each, no process group.
    assert process_env({"SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "n1"}).world_size == 1
    assert process_env({"SLURM_NTASKS": "4", "SLURM_PROCID": "0", "SLURM_JOB_NODELIST": "n1"}).world_size == 1
    assert process_env({}).source == "single"


# --- cluster request ----------------------------------------------------------------------------

def test_parser_keeps_the_callers_flags_and_defaults() -> None:
    task = argparse.ArgumentParser(add_help=False)
    task.add_argument("--ckpt")
    p = L.get_args_parser("x", parents=[task], add_help=False)
    args = p.parse_args(["--ckpt", "c.pth", "--partition", "gpu", "--gpus-per-node", "0"])
    assert args.ckpt == "c.pth" and args.partition == "gpu" and args.gpus_per_node == 0
    d = parse()
    assert ((d.nodes, d.gpus_per_node, d.cpus_per_task, d.time, d.local, d.dry_run)
            == (1, 8, 10, "72:00:00", False, False))


def test_sbatch_parameters_for_gpus_and_for_cpus() -> None:
    gpu = L.ClusterSpec.from_args(parse("--nodes", "2", "--partition", "learn", "--account", "acc", "--qos", "high",
                                        "--constraint", "volta32gb", "--comment", "paper", "--time", "3-00:00:00"))
    p = gpu.sbatch_params("pretrain:x")
    assert p["gpus_per_node"] == 8 and p["ntasks_per_node"] == 8 and p["nodes"] == 2 and p["mem"] == "320GB"
    assert p["time"] == 4320 and p["partition"] == "learn" and p["account"] == "acc" and p["qos"] == "high"
    assert p["constraint"] == "volta32gb" and p["comment"] == "paper" and p["job_name"] == "pretrain:x"
    assert p["signal_delay_s"] == 120 and "dependency" not in p
    cpu = L.ClusterSpec.from_args(parse("--gpus-per-node", "0", "--cpus-per-task", "2"))
    q = cpu.sbatch_params("t")
    assert q["ntasks_per_node"] == 1 and "gpus_per_node" not in q and "mem" not in q and "partition" not in q
    two = L.ClusterSpec.from_args(parse("--gpus-per-node", "0", "--tasks-per-node", "2", "--mem-gb", "1.5"))
    assert two.sbatch_params("t")["ntasks_per_node"] == 2 and two.sbatch_params("t")["mem"] == "1536MB"


def test_dependency_cancels_on_failure_and_extra_sbatch_options_pass_through() -> None:
    spec = L.ClusterSpec.from_args(parse("--gpus-per-node", "0", "--dependency", "afterany:7",
                                         "--sbatch", "mail-type=END", "--setup", "module load x"))
    p = spec.sbatch_params("t", dependency="afterok:12")
    assert p["dependency"] == "afterany:7,afterok:12"
    assert p["additional_parameters"] == {"mail-type": "END", "kill-on-invalid-dep": "yes"}
    assert p["setup"] == ["module load x"]


@pytest.mark.parametrize("text,ok", [
    ("afterok:12", True), ("afterok:12:13", True), ("afterany:12_3", True), ("afterok:1,afterany:2", True),
    ("afterok:1?afternotok:2", True), ("singleton", True), ("after:5+10", True),
    ("afterok", False), ("ok:12", False), ("afterok:x", False), ("afterok:12,", False),
])
def test_dependency_syntax(text: str, ok: bool) -> None:
    assert F.dependency_ok(text) is ok


@pytest.mark.parametrize("argv,match", [
    (["--nodes", "0"], "--nodes"), (["--gpus-per-node", "-1"], "--gpus-per-node"),
    (["--gpus-per-node", "4", "--tasks-per-node", "2"], "one task per GPU"),
    (["--dependency", "after12"], "dependency"), (["--time", "1", "--signal-delay-s", "120"], "signal"),
    (["--sbatch", "=x"], "KEY=VALUE"), (["--mem-gb", "-2"], "mem"),
])
def test_bad_requests_fail_before_submission(argv: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        L.ClusterSpec.from_args(parse(*argv))


def test_cluster_check_names_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "partitions", lambda: {"debug": {"cpus": 2, "gpus": 0, "default": 1},
                                                  "gpu": {"cpus": 64, "gpus": 8, "default": 0}})
    S.check_cluster(L.ClusterSpec.from_args(parse("--gpus-per-node", "0", "--cpus-per-task", "2")))
    S.check_cluster(L.ClusterSpec.from_args(parse("--partition", "gpu", "--cpus-per-task", "8")))
    with pytest.raises(ConfigError, match=r"partition 'nope' does not exist \(known: debug, gpu\)"):
        S.check_cluster(L.ClusterSpec.from_args(parse("--partition", "nope", "--gpus-per-node", "0")))
    with pytest.raises(ConfigError, match="has no GPUs.*--gpus-per-node 0"):
        S.check_cluster(L.ClusterSpec.from_args(parse("--cpus-per-task", "1")))
    with pytest.raises(ConfigError, match="at most 2 CPUs per node"):
        S.check_cluster(L.ClusterSpec.from_args(parse("--gpus-per-node", "0", "--cpus-per-task", "3")))


def test_gres_strings() -> None:
    assert S._gres_gpus("(null)") == 0
    assert S._gres_gpus("gpu:8") == 8
    assert S._gres_gpus("gpu:a100:4(S:0-1),shard:8") == 4


# --- local runs and dry runs --------------------------------------------------------------------

class _Task:
    def __init__(self) -> None:
        self.cfg = {"name": "t", "optim": {"epochs": 2}}
        self.calls = 0

    def __call__(self) -> dict:
        self.calls += 1
        return {"ok": True}

    def describe(self) -> str:  # what a dry run prints (TaskJob: the spec and the resolved config)
        return f"name: {self.cfg['name']}\noptim:\n  epochs: {self.cfg['optim']['epochs']}"


def test_without_sbatch_the_task_runs_here_and_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    task = _Task()
    res = L.launch(task, parse(), tmp_path / "run", "pretrain:t")
    assert (res.mode, res.result, res.job_id, res.failed) == ("local", {"ok": True}, None, False) and task.calls == 1
    assert "no SLURM here" in capsys.readouterr().out
    task2 = _Task()
    assert L.launch(task2, parse("--local"), tmp_path / "run", "pretrain:t").results == [{"ok": True}]
    assert "--local given: running pretrain:t on this machine" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--slurm given but there is no sbatch"):
        L.launch(_Task(), parse("--slurm"), tmp_path / "run", "x")


def test_bad_time_limit_fails_even_for_a_local_run(tmp_path: Path) -> None:
    task = _Task()
    with pytest.raises(ConfigError, match="cannot parse time limit"):
        L.launch(task, parse("--local", "--time", "soon"), tmp_path, "x")
    assert task.calls == 0


def test_dry_run_prints_config_and_runs_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    task = _Task()
    res = L.launch(task, parse("--dry-run"), tmp_path / "run", "pretrain:t")
    assert (res.mode, res.results, res.folders) == ("dry_run", [None], [tmp_path / "run"])
    out = capsys.readouterr().out
    assert task.calls == 0 and "epochs: 2" in out and "would run pretrain:t on this machine" in out
    assert not (tmp_path / "run").exists()


def test_dry_run_on_slurm_prints_the_sbatch_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(S, "slurm_available", lambda: True)
    monkeypatch.setattr(S, "partitions", lambda: {"debug": {"cpus": 2, "gpus": 0, "default": 1}})
    task = _Task()
    L.launch(task, parse("--dry-run", "--gpus-per-node", "0", "--cpus-per-task", "1", "--time", "30"),
             tmp_path / "run", "pretrain:t", dependency="afterok:41")
    out = capsys.readouterr().out
    for line in ("#SBATCH --time=30", "#SBATCH --ntasks-per-node=1", "#SBATCH --signal=USR2@120",
                 "#SBATCH --dependency=afterok:41", "#SBATCH --kill-on-invalid-dep=yes",
                 f"#SBATCH --output={tmp_path}/run/submitit/%j/%j_0_log.out", "submitit.core._submit"):
        assert line in out, line
    assert task.calls == 0 and not (tmp_path / "run").exists()
    L.launch_array([_Task(), _Task(), _Task()], parse("--dry-run", "--gpus-per-node", "0", "--cpus-per-task", "1"),
                   [tmp_path / n for n in "abc"], "pretrain:sweep", tmp_path / "_arrays" / "sweep")
    out = capsys.readouterr().out
    assert "#SBATCH --array=0-2%3" in out and "%A_%a" in out


def test_local_array_runs_every_task_and_survives_a_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    def boom() -> None:
        raise RuntimeError("run b broke")

    a, c = _Task(), _Task()
    res = L.launch_array([a, boom, c], parse(), [tmp_path / n for n in "abc"], "sweep", tmp_path / "_arrays")
    assert res.mode == "local" and res.results == [{"ok": True}, None, {"ok": True}]
    assert isinstance(res.errors[1], RuntimeError) and res.errors[0] is None and res.failed


# --- inside the job -----------------------------------------------------------------------------

class _Resumable:
    def __init__(self, n: int = 0) -> None:
        self.n = n

    def __call__(self) -> int:
        return self.n

    def checkpoint(self):
        import submitit

        return submitit.helpers.DelayedSubmission(_Resumable(self.n + 1))


def test_job_task_delegates_checkpoint_and_stays_wrapped() -> None:
    wrapped = L.JobTask(_Resumable(3), "x")
    delayed = wrapped.checkpoint()
    assert isinstance(delayed.function, L.JobTask) and delayed.function.task.n == 4
    plain = L.JobTask(_Task(), "y").checkpoint()
    assert isinstance(plain.function, L.JobTask) and isinstance(plain.function.task, _Task)
    assert pickle.loads(pickle.dumps(wrapped)).task.n == 3


def test_job_task_exports_torchrun_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_STEP_NODELIST"):
        # set first: monkeypatch restores only what it saw, and JobTask exports these into os.environ,
        # which would otherwise leak a 2-process world into every later test of the session
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "n[3-4]")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    seen = L.JobTask(lambda: {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}, "x")()
    assert seen == {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "n3", "MASTER_PORT": str(20077)}


def test_requeue_signal_is_handled_by_the_main_process_only() -> None:
    """A forked child (a DataLoader worker) inherits the handler but must not checkpoint or requeue."""
    code = textwrap.dedent("""
        import os, signal, sys, time
        from maskalign.launch.runtime import guard_requeue_signal
        hits = []
        signal.signal(signal.SIGUSR2, lambda s, f: hits.append(os.getpid()))
        guard_requeue_signal()
        pid = os.fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGUSR2); time.sleep(0.1)
            os._exit(3 if hits else 0)
        _, status = os.waitpid(pid, 0)
        os.kill(os.getpid(), signal.SIGUSR2); time.sleep(0.1)
        print(os.waitstatus_to_exitcode(status), len(hits))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.stdout.split() == ["0", "1"], out.stderr


def test_every_task_is_pickled_by_reference_and_requeues_itself(tmp_path: Path) -> None:
    """Library task classes: a job imports them (nothing is pickled by value, no sys.path edits)."""
    import cloudpickle

    from maskalign.tasks import JobSpec, TaskJob, job_for

    pre = job_for("pretrain", output_root=tmp_path, run="r")  # pre-training is a task like the others
    job = TaskJob(JobSpec("finetune", None, str(tmp_path), "r"), "maskalign.transfer.tasks")
    for task, module in ((pre, b"maskalign.engine.task"), (job, b"maskalign.transfer.tasks")):
        blob = cloudpickle.dumps(task)
        assert module in blob and b"maskalign.tasks.job" in blob and len(blob) < 8192
        delayed = L.JobTask(task, "x").checkpoint()
        assert isinstance(delayed.function, L.JobTask) and delayed.function.task is task
    code = "import pickle, sys; t = pickle.loads(sys.stdin.buffer.read()); print(t.module, t.folder)"
    out = subprocess.run([sys.executable, "-c", code], input=cloudpickle.dumps(pre),
                         capture_output=True, cwd=tmp_path, timeout=120, check=False)
    assert out.stdout.decode().split() == ["maskalign.engine.task", str(tmp_path / "pretrain" / "r")], out.stderr


def test_cluster_script_parses_and_explains_its_usage() -> None:
    script = REPO / "scripts" / "slurm_cluster.sh"
    assert subprocess.run(["bash", "-n", str(script)], timeout=30, check=False).returncode == 0
    res = subprocess.run(["bash", str(script), "frobnicate"], capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 2 and "usage:" in res.stderr and "start|stop|status" in res.stderr


def test_unreachable_controller_is_one_line_that_names_local(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for tool in ("sbatch", "sinfo"):
        exe = tmp_path / tool
        exe.write_text("#!/bin/sh\necho 'slurm_load_partitions: Unable to contact slurm controller "
                       "(connect failure)' >&2\n"
                       "exit 1\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert S.slurm_available()
    with pytest.raises(ConfigError) as info:
        S.partitions()
    msg = str(info.value)
    assert "\n" not in msg and "Unable to contact slurm controller" in msg and "--local" in msg


def test_a_rank_of_a_torchrun_world_runs_here_even_beside_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """``torchrun transfer/x.py`` on a machine with SLURM: each rank is already part of the job, so
    it must run its part here rather than submit a job of its own."""
    from runfolder_helpers import fake_slurm

    monkeypatch.setenv("PATH", fake_slurm(tmp_path / "bin", sinfo_rc=0)["PATH"])
    for var in ("TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert L.use_slurm(parse())  # sbatch answers: a plain command submits
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "r1")
    assert not L.use_slurm(parse())
    task = _Task()
    assert L.launch(task, parse(), tmp_path / "run", "knn:two").results == [{"ok": True}]
    assert "one rank of a torchrun world: running knn:two on this machine" in capsys.readouterr().out
