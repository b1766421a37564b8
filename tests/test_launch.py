"""The launcher seam (harness/distributed.py): one process by default (every collective the
identity), and the runner's rank-0-only store writes that a distributed launcher relies on. The
real multi-process runs are in test_distributed.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from harness.options import RunConfig
from harness.store import Store
from harness.task.registry import get_task
from harness.distributed import SINGLE_PROCESS, Launcher
from harness.types import Splits


def test_single_process_is_a_launcher_whose_collectives_are_the_identity() -> None:
    assert isinstance(SINGLE_PROCESS, Launcher)
    assert (SINGLE_PROCESS.rank, SINGLE_PROCESS.world_size, SINGLE_PROCESS.is_main) == (0, 1, True)
    from harness.train.data_parallel import rank_items, wrap

    model, items = object(), [3, 1, 2]
    assert wrap(model, SINGLE_PROCESS, fsdp=False) is model and rank_items(items, SINGLE_PROCESS) == items
    assert SINGLE_PROCESS.shard(3) == [0, 1, 2] and SINGLE_PROCESS.broadcast("x") == "x"
    assert SINGLE_PROCESS.all_gather({"a": 1}) == [{"a": 1}] and SINGLE_PROCESS.barrier() is None


class _SecondRank:
    """Rank 1 of 2, scripted: its barrier is where rank 0 (run in the same process) does its part."""

    rank, world_size, local_rank, is_main, distributed = 1, 2, 0, False, True

    def __init__(self, at_barrier: Callable[[], Any]) -> None:
        self.at_barrier = at_barrier

    def barrier(self) -> None:
        self.at_barrier()

    def all_gather(self, value: Any) -> list[Any]:
        raise AssertionError("not used by the runner")

    def broadcast(self, value: Any) -> Any:
        return None  # rank 0 found nothing stored (its own check runs in the same process, below)

    def shard(self, count: int) -> list[int]:
        raise AssertionError("not used by the runner")

    def gather_in_order(self, count: int, answers: Any) -> list[Any]:
        raise AssertionError("not used by the runner")


def test_strided_shards_come_back_in_item_order() -> None:
    from harness.distributed import TorchDistributed

    class Scripted(TorchDistributed):  # two ranks' answers, without a process group
        def all_gather(self, value: Any) -> list[Any]:
            return [["a", "c", "e"], ["b", "d"]]

    ranks = [Scripted(rank, 2, 0) for rank in (0, 1)]
    assert [r.shard(5) for r in ranks] == [[0, 2, 4], [1, 3]]
    assert ranks[1].gather_in_order(5, ["b", "d"]) == ["a", "b", "c", "d", "e"]


def test_only_rank_0_writes_a_stage_and_the_others_read_its_record(tmp_path: Path) -> None:
    from harness.run.runner import Runner

    spec, store = get_task("sst2"), Store(tmp_path / "results")
    config, splits = RunConfig(task="sst2", model="tiny"), Splits((), (), ())
    main = Runner(spec, store, None, lambda _: None)
    written: list[str] = []

    def work(rank: int) -> Any:
        return [], {"rank": rank}, {}, []

    def rank_0_stores() -> None:
        assert store.stage("run1", "finetune") is None  # rank 1 wrote nothing before the barrier
        written.append(main.stage("run1", "finetune", config, splits, lambda: work(0)).metrics["rank"])

    second = Runner(spec, store, None, lambda _: None, launcher=_SecondRank(rank_0_stores))
    record = second.stage("run1", "finetune", config, splits, lambda: work(1))
    assert written == [0] and record is not None and record.metrics["rank"] == 0  # rank 0's record, read back
