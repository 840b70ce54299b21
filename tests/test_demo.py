"""The demo end to end, in its quick mode: the table and the figure are produced."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

from fastopt.__main__ import main


def test_quick_demo_prints_the_table_and_writes_the_figure(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows = re.findall(r"^(SGD|Adam)\s+(\d+)\s+([0-9.]+)%\s+([0-9.]+)%", text, re.M)
    assert [r[0] for r in rows] == ["SGD", "Adam"]
    for _, epochs, val_acc, _test_acc in rows:
        assert int(epochs) == 3
        assert float(val_acc) > 80.0  # three epochs already learn the digits
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "pip install 'fastopt[plot]'" in text
        assert not out.exists()
    else:
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert out.stat().st_size > 10_000


def test_demo_options_noise_and_curriculum(tmp_path, capsys):
    assert main(["demo", "--rules", "Momentum", "--epochs", "2", "--noise", "0.01",
                 "--curriculum", "--seed", "3", "--out", str(tmp_path / "d.png")]) == 0
    text = capsys.readouterr().out
    assert "gradient noise eta=0.01" in text and "curriculum" in text
    assert re.search(r"^Momentum\s+2\s+[0-9.]+%", text, re.M)


def test_demo_state_and_param_dtypes_report_the_optimizers_memory(tmp_path, capsys):
    """Each --state-dtype trains the rule once; the table's state bytes per parameter are
    the optimizer's own count (Adam: two float32 moments = 8 B; 8-bit state on the 8,192
    first-layer weights, the 1,546 others keep float32 below min_8bit_size; a master copy
    of 16-bit weights is 4 B)."""
    pytest.importorskip("ml_dtypes")
    assert main(["demo", "--rules", "Adam", "--epochs", "2", "--state-dtype", "none", "fp8",
                 "--out", str(tmp_path / "d.png")]) == 0
    rows = re.findall(r"^(Adam(?: \[[^\]]+\])?)\s+2\s+([0-9.]+)%\s+([0-9.]+)%\s+([0-9.]+)\s",
                      capsys.readouterr().out, re.M)
    assert [r[0] for r in rows] == ["Adam", "Adam [fp8]"]
    n, n8 = 9738, 8192
    eight = (2 * n8 + 2 * 4 * (n8 // 256) + 8 * (n - n8)) / n
    assert float(rows[0][3]) == pytest.approx(8.0, abs=0.01)
    assert float(rows[1][3]) == pytest.approx(eight, abs=0.01)
    assert min(float(r[2]) for r in rows) > 80.0
    assert main(["demo", "--rules", "SGD", "--epochs", "2", "--param-dtype", "bfloat16",
                 "--out", str(tmp_path / "d.png")]) == 0
    row = re.search(r"^SGD \[bfloat16 params\]\s+2\s+([0-9.]+)%\s+[0-9.]+%\s+([0-9.]+)",
                    capsys.readouterr().out, re.M)
    assert row and float(row[1]) > 80.0
    assert float(row[2]) == pytest.approx(4.0, abs=0.05)  # SGD has no state: the master copy


@pytest.mark.parametrize("args, message", [
    (["demo", "--rules", "Adamux"], "unknown rule"),
    (["demo", "--state-dtype", "int4"], "unknown --state-dtype"),
    (["demo", "--epochs", "0"], "--epochs must be at least 1"),
    (["demo", "--batch-size", "1"], "--batch-size must be at least 2"),
    (["demo", "--noise", "nan"], "--noise must be a finite number >= 0"),
    (["demo", "--noise", "inf"], "--noise must be a finite number >= 0"),
    (["demo", "--seed", "-1"], "--seed must be >= 0"),
    (["bench", "--sizes=-5"], "--sizes must be whole numbers"),
    (["bench", "--sizes", "nan"], "--sizes must be whole numbers"),
    (["bench", "--sizes", "0.5"], "--sizes must be whole numbers"),
    (["bench", "--sizes", "1e30"], "--sizes must be whole numbers"),
], ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_bad_arguments_are_parser_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_cuda_takes_sizes_in_every_spelling(monkeypatch):
    import fastopt.bench.gpu as gpu

    seen = []
    monkeypatch.setattr(gpu, "main", lambda sizes, *a, **k: seen.append(sizes) or 0)
    for args in (["--sizes", "1e4"], ["--sizes=1e4"], ["--size", "1e4"], []):
        main(["bench", "--device", "cuda", *args])
    assert seen == [[10_000]] * 3 + [[100_000_000]]


def test_demo_batch_sizes_that_leave_one_example_and_a_bare_out_name(tmp_path, capsys):
    """8 leaves one of the 1257 training images for a last batch, which BatchNorm cannot
    normalise: it is dropped. An --out without a suffix names the PNG matplotlib writes."""
    assert main(["demo", "--rules", "SGD", "--epochs", "1", "--batch-size", "8",
                 "--out", str(tmp_path / "fig")]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^SGD\s+1\s+[0-9.]+%", text, re.M)
    if importlib.util.find_spec("matplotlib") is not None:
        assert re.search(rf"^figure: {re.escape(str(tmp_path / 'fig.png'))}$", text, re.M)
        assert (tmp_path / "fig.png").exists()
    else:
        assert "(no figure: matplotlib is not installed" in text


def test_the_demo_reports_on_the_model_that_had_the_best_validation_loss():
    """Early stopping keeps the best parameters and BatchNorm's running statistics: the
    restored model's validation loss is the best one recorded, exactly."""
    from fastopt.demo import run

    data = run.split(0)
    res = run.train("Adam", data, 30, 64, 0, None, False, 1, False)
    assert res.epochs < 30  # patience 1 stopped it
    assert res.final_val_loss == min(res.val_loss)


def test_an_existing_folder_as_out_gets_the_figure_inside(tmp_path):
    from fastopt.demo import run

    assert run.output_path(tmp_path) == tmp_path / "fastopt_demo.png"
    assert run.output_path(tmp_path / "sub" / "f") == tmp_path / "sub" / "f.png"
    assert (tmp_path / "sub").is_dir()  # made before any training


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_an_out_matplotlib_cannot_write_is_refused_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--rules", "SGD", "--epochs", "1", "--out", str(tmp_path / "f.xyz")])
    err = capsys.readouterr()
    assert "matplotlib cannot write '.xyz' files" in err.err
    assert "SGD" not in err.out  # nothing was trained


def test_the_figure_says_why_curves_coincide():
    from fastopt.demo import run

    note = run.coincidence_note(run.RULES)
    assert "SGD, Momentum, Nesterov take the same effective step" in note
    assert "Nadam" in note
    assert run.coincidence_note(["SGD", "Adam"]) == ""
    # the note's arithmetic is the demo's: SGD's lr is Momentum's over (1 - 0.9)
    assert run.LR["SGD"] == pytest.approx(run.LR["Momentum"] / (1 - 0.9))


def _mpi_available() -> bool:
    return (importlib.util.find_spec("mpi4py") is not None
            and shutil.which("mpiexec") is not None)


needs_mpi = pytest.mark.skipif(not _mpi_available(), reason="mpi4py/mpiexec not installed")


def _mpiexec_demo(ranks: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mpiexec", "-n", str(ranks), sys.executable, "-m", "fastopt",
                           "demo", "--distributed", *args], capture_output=True, text=True,
                          timeout=240, env={**os.environ, "NUMBA_NUM_THREADS": "1"})


@needs_mpi
def test_distributed_demo_reaches_the_one_process_accuracy(tmp_path, capsys):
    """Two ranks, each half of every minibatch (BatchNorm's statistics over the whole one),
    a ShardedOptimizer: the same accuracy as one process, to well within a point; rank 0
    alone prints, and its 1-proc column is the one-process demo's number."""
    args = ["--rules", "Adam", "--epochs", "3"]
    assert main(["demo", *args, "--out", str(tmp_path / "one.png")]) == 0
    one = re.search(r"^Adam\s+3\s+([0-9.]+)%\s+([0-9.]+)%", capsys.readouterr().out, re.M)
    done = _mpiexec_demo(2, *args, "--out", str(tmp_path / "two.png"))
    assert done.returncode == 0, done.stderr[-4000:]
    text = done.stdout
    assert text.count("digits:") == 1  # rank 0 alone prints
    assert len(re.findall(r"^rule\s+epochs", text, re.M)) == 1
    assert "distributed: 2 MPI rank(s), each 32 examples" in text
    two = re.search(r"^Adam\s+3\s+([0-9.]+)%\s+([0-9.]+)%\s+([0-9.]+)%", text, re.M)
    assert one and two, text
    assert abs(float(two[2]) - float(one[2])) <= 1.0, (one[0], two[0])
    assert abs(float(two[3]) - float(one[2])) <= 1.0  # the 1-proc column: one process
    assert float(two[2]) > 80.0


@needs_mpi
def test_distributed_demo_refuses_a_batch_the_ranks_cannot_share_equally():
    done = _mpiexec_demo(2, "--rules", "SGD", "--epochs", "1", "--batch-size", "63")
    assert done.returncode != 0
    assert done.stderr.count("--batch-size 63 does not divide among 2 ranks") == 1  # rank 0
    assert not re.search(r"^rule\s+epochs", done.stdout, re.M)  # nothing was trained


def test_distributed_demo_without_mpi4py_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py: ImportError
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--distributed", "--rules", "SGD", "--epochs", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--distributed needs mpi4py" in err and 'pip install "fastopt[mpi]"' in err
