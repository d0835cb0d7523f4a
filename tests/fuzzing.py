"""Shared pieces of the property-based tests (tests/test_fuzz_*.py): settings, YAML-like trees, mutations.

Every parser and guard answers generated input, valid or broken, with a result or with one of
hwflow's own errors (``HwflowError``), never another exception. ``answers`` runs one call and says
which; the settings keep every property small (the whole fuzz suite runs in well under a minute)
and write no example database into the repository.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from hwflow.errors import HwflowError


def fuzz_settings(max_examples: int) -> settings:
    """The same generated examples on every run (a CI failure reproduces); HWFLOW_FUZZ_RANDOM=1 explores
    new ones each run, for a fuzzing session."""
    explore = os.environ.get("HWFLOW_FUZZ_RANDOM", "") not in ("", "0")
    return settings(max_examples=max_examples, deadline=None, database=None, derandomize=not explore,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def answers(call: Callable[[], Any]) -> Any:
    """``call()``'s result, or the HwflowError it raised (returned, so a test can look at it).

    Any other exception propagates: that is the failure the fuzz tests look for."""
    try:
        out = call()
    except HwflowError as err:
        _event(f"refused: {type(err).__name__}")
        refused = err
    else:
        _event("accepted")
        return out
    assert str(refused), f"{type(refused).__name__} without a message"
    return refused


def _event(name: str) -> None:
    """Count outcomes in ``--hypothesis-show-statistics`` (only inside a property; plain tests call too)."""
    if currently_in_test_context():
        event(name)


# --- YAML-like values ------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", " ", "digits", "fashion-mnist", "x.npz", "bitflip", "stuck-at", "burst", "explicit",
                     "baseline", "clipact+scale", "msb", "lsb", "mixed", "1e-3", "-1", "nan", "cnn-digits"]),
)


def trees(keys: st.SearchStrategy[str] | None = None, max_leaves: int = 20) -> st.SearchStrategy:
    """Nested lists and mappings of YAML scalars; mapping keys from ``keys`` (or any short text)."""
    keys = keys if keys is not None else st.text(max_size=8)
    return st.recursive(
        scalars,
        lambda children: st.one_of(st.lists(children, max_size=4),
                                   st.dictionaries(st.one_of(keys, st.integers(-3, 3), st.none()), children,
                                                   max_size=5)),
        max_leaves=max_leaves,
    )


# --- mutations of a valid tree ---------------------------------------------------------------------

def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _parent(tree: Any, path: tuple) -> Any:
    for step in path[:-1]:
        tree = tree[step]
    return tree


@st.composite
def mutated(draw, tree: Any, keys: st.SearchStrategy[str] | None = None, max_mutations: int = 3) -> Any:
    """``tree`` with 1..max_mutations random edits: a value replaced (by a scalar or a small tree), a
    key deleted, renamed (a typo) or added, a list element removed or duplicated."""
    tree = copy.deepcopy(tree)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = [p for p in _paths(tree) if p]
        if not paths:
            return draw(trees(keys))
        path = draw(st.sampled_from(paths))
        parent, last = _parent(tree, path), path[-1]
        action = draw(st.sampled_from(["replace", "tree", "delete", "rename", "add", "duplicate"]))
        if action == "replace":
            parent[last] = draw(scalars)
        elif action == "tree":
            parent[last] = draw(trees(keys, max_leaves=6))
        elif action == "delete":
            del parent[last]
        elif action == "rename" and isinstance(parent, dict):
            name = str(last)
            i = draw(st.integers(0, max(len(name) - 1, 0)))
            parent[name[:i] + name[i + 1:] + draw(st.sampled_from(["", "s", "_"]))] = parent.pop(last)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(keys if keys is not None else st.text(max_size=8))] = draw(scalars)
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
    return tree
