"""On a real PYNQ board: PynqBoard on a deployed bundle's overlay (marker ``board``).

Everywhere else these tests report a skip naming what they need. On the board, with pynq's Python
(3.10, numpy and pynq; no TensorFlow) and pytest, from an unpacked bundle (``hwflow deploy``)::

    sudo HWFLOW_BOARD=/home/xilinx/mlp-bundle PYTHONPATH=/home/xilinx/mlp-bundle \\
        python3 -m pytest -m board tests/test_real_board.py

They use only the bundle's packages (``hwflow_host`` and its numpy-only part of ``hwflow``): every
weight word written through the memory port reads back, a fault map's words go in and the scrub
takes them out again, and the accelerator's outputs repeat exactly. (That the board computes what
the emulator computes is shown by the campaign itself: ``hwflow pull`` compares its rows with the
workstation's.)
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.board

NO_BOARD = ("HWFLOW_BOARD is not set: these tests run on a PYNQ board, with HWFLOW_BOARD set to an unpacked "
            "hwflow bundle (hwflow deploy) whose overlay they load")


@pytest.fixture(scope="module")
def bundle():
    root = os.environ.get("HWFLOW_BOARD", "")
    if not root:
        pytest.skip(NO_BOARD)
    from hwflow_host.bundle import load_bundle

    loaded = load_bundle(root)
    if loaded.bitstream is None:
        pytest.fail(f"{root} was packed without a bitstream (hwflow deploy --no-bitstream): deploy one that has it")
    return loaded


@pytest.fixture(scope="module")
def board(bundle):
    from hwflow_host.pynq_board import PynqBoard

    return PynqBoard(bundle.manifest, bundle.image, bundle.bitstream, name="board-test")


@pytest.fixture(scope="module")
def golden(bundle):
    """Every word of the golden image, by address."""
    return np.concatenate([a.words for a in bundle.image])


def test_every_weight_word_reads_back_after_the_scrub(bundle, board, golden):
    from hwflow_host.board import read_words
    from hwflow_host.campaign import scrub

    addrs = bundle.addresses()
    assert addrs.size > 0
    scrub(board, bundle.image, addrs)  # raises HardFaultError naming any word that does not read back
    np.testing.assert_array_equal(read_words(board, addrs), golden[addrs])


def test_outputs_repeat_exactly(bundle, board):
    """The same words and inputs give the same output words, run after run (no stale DMA buffers)."""
    from hwflow_host.campaign import scrub

    scrub(board, bundle.image, bundle.addresses())
    first = np.asarray(board.run(bundle.x))
    assert first.shape[0] == len(bundle.y)
    np.testing.assert_array_equal(np.asarray(board.run(bundle.x)), first)
    np.testing.assert_array_equal(np.asarray(board.run(bundle.x[::-1]))[::-1], first)  # no sample depends on another


def test_a_fault_map_goes_in_through_the_port_and_the_scrub_takes_it_out(bundle, board, golden):
    from hwflow_host.board import read_words, write_words
    from hwflow_host.campaign import scrub

    addrs = bundle.addresses()
    scrub(board, bundle.image, addrs)
    clean = np.asarray(board.run(bundle.x))
    held = set(addrs.tolist())
    for trial in bundle.plan.trials:  # the first planned map that changes a word held in BRAM
        faulty = np.concatenate([a.words for a in trial.sample(bundle.image).apply(bundle.image)])
        changed = np.array([a for a in np.flatnonzero(faulty != golden).tolist() if a in held], dtype=np.int64)
        if changed.size:
            break
    else:
        pytest.fail("no planned fault map changes a word held in the board's weight memories")
    write_words(board, changed, faulty[changed])
    np.testing.assert_array_equal(read_words(board, changed), faulty[changed])
    board.run(bundle.x)
    scrub(board, bundle.image, addrs)
    np.testing.assert_array_equal(read_words(board, changed), golden[changed])
    np.testing.assert_array_equal(np.asarray(board.run(bundle.x)), clean)
