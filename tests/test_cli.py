"""The command line: stages listed in --help, version, one-line errors."""

import subprocess
import sys

import pytest

import wsss
from wsss.cli import build_parser, main

STAGES = ["data", "weights", "train-cls", "cams", "labels", "crf", "train-seg", "predict", "eval", "run", "demo"]


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for stage in STAGES:
        assert f"    {stage}" in out


def test_every_subcommand_has_help_describing_inputs_and_outputs():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "usage: wsss " + name in text
        assert len(p.description or "") > 20, name


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"wsss {wsss.__version__}"


def test_console_script_reports_errors_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {rooot: 1}\n")
    exe = [sys.executable, "-m", "wsss.cli"]
    proc = subprocess.run(exe + ["data", "check", "--config", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown config key 'data.rooot'" in lines[0]
    assert "Traceback" not in proc.stderr


def test_file_system_errors_are_one_line(tmp_path, capsys):
    import errno

    from wsss.cli import describe_os_error

    (tmp_path / "afile").write_text("")
    code = main(["labels", "--set", f"data.root={tmp_path}", "--set", f"run.out_dir={tmp_path / 'afile'}",
                 "--set", "run.name=x", "--set", "labels.method=saliency", "--set", "labels.cams="])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err == f"wsss labels: error: {tmp_path / 'afile' / 'x'}: a file stands where a folder is needed"
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/d/x.pt")) == \
        "/d/x.pt: no space left on the device"
