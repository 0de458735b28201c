"""axengine BOARD EMULATOR: the session API of Axera's pyaxengine, running EMULATED axmodels with ONNX Runtime.

pyaxengine's ``InferenceSession(path)`` has ONNX Runtime's shape (``get_inputs()``, ``get_outputs()``,
``run(output_names, input_feed)``); this module keeps that shape so the board runtime runs unchanged here.
It runs only the EMULATED axmodels of the project's Pulsar2 emulator (``axmodel.py`` beside it in the
emulator, ``pulsar2.axmodel`` in a checkout) and refuses a real axmodel. Not an NPU: CPU timings.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

EMULATOR = True
__version__ = "0.1.3-EMULATOR"  # the pyaxengine release whose API this imitates


def _axmodel():
    here = Path(__file__).resolve().parent
    try:
        sys.path.insert(0, str(here.parent))
        import axmodel  # the copy installed beside this package (board-emulator image, local emulator)
    except ImportError:
        sys.path[0] = str(here.parents[2])  # repository checkout: device/emulator/axengine -> repo root
        from pulsar2 import axmodel
    finally:
        sys.path.pop(0)
    return axmodel


class InferenceSession:
    def __init__(self, path_or_bytes: str | os.PathLike[str], **_: object) -> None:
        import onnxruntime as ort

        axmodel = _axmodel()
        try:
            self._meta, onnx_bytes = axmodel.read_emulated(path_or_bytes)
        except axmodel.NotEmulatedAxmodel as e:
            raise RuntimeError(f"{e}; this is the board EMULATOR's axengine: it runs only EMULATED axmodels") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._sess = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])

    def get_inputs(self):
        return self._sess.get_inputs()

    def get_outputs(self):
        return self._sess.get_outputs()

    def run(self, output_names, input_feed, run_options=None):
        return self._sess.run(output_names, input_feed)
