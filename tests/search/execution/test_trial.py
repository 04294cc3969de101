"""A trial's session: a retry whose dead trial left an unreadable checkpoint trains from the start."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState
from typer.testing import CliRunner

from search import StudySpec, TrialRunner, attrs, create_or_load_study
from search.cli import app
from search.store.artifacts import artifact_store
from tests.search.conftest import small_study, write_study
from trainer import train


def test_a_retry_with_a_truncated_checkpoint_trains_from_the_start(tmp_path: Path) -> None:
    spec = StudySpec.from_file(write_study(tmp_path, small_study("trunc", tmp_path)))
    study = create_or_load_study(spec)
    store = artifact_store(spec.artifacts)
    runner = TrialRunner(spec, store, "cpu")
    first = study.ask()  # a trial that died, leaving a real checkpoint, truncated as a full disk would leave it
    train(spec.train.replace(budget_images=320, eval_every_images=320), data=runner.data, out_dir=tmp_path / "run")
    whole = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with open(tmp_path / "half.pt", "wb") as fh:
        fh.write(whole[: len(whole) // 2])
    with open(tmp_path / "half.pt", "rb") as fh:
        store.write("checkpoint-truncated", fh)
    first.set_user_attr(attrs.CHECKPOINT, "checkpoint-truncated")
    study.tell(first, state=TrialState.FAIL)
    retry = study.ask()
    assert runner.checkpoint_of_failed_trial(retry, first.number, tmp_path) is None
    reason = study.get_trials()[retry.number].user_attrs[attrs.RESUME_SKIPPED]
    assert "unreadable" in reason and attrs.RESUMED_FROM not in study.get_trials()[retry.number].user_attrs
    [value] = runner(retry)  # the retry trains from scratch to its budget (a value per objective)
    assert isinstance(value, float)
    assert optuna.load_study(study_name="trunc", storage=spec.storage).trials[retry.number].user_attrs[
        attrs.IMAGES_SEEN] == spec.train.budget_images


def test_train_resume_of_a_truncated_checkpoint_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("dataset: digits\narch: dcgan\ng_width: 8\nd_width: 8\nlatent_dim: 8\n"
                                     "budget_images: 320\neval_every_images: 320\neval_metric: none\ndevice: cpu\n"
                                     "amp: off\nchannels_last: off\n")
    out = tmp_path / "out"
    first = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(out)])
    assert first.exit_code == 0, first.output
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    before = sorted(p.name for p in out.iterdir())
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(out), "--resume",
                                      "--set", "budget_images=640"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "checkpoint" in result.output and "unreadable" in result.output
    assert "Traceback" not in result.output and sorted(p.name for p in out.iterdir()) == before
