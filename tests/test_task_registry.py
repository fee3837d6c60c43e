"""The task contract: every registered task, and a toy task added in this file only.

The toy task is registered here, with no edit to any library file, and goes the whole way: its
entry point (``cli``) through the launcher (``--local``), its record, and a row of its own table
from ``make_tables``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from maskalign.launch import get_args_parser as launcher_parser
from maskalign.records import read_record
from maskalign.results.fmt import parse_cell
from maskalign.results.render_all import make_tables
from maskalign.results.tables import Col, Spec
from maskalign.tasks import RunContext, Task, get_task, register_task, registered_tasks
from maskalign.transfer import cli

TOY_SCORE = "toy_score"
BUILTIN = ("pretrain", "finetune", "linprobe", "robustness", "coco", "ade20k", "knn", "attentive")


@register_task
class ToyTask(Task):
    """Reads a one-line JSON "checkpoint" {"run": ..., "base": x} and records score = base * gain."""

    name = "toy_contract"
    description = "a task defined in a test file"
    metrics = (TOY_SCORE,)

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--gain", type=float, default=1.0)

    def options(self, args: Any) -> dict[str, Any]:
        return {"gain": args.gain}

    def check_source(self, ckpt: str) -> str:
        return json.loads(Path(ckpt).read_text())["run"]

    def source_record(self, ctx: RunContext) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
        return {"method": "mae", "backbone": "ViT-B/16", "supervision": "none"}, {"path": str(ctx.spec.ckpt)}, {}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        base = json.loads(Path(str(ctx.spec.ckpt)).read_text())["base"]
        return {"metrics": {TOY_SCORE: base * ctx.spec.options["gain"]}}  # the job writes the record

    def tables(self) -> tuple[Spec, ...]:
        return (Spec("toy_table", "Toy task", self.name, "", ("Method", "Backbone"),
                     (Col("Score", TOY_SCORE, paper=False, delta=False),), settings_from="record",
                     paper_rows=False, membership="by_key"),)


def test_a_task_registered_in_a_test_file_runs_through_the_launcher_into_a_table(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / "src" / "enc.json"
    ckpt.parent.mkdir()
    ckpt.write_text(json.dumps({"run": "mysource", "base": 21.0}))
    # flags after the overrides, the task's own flag in the middle: any order parses
    assert cli.run("toy_contract", ["--ckpt", str(ckpt), "--gain", "2", "--output-dir", str(tmp_path / "out"),
                                    "--local"]) == 0
    assert "Done: toy_score 42.00" in capsys.readouterr().out
    folder = tmp_path / "out" / "toy_contract" / "mysource-default"  # <root>/<task>/<source run>-<config>
    rec = read_record(folder / "record.json")
    assert rec.task == "toy_contract" and rec.metrics == {TOY_SCORE: 42.0}

    summary = make_tables(tmp_path / "out", tmp_path / "tables")
    table = summary.tables["toy_table"].frame
    assert list(table.columns) == ["Method", "Backbone", "Score", "Run"]
    assert len(table) == 1 and parse_cell(table["Score"].iloc[0]) == 42.0
    assert table["Method"].iloc[0] == "MAE" and table["Run"].iloc[0] == "toy_contract/mysource-default"
    assert (tmp_path / "tables" / "toy_table.csv").is_file()


def test_the_toy_tasks_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / "enc.json"
    ckpt.write_text(json.dumps({"run": "s", "base": 1.0}))
    assert cli.run("toy_contract", ["--ckpt", str(ckpt), "--local", "--output-dir", str(tmp_path), "nokey"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: command line: unexpected argument 'nokey' (overrides are key=value)"]


@pytest.mark.parametrize("name", list(registered_tasks()))
def test_every_registered_task_keeps_the_contract(name: str, tmp_path: Path) -> None:
    """Whatever is registered when the tests are collected: built-ins, tasks of test files, plug-ins."""
    from maskalign.engine.task import PretrainTask
    from maskalign.transfer.tasks import YamlConfigTask

    task = get_task(name)
    assert task.name == name and registered_tasks()[name] is task
    assert task.consumes is None or task.consumes in registered_tasks()
    assert task.metrics and all(isinstance(m, str) and m for m in task.metrics)
    if task.config_dir is not None:
        suffix = ".yaml" if isinstance(task, (YamlConfigTask, PretrainTask)) else ".py"
        assert (task.config_dir / f"{Path(task.default_config).stem}{suffix}").is_file()
    # one command line: flags and overrides in any order; --output-dir is the root for every task
    p = cli.get_args_parser(name)
    data = ["--data", "d"] if any(a.dest == "data" for a in p._actions) else []
    ckpt = [] if task.consumes is None else ["--ckpt", "c.pth"]
    a = p.parse_intermixed_args(["a=1", *ckpt, "--output-dir", "/o", "b=2", "--name", "r", *data, "--local"])
    b = p.parse_intermixed_args(["--local", *data, *ckpt, "a=1", "b=2", "--output-dir", "/o", "--name", "r"])
    assert vars(a) == vars(b) and a.overrides == ["a=1", "b=2"] and a.output_dir == "/o"
    assert isinstance(task.options(a), dict)
    assert all(isinstance(s, Spec) for s in task.tables())


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_task_has_its_config_folder_and_takes_data(name: str) -> None:
    task = get_task(name)
    assert task.config_dir is not None and task.config_dir.is_dir()
    assert cli.get_args_parser(name).parse_intermixed_args(
        [*([] if task.consumes is None else ["--ckpt", "c"]), "--data", "d"]).data == "d"


def test_robustness_consumes_finetune_and_registration_is_checked() -> None:
    assert get_task("robustness").consumes == "finetune"
    assert [t for t in registered_tasks() if t in BUILTIN] == list(BUILTIN)
    with pytest.raises(Exception, match="reserved"):
        register_task(type("Bad", (Task,), {"name": "speed"}))
    with pytest.raises(Exception, match="registered twice"):
        register_task(type("Pre", (Task,), {"name": "pretrain"}))
    with pytest.raises(Exception, match="registered twice"):
        register_task(type("Other", (Task,), {"name": "finetune"}))
    with pytest.raises(Exception, match="unknown task 'nope'"):
        get_task("nope")


def test_default_run_name_and_output_root_are_one_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = tmp_path / "enc.json"
    ckpt.write_text(json.dumps({"run": "src", "base": 1.0}))
    task = get_task("toy_contract")
    p = launcher_parser(add_help=False)
    cli.add_task_args(p, task)
    monkeypatch.setenv("MASKALIGN_OUTPUT", str(tmp_path / "env_root"))
    spec = cli.build_spec(task, p.parse_intermixed_args(["--ckpt", str(ckpt), "--config", "x/recipe.yaml"]),
                          str(ckpt), source_run="src")
    assert spec.folder == tmp_path / "env_root" / "toy_contract" / "src-recipe"
    aliases = p.parse_intermixed_args(["--ckpt", "c", f"output_dir={tmp_path}/alias", "name=n", "k=v"])
    spec = cli.build_spec(task, aliases, "c", source_run="src")
    assert spec.folder == tmp_path / "alias" / "toy_contract" / "n" and spec.overrides == ("k=v",)
    monkeypatch.delenv("MASKALIGN_OUTPUT")
    monkeypatch.chdir(tmp_path)
    spec = cli.build_spec(task, p.parse_intermixed_args(["--ckpt", "c"]), "c", source_run="s")
    assert spec.folder == tmp_path / "output" / "toy_contract" / "s-default"
