"""The demo end to end, in its quick mode: the table and the figure are produced."""

import re

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


def test_demo_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        main(["demo", "--rules", "Adamax"])
    with pytest.raises(SystemExit):
        main(["demo", "--epochs", "0"])
