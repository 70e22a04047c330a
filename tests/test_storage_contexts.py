"""Storage contexts: two stores with different credentials used from one process at the same time.

Two S3-protocol servers (moto) on 127.0.0.1, each with its own bucket and its own made-up key
pair; each server records the access key id of every request it answers.  Two threads, each
under its own `storage.using(ctx)`, hold a lock with a fast heartbeat (a thread of its own),
write and publish datasets through Spark tasks, stat the published files with a thread pool and
read them back.  Both results must be right, every request a server saw must carry its own key
and name its own bucket, and neither secret may appear in any object or any line printed.
"""
import re
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core import storage
from pipelines.core.context_threads import ContextThreadPool, in_this_context
from pipelines.core.parquet_io import read_frame, write_frame
from pipelines.core.run_lock import RunLock
from pipelines.core.store import atomic_dir, atomic_dirs, published_files, published_url, read_manifest
from pipelines.images.listing import stat_all

from conftest import S3Server, logged_lines, storage_context


class RequestLog:
    """WSGI middleware in front of a moto server: (access key id, method, path) of every request."""

    def __init__(self, app):
        self.app, self.seen, self.lock = app, [], threading.Lock()

    def __call__(self, environ, start_response):
        found = re.search(r"Credential=([^/]+)/", environ.get("HTTP_AUTHORIZATION", "")) or \
            re.search(r"X-Amz-Credential=([^%/&]+)", environ.get("QUERY_STRING", ""))
        with self.lock:
            self.seen.append((found.group(1) if found else None, environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def two_servers():
    servers = [S3Server(bucket=f"sparkcnn-ctx-{name}") for name in ("a", "b")]
    for server in servers:
        wsgi = server.server._server              # werkzeug reads `.app` for every request
        server.requests = wsgi.app = RequestLog(wsgi.app)
    yield servers
    for server in servers:
        server.server.stop()


def _job(spark, server, rows: int, both_inside: threading.Barrier, out: dict) -> None:
    """One notebook user's work on one store, under that store's context only."""
    lines = out["lines"] = []
    with storage.using(server.context(keep_versions=1)):
        both_inside.wait(timeout=300)           # the other thread is inside its own `using` now
        root = server.url("job")
        train, test = storage.join(root, "train"), storage.join(root, "test")
        with RunLock(root, "dataset", "two stores test", ttl=1.0):   # a heartbeat every 0.25 s
            with atomic_dirs([train, test]) as staging:
                write_frame(spark.range(rows, numPartitions=2).selectExpr("id", "id * 3 AS x"), staging[train])
                storage.makedirs(staging[test])
                with storage.open_file(storage.join(staging[test], "part-0.parquet"), "wb") as f:
                    pq.write_table(pa.table({"id": list(range(7)), "x": [0] * 7}), f)
            with atomic_dir(test) as staging:   # published again: keep_versions 1 keeps only this one
                with storage.open_file(storage.join(staging, "part-0.parquet"), "wb") as f:
                    pq.write_table(pa.table({"id": list(range(9)), "x": [0] * 9}), f)
            both_inside.wait(timeout=300)        # both have written; now both read, still at the same time
            lines.append(f"published {published_url(train)}")
            read_back = read_frame(spark, train).toPandas()
            out["ids"] = sorted(read_back["id"].tolist())
            out["x_sum"] = int(read_back["x"].sum())
            out["stats"] = list(stat_all(published_files(train)))        # a pool of threads, one HEAD each
            out["test"] = read_manifest(test)
        try:
            storage.read_bytes(storage.join(root, "missing.json"))
        except FileNotFoundError as exc:
            lines.append(f"error: {exc}")


@pytest.mark.slow   # two S3 servers, Spark jobs and a lock heartbeat from two threads: ~15 s
def test_two_stores_with_different_credentials_at_the_same_time(spark, two_servers, capfd):
    a, b = two_servers
    rows = {a.bucket: 301, b.bucket: 502}
    results = {a.bucket: {}, b.bucket: {}}
    failures = []
    both_inside = threading.Barrier(2)

    def run(server):
        try:
            _job(spark, server, rows[server.bucket], both_inside, results[server.bucket])
        except BaseException as exc:           # noqa: BLE001 (reported by the main thread)
            failures.append(f"{server.bucket}: {type(exc).__name__}: {exc}")
            both_inside.abort()
    threads = [threading.Thread(target=run, args=(server,)) for server in (a, b)]
    with logged_lines() as logged:               # what the library logs (the locks' lines among them)
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
    assert not failures, failures
    for secret in (a.secret, b.secret, a.key, b.key):
        assert secret not in "\n".join(logged)

    for server in (a, b):
        got, n = results[server.bucket], rows[server.bucket]
        assert got["ids"] == list(range(n)) and got["x_sum"] == 3 * n * (n - 1) // 2
        assert got["test"]["rows"] == 9 and len(got["test"]["versions"]) == 1
        assert got["stats"] and all(size and size > 0 for _, size, _, _ in got["stats"])
        seen = server.requests.seen
        assert seen, f"{server.bucket} saw no request: its thread's I/O went elsewhere"
        keys = {key for key, _, _ in seen}
        assert keys == {server.key}, f"{server.bucket} saw requests signed with {keys}, not only {server.key}"
        strays = [path for _, _, path in seen if not path.startswith(f"/{server.bucket}")]
        assert not strays, f"{server.bucket} saw requests for another bucket: {strays[:5]}"
        lock_puts = [path for _, method, path in seen if method == "PUT" and path.endswith("/job/_sparkcnn.lock")]
        assert len(lock_puts) >= 2, f"{server.bucket}: the lock's heartbeat thread never wrote"
        for key, data in server.all_bytes().items():
            for secret in (a.secret, b.secret, a.key, b.key):
                assert secret.encode() not in data, f"{key} holds a secret"
        printed = "\n".join(got["lines"])
        assert f"version s3://{server.bucket}/job/train/v-" in printed and "missing.json" in printed
        for secret in (a.secret, b.secret, a.key, b.key):
            assert secret not in printed
    captured = capfd.readouterr()
    for secret in (a.secret, b.secret):
        assert secret not in captured.out + captured.err


def test_using_nests_restores_and_is_per_thread():
    first, second = storage_context({"key": "first-key-1", "secret": "first-secret-1"}), \
        storage_context({"key": "second-key-2", "secret": "second-secret-2"}, keep_versions=5)
    default = storage.active_context()
    seen = {}
    with storage.using(first):
        with storage.using(second):
            assert storage.active_context() is second
            with ContextThreadPool(2) as pool:
                seen["pool"] = list(pool.map(lambda _: storage.active_context(), range(4)))
            bound = threading.Thread(target=in_this_context(lambda: seen.setdefault("bound", storage.active_context())))
            plain = threading.Thread(target=lambda: seen.setdefault("plain", storage.active_context()))
            for t in (bound, plain):
                t.start()
                t.join()
        assert storage.active_context() is first
    assert storage.active_context() is default
    assert all(ctx is second for ctx in seen["pool"]) and seen["bound"] is second
    assert seen["plain"] == default            # a thread started plainly begins in an empty context
    # the secrets of every context used stay hidden after its block ended (a failure line printed late)
    assert storage.redact("first-secret-1 second-secret-2 first-key-1") == "<redacted> <redacted> <redacted>"


def test_a_task_body_sees_its_context_only_while_it_runs():
    """Spark task bodies are generators: between their steps (in Spark's code) the context is not theirs."""
    ctx = storage_context({"endpoint_url": "http://127.0.0.1:9"})

    def body():
        for i in range(3):
            yield i, storage.active_context()
    outside = []
    for i, inside in storage.iterate_using(ctx, body()):
        assert inside is ctx
        outside.append(storage.active_context())
    assert outside and all(o is not ctx for o in outside)
