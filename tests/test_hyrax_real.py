"""hyrax_tbhub switched on for real hyrax jobs (the package from the registry, its ``train`` verb
on a small random dataset), read back with TensorBoard's own reader.

Each test starts hyrax as a user would: the ``hyrax`` CLI through ``hyrax-tbhub run`` and through
``HYRAX_TBHUB=1``; a script that calls ``use_with_hyrax()`` after ``import hyrax``; a notebook-style
driver (``python -c``) whose ``main()`` switches on and runs a 2-rank distributed ``train``. The
oracle is a stock run (hyrax's own module, tensorboardX in the main process) of the same
configuration: every tag and count of it must land, in the main run or in each rank's run.

Skipped when hyrax is not installed; .ci/hyrax.sh makes a virtualenv per hyrax release and runs
this file there. hyrax's import alone takes seconds, so the tests are few and each one checks
everything its run shows.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("hyrax") is None, reason="hyrax is not installed"),
    pytest.mark.slow,
    pytest.mark.timeout(600),
]

HERE = Path(__file__).resolve().parent
SUPPORT = HERE / "hyrax_support"
RUN_TIMEOUT_S = 540
BIN = Path(sys.executable).parent
OWN_TAGS = "hyrax_tbhub/"  # the hub's reserved counters


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYRAX_TBHUB")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SUPPORT), str(HERE)) if p)
    env["HYRAX_TBHUB_TEST_STUB_TORCHVISION"] = "1"
    env["MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"] = "false"
    env.update(extra)
    return env


def _job(tmp_path: Path, args: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "runtime.toml").write_text((SUPPORT / "runtime.toml").read_text())
    proc = subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=_env(**extra),
                          cwd=str(tmp_path))
    assert proc.returncode == 0, (
        f"{args} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return proc


def _results(tmp_path: Path, verb: str = "train") -> Path:
    found = sorted((tmp_path / "results").glob(f"*-{verb}-*"))
    assert len(found) == 1, found
    return found[0]


def _counts(log: dict[str, dict[str, Any]], run: str) -> dict[str, int]:
    return {tag: len(points) for tag, points in log.get(run, {}).items() if tag != "_other"}


def _event_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if "tfevents" in p.name)


def _hub_wrote_everything(folder: Path) -> None:
    """Only the hub wrote into the folder: tensorboardX's writer names its file without the hub's
    ``.<pid>.<n>`` tail, so one stock file among them shows."""
    for path in _event_files(folder):
        tail = path.name.split(".")[-2:]
        assert all(part.isdigit() for part in tail), f"{path.name} was not written by the hub"


# hyrax 0.11 and 0.12 also log from the data path (DataProvider's cache, in the forked DataLoader
# workers): which read hits a worker's cache depends on which worker got the item, so the
# oracle for those is the number of reads (hits plus misses) over the whole job.
READS = ("DataProvider/cache_hit_s", "DataProvider/cache_miss_s")


@dataclass(frozen=True)
class Stock:
    training: dict[str, int]  # tag -> points, logged by the process that trains
    reads: int  # DataProvider cache hits + misses, over every process


def _training(log: dict[str, dict[str, Any]], run: str) -> dict[str, int]:
    return {tag: n for tag, n in _counts(log, run).items() if tag.startswith("training/")}


def _reads(log: dict[str, dict[str, Any]]) -> int:
    return sum(len(tags.get(tag, [])) for tags in log.values() for tag in READS)


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> Stock:
    """What the stock single-process ``hyrax train`` (hyrax's own module) logs."""
    from readback import read_log

    tmp_path = tmp_path_factory.mktemp("stock")
    _job(tmp_path, [str(BIN / "hyrax"), "train", "-c", "runtime.toml"])
    log = read_log(_results(tmp_path))
    result = Stock(_training(log, "."), _reads(log))
    assert result.training, log
    return result


def _assert_like_stock(folder: Path, stock: Stock, runs: list[str] | None = None) -> dict[str, Any]:
    """Every training point of the stock run lands in each of ``runs``, every read somewhere."""
    from readback import read_log

    log = read_log(folder)
    _hub_wrote_everything(folder)
    for run in runs or ["."]:
        assert _training(log, run) == stock.training, (run, sorted(log))
    assert _reads(log) == stock.reads, sorted(log)
    for run, tags in log.items():  # a worker's cache inserts what it missed, as in the stock run
        assert len(tags.get("DataCache/cache_insert_s", [])) == len(tags.get(READS[1], [])), run
    return log


def test_cli_train_through_the_wrapper_lands_every_stock_point(tmp_path: Path, stock: Stock) -> None:
    command = [str(BIN / "hyrax-tbhub"), "run", "--", str(BIN / "hyrax"), "train", "-c", "runtime.toml"]
    proc = _job(tmp_path, command)
    _assert_like_stock(_results(tmp_path), stock)
    assert "hyrax_tbhub:" not in proc.stderr


def test_cli_train_with_the_variable_lands_every_stock_point(tmp_path: Path, stock: Stock) -> None:
    proc = _job(tmp_path, [str(BIN / "hyrax"), "train", "-c", "runtime.toml"], HYRAX_TBHUB="1")
    _assert_like_stock(_results(tmp_path), stock)
    assert "hyrax_tbhub:" not in proc.stderr


SCRIPT = """
import sys
import hyrax
import hyrax.datasets.data_cache as data_cache
import hyrax.pytorch_ignite as ignite_module
import hyrax.tensorboardx_logger as stock
import hyrax.verbs.train as train_module
import hyrax_tbhub
from hyrax_tbhub import tensorboardx_logger as ours

stock_get = stock.get_tensorboard_logger
hyrax_tbhub.use_with_hyrax()
hyrax_tbhub.use_with_hyrax()  # idempotent
# what hyrax's modules took at import now points at ours
assert ignite_module.get_tensorboard_logger is ours.get_tensorboard_logger
assert train_module.init_tensorboard_logger is ours.init_tensorboard_logger
assert train_module.close_tensorboard_logger is ours.close_tensorboard_logger
assert data_cache.tensorboardx_logger is ours.get_tensorboard_logger()
assert hyrax.tensorboardx_logger is ours and sys.modules["hyrax.tensorboardx_logger"] is ours
from hyrax.tensorboardx_logger import get_tensorboard_logger
assert get_tensorboard_logger is ours.get_tensorboard_logger

hyrax.Hyrax(config_file="runtime.toml").train()

# undone: hyrax's own module again, as it was
hyrax_tbhub.stop_using_with_hyrax()
assert ignite_module.get_tensorboard_logger is stock_get
assert sys.modules["hyrax.tensorboardx_logger"] is stock and hyrax.tensorboardx_logger is stock
assert not isinstance(data_cache.tensorboardx_logger, ours.HyraxSummaryWriter)
print("script done")
"""


def test_script_that_switches_on_after_import_hyrax(tmp_path: Path, stock: Stock) -> None:
    proc = _job(tmp_path, [sys.executable, "-c", SCRIPT])
    assert "script done" in proc.stdout
    _assert_like_stock(_results(tmp_path), stock)
    assert "hyrax_tbhub:" not in proc.stderr


OPEN_WRITER = """
import hyrax
import hyrax.tensorboardx_logger as stock
import hyrax.pytorch_ignite as ignite_module
import hyrax.verbs.train as train_module
import hyrax_tbhub

stock.init_tensorboard_logger(log_dir="open")  # a writer hyrax opened before the switch
stock.get_tensorboard_logger().add_scalar("before/switch", 1.0, 0)
hyrax_tbhub.use_with_hyrax()
ignite_module.get_tensorboard_logger().add_scalar("after/switch", 2.0, 0)
train_module.close_tensorboard_logger()
assert stock.tensorboardx_logger is None
hyrax_tbhub.use_with_hyrax()
print("open writer done")
"""


def test_a_stock_writer_open_at_the_switch_is_said_once_and_its_events_kept(tmp_path: Path) -> None:
    from readback import read_log

    proc = _job(tmp_path, [sys.executable, "-c", OPEN_WRITER])
    assert "open writer done" in proc.stdout
    assert proc.stderr.count("hyrax_tbhub: hyrax had a tensorboardX writer open on open") == 1, proc.stderr
    log = read_log(tmp_path / "open")
    assert log["."]["before/switch"] == [(0, 1.0)]
    assert log["."]["after/switch"] == [(0, 2.0)]


# A notebook cell or a `python -c` driver: no file for spawned ranks to re-run, and the switch is
# made inside main(). The machine has no GPU: hyrax's distributed path is chosen from the CUDA
# device count and asks ignite for nccl, so the driver reports 2 devices and gets gloo; hyrax's
# own training code runs in each rank. Every rank opens hyrax's MLflow SQLite store, and two
# ranks creating a new one at once collide ("duplicate column name: step"): the driver creates it
# first.
DISTRIBUTED = """
def main():
    from pathlib import Path

    import ignite.distributed as idist
    import mlflow
    import torch
    import hyrax
    import hyrax_tbhub

    hyrax_tbhub.use_with_hyrax()
    store = Path("results/mlflow").resolve()
    store.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri("sqlite:///" + str(store / "mlflow.db"))
    mlflow.set_experiment("notebook")
    torch.cuda.device_count = lambda: 2
    parallel_init = idist.Parallel.__init__

    def on_cpu(self, backend=None, **kwargs):
        parallel_init(self, backend="gloo", **kwargs)

    idist.Parallel.__init__ = on_cpu
    h = hyrax.Hyrax(config_file="runtime.toml")
    h.config["general"]["distributed"] = True
    h.train()
    print("distributed done")

main()
"""


def test_notebook_driver_distributed_train_lands_every_stock_point_in_each_rank(
    tmp_path: Path, stock: Stock
) -> None:
    proc = _job(tmp_path, [sys.executable, "-c", DISTRIBUTED])
    assert "distributed done" in proc.stdout
    folder = _results(tmp_path)
    from readback import read_log

    log = read_log(folder)
    ranks = [run for run in log if _training(log, run) and run != "."]
    assert len(ranks) == 2, sorted(log)
    _assert_like_stock(folder, stock, ranks)
    for run in ranks:
        _hub_wrote_everything(folder / run)
    assert not _training(log, "."), log["."]
    assert "hyrax_tbhub:" not in proc.stderr
