import gc

from shared.process import tune_garbage_collector


def test_gc_tuning_raises_the_young_threshold_and_freezes_startup_objects():
    before = gc.get_threshold()
    try:
        tune_garbage_collector(0)
        assert gc.get_threshold() == before
        tune_garbage_collector(50_000)
        assert gc.get_threshold() == (50_000, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
