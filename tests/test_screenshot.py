"""scripts/screenshot.py: real TensorBoard + headless Chromium produce a PNG with charts drawn."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "screenshot.py"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

# Line colours of TensorBoard's #scalars dashboard for the first three runs (".", worker 0, worker 1).
RUN_COLOURS = {(255, 112, 67), (0, 119, 187), (204, 51, 17)}


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium / chromium-browser / google-chrome on PATH")
def test_make_sample_screenshot_has_runs_and_charts(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    out = tmp_path / "shot.png"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--make-sample", "--logdir", str(tmp_path / "logs"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "serves 3 runs: ., dataloader_worker_0, dataloader_worker_1" in proc.stdout
    data = out.read_bytes()
    assert _png_size(data) == (1400, 900)
    assert len(data) > 20_000  # a blank or "loading" page compresses to a few kB
    assert not list(tmp_path.glob("*.tmp.png"))

    image_module = pytest.importorskip("PIL.Image")
    with image_module.open(out) as image:
        rgb = image.convert("RGB")
        # Chart area only (right of the run selector, below the toolbar): the lines, not checkboxes.
        chart_area = rgb.crop((370, 150, rgb.width, rgb.height))
        counts = {colour: n for n, colour in chart_area.getcolors(maxcolors=rgb.width * rgb.height)}
    for colour in RUN_COLOURS:
        assert counts.get(colour, 0) > 100, f"no chart line in colour {colour}: charts not drawn?"


@pytest.mark.timeout(60)
def test_no_chromium_exits_3(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # nothing to find there
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--logdir", str(tmp_path), "--out", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 3
    assert "no Chromium found" in proc.stderr
    assert not (tmp_path / "x.png").exists()
