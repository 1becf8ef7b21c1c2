"""bench/quality.py's grid: every model trains the candidates it can tell apart, once each."""

import importlib.util
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("bench_quality", os.path.join(REPO, "bench", "quality.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_model_trains_only_the_candidates_it_reads(quality):
    candidates = quality.grid(["ensemble:members=dkt+attn,dkt+dkt+attn", "dkt:batch_size=32,64", "lr=1e-3,2e-3"])
    assert len(candidates) == 8
    assert quality.read_by("dkt", candidates) == [
        {"batch_size": "32", "lr": "1e-3"}, {"batch_size": "32", "lr": "2e-3"},
        {"batch_size": "64", "lr": "1e-3"}, {"batch_size": "64", "lr": "2e-3"}]
    assert quality.read_by("ensemble", candidates) == [
        {"members": "dkt+attn", "lr": "1e-3"}, {"members": "dkt+attn", "lr": "2e-3"},
        {"members": "dkt+dkt+attn", "lr": "1e-3"}, {"members": "dkt+dkt+attn", "lr": "2e-3"}]
    # keys a model never reads are dropped even without a prefix: attn has no members and no counts
    assert quality.read_by("attn", quality.grid(["members=dkt+attn,dkt", "count_features=0,1"])) == [{}]
