"""optspec on each storage that several machines can share, against plain Optuna on the same one.

Run ``python benchmarks/bench_storages.py [--sizes 200,800]`` with the servers of .ci/services
(``eval "$(.ci/services)"`` exports OPTSPEC_TEST_POSTGRES_URL and OPTSPEC_TEST_REDIS_URL; rows
whose server is missing are left out). Same spec everywhere: RandomSampler, one float, a trivial
objective, so what is measured is the storage and the coordination around it.

Rows, each at W = 2 and W = 4 local worker processes (optspec | plain Optuna):
  shared-mem  optspec run, its in-memory journal | Optuna's JournalFileBackend
  grpc        optspec run --serve --workers 1, plus optspec worker --workers W-1 over gRPC |
              run_grpc_proxy_server over an InMemoryStorage, W GrpcStorageProxy clients
  postgres    optspec run --storage (tickets; its default heartbeat = "30s") |
              RDBStorage as a user opens it: no heartbeat
  postgres+hb the same optspec run | RDBStorage(heartbeat_interval=30): Optuna's heartbeat on,
              so both sides can notice a dead worker
  redis       optspec run --storage (tickets; lease on, heartbeat = "30s") | JournalStorage over
              JournalRedisBackend (optspec reads and writes the same keys with fewer round trips:
              optuna_compat.RedisBackend)
Plain Optuna runs ``study.optimize(n_trials=N/W)`` in each of W processes (so its total is only
exact because each process has its share). optspec's controller queues the tickets before its
workers start (in one write per look), so part of that work is outside the trials/s window;
"finish" includes it. Columns: trials/s between the first trial's start and
the last one's end (start-up excluded); "finish" is the wall-clock time from starting the
processes to the last one's exit (start-up, and for optspec writing study.db, included);
"per trial" is optspec's time per trial over plain Optuna's.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna

STUDY = "bench"
OBJECTIVE = 'def objective(params):\n    return params["x"] ** 2\n'

PLAIN_WORKER = """
import sys, optuna
from optuna.storages import JournalStorage
optuna.logging.set_verbosity(optuna.logging.WARNING)
kind, target, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "file":
    from optuna.storages.journal import JournalFileBackend
    storage = JournalStorage(JournalFileBackend(target))
elif kind == "redis":
    from optuna.storages.journal import JournalRedisBackend
    storage = JournalStorage(JournalRedisBackend(target))
elif kind == "grpc":
    from optuna.storages import GrpcStorageProxy
    host, port = target.rsplit(":", 1)
    storage = GrpcStorageProxy(host=host, port=int(port))
    storage.wait_server_ready(timeout=60)
elif kind == "postgres+hb":
    storage = optuna.storages.RDBStorage(target, heartbeat_interval=30)
else:
    storage = optuna.storages.RDBStorage(target)
study = optuna.load_study(study_name="bench", storage=storage,
                          sampler=optuna.samplers.RandomSampler())
study.optimize(lambda t: t.suggest_float("x", -10, 10) ** 2, n_trials=n)
"""

PLAIN_SERVER = """
import sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
optuna.storages.run_grpc_proxy_server(optuna.storages.InMemoryStorage(), host="127.0.0.1",
                                      port=int(sys.argv[1]))
"""


def spec(n_trials: int, workers: int) -> str:
    return f"""
version = 1
[study]
name = "{STUDY}"
[objective]
callable = "objective.py:objective"
[params]
x = {{ type = "float", low = -10, high = 10 }}
[sampler]
name = "random"
[run]
n_trials = {n_trials}
workers = {workers}
checkpoint = "off"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def throughput(trials: list[optuna.trial.FrozenTrial]) -> float:
    done = [t for t in trials if t.datetime_complete is not None]
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    return len(done) / max((last - first).total_seconds(), 1e-9)


def wait_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        if process.returncode != 0:
            raise SystemExit(f"a benchmark process failed:\n{stderr.decode()}")


# -- storages ----------------------------------------------------------------------------------


def postgres_url() -> str | None:
    base = os.environ.get("OPTSPEC_TEST_POSTGRES_URL")
    if not base:
        return None
    import sqlalchemy

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(base, poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"


def redis_url() -> str | None:
    url = os.environ.get("OPTSPEC_TEST_REDIS_URL")
    if url:
        import redis

        redis.Redis.from_url(url).flushdb()
    return url


def create_plain_study(storage: optuna.storages.BaseStorage) -> None:
    optuna.create_study(study_name=STUDY, storage=storage)


# -- one measurement each ----------------------------------------------------------------------


def run_optspec(kind: str, n: int, workers: int, work: Path) -> tuple[float, float] | None:
    (work / "objective.py").write_text(OBJECTIVE)
    out = work / f"out-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "optspec", "run", "study.toml", "-q", "-o", str(out)]
    extra: list[list[str]] = []
    url = None
    if kind == "shared-mem":
        (work / "study.toml").write_text(spec(n, workers))
    elif kind == "grpc":
        (work / "study.toml").write_text(spec(n, 1))
        port = free_port()
        command += ["--serve", f"127.0.0.1:{port}"]
        grpc_url = f"grpc://127.0.0.1:{port}"
        extra.append([sys.executable, "-m", "optspec", "worker", "study.toml", "-q",
                      "--storage", grpc_url, "--workers", str(workers - 1)])  # fmt: skip
    else:
        url = redis_url() if kind == "redis" else postgres_url()
        if url is None:
            return None
        (work / "study.toml").write_text(spec(n, workers))
        command += ["--storage", url]
    started = time.perf_counter()
    # Joining workers first: they wait for the served study to answer. Started after the
    # controller, they could find a small study already finished and its server gone.
    processes = [subprocess.Popen(c, cwd=work, stderr=subprocess.PIPE) for c in extra]
    processes.append(subprocess.Popen(command, cwd=work, stderr=subprocess.PIPE))
    wait_all(processes)
    finish = time.perf_counter() - started
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == n, (kind, len(study.trials))
    return throughput(study.trials), finish


def run_plain(kind: str, n: int, workers: int, work: Path) -> tuple[float, float] | None:
    from optspec.storage.remote import open_storage

    server = None
    if kind == "shared-mem":
        target, plain_kind = str(work / f"journal-{uuid.uuid4().hex[:8]}.log"), "file"
        from optuna.storages.journal import JournalFileBackend

        storage: optuna.storages.BaseStorage = optuna.storages.JournalStorage(
            JournalFileBackend(target)
        )
    elif kind == "grpc":
        port = free_port()
        server = subprocess.Popen([sys.executable, "-c", PLAIN_SERVER, str(port)])
        target, plain_kind = f"127.0.0.1:{port}", "grpc"
        storage = open_storage(f"grpc://{target}")
    else:
        url = redis_url() if kind == "redis" else postgres_url()
        if url is None:
            return None
        target, plain_kind = url, kind
        storage = open_storage(url)
    create_plain_study(storage)
    shares = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PLAIN_WORKER, plain_kind, target, str(share)],
            stderr=subprocess.PIPE,
        )
        for share in shares
    ]
    try:
        wait_all(processes)
        finish = time.perf_counter() - started
        trials = optuna.load_study(study_name=STUDY, storage=storage).trials
    finally:
        if server is not None:
            server.terminate()
            server.wait()
    assert len(trials) == n, (kind, len(trials))
    return throughput(trials), finish


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,800", help="numbers of trials, comma-separated")
    parser.add_argument("--storages", default="shared-mem,grpc,postgres,postgres+hb,redis")
    parser.add_argument(
        "--repeat", type=int, default=3, help="best of this many interleaved rounds"
    )
    args, _ = parser.parse_known_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for kind in args.storages.split(","):
            for workers in (2, 4):
                for n in sizes:
                    # Interleaved rounds, best of each: the fastest run is the least disturbed.
                    try:
                        runs = [
                            (run_optspec(kind, n, workers, work), run_plain(kind, n, workers, work))
                            for _ in range(args.repeat)
                        ]
                    except SystemExit as failure:
                        # grpc: with trivial trials the controller can finish the study before
                        # the joined worker's gRPC channel connects (its backoff starts at 1 s).
                        print(f"{kind} W={workers} n={n}: row left out: {failure}", file=sys.stderr)
                        continue
                    if any(ours is None or plain is None for ours, plain in runs):
                        print(f"{kind}: no server (OPTSPEC_TEST_*_URL unset); row left out")
                        break
                    ours = max((o for o, _ in runs), key=lambda r: r[0])  # type: ignore[index]
                    plain = max((p for _, p in runs), key=lambda r: r[0])  # type: ignore[index]
                    rows.append((kind, workers, n, ours, plain))
                    print(f"  {kind} W={workers} n={n}: done", file=sys.stderr, flush=True)
    print()
    print(
        "optspec vs plain Optuna on the same storage (trials/s: first start to last end; "
        f"best of {args.repeat})"
    )
    print(f"{'storage':<11} {'W':>2} {'trials':>6} | {'optspec/s':>9} {'finish':>7} | "
          f"{'plain/s':>8} {'finish':>7} | {'per trial':>9}")  # fmt: skip
    for kind, workers, n, (ours_tps, ours_finish), (plain_tps, plain_finish) in rows:
        print(
            f"{kind:<11} {workers:>2} {n:>6} | {ours_tps:>9.1f} {ours_finish:>6.1f}s | "
            f"{plain_tps:>8.1f} {plain_finish:>6.1f}s | {plain_tps / ours_tps:>8.2f}x"
        )
    print("per trial = optspec's time per trial / plain Optuna's (below 1: optspec is faster)")


if __name__ == "__main__":
    main()
