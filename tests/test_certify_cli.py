"""`lipnet certify RUN_DIR` and the certificate file."""

import json

import numpy as np
import pytest

from lipnet.certify import (
    CERTIFICATE_NAME,
    certify_controller,
    network_hash,
    read_certificate,
    write_certificate,
)
from lipnet.cli import main
from lipnet.exceptions import RunFolderError
from lipnet.nn import Controller
from lipnet.train.checkpoint import load_controller, save_controller

FAST = ["--method", "spectral", "--method", "eclipse-fast", "--method", "lipsdp-schur"]


@pytest.fixture
def run_dir(tmp_path):
    dt = 0.1
    A = np.array([[1.0, dt], [0.0, 1.0]])
    B = np.array([[0.5 * dt**2], [dt]])
    np.savez(tmp_path / "plant.npz", A=A, B=B, dt=dt)
    c = Controller(2, 1, hidden=(8, 8), layer="plain", gains=0.5, u_low=-1, u_high=1)
    run = tmp_path / "run"
    run.mkdir()
    save_controller(c, run, plant=str(tmp_path / "plant.npz"), dt=dt)
    return run


def test_cli_writes_a_hash_bound_certificate(run_dir, capsys):
    assert main(["certify", str(run_dir), *FAST, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    cert = read_certificate(run_dir)
    assert cert == printed
    assert cert["network_hash"] == network_hash(load_controller(run_dir))
    sound = [b["value"] for b in cert["bounds"] if b["sound"]]
    assert cert["tightest_upper"]["value"] == min(sound)
    assert cert["tightest_upper"]["method"] == "lipsdp-schur"
    low = cert["empirical_lower"]
    assert 0 < low["value"] <= min(sound) and "eval initial-state box" in low["region"]["source"]
    cl = cert["closed_loop"]
    assert cl["linear_plant"] is True and isinstance(cl["certified"], bool) and cl["assumptions"]


def test_cli_table_and_require(run_dir, capsys):
    assert main(["certify", str(run_dir), *FAST, "--no-closed-loop"]) == 0
    out = capsys.readouterr().out
    for word in ("method", "lipsdp-schur", "empirical lower", "tightest sound upper bound"):
        assert word in out
    tight = read_certificate(run_dir)["tightest_upper"]["value"]
    assert main(["certify", str(run_dir), *FAST, "--no-closed-loop", "--require", str(tight * 1.01)]) == 0
    assert main(["certify", str(run_dir), *FAST, "--no-closed-loop", "--require", str(tight * 0.5)]) == 1


def test_cli_iqc_always_reports_the_lmi_certificate(run_dir, capsys):
    assert main(["certify", str(run_dir), "--method", "spectral", "--iqc", "always"]) == 0
    out = capsys.readouterr().out
    assert "IQC: " in out
    cl = read_certificate(run_dir)["closed_loop"]
    assert cl["iqc"] is not None and isinstance(cl["iqc"]["passes"], bool)
    assert cl["certified"] is (cl["passes"] or cl["iqc"]["passes"])
    assert main(["certify", str(run_dir), "--method", "spectral", "--iqc", "off", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["closed_loop"]["iqc"] is None


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["certify", str(tmp_path / "missing")]) == 2
    assert "no controller checkpoint" in capsys.readouterr().err


def test_certificate_roundtrip_and_bad_files(tmp_path):
    c = Controller(3, 1, hidden=(4,), layer="plain")
    cert = certify_controller(c, methods=["spectral", "lipsdp-schur"])
    path = write_certificate(cert, tmp_path)
    assert path.name == CERTIFICATE_NAME
    data = read_certificate(path)
    assert data["tightest_upper"]["value"] == pytest.approx(cert.tightest_upper)
    assert data["empirical_lower"]["region"]["source"].startswith("no plant")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(RunFolderError):
        read_certificate(tmp_path / "bad.json")
