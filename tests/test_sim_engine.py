"""The simulator's engine model: timing, batching, KV-cache blocks, prefix cache, disaggregation."""

from __future__ import annotations

import pytest

from switchpoint.sim.engine import Engine, EngineConfig, EngineRequest, prompt_blocks


def run_to_completion(engine: Engine, now: float = 0.0, limit: int = 100_000) -> float:
    """Drive the engine (ms clock) until idle; returns the time."""
    for _ in range(limit):
        duration = engine.start_iteration(now)
        if duration is None:
            wake = engine.next_ready_at(now)
            if wake is None:
                return now
            now = wake
            continue
        now += duration
        engine.finish_iteration(now)
    raise AssertionError("engine did not drain")


def test_a_lone_request_matches_the_reference_ttft_and_itl():
    engine = Engine()
    req = EngineRequest("r", prompt_tokens=256, output_tokens=11)
    engine.submit(req, 0.0)
    run_to_completion(engine)
    assert req.first_token_at == pytest.approx(10 + 256 * 0.2)  # 61.2 ms, reference 60-120 ms
    assert (req.finished_at - req.first_token_at) / 10 == pytest.approx(10.08)  # ITL ~10 ms, reference 10-15


def test_long_prefills_are_chunked_and_stall_decodes_beside_them():
    engine = Engine()
    decoding = EngineRequest("d", prompt_tokens=10, output_tokens=50)
    engine.submit(decoding, 0.0)
    now = 0.0
    for _ in range(3):  # get it decoding
        now += engine.start_iteration(now)
        engine.finish_iteration(now)
    engine.submit(EngineRequest("long", prompt_tokens=6000, output_tokens=5), now)
    before = decoding.token_times[-1]
    now += engine.start_iteration(now)
    engine.finish_iteration(now)
    gap = decoding.token_times[-1] - before
    assert gap > 400  # one 2,047-token chunk in the same iteration: ~420 ms between two tokens


def test_at_most_max_num_seqs_run_and_the_rest_wait():
    engine = Engine(EngineConfig(max_num_seqs=2))
    for i in range(5):
        engine.submit(EngineRequest(str(i), prompt_tokens=20, output_tokens=5), 0.0)
    engine.start_iteration(0.0)
    assert (engine.num_running, engine.num_waiting) == (2, 3)


def test_kv_blocks_are_held_for_computed_tokens_only():
    engine = Engine(EngineConfig(kv_blocks=1000))
    engine.submit(EngineRequest("r", prompt_tokens=4096, output_tokens=10), 0.0)
    duration = engine.start_iteration(0.0)
    assert engine.used_blocks == 2048 // 16  # the first chunk's blocks, not the whole prompt's
    engine.finish_iteration(duration)
    run_to_completion(engine, duration)
    assert engine.used_blocks == 0 and engine.kv_usage == 0


def test_a_full_cache_makes_requests_wait_rather_than_overcommit():
    engine = Engine(EngineConfig(kv_blocks=130, max_batched_tokens=4096))
    engine.submit(EngineRequest("a", prompt_tokens=2000, output_tokens=10), 0.0)
    engine.submit(EngineRequest("b", prompt_tokens=2000, output_tokens=10), 0.0)
    duration = engine.start_iteration(0.0)
    assert engine.used_blocks <= 130
    engine.finish_iteration(duration)
    end = run_to_completion(engine, duration)
    assert end > 0 and engine.used_blocks == 0


def test_a_shared_prefix_is_not_prefilled_twice():
    text = "You are a helpful assistant. " * 400
    first = EngineRequest("a", 3000, 2, prompt_blocks(text + "question one"))
    second = EngineRequest("b", 3000, 2, prompt_blocks(text + "question two"))
    engine = Engine()
    engine.submit(first, 0.0)
    now = run_to_completion(engine)
    engine.submit(second, now)
    run_to_completion(engine, now)
    assert second.cached_tokens > 2500 and engine.prefix_hits == 1
    assert second.first_token_at - second.arrival < first.first_token_at - first.arrival


def test_a_disaggregated_request_pays_a_kv_transfer_instead_of_prefill():
    prefill_side = Engine()
    p = EngineRequest("r", 4000, 1, prefill_only=True)
    prefill_side.submit(p, 0.0)
    done = run_to_completion(prefill_side)
    assert p.done and p.generated == 0
    decode_side = Engine()
    d = EngineRequest("r", 4000, 20, kv_transferred=True)
    decode_side.submit(d, done)
    run_to_completion(decode_side, done)
    transfer = 5.0 + 0.002 * 4000
    assert d.first_token_at == pytest.approx(done + transfer + 10 + 0.08, rel=1e-3)


def test_aborting_frees_the_request():
    engine = Engine()
    engine.submit(EngineRequest("r", 100, 1000), 0.0)
    engine.start_iteration(0.0)
    engine.finish_iteration(30.0)
    assert engine.abort("r", 30.0) and engine.num_running == 0 and engine.used_blocks == 0
