"""Every `torchrun ... -m kdsam ...` line the docs show parses, first with torchrun's own parser
(which reads abbreviations of its options even after the module: `--run` would be its
`--run-path`), then with kdsam's."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from torch.distributed.run import get_args_parser

from kdsam.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def documented_launches() -> list[str]:
    lines = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())  # join continued lines
        lines += [ln.strip() for ln in text.splitlines() if ln.strip().startswith("torchrun ")]
    return lines


def test_the_docs_show_torchrun_launches() -> None:
    assert len(documented_launches()) >= 4


@pytest.mark.parametrize("line", documented_launches())
def test_torchrun_and_kdsam_both_parse_the_line(line: str) -> None:
    launch = get_args_parser().parse_args(shlex.split(line)[1:])
    assert launch.module and launch.training_script in ("kdsam", "kdsam.cli"), line
    argv = launch.training_script_args
    build_parser(argv).parse_args(argv)


def test_finetune_refuses_the_old_run_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    """--run would work alone (argparse abbreviates --run-dir) and fail under torchrun: refused, with the fix."""
    argv = ["finetune", "--run", "runs/r50", "--data", "folder:x"]
    with pytest.raises(SystemExit) as exit_:
        build_parser(argv).parse_args(argv)
    assert exit_.value.code == 2
    assert "--run is now --run-dir" in capsys.readouterr().err.splitlines()[-1]
