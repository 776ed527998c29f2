"""The registry's storage on a local folder and on a real S3 server (SeaweedFS): the same promises on both."""

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tasks.lib.storage.object_store import Lease, ObjectStore, StoreError


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return ObjectStore(tmp_path / "store")
    return ObjectStore(request.getfixturevalue("s3_url"))


def test_put_read_list_delete(store, tmp_path):
    assert store.list() == [] and not store.exists("versions/v0001/version.json")
    store.put("versions/v0001/version.json", b"{}")
    store.put("versions/v0002/model.onnx", b"graph")
    store.put("production.json", b'{"version": "v0001"}')
    store.put("production.json", b'{"version": "v0002"}')  # replaced whole
    assert store.read_bytes("production.json") == b'{"version": "v0002"}'
    assert store.list() == ["production.json", "versions"] and store.list("versions") == ["v0001", "v0002"]
    (tmp_path / "tokenizer.json").write_bytes(b"tok")
    store.upload(tmp_path / "tokenizer.json", "versions/v0002/tokenizer.json")
    store.download("versions/v0002/tokenizer.json", tmp_path / "cache" / "tokenizer.json")
    assert (tmp_path / "cache" / "tokenizer.json").read_bytes() == b"tok"
    store.delete("versions/v0002")
    assert store.list("versions") == ["v0001"]
    store.delete("versions/v0002")  # already gone: not an error
    with pytest.raises(FileNotFoundError):
        store.read_bytes("versions/v0002/model.onnx")


def test_create_is_exclusive_among_concurrent_writers(store):
    wins: list[int] = []

    def claim(writer: int) -> None:
        if store.create("lease-0001", str(writer).encode()):
            wins.append(writer)

    threads = [threading.Thread(target=claim, args=(writer,)) for writer in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1 and store.read_bytes("lease-0001") == str(wins[0]).encode()
    assert not store.create("lease-0001", b"late")


def test_an_unreachable_store_names_its_url(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    store = ObjectStore("s3://textclf/registry", config_kwargs={"connect_timeout": 1, "retries": {"max_attempts": 1}})
    with pytest.raises(StoreError, match=re.escape("s3://textclf/registry/production.json: cannot read")):
        store.read_bytes("production.json")


def test_a_store_that_takes_a_request_and_never_answers_is_not_called_unreachable(monkeypatch):
    """SeaweedFS on a full disk holds a PUT open past the client's timeout: the hint said "cannot be reached:
    check AWS_ENDPOINT_URL" (seen in CI), when the endpoint was right and the disk was full."""
    held: list[socket.socket] = []

    def answer_continue_then_nothing(listener: socket.socket) -> None:
        # S3 clients send `Expect: 100-continue` with a PUT: the store says go on, then never answers.
        while True:
            connection, _ = listener.accept()
            held.append(connection)
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(65536)
            connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        threading.Thread(target=answer_continue_then_nothing, args=(listener,), daemon=True).start()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
        store = ObjectStore("s3://textclf/registry", config_kwargs={"read_timeout": 1, "retries": {"max_attempts": 1}})
        store.fs.retries = 1
        with pytest.raises(StoreError) as refused:
            store.put("versions/v0001/part0", b"x")
    for connection in held:
        connection.close()
    message = str(refused.value)
    assert message.startswith("s3://textclf/registry/versions/v0001/part0: cannot write (ReadTimeoutError")
    assert "did not answer in time" in message and "out of disk space" in message
    assert "AWS_ENDPOINT_URL" not in message


def test_one_writer_at_a_time_and_an_expired_lease_is_taken_over(store):
    order: list[str] = []

    def write(name: str) -> None:
        with Lease(store, ttl_s=30, poll_s=0.05) as lease:
            order.append(f"{name} in")
            lease.held()
            order.append(f"{name} out")

    threads = [threading.Thread(target=write, args=(name,)) for name in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(order) == 8 and all(order[i].split()[0] == order[i + 1].split()[0] for i in range(0, 8, 2))

    # A live writer keeps its lease however long it writes: a thread renews it.
    with Lease(store, ttl_s=1, poll_s=0.05) as long_writer:
        time.sleep(2.5)
        with pytest.raises(StoreError, match="held by"):
            Lease(store, poll_s=0.05).acquire(timeout_s=1.5)
        long_writer.held()


HOLDER = """
import sys
from tasks.lib.storage.object_store import Lease, LeaseLost, ObjectStore

lease = Lease(ObjectStore(sys.argv[1]), ttl_s=float(sys.argv[2]), poll_s=0.05)
lease.acquire()
print("held", flush=True)
sys.stdin.readline()
try:
    lease.held()
    print("still held", flush=True)
except LeaseLost:
    print("lost", flush=True)
"""


def lease_holder(store: ObjectStore, ttl_s: float) -> subprocess.Popen[str]:
    """Another process that takes the lease, says `held`, and on a line of input says whether it still holds it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store.url, str(ttl_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_writer_killed_or_paused_holding_the_lease_blocks_the_others_only_until_it_expires(store):
    """Issue 44: the registry's lease lasted 10 minutes; now it expires `ttl_s` after the last renewal."""
    killed = lease_holder(store, ttl_s=2)
    with pytest.raises(StoreError, match="held by"):
        Lease(store, poll_s=0.05).acquire(timeout_s=0.5)  # alive: renewed, held
    killed.kill()
    killed.wait()
    with Lease(store, poll_s=0.1) as taken:  # waits for the expiry, then takes it
        taken.held()

    # Paused (SIGSTOP: a frozen VM, a long GC) past its expiry: another takes it, and the paused writer,
    # resumed, finds its lease lost before it changes anything.
    paused = lease_holder(store, ttl_s=2)
    paused.send_signal(signal.SIGSTOP)
    with Lease(store, poll_s=0.1):
        paused.send_signal(signal.SIGCONT)
        answer, _ = paused.communicate("go\n", timeout=30)
    assert answer.strip() == "lost"


def test_a_store_that_fails_says_which_object_it_refused_and_what_to_check(tmp_path, monkeypatch):
    """A SeaweedFS out of volumes answers 500 InternalError; the error names the object and says what to check
    (issue 45, bug 5: it said `cannot write (OSError: [Errno 121] We encountered an internal error...)` only)."""
    from tests.support.seaweedfs import SeaweedFS

    full = SeaweedFS(
        tmp_path / "full",
        bucket="small",
        options=("-volume.max=1", "-master.volumeSizeLimitMB=1"),
    )
    full.start()
    try:
        for name, value in full.environment().items():
            monkeypatch.setenv(name, value)
        store = ObjectStore("s3://small/registry")
        store.fs.retries = 1  # s3fs tries a 5xx answer five times with back-off: one is enough to see it
        with pytest.raises(StoreError) as refused:  # noqa: PT012 - the store fills up at some part; which one varies
            for i in range(40):
                store.put(f"versions/v0001/part{i}", bytes(300_000))
        message = str(refused.value)
        assert re.search(r"s3://small/registry/versions/v0001/part\d+: cannot write", message)
        assert "the store itself failed" in message and "free capacity" in message
    finally:
        full.stop(grace_s=1)  # its data are not needed again
    # A store that cannot be reached says so, and names the setting that points at it.
    with pytest.raises(StoreError, match="the store cannot be reached: check AWS_ENDPOINT_URL"):
        ObjectStore("s3://small/registry").put("x", b"x")
