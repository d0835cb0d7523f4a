"""What a command prints by default: its results, its progress bars and its errors, nothing else.

TensorFlow's C++ start-up chatter ("Unable to register cuDNN/cuFFT/cuBLAS factory") is printed at
*error* level while the library loads, so only ``TF_CPP_MIN_LOG_LEVEL=3`` set *before the first*
``import tensorflow`` hides it (level 2 still lets those lines through). Keras warns that
``constraints.serialize()`` sees QKeras quantizers, which is how QKeras works and nothing a user can
act on. Both are silenced here, by the CLI entry point and the demo, before anything imports
TensorFlow. Log records go through ``tqdm.write`` so that a progress bar and a log line never
overwrite each other; ``-v`` turns the logs (INFO and DEBUG) back on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

TF_LOG_ENV = "TF_CPP_MIN_LOG_LEVEL"

# Warnings that say nothing a user can act on (the message is matched at its start).
_IGNORED_WARNINGS = (
    (r"The `keras\.constraints\.serialize\(\)` API should only be used", UserWarning),
    (r"You are saving your model as an HDF5 file", UserWarning),
)


def quiet_tensorflow() -> None:
    """Silence TensorFlow's and Keras's start-up noise; call before the first ``import tensorflow``.

    Also with ``-v``: those lines are spurious whatever one debugs (hwflow's own logs are what ``-v``
    shows). A ``TF_CPP_MIN_LOG_LEVEL`` the user set is kept, so TensorFlow's C++ log can still be had."""
    if "tensorflow" in sys.modules:
        logging.getLogger(__name__).debug("TensorFlow already imported; %s comes too late", TF_LOG_ENV)
    os.environ.setdefault(TF_LOG_ENV, "3")
    for message, category in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


class TqdmHandler(logging.Handler):
    """A stderr handler that prints above any running tqdm bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise into the caller  # noqa: BLE001
            self.handleError(record)


def configure_logging(verbose: bool = False) -> None:
    """Warnings and errors by default; with ``verbose``, hwflow's DEBUG and every library's INFO.

    Called again (tests run several commands in one process), it replaces its own handler only:
    handlers others installed (pytest's, an application's) are left alone."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, TqdmHandler)]:
        root.removeHandler(old)
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("hwflow").setLevel(logging.DEBUG if verbose else logging.NOTSET)


@contextlib.contextmanager
def saving_h5():
    """Around ``model.save(..., save_format="h5")``: Keras calls .h5 "legacy" (a UserWarning; it is the
    format hls4ml's QKeras path reads) and warns on TensorFlow's logger that a model trained by a
    custom trainer has no compiled metrics; neither concerns the user."""
    tf_log = logging.getLogger("tensorflow")
    level = tf_log.level
    tf_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        tf_log.setLevel(level)
