"""Loaded at the start of every process of a real-hyrax test (the tests put this folder on
PYTHONPATH, which spawned ranks and subprocesses inherit).

torchvision from the registry is built for CUDA: with the CPU torch its ``nms``/``qnms`` operators
are missing and ``import torchvision`` (which hyrax does) fails. Declaring their schemas is
enough for the import; nothing in these tests runs them. A test machine's concern, so it lives
here and not in the package.
"""

import os

if os.environ.get("HYRAX_TBHUB_TEST_STUB_TORCHVISION"):
    import torch

    _lib = torch.library.Library("torchvision", "DEF")
    _lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
