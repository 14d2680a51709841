"""A prefork-like scenario for test_multiprocess.py, run as its own process so
multiprocess mode never leaks into the pytest process.

argv: METRICS_DIR. The parent imports prometheus_client first (as a worker does),
then prepares the folder, serves /metrics on a free port and forks three
children that record: A exits after mark_process_dead (the worker_process_shutdown
hook), B is SIGKILLed while a task is in flight, C stays alive with one task in
flight. Prints "PORT <n>" when all that is done, then waits for stdin to close.
"""

import multiprocessing as mp
import os
import signal
import sys

import numpy as np

from monitoring import metrics as mon


def child(name: str, started, release) -> None:
    m = mon.process_metrics()
    for _ in range(3):
        m.image_finished("ok")
    m.image_finished("failed")
    m.selection("inpaint", "telea", "thin-strokes-smooth")
    m.observe_stage("detect", "ppocrv4-det", "cpu", 0.2)
    m.observe_mask(np.array([0.2, 0.9, 1.0]), 0.05)
    m.task_started("tasks.detect")
    if name == "A":
        m.task_done("tasks.detect")
        m.task_started("tasks.upscale")  # left in flight, but this child says it is dead on exit
        mon.mark_process_dead(os.getpid())
        started.put(name)
        return
    started.put(name)
    release.poll(120)  # a pipe, not an Event: a SIGKILLed waiter would wedge an Event's condition


def main() -> None:
    folder = sys.argv[1]
    mon.prepare_multiprocess_dir(folder)
    server = mon.start_metrics_server(0)
    ctx = mp.get_context("fork")
    started = ctx.Queue()
    pipes = {n: ctx.Pipe() for n in "ABC"}
    procs = {n: ctx.Process(target=child, args=(n, started, pipes[n][1])) for n in "ABC"}
    for p in procs.values():
        p.start()
    for _ in procs:
        started.get(timeout=60)
    procs["A"].join(30)
    os.kill(procs["B"].pid, signal.SIGKILL)
    procs["B"].join(30)
    print(f"PORT {server.server_port} PIDS {procs['A'].pid} {procs['B'].pid} {procs['C'].pid}", flush=True)
    sys.stdin.read()
    pipes["C"][0].send("exit")
    procs["C"].join(30)
    server.shutdown()


if __name__ == "__main__":
    main()
