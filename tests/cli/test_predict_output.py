"""predict の出力ファイルの権限（umask）、-q、進み具合の出し方（バー・定期的な 1 行・なし）。"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_in_image.batch import BatchOptions, ProgressMode, load_batch_dataplane, run_batch
from model_in_image.batch.progress import choose_mode
from model_in_image.cli import main
from model_in_image.settings import Settings
from support.samples import SETOSA, VERSICOLOR, VIRGINICA

Capture = pytest.CaptureFixture[str]
ROWS = "\n".join(",".join(map(str, row)) for row in [SETOSA, VERSICOLOR, VIRGINICA]) + "\n"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "rows.csv"
    path.write_text(ROWS * 400, encoding="utf-8")
    return path


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.usefixtures("umask_022")
@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_output_file_honours_the_umask(
    tmp_path: Path, source: Path, capsys: Capture, suffix: str
) -> None:
    """一時ファイル（mkstemp の 0600）から置いても、ふつうのファイルと同じ 0644。"""
    target = tmp_path / f"out{suffix}"
    assert main(["predict", str(source), "-o", str(target), "-q"]) == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_output_file_under_a_strict_umask(tmp_path: Path, source: Path) -> None:
    old = os.umask(0o077)
    try:
        assert main(["predict", str(source), "-o", str(tmp_path / "out.csv"), "-q"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.csv").stat().st_mode) == 0o600


def test_quiet_prints_no_info_log(
    tmp_path: Path, source: Path, capsys: Capture, cli_env: pytest.MonkeyPatch
) -> None:
    """-q は警告と誤りだけ：INFO の「model loaded」も集計も出さない（LOG_LEVEL=DEBUG でも）。"""
    cli_env.setenv("LOG_LEVEL", "DEBUG")
    assert main(["predict", str(source), "-o", str(tmp_path / "o.csv"), "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_without_quiet_the_model_loaded_line_prints(
    tmp_path: Path, source: Path, capsys: Capture
) -> None:
    assert main(["predict", str(source), "-o", str(tmp_path / "o.csv"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "model loaded" in err
    assert "predict progress" not in err


def test_quiet_still_prints_errors(tmp_path: Path, capsys: Capture) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,x,4\n", encoding="utf-8")
    assert main(["predict", str(bad), "-q"]) == 1
    assert "error:" in capsys.readouterr().err


class FakeStream(io.StringIO):
    """isatty と端末の大きさを決められる標準エラー。"""

    def __init__(self, *, tty: bool, columns: int | None) -> None:
        super().__init__()
        self._tty = tty
        self._columns = columns

    def isatty(self) -> bool:
        return self._tty

    def fileno(self) -> int:
        if self._columns is None:
            raise io.UnsupportedOperation("no file descriptor")
        return 2


@pytest.mark.parametrize(
    ("forced", "tty", "columns", "mode"),
    [
        (None, True, 80, ProgressMode.BAR),
        (None, True, 0, ProgressMode.LINES),
        (None, True, None, ProgressMode.LINES),
        (None, False, None, ProgressMode.OFF),
        (True, False, None, ProgressMode.LINES),
        (True, True, 80, ProgressMode.BAR),
        (False, True, 80, ProgressMode.OFF),
    ],
)
def test_choose_mode(
    monkeypatch: pytest.MonkeyPatch,
    forced: bool | None,
    tty: bool,
    columns: int | None,
    mode: ProgressMode,
) -> None:
    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((columns or 0, 24)))
    assert choose_mode(forced, FakeStream(tty=tty, columns=columns)) is mode


def test_periodic_lines_on_stderr(source: Path, settings: Settings, capsys: Capture) -> None:
    """大きさの分からない端末：interval ごとに 1 行、最後に 100% の 1 行。"""
    batch = load_batch_dataplane(settings, 100)
    options = BatchOptions(
        input=str(source),
        output=os.devnull,
        chunk_rows=100,
        progress=ProgressMode.LINES,
        progress_interval=0.0,
    )
    assert run_batch(batch, options).rows == 1200
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) >= 12
    assert all(line.startswith("predict progress: ") for line in lines)
    assert lines[-1].startswith("predict progress: 1,200 rows (100%)")


def test_forced_progress_into_a_pipe(tmp_path: Path, source: Path, capsys: Capture) -> None:
    """--progress はパイプ（端末でない標準エラー）でも定期的な 1 行を出す。"""
    assert main(["predict", str(source), "-o", str(tmp_path / "o.csv"), "--progress"]) == 0
    assert "predict progress: 1,200 rows (100%)" in capsys.readouterr().err
