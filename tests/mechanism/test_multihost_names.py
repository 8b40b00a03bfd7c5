"""Run names in a distributed job, and what a rank publishes for its descendants.

No processes here: the naming rules and the hub's sanitiser, checked directly.

Mechanism test (it imports private modules on purpose): the naming rules of ``_naming`` and the
hub's run-name sanitiser (``_hub.store.clean_run_name``), and the hub file a rank publishes
(``_discovery.hubfile``).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyrax_tbhub import _naming
from hyrax_tbhub._discovery import hubfile
from hyrax_tbhub._hub.store import clean_run_name as _clean_run_name
from hyrax_tbhub.testing import DROPPED_PREFIX, RESERVED_PREFIX


@pytest.mark.parametrize(("given_name", "stored"), [
    ("rank_3/dataloader_worker_0", "rank_3/dataloader_worker_0"),
    ("rank_12/SpawnPoolWorker-1", "rank_12/SpawnPoolWorker-1"),
    ("rank_3", "rank_3"),
    ("rank_3/../../etc", "rank_3/_.._etc"),
    ("../x", "_x"),
    ("rank_3/rank_4/x", "rank_3/rank_4_x"),  # one level of nesting, no more
    ("rank_3/", "rank_3/producer"),
    ("rank_3/" + RESERVED_PREFIX.rstrip("/"), "rank_3/producer"),  # the reserved prefix, below a rank too
    (DROPPED_PREFIX.rstrip("/"), "producer"),
    ("rank_x/worker", "rank_x_worker"),
    ("rank_1\\worker", "rank_1_worker"),
    ("/abs/path", "_abs_path"),
])
def test_run_names_nest_only_below_a_rank(given_name: str, stored: str) -> None:
    assert _clean_run_name(given_name) == stored


@given(st.text(max_size=300))
def test_any_run_name_stays_inside_the_log_folder(name: str) -> None:
    cleaned = _clean_run_name(name)
    parts = cleaned.split("/")
    assert 1 <= len(parts) <= 2 and len(cleaned) <= 16 + 80
    assert all(p and p not in (".", "..") and not p.startswith(".") for p in parts)
    if len(parts) == 2:
        assert parts[0].startswith("rank_") and parts[0][5:].isdigit()
    assert not cleaned.startswith("hyrax_tbhub") and not parts[-1].startswith("hyrax_tbhub")
    assert os.path.normpath(os.path.join("/log", cleaned)).startswith("/log/")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ("RANK", "WORLD_SIZE", _naming.ENV_RANK):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_a_launchers_rank_is_named_after_its_rank(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("RANK", "5")
    clean_env.setenv("WORLD_SIZE", "8")
    assert _naming.job_rank() == (5, True)
    assert _naming.producer_name() == "rank_5"
    assert os.environ[_naming.ENV_RANK] == f"5:{os.getpid()}"  # for the descendants it starts


def test_a_descendant_of_a_rank_is_named_below_it(clean_env: pytest.MonkeyPatch) -> None:
    # What a child of rank 5 inherits: torchrun's RANK and the rank's marker with the rank's pid.
    clean_env.setenv("RANK", "5")
    clean_env.setenv("WORLD_SIZE", "8")
    clean_env.setenv(_naming.ENV_RANK, f"5:{os.getpid() + 1}")
    assert _naming.job_rank() == (5, False)
    assert _naming.producer_name().startswith("rank_5/")
    assert _naming.producer_name() != "rank_5"


def test_outside_a_job_names_have_no_rank(clean_env: pytest.MonkeyPatch) -> None:
    assert _naming.job_rank() is None
    assert not _naming.producer_name().startswith("rank_")


def test_a_rank_that_stops_being_one_withdraws_its_marker(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(_naming.ENV_RANK, f"2:{os.getpid()}")  # set while it was a rank
    _naming.mark_rank()  # no process group, no RANK: no longer a rank
    assert _naming.ENV_RANK not in os.environ


def test_a_rank_publishes_its_route_privately_and_withdraws_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hubfile.ENV_INFO, raising=False)
    info = hubfile.HubInfo(address="tcp:10.0.0.1:1234", authkey="ab" * 32, start_ns=1,
                              logdir=str(tmp_path), owner_pid=os.getpid(), hub_id="cafe",
                              hostname="another-host")
    hubfile.publish_for_descendants(info, None)
    path = Path(os.environ[hubfile.ENV_INFO])
    try:
        assert path == hubfile.hub_file_for(os.getpid())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert json.loads(path.read_text())["address"] == "tcp:10.0.0.1:1234"
        # Same pid as this process but another host's hub: a child here must still take it.
        assert hubfile.read_hub_file(path) == info
        assert not hubfile._is_own_hub(info)
    finally:
        hubfile.withdraw_published()
    assert not path.exists()
    assert hubfile.ENV_INFO not in os.environ


def test_a_route_inherited_through_the_environment_is_not_republished(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hubfile.ENV_INFO, str(tmp_path / "owner.json"))
    info = hubfile.HubInfo(address="/x.sock", authkey="00", start_ns=1, logdir=str(tmp_path),
                              owner_pid=1, hub_id="beef")
    hubfile.publish_for_descendants(info, str(tmp_path / "owner.json"))
    assert os.environ[hubfile.ENV_INFO] == str(tmp_path / "owner.json")
    assert not hubfile.hub_file_for(os.getpid()).exists()
