"""The fault-free pass cache (hwflow.campaign.golden_cache): a hit gives exactly what a miss computes, every
input that decides the codes changes the key, a damaged entry is recomputed, and a gate run with a
restored cache folder never runs the fault-free pass."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import replace

import numpy as np
import pytest
import yaml

import hwflow
from hwflow.campaign import TrialEvaluator
from hwflow.campaign import golden_cache as gc
from hwflow.campaign.delta.golden import Golden, bytes_per_sample
from hwflow.campaign.delta.state import ChannelMajor
from hwflow.emulator import Emulator, Program
from hwflow.faults import fault_model_from_spec
from tests.conftest import zoo_model


@pytest.fixture(scope="module")
def net():
    """cnn-digits converted (convolutions: channel-major accumulators, transposed im2col, float32 copies)."""
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls

    with tempfile.TemporaryDirectory() as tmp:
        hls = convert(zoo_model("cnn-digits", 8, 8, seed=3), HlsOptions(), tmp)
        return program_from_hls(hls), image_from_hls(hls)


@pytest.fixture(scope="module")
def samples(digits):
    return digits.x_test[:200], digits.y_test[:200]


@pytest.fixture
def built(monkeypatch):
    """How many fault-free passes ran (Golden's constructor, spied on)."""
    calls = []
    original = Golden.__init__

    def counting(self, *args, **kwargs):
        calls.append(len(args[-1]))
        original(self, *args, **kwargs)

    monkeypatch.setattr(Golden, "__init__", counting)
    return calls


def _maps(image, n=24):
    specs = [{"model": "bitflip"}, {"model": "stuck-at", "value": 1}, {"model": "burst", "length": 3}]
    return [fault_model_from_spec(specs[i % 3], rate).sample(image, np.random.default_rng(i))
            for i, rate in enumerate([1e-3, 1e-2, 3e-2] * (n // 3))]


def _same_golden(a: Golden, b: Golden) -> None:
    assert vars(a).keys() == vars(b).keys()
    assert a.codes.keys() == b.codes.keys()
    for key in a.codes:
        x, y = a.codes[key], b.codes[key]
        assert type(x) is type(y), key
        x, y = (x.array, y.array) if isinstance(x, ChannelMajor) else (x, y)
        assert x.dtype == y.dtype, key
        np.testing.assert_array_equal(x, y, err_msg=key)
    assert b.output is b.codes[b.program.layers[-1].name]  # one array under both names, as built
    for name in ("kept", "accumulators", "samples", "_channel_major", "_bound"):
        assert getattr(a, name) == getattr(b, name), name


def test_a_hit_gives_the_outcomes_of_a_miss(net, samples, built, tmp_path):
    program, image = net
    x, y = samples
    plain = TrialEvaluator(program, image, x, y)
    miss = TrialEvaluator(program, image, x, y, golden_cache=tmp_path)
    assert len(built) == 2
    assert len(list(tmp_path.iterdir())) == 1
    hit = TrialEvaluator(program, image, x, y, golden_cache=tmp_path)
    assert len(built) == 2  # read, not recomputed
    _same_golden(plain.store, hit.store)
    maps = _maps(image)
    expected = plain.evaluate_many(maps)
    assert miss.evaluate_many(maps) == expected
    assert hit.evaluate_many(maps) == expected
    assert hit.evaluate_many(maps, threads=2) == expected
    assert sum(o.mismatches > 0 for o in expected) > len(maps) // 2  # the maps change outputs
    for fm in maps[:4]:
        np.testing.assert_array_equal(hit.output_codes(fm), plain.output_codes(fm))
    np.testing.assert_array_equal(hit.output_codes(maps[0]), Emulator(program, maps[0].apply(image)).run(x))
    # Chunked (more samples than the memory allows at once): one entry per chunk, read again each batch.
    small = 60 * bytes_per_sample(program)
    chunked = TrialEvaluator(program, image, x, y, memory=small, golden_cache=tmp_path / "chunks")
    assert len(list((tmp_path / "chunks").iterdir())) == 4
    before = len(built)
    assert chunked.evaluate_many(maps) == expected
    assert len(built) == before  # every chunk of every batch read from its entry


def test_what_decides_the_codes_changes_the_key(net, samples, monkeypatch):
    program, image = net
    x, _ = samples
    key = gc.entry_key(program, image, x, 0, len(x))
    assert gc.entry_key(program, image, x.copy(), 0, len(x)) == key  # content, not identity
    arr = image.get("conv2", "weight")
    words = arr.words.copy()
    words[5] ^= np.uint64(1)
    flipped = image.replace_array(replace(arr, words=words))
    reformatted = image.replace_array(replace(arr, format=replace(arr.format, fixed=replace(
        arr.format.fixed, integer=arr.format.fixed.integer + 1))))
    out = program.layers[-1]
    other_program = Program(program.layers[:-1] + (replace(out, accum=replace(out.accum, width=out.accum.width + 1)),),
                            program.io_type)
    pixel = x.copy()
    pixel.reshape(-1)[7] += 1.0 / 16
    others = {
        "a weight word": gc.entry_key(program, flipped, x, 0, len(x)),
        "a weight format": gc.entry_key(program, reformatted, x, 0, len(x)),
        "the program": gc.entry_key(other_program, image, x, 0, len(x)),
        "a sample": gc.entry_key(program, image, pixel, 0, len(x)),
        "the sample set": gc.entry_key(program, image, x[:150], 0, 150),
        "the chunk range": gc.entry_key(program, image, x, 0, 100),
        "the sample dtype": gc.entry_key(program, image, x.astype(np.float32 if x.dtype == np.float64 else np.float64),
                                         0, len(x)),
    }
    monkeypatch.setattr(hwflow, "__version__", "99.0")
    others["hwflow's version"] = gc.entry_key(program, image, x, 0, len(x))
    monkeypatch.undo()
    monkeypatch.setattr(gc, "STORE_LAYOUT", gc.STORE_LAYOUT + 1)
    others["the store layout"] = gc.entry_key(program, image, x, 0, len(x))
    monkeypatch.undo()
    monkeypatch.setattr(gc, "source_digest", lambda: "edited")
    others["hwflow's sources"] = gc.entry_key(program, image, x, 0, len(x))
    assert all(k != key for k in others.values()), [name for name, k in others.items() if k == key]
    assert len(set(others.values())) == len(others)


def test_a_changed_weight_word_misses(net, samples, built, tmp_path):
    program, image = net
    x, y = samples
    TrialEvaluator(program, image, x, y, golden_cache=tmp_path)
    arr = image.get("conv1", "weight")
    words = arr.words.copy()
    words[0] ^= np.uint64(1 << 6)
    flipped = image.replace_array(replace(arr, words=words))
    fresh = TrialEvaluator(program, flipped, x, y, golden_cache=tmp_path)
    assert len(built) == 2
    assert len(list(tmp_path.iterdir())) == 2
    _same_golden(TrialEvaluator(program, flipped, x, y).store, fresh.store)


def _truncate(entry):
    biggest = max(entry.glob("*.npy"), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:-100])


def _flip_a_data_byte(entry):
    biggest = max(entry.glob("*.npy"), key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[-1] ^= 0x10
    biggest.write_bytes(bytes(data))


def _garble_manifest(entry):
    (entry / gc.MANIFEST).write_text("{not json")


def _drop_a_file(entry):
    next(entry.glob("*.npy")).unlink()


def _other_key(entry):
    manifest = json.loads((entry / gc.MANIFEST).read_text())
    manifest["key"] = "0" * 64
    (entry / gc.MANIFEST).write_text(json.dumps(manifest))


def _wrong_shape(entry):
    manifest = json.loads((entry / gc.MANIFEST).read_text())
    meta = next(iter(manifest["files"].values()))
    meta["shape"] = [1, *meta["shape"]]
    (entry / gc.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage", [_truncate, _flip_a_data_byte, _garble_manifest, _drop_a_file, _other_key,
                                    _wrong_shape])
def test_a_corrupt_or_truncated_entry_is_rebuilt(net, samples, built, tmp_path, damage, caplog):
    program, image = net
    x, y = samples
    reference = TrialEvaluator(program, image, x, y)
    TrialEvaluator(program, image, x, y, golden_cache=tmp_path)
    (entry,) = tmp_path.iterdir()
    damage(entry)
    rebuilt = TrialEvaluator(program, image, x, y, golden_cache=tmp_path)
    assert len(built) == 3  # the damaged entry was not used
    assert "unusable" in caplog.text
    _same_golden(reference.store, rebuilt.store)
    maps = _maps(image, 6)
    assert rebuilt.evaluate_many(maps) == reference.evaluate_many(maps)
    again = TrialEvaluator(program, image, x, y, golden_cache=tmp_path)  # the entry was rewritten
    assert len(built) == 3
    _same_golden(reference.store, again.store)


def test_a_failed_write_leaves_no_entry(net, samples, built, tmp_path, monkeypatch):
    """Writes go to a temporary folder renamed at the end: one that stops halfway (here an error on the
    third array, as a full disk would) leaves nothing a later run could read, and the campaign goes on."""
    program, image = net
    x, y = samples
    saved = []
    real_save = np.save

    def failing_save(path, a, **kwargs):
        if len(saved) == 2:
            msg = "No space left on device"
            raise OSError(msg)
        saved.append(path)
        real_save(path, a, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(gc.np, "save", failing_save)
        ev = TrialEvaluator(program, image, x, y, golden_cache=tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither an entry nor the temporary folder
    assert ev.evaluate_many(_maps(image, 3)) == TrialEvaluator(program, image, x, y).evaluate_many(_maps(image, 3))
    # A killed writer's temporary folder (no finally ran) is never read, and swept once old.
    killed, recent = tmp_path / ".tmp-killed", tmp_path / ".tmp-writing"
    for folder in (killed, recent):
        folder.mkdir()
        (folder / "a0.npy").write_bytes(b"half")
    old = time.time() - gc.STALE_SECONDS - 60
    os.utime(killed, (old, old))
    TrialEvaluator(program, image, x, y, golden_cache=tmp_path)
    assert len(built) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-writing", gc.entry_key(program, image, x, 0, len(x))]


def test_an_attribute_the_cache_cannot_store_leaves_the_pass_uncached(net, samples, tmp_path):
    program, image = net
    x, _ = samples
    golden = Golden(program, image, Emulator(program, image), x)
    golden.extra = object()
    with pytest.raises(gc.GoldenCacheError, match="Golden holds a object"):
        gc.save(golden, tmp_path / "entry", "k")
    assert list(tmp_path.iterdir()) == []
    cache = gc.GoldenCache(tmp_path)
    assert cache.fault_free(program, image, x, 0, len(x), lambda: golden) is golden
    assert list(tmp_path.iterdir()) == []


def test_a_gate_run_with_a_restored_cache_skips_the_fault_free_pass(tmp_path, built, capsys):
    """The first gate run computes each variant's pass once (its later batches read it back); a second run
    on a fresh database with the cache folder copied (a CI job restoring it) computes none, with the same
    verdicts."""
    from hwflow.cli import main

    model = tmp_path / "mlp.h5"
    zoo_model("mlp-digits", 8, 8, seed=1).save(model)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "g", "seed": 3, "dataset": "digits", "samples": 120, "models": [{"path": str(model), "name": "mlp"}],
        "rates": [1e-3, 1e-2], "trials": 40, "faults": [{"model": "bitflip"}],
        "require": [{"rate": 1e-3, "min": 0.01, "name": "keeps 1%"}, {"rate": 1e-2, "min": 0.5, "name": "keeps 50%"}]}))

    def gate(db, cache):
        code = main(["gate", str(spec), "--db", str(db), "--batch", "10", "--cache", str(cache), "--quiet"])
        return code, [line for line in capsys.readouterr().out.splitlines() if line.startswith(("HOLDS", "FAILS"))]

    first = gate(tmp_path / "a.sqlite", tmp_path / "cache")
    assert built == [120]  # one pass for the whole run, though every batch made a new evaluator
    assert len(list((tmp_path / "cache" / "golden").iterdir())) == 1
    shutil.copytree(tmp_path / "cache", tmp_path / "restored")
    shutil.rmtree(tmp_path / "cache")
    assert gate(tmp_path / "b.sqlite", tmp_path / "restored") == first
    assert built == [120]  # the restored cache: no fault-free pass at all
    assert first[0] == 1
    assert len(first[1]) == 2
