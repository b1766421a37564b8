"""Progress of the long loops (harness/progress.py) as users see it: plain lines in a log (stderr
not a terminal), bars redrawn in place on a terminal, nothing with --quiet; stdout unchanged."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
# 40 eval examples in batches of 4 (10 batches), 32 training examples in batches of 4 (8 steps)
SMALL = ("--train-samples", "32", "--eval-samples", "40", "--validation-samples", "8", "--eval-batch-size", "4",
         "--batch-size", "4", "--max-length", "64")
LINE = re.compile(r"^  (?P<label>.+?): (?P<done>\d+)/(?P<total>\d+) (?P<unit>ex|steps|seq|windows|cells|requests) \(")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LOOPS = {"baseline:prompt eval": 40, "finetune train": 8, "finetuned eval": 40}


def progress_lines(err: str) -> dict[str, list[tuple[int, int]]]:
    """label -> [(done, total), ...] of the progress lines in a log."""
    found: dict[str, list[tuple[int, int]]] = {}
    for line in err.splitlines():
        match = LINE.match(line)
        if match:
            found.setdefault(match["label"], []).append((int(match["done"]), int(match["total"])))
    return found


def table(out: str) -> list[str]:
    """stdout without what differs between two identical runs: timings, memory, the tables' path."""
    kept = []
    for line in out.splitlines():
        if line.startswith("tables: "):
            continue
        if line.startswith("| sst2 "):
            line = "|".join(line.split("|")[:-5])  # base s, train s, tok/s, peak MB
        kept.append(line)
    return kept


def test_a_log_gets_a_bounded_number_of_plain_lines_that_end_at_the_totals(bench, data_dir, tiny_model, tmp_path):
    model = tiny_model("gpt2")
    code, out, err = bench("run", "sst2", "--models", model, "--data-dir", data_dir, "--results", tmp_path / "a",
                           *SMALL)
    assert code == 0, err
    assert "\r" not in err and "\x1b[" not in err, err
    lines = progress_lines(err)
    assert set(lines) == set(LOOPS), err  # validation during training is the logged `step` line, not bars
    for label, total in LOOPS.items():
        assert lines[label][-1] == (total, total), (label, err)  # the end line
        assert all(t == total for _, t in lines[label]) and len(lines[label]) <= 12, (label, err)
        counts = [done for done, _ in lines[label]]
        assert counts == sorted(counts), (label, err)
    assert re.search(r"finetune train: 8/8 steps \(100%\) .*tok/s  loss \d.*lr .*in \d+s", err), err
    assert re.search(r"finetuned eval: 40/40 ex \(100%\)  [\d,.]+ ex/s  in \d+s", err), err
    # the validation lines interleave with the training lines, before its end line
    assert err.index("  step 8/8  loss") < err.index("finetune train: 8/8 steps"), err

    code, quiet_out, quiet_err = bench("run", "sst2", "--models", model, "--data-dir", data_dir, "--results",
                                       tmp_path / "b", *SMALL, "--quiet")
    assert code == 0, quiet_err
    assert progress_lines(quiet_err) == {}, quiet_err
    assert "  finetuned: accuracy" in quiet_err  # the stages' own lines stay
    assert table(quiet_out) == table(out)  # progress goes to stderr only: the same table on stdout


def read_all(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return
        if not chunk:
            return
        into.append(chunk)


def test_a_terminal_gets_bars_redrawn_in_place_and_the_table_stays_on_stdout(data_dir, tiny_model, tmp_path):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 160, 0, 0))  # rows, columns
    env = {**os.environ, "PYTHONPATH": str(REPO), "BENCH_CACHE": str(tmp_path / "cache"), "TERM": "xterm"}
    env.pop("BENCH_DATA_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "sst2", "--models", str(tiny_model("gpt2")),
                             "--data-dir", str(data_dir), "--results", str(tmp_path / "r"), *SMALL],
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=env, cwd=tmp_path)
    os.close(slave)
    chunks: list[bytes] = []
    reader = threading.Thread(target=read_all, args=(master, chunks))
    reader.start()
    out, _ = proc.communicate(timeout=600)
    reader.join(timeout=60)
    os.close(master)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, screen
    # redrawn in place: carriage returns of their own (the terminal turns every newline into \r\n), cursor codes
    assert re.search(r"\r(?!\n)", screen) and "\x1b[" in screen, screen
    assert "━" in screen  # a drawn bar
    plain = ANSI.sub("", screen).replace("\r", "\n")
    for label, total in LOOPS.items():
        assert re.search(rf"^  {re.escape(label)}: {total}/{total} \w+ \(100%\)", plain, re.M), (label, plain)
    assert re.search(r"finetune train\s.*\d/8 steps", plain), plain  # the live bar, before its summary
    assert "  step 8/8  loss" in plain  # log lines print above the bars
    text = out.decode()
    assert "before / after fine-tuning" in text and "\x1b[" not in text and "ex/s" not in text, text


def test_a_sweep_counts_its_cells_and_those_skipped_as_complete(bench, data_dir, tiny_model, tmp_path):
    args = ("sweep", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results", tmp_path,
            "--grid", "lora_rank=2,4", "--train-samples", "8", "--eval-samples", "8", "--validation-samples", "4",
            "--batch-size", "4", "--eval-batch-size", "8", "--max-length", "64")
    code, _, err = bench(*args)
    assert code == 0, err
    assert progress_lines(err)["sweep"][-1] == (2, 2) and "skipped as complete" not in err, err
    code, _, err = bench(*args)  # every cell stored: both skipped, and the line says so
    assert code == 0, err
    assert re.search(r"^  sweep: 2/2 cells \(100%\)  skipped as complete 2  in \d+s$", err, re.M), err
