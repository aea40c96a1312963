"""Admission: priority then FIFO, one run per device, estimate vs *free* memory."""

from engine.scheduler import CPU, Device, order, plan


def run(rid, seq, priority=0, est=None, device=None):
    return {"id": rid, "seq": seq, "priority": priority, "estimate_gb": est, "device": device}


def test_order_is_priority_then_insertion():
    runs = [run("a", 1), run("b", 2, priority=5), run("c", 3), run("d", 4, priority=5)]
    assert [r["id"] for r in order(runs)] == ["b", "d", "a", "c"]


def test_cpu_only_runs_one_at_a_time():
    p = plan([run("a", 1), run("b", 2)], [], [])
    assert p.start == [("a", CPU)]
    assert p.waiting == {"b": "waiting: CPU busy with a"}
    p = plan([run("b", 2)], [run("a", 1, device=CPU)], [])
    assert p.start == [] and p.waiting["b"] == "waiting: CPU busy with a"


def test_waits_for_free_memory_with_the_numbers():
    gpu = Device("0", "RX 7700 XT", free_gb=7.1, total_gb=12.0)
    p = plan([run("big", 1, est=9.8), run("small", 2, est=2.0)], [], [gpu])
    assert p.start == []
    assert p.waiting["big"] == "waiting: needs 9.8 GiB, 7.1 GiB free"
    assert p.waiting["small"] == "waiting: behind big"  # strict order: the big run is not starved
    p = plan([run("big", 1, est=9.8)], [], [Device("0", "RX", free_gb=10.5, total_gb=12.0)])
    assert p.start == [("big", "0")]


def test_one_training_run_per_gpu_by_default():
    gpu = Device("0", "RX", free_gb=11.0, total_gb=12.0)
    p = plan([run("a", 1, est=2.0), run("b", 2, est=2.0)], [], [gpu])
    assert p.start == [("a", "0")] and p.waiting["b"] == "waiting: RX busy with a"
    p = plan([run("a", 1, est=2.0), run("b", 2, est=2.0), run("c", 3, est=8.0)], [], [gpu], max_per_device=3)
    assert p.start == [("a", "0"), ("b", "0")]  # c no longer fits once a and b take theirs
    assert p.waiting["c"].startswith("waiting: needs 8.0 GiB, 7.0 GiB free")


def test_second_gpu_takes_the_next_run():
    gpus = [Device("0", "A", 20.0, 24.0), Device("1", "B", 20.0, 24.0)]
    p = plan([run("b", 2, est=5.0)], [run("a", 1, device="0")], gpus)
    assert p.start == [("b", "1")]


def test_a_run_that_can_never_fit_does_not_block_the_queue():
    gpu = Device("0", "RX", free_gb=11.0, total_gb=12.0)
    p = plan([run("huge", 1, est=40.0), run("ok", 2, est=3.0)], [], [gpu])
    assert p.start == [("ok", "0")]
    assert "it cannot fit" in p.waiting["huge"] and "12.0 GiB in total" in p.waiting["huge"]


def test_paused_queue_starts_nothing_and_says_why():
    p = plan([run("a", 1)], [], [], paused=True)
    assert p.start == [] and "queue paused" in p.waiting["a"]


def test_unknown_estimate_or_free_memory_admits_on_an_idle_device():
    assert plan([run("a", 1, est=None)], [], [Device("0", "X", 1.0, 12.0)]).start == [("a", "0")]
    assert plan([run("a", 1, est=30.0)], [], [Device("0", "X", None, None)]).start == [("a", "0")]


# -- several devices per run ---------------------------------------------------------------------
def mrun(rid, seq, gpus, est=None, terms=None, priority=0):
    return dict(run(rid, seq, priority, est), gpus=gpus, estimate_devices=terms)


def test_a_multi_gpu_run_reserves_all_its_devices():
    gpus = [Device("0", "A", 20.0, 24.0), Device("1", "B", 20.0, 24.0), Device("2", "C", 20.0, 24.0)]
    p = plan([mrun("two", 1, 2, est=5.0, terms={"ddp_gb": 6.0}), run("one", 2, est=5.0)], [], gpus)
    assert p.start == [("two", "0,1"), ("one", "2")]
    assert p.procs == {"two": 2, "one": 1} and p.strategy["two"] == "ddp"
    # both of its devices count as busy for the next poll
    p = plan([run("next", 3, est=5.0)], [{"id": "two", "device": "0,1"}, {"id": "one", "device": "2"}], gpus)
    assert p.start == [] and "busy with two" in p.waiting["next"]


def test_all_means_every_gpu_and_waits_for_them_to_be_idle():
    gpus = [Device("0", "A", 20.0, 24.0), Device("1", "B", 20.0, 24.0)]
    p = plan([mrun("all", 1, "all", est=5.0), run("small", 2, est=1.0)], [{"id": "x", "device": "1"}], gpus)
    assert p.start == [] and p.waiting["all"].startswith("waiting: needs 2 idle GPUs")
    assert "B busy with x" in p.waiting["all"] and p.waiting["small"] == "waiting: behind all"
    p = plan([mrun("all", 1, "all", est=5.0)], [], gpus)
    assert p.start == [("all", "0,1")] and p.procs["all"] == 2


def test_fsdp_is_chosen_when_only_sharding_fits_and_more_gpus_than_exist_never_start():
    gpus = [Device("0", "A", 11.0, 12.0), Device("1", "B", 11.0, 12.0)]
    terms = {"ddp_gb": 20.0, "fsdp_fixed_gb": 3.0, "fsdp_sharded_gb": 12.0}  # 3 + 12/2 = 9 GB each
    p = plan([mrun("big", 1, 2, est=18.0, terms=terms)], [], gpus)
    assert p.start == [("big", "0,1")] and p.strategy["big"] == "fsdp"
    terms_huge = {"ddp_gb": 40.0, "fsdp_fixed_gb": 10.0, "fsdp_sharded_gb": 30.0}
    p = plan([mrun("huge", 1, 2, est=38.0, terms=terms_huge), run("ok", 2, est=2.0)], [], gpus)
    assert "it cannot fit" in p.waiting["huge"] and p.start == [("ok", "0")]
    p = plan([mrun("four", 1, 4, est=2.0), run("ok", 2, est=2.0)], [], gpus)
    assert "needs 4 GPUs, this machine has 2" in p.waiting["four"] and p.start == [("ok", "0")]


def test_cpu_host_runs_a_multi_process_run_as_gloo_processes():
    p = plan([mrun("ddp", 1, 2)], [], [])
    assert p.start == [("ddp", CPU)] and p.procs["ddp"] == 2 and p.strategy["ddp"] == "ddp"
