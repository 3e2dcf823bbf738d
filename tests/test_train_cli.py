"""`edgead train` as a person uses it: Ctrl-C on a real training process, resuming, output directories that are
not empty, inputs that are not normal training scans, and what its help and progress say."""

import json
import re
import signal
import subprocess
import sys
import time

import pytest
from test_evaluate import write_category

from edgead import cli
from edgead.train.common import busy_note

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_cli") / "ellipsoid"
    write_category(root, n_good=1, n_bad=1, n=3000)
    return root


def edgead(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgead", *args]


def test_ctrl_c_saves_a_checkpoint_at_that_step_and_resume_continues_from_it(category, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(edgead("train", "dusnet", "--data", str(category), "--out", str(run), "--preset", "tiny",
                                   "--steps", "100000"), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "train_log.jsonl").is_file() or not (run / "train_log.jsonl").read_text():
            assert time.monotonic() < deadline and proc.poll() is None, "training never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    lines = [x.strip() for x in re.split(r"[\r\n]", err) if x.strip()]
    assert "Traceback" not in err and "/200000" in err  # one bar over both stages: its ETA covers the whole run
    said = [x for x in lines if x.startswith("edgead train:")]
    assert len(said) == 1, said  # one line
    m = re.fullmatch(r"edgead train: interrupted at step (\d+) of 200000 \(down-net step \1 of 100000\); checkpoint "
                     r"saved to (\S+); continue with: edgead train dusnet --data \S+ --out \S+ --preset tiny "
                     r"--steps 100000 --resume", said[0])
    assert m, said[0]
    step = int(m.group(1))
    assert m.group(2) == str(run / "checkpoints" / "last.pt")
    assert torch.load(m.group(2), weights_only=False)["step"] == step >= 1  # saved at that very step

    total = step + 2
    proc = subprocess.run(edgead("train", "dusnet", "--data", str(category), "--out", str(run), "--preset", "tiny",
                                 "--steps", str(total), "--resume"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"dusnet: resumed from {run / 'checkpoints' / 'last.pt'} at step {step} of {2 * total} (down-net step " \
           f"{step})" in proc.stderr
    info = json.loads((run / "model.json").read_text())["train"]
    assert info["steps_down"] == total and info["steps_up"] == total


def test_resume_without_a_checkpoint_is_refused_at_once(category, tmp_path, capsys):
    assert cli.main(["train", "dusnet", "--data", str(category), "--out", str(tmp_path / "new"), "--resume"]) == 2
    assert "--resume: no checkpoint to continue from" in capsys.readouterr().err
    assert cli.main(["train", "template", "--data", str(category), "--out", str(tmp_path / "t"), "--resume"]) == 2
    assert "template trains in one pass" in capsys.readouterr().err


def test_a_non_empty_output_directory_needs_force_which_keeps_other_files(category, tmp_path, capsys, caplog):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("line 3 bottle, good parts from Tuesday")
    assert cli.main(["train", "template", "--data", str(category), "--out", str(run)]) == 2
    assert "is not empty (notes.txt)" in capsys.readouterr().err and not (run / "model.json").exists()
    assert cli.main(["-q", "train", "template", "--data", str(category), "--out", str(run), "--force"]) == 0
    assert (run / "notes.txt").read_text().startswith("line 3") and (run / "model.json").is_file()
    assert "kept notes.txt" in caplog.text
    assert cli.main(["train", "template", "--data", str(category), "--out", str(run)]) == 2  # a run is there now


@pytest.mark.parametrize(("folder", "said"), [("test", "is named like a test split"),
                                              ("gt", "label points as anomalous (bad_1.txt)")])
def test_training_on_test_scans_or_ground_truth_warns(category, tmp_path, caplog, folder, said):
    assert cli.main(["-q", "train", "template", "--data", str(category / folder), "--out", str(tmp_path / "r")]) == 0
    assert said in caplog.text
    caplog.clear()
    assert cli.main(["-q", "train", "template", "--data", str(category), "--out", str(tmp_path / "ok")]) == 0
    assert caplog.text == ""  # a category directory trains on its train/ scans


def test_preset_help_lists_every_preset_and_an_unknown_one_is_refused(category, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "dusnet: cpu, paper, tiny; r3dad: cpu, paper, paper-real3d" in help_text
    assert cli.main(["train", "dusnet", "--data", str(category), "--out", str(tmp_path / "r"), "--preset", "gpu"]) == 2
    assert "dusnet presets are cpu, paper, tiny" in capsys.readouterr().err


def test_a_loaded_machine_is_named_as_the_reason_for_a_slow_eta(monkeypatch):
    monkeypatch.setattr("os.getloadavg", lambda: (7.2, 6.0, 4.0))
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert busy_note().startswith("load average 7.2 on 2 cores: other work shares the CPUs")
    monkeypatch.setattr("os.getloadavg", lambda: (1.5, 1.0, 1.0))
    assert busy_note() is None


@pytest.mark.parametrize("init, shipped", [(None, True), ("none", False)])
def test_dusnet_cpu_starts_from_the_shipped_weights_unless_init_none(category, tmp_path, init, shipped):
    args = ["train", "dusnet", "--data", str(category), "--out", str(tmp_path / "run"), "--steps", "0", "-q"]
    assert cli.main(args + (["--init", init] if init else [])) == 0
    recorded = json.loads((tmp_path / "run" / "model.json").read_text())["train"]["init"]
    assert (recorded is not None and recorded.endswith("dusnet_cpu.pt")) == shipped
