"""A type checker catches wrong uses of the public writers (and accepts the right ones).

``mypy --strict`` runs once, in this process, over small snippets: a misspelt method, a keyword
tensorboardX does not have, and an ``options=`` that is not an :class:`hyrax_tbhub.Options` are
each a type error, for the process-wide handle and for ``hyrax_tbhub.SummaryWriter``; the same
calls spelt right are not (the contrast: the errors are the mistakes', not the snippets').
tests/typing/api_uses.py holds the longer list of right uses, checked by the project's mypy run.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]

_HANDLE = "from hyrax_tbhub import get_tensorboard_logger, init_tensorboard_logger, Options\n"
_WRITER = "from hyrax_tbhub import SummaryWriter, Options\n"

#: snippet name -> (code, the mypy error code it must raise, or None for none at all)
SNIPPETS: dict[str, tuple[str, str | None]] = {
    "handle_right": (_HANDLE + """
        init_tensorboard_logger(log_dir="d", options=Options(queue_max_events=10))
        w = get_tensorboard_logger()
        w.add_scalar("x", 1.0, global_step=1)
        w.add_histogram("h", [1.0], 1, bins="auto")
    """, None),
    "handle_misspelt_method": (_HANDLE + """
        get_tensorboard_logger().add_scalr("x", 1.0)
    """, "attr-defined"),
    "handle_bogus_keyword": (_HANDLE + """
        get_tensorboard_logger().add_scalar("x", 1.0, bogus_kw=1)
    """, "call-arg"),
    "handle_wrong_options": (_HANDLE + """
        init_tensorboard_logger(log_dir="d", options={"queue_max_events": 10})
    """, "arg-type"),
    "handle_misspelt_init_keyword": (_HANDLE + """
        init_tensorboard_logger(log_dri="d")
    """, "call-arg"),
    "writer_right": (_WRITER + """
        w = SummaryWriter("d", options=Options(queue_max_events=10))
        w.add_scalar("x", 1.0, global_step=1)
        w.add_scalar("x", 1.0, 2, new_style=True)
        w.add_histogram("h", [1.0], 1, bins="auto")
    """, None),
    "writer_misspelt_method": (_WRITER + """
        SummaryWriter("d").add_scalr("x", 1.0)
    """, "attr-defined"),
    "writer_bogus_keyword": (_WRITER + """
        SummaryWriter("d").add_scalar("x", 1.0, bogus_kw=1)
    """, "call-overload"),  # both libraries' orders: mypy's code for a call no overload takes
    "writer_bogus_keyword_plain_method": (_WRITER + """
        SummaryWriter("d").add_histogram("h", [1.0], bogus_kw=1)
    """, "call-arg"),
    "writer_bogus_constructor_keyword": (_WRITER + """
        SummaryWriter("d", bogus_kw=1)
    """, "call-arg"),
    "writer_wrong_options": (_WRITER + """
        SummaryWriter("d", options={"queue_max_events": 10})
    """, "arg-type"),
}


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Each snippet's mypy error lines, from one run of ``mypy --strict`` over all of them."""
    folder = tmp_path_factory.mktemp("snippets")
    for name, (code, _) in SNIPPETS.items():
        header, body = code.split("\n", 1)
        (folder / f"{name}.py").write_text(header + "\n" + textwrap.dedent(body))
    saved = os.environ.get("MYPYPATH")
    os.environ["MYPYPATH"] = str(ROOT)  # this checkout's hyrax_tbhub, wherever pytest runs
    try:
        out, err, _ = mypy_api.run([
            "--config-file", str(ROOT / "pyproject.toml"), "--strict",
            "--cache-dir", str(tmp_path_factory.mktemp("mypy_cache")),
            *sorted(str(p) for p in folder.glob("*.py")),
        ])
    finally:
        if saved is None:
            os.environ.pop("MYPYPATH", None)
        else:
            os.environ["MYPYPATH"] = saved
    assert "error: Cannot find implementation or library stub" not in out, out
    assert "[syntax]" not in out, out
    errors: dict[str, list[str]] = {name: [] for name in SNIPPETS}
    for line in out.splitlines():
        m = re.match(r"(?:.*/)?(\w+)\.py:\d+: error: ", line)
        if m is not None:
            errors.setdefault(m.group(1), []).append(line)
    assert set(errors) == set(SNIPPETS), (out, err)
    return errors


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_mypy_flags_exactly_the_mistake(name: str, mypy_errors: dict[str, list[str]]) -> None:
    expected = SNIPPETS[name][1]
    found = mypy_errors[name]
    if expected is None:
        assert found == []
    else:  # on the mistake's line (each wrong snippet's only statement, line 3), and only there
        assert found and all(f"{name}.py:3: error: " in line for line in found), found
        assert any(line.endswith(f"[{expected}]") for line in found), found
