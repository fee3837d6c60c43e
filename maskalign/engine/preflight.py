"""The checks a pre-training run must pass before anything is queued, built or written.

``validate(cfg)`` is what the submitting process runs before ``sbatch`` (``PretrainTask.validate``),
so that a wrong data path, an unreadable teacher checkpoint or a busy run folder is one line at
submission instead of a failed job after hours in the queue. Config types are checked earlier, by
the loader (:func:`maskalign.config.check_types`). The engine itself repeats what matters when the
job starts (the data root, the lock, the checkpoint's config), since files can change meanwhile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from maskalign.config import ConfigError
from maskalign.errors import CheckpointError
from maskalign.runfolder.lock import RunFolderError, read_holder
from maskalign.runfolder.slurm_env import ALIVE_STATES, job_state
from maskalign.tasks.spec import run_folder

# torch is imported only where a file must be read (a local teacher, a saved config beside a
# checkpoint): a submission, or a refused path, answers in well under a second.


def run_dir(cfg: Any) -> Path:
    """A pre-training config's run folder, by the one rule of every task (:func:`maskalign.tasks.spec.run_folder`)."""
    return run_folder(str(cfg.output_dir), "pretrain", str(cfg.name))


def check_data(cfg: Any) -> None:
    from maskalign.data.layout import check_split_dir

    if cfg.data.dataset == "imagenet":
        if not cfg.data.root:
            raise ConfigError("data.dataset=imagenet needs data.root (the folder holding train/ and val/)")
        check_split_dir(Path(cfg.data.root), "train")
    elif cfg.data.dataset != "demo":
        raise ConfigError(f"data.dataset: unknown {cfg.data.dataset!r}; use demo or imagenet")


def check_teacher(cfg: Any) -> None:
    """``teacher.backend=local``: the checkpoint exists and holds an encoder (or a demo teacher)."""
    if cfg.teacher.backend != "local":
        return
    if not cfg.teacher.checkpoint:
        raise ConfigError("teacher.backend=local needs teacher.checkpoint (an encoder.pth exported by this project)")
    from maskalign.checkpoint import load_encoder_state, load_file
    from maskalign.teachers.demo_teacher import is_token_cnn

    path = Path(str(cfg.teacher.checkpoint))
    if is_token_cnn(path):
        load_file(path)
    else:
        load_encoder_state(path)


def check_run_folder(out: Path, cfg: Any) -> None:
    """Nobody else writes the folder, no submitted job of it is waiting, and its config is this one."""
    holder = read_holder(out)
    if holder is not None and holder.alive() is not False:
        raise RunFolderError(f"{out} is being written by {holder.describe()}; wait for it to end"
                             f"{' or scancel ' + holder.job_id if holder.job_id else ''}")
    from maskalign.launch import read_job_info

    job = str((read_job_info(out) or {}).get("job_id") or "")
    state = job_state(job) if job else None
    if state and (state in ALIVE_STATES or state == "PENDING"):
        raise RunFolderError(f"{out}: SLURM job {job} of this run is {state.lower()} already; "
                             f"wait for it or scancel {job} before submitting again")
    saved = out / "config.yaml"
    if not saved.is_file() or getattr(cfg.runtime, "restart", False):
        return
    from maskalign.checkpoint import latest_checkpoint

    if latest_checkpoint(out) is not None:
        from maskalign.config import to_plain
        from maskalign.runfolder.resume import config_differences

        diffs = config_differences(to_plain(OmegaConf.load(saved)), to_plain(cfg))
        if diffs:
            k, old, new = diffs[0]
            more = f" (+{len(diffs) - 1} more)" if len(diffs) > 1 else ""
            raise CheckpointError(f"{saved}: the run was started with {k}={old!r}, now {new!r}{more}; resume "
                                  f"with the same config, or start over with runtime.restart=true")


def validate(cfg: Any) -> None:
    """Every check that can be made on the submitting machine; raises a one-line ``UserError``."""
    check_data(cfg)
    check_teacher(cfg)
    check_run_folder(run_dir(cfg), cfg)
