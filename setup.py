"""Ships ``hyrax_tbhub.pth`` into site-packages next to the package (everything else is in
pyproject.toml).

A ``.pth`` file must sit at the top of a site directory, where no declarative setuptools option
puts a file: the build step copies it to the root of the build (so the wheel has it at the top
of purelib), and the editable build adds it to the root of the editable wheel. Its only line
imports ``_hyrax_tbhub_hook`` when ``HYRAX_TBHUB`` is set and nothing when it is not.
"""

from __future__ import annotations

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "hyrax_tbhub.pth"
HERE = os.path.dirname(os.path.abspath(__file__))


class build_py_with_pth(build_py):
    def run(self) -> None:
        super().run()
        if not getattr(self, "editable_mode", False):
            target = os.path.join(self.build_lib, PTH)
            self.copy_file(os.path.join(HERE, PTH), target, preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, PTH))
        return outputs


cmdclass: dict[str, type] = {"build_py": build_py_with_pth}

try:
    from setuptools.command.editable_wheel import editable_wheel

    class editable_wheel_with_pth(editable_wheel):
        # The editable wheel is built from a folder of its own ("unpacked"): what lies at its
        # top lands at the top of site-packages, as the editable finder's own .pth does. These
        # are setuptools' private steps: if they change, the editable install goes on without
        # the .pth (HYRAX_TBHUB then does nothing there; tests/test_hyrax_switch.py skips, saying why).
        def _create_wheel_file(self, bdist_wheel):  # type: ignore[no-untyped-def]
            original = getattr(self, "_run_build_commands", None)
            if original is not None:

                def run_build_commands(dist_name, unpacked_wheel, *args, **kwargs):  # type: ignore[no-untyped-def]
                    result = original(dist_name, unpacked_wheel, *args, **kwargs)
                    shutil.copyfile(os.path.join(HERE, PTH), os.path.join(unpacked_wheel, PTH))
                    return result

                self._run_build_commands = run_build_commands
            return super()._create_wheel_file(bdist_wheel)

    cmdclass["editable_wheel"] = editable_wheel_with_pth
except ImportError:  # pragma: no cover - setuptools older than PEP 660 support
    pass

setup(cmdclass=cmdclass)
