"""The README's workflow ("From four good parts to a running detector"), run as written by a new user would: each
command read from README.md, in order, in a fresh folder, as its own process; only sizes are added (fewer and
smaller scans, DUS-Net's tiny preset, a short bench) and serve's ports are free ones. A command that fails, or a
step that does not leave what the next one needs, fails the test."""

import csv
import json
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from stream_helpers import free_port

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## From four good parts to a running detector"
SMALL = {  # appended to a command (later options win in argparse): sizes only, never what a step does
    ("synth",): ["--categories", "bottle", "--points", "4000", "--train", "2", "--good", "4", "--defective", "3"],
    ("train", "dusnet"): ["--preset", "tiny", "--steps", "3"],
    ("bench",): ["--points", "3000", "--frames", "2", "--reference-frames", "1"],
}
TIMEOUT = 300


def workflow() -> list[list[str]]:
    """The shell commands of the section's first bash block: comments dropped, continuation lines joined."""
    text = README.read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index(SECTION):], re.S).group(1)
    return [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def small(argv: list[str]) -> list[str]:
    extra = SMALL.get(tuple(argv[1:3]), SMALL.get(tuple(argv[1:2]), []))
    return [sys.executable, "-m", "edgead", *argv[1:], *extra]


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(small(argv), cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{shlex.join(argv)}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


def test_the_readme_workflow_runs_as_written(tmp_path):
    commands = workflow()
    assert [c[:2] for c in commands] == [["edgead", "synth"], ["edgead", "train"], ["edgead", "train"],
                                         ["edgead", "eval"], ["edgead", "export"], ["edgead", "bench"],
                                         ["edgead", "calibrate"], ["edgead", "predict"], ["edgead", "serve"]]
    *batch, serve = commands
    outputs = {}
    for argv in batch:
        outputs[argv[1]] = run(argv, tmp_path)
    data = tmp_path / "data" / "bottle"
    assert (tmp_path / "runs" / "template-bottle" / "model.json").is_file()
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((tmp_path / "engines" / "dusnet.json").read_text())
    assert manifest["preset"] == "tiny"
    export_says = outputs["export"].stdout + outputs["export"].stderr
    assert ("FP16 engine's point scores differ" in export_says) == (not manifest["fp16_within_tolerance"])
    assert "engine" in outputs["bench"].stdout and "frames/s" in outputs["bench"].stdout
    for step, bar in (("train", "dusnet up-net: "), ("eval", "bottle: "), ("export", "export dusnet: "),
                      ("bench", "engine: "), ("calibrate", "scoring good scans: "), ("predict", "predict: ")):
        assert bar in outputs[step].stderr, step  # long work shows progress (tqdm, on stderr)
    threshold = json.loads((tmp_path / "calibration" / "threshold.json").read_text())
    assert threshold["n_normal"] == 4 and threshold["method"] == "far"  # the good test scans, not training scans
    assert "--far 0.01 cannot be resolved with 4 good scans" in outputs["calibrate"].stderr
    with open(tmp_path / "predictions" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(list((data / "test").glob("*.pcd"))) == 7
    assert all(r["status"] == "ok" and r["anomalous"] in ("true", "false") for r in rows)
    assert len(list((tmp_path / "predictions" / "images").glob("*.png"))) == 7

    ports = ["--sub", f"tcp://127.0.0.1:{free_port()}", "--pub", f"tcp://127.0.0.1:{free_port()}"]
    proc = subprocess.Popen(small(serve) + ports, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        ready = proc.stderr.readline()  # serve accepts a threshold only for the model it was calibrated on
        assert f"threshold {threshold['threshold']}" in ready, ready
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
