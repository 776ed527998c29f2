"""predict and serve over a real ONNX model in a real registry; no torch on the serving path."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tasks.lib.inference.production_model import (
    ModelLoadError,
    ProductionModel,
    load_classifier,
    predict,
)
from tasks.lib.storage.registry import Registry
from tests.support.seaweedfs import free_port
from tests.support.waiting import wait_for

LABELS = ["negative", "positive"]


def promote(registry: Registry, folder: Path) -> str:
    version = registry.register(folder, {"model_md5": version_hash(folder)})
    registry.set_production(version, "test")
    return version


def version_hash(folder: Path) -> str:
    return str(sorted(p.stat().st_size for p in folder.iterdir()))


def truncated_copy(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    graph = target / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:5000])
    return target


@pytest.fixture
def registry(make_params, onnx_folder: Path) -> Registry:
    params = make_params()
    registry = Registry(params.path("registry"))
    promote(registry, onnx_folder)
    return registry


def test_predict_function_gives_labels_and_probabilities(registry):
    predictions = predict(["a warm film", "a cold one", ""], registry.root)
    assert len(predictions) == 3
    for prediction in predictions:
        assert prediction.label in LABELS and set(prediction.probabilities) == set(LABELS)
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.probabilities[prediction.label] == max(prediction.probabilities.values())


def test_serving_path_imports_no_torch(registry):
    code = (
        "import sys; from tasks.lib.inference.production_model import predict; "
        f"print(predict(['fine'], {str(registry.root)!r})[0].label); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in LABELS


def test_predict_command_reads_arguments_file_and_stdin(registry, tmp_path):
    command = [sys.executable, "-m", "tasks", "--root", str(tmp_path), "predict"]
    by_args = subprocess.run([*command, "good", "bad"], capture_output=True, text=True, check=True).stdout
    assert [line.split("\t")[2] for line in by_args.splitlines()] == ["good", "bad"]
    (tmp_path / "texts.txt").write_text("one\n\ntwo\n")
    by_file = subprocess.run(
        [*command, "--file", str(tmp_path / "texts.txt"), "--json"], capture_output=True, text=True, check=True
    ).stdout
    records = [json.loads(line) for line in by_file.splitlines()]
    assert [r["text"] for r in records] == ["one", "two"] and {r["version"] for r in records} == {"v0001"}
    by_stdin = subprocess.run(command, input="three\n", capture_output=True, text=True, check=True).stdout
    assert by_stdin.split("\t")[0] in LABELS and by_stdin.rstrip().endswith("three")


def test_truncated_model_fails_with_the_file_named(onnx_folder, tmp_path):
    broken = truncated_copy(onnx_folder, tmp_path / "broken")
    with pytest.raises(ModelLoadError, match=r"broken/model\.onnx: cannot load the model"):
        load_classifier(broken)


def test_no_production_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no production model yet"):
        ProductionModel(tmp_path / "registry").current()


@pytest.fixture
def start_service(make_params, registry):
    """Starts the app as `textclf serve` configures it (uvicorn, header timeout) in a thread.

    Returns a function of serve: overrides giving (base url, registry); servers stop at teardown.
    """
    import uvicorn

    from tasks.apps.http_service import create_app, server_config

    servers = []

    def start(overrides: dict | None = None) -> tuple[str, Registry]:
        serve = {"max_texts": 8, "max_chars": 100, "reload_check_seconds": 0.1, **(overrides or {})}
        params = make_params({"serve": serve})
        model = ProductionModel(params.path("registry"), params.serve.threads)
        port = free_port()
        config = server_config(create_app(model, params.serve), params.serve, "127.0.0.1", port)
        config.log_level = "warning"
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}", registry

    start.servers = servers  # type: ignore[attr-defined]
    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def service(start_service):
    return start_service()


def test_service_answers_with_the_version_and_rejects_bad_requests(service):
    import httpx

    url, _ = service
    with httpx.Client(base_url=url, timeout=10) as client:
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["version"] == "v0001"
        answer = client.post("/predict", json={"texts": ["a warm film", "a cold one"]})
        assert answer.status_code == 200
        body = answer.json()
        assert body["version"] == "v0001" and [p["label"] in LABELS for p in body["predictions"]] == [True, True]

        too_many = client.post("/predict", json={"texts": ["x"] * 9})
        assert too_many.status_code == 413 and "serve.max_texts is 8" in too_many.json()["detail"]
        too_long = client.post("/predict", json={"texts": ["ok", "x" * 101]})
        assert too_long.status_code == 413 and "texts [1]" in too_long.json()["detail"]
        for malformed in ({"texts": "not a list"}, {"texts": []}, {"text": ["x"]}, {"texts": [1, None]}):
            assert client.post("/predict", json=malformed).status_code == 422, malformed
        assert (
            client.post("/predict", content=b"{not json", headers={"content-type": "application/json"}).status_code
            == 422
        )


def test_service_survives_a_thousand_requests(service):
    import httpx

    url, _ = service
    with httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=8)) as client:

        def call(i: int) -> int:
            return client.post("/predict", json={"texts": [f"review {i}", "another one"]}).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(call, range(1000)))
    assert codes.count(200) == 1000


def test_service_follows_promotions_and_keeps_serving_when_a_new_model_is_broken(service, onnx_folder, tmp_path):
    import httpx

    url, registry = service
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.post("/predict", json={"texts": ["x"]}).json()["version"] == "v0001"
        promote(registry, onnx_folder)
        assert wait_for(lambda: client.post("/predict", json={"texts": ["x"]}).json()["version"] == "v0002")
        promote(registry, truncated_copy(onnx_folder, tmp_path / "broken"))
        assert wait_for(lambda: client.get("/health").json()["status"] == "degraded")
        health = client.get("/health").json()
        assert "v0003/model.onnx: cannot load the model" in health["error"]
        answer = client.post("/predict", json={"texts": ["x"]})
        assert answer.status_code == 200 and answer.json()["version"] == "v0002"


# Under load: batching, overload, drain, slow clients, limits before parsing.


def test_concurrent_requests_are_batched_and_each_gets_its_own_answers_in_order(start_service, registry):
    import httpx

    url, _ = start_service({"max_wait_ms": 30, "max_batch": 16, "max_queue_ms": 10_000})
    requests = [[f"review {i} part {j} " + "good " * (i % 7) for j in range(1 + i % 3)] for i in range(48)]
    expected = {text: p for texts in requests for text, p in zip(texts, predict(texts, registry.root), strict=True)}
    # The premise: the tiny model's probabilities differ by a few 1e-5 between these texts, so a mix-up shows.
    values = [p.probabilities["positive"] for p in expected.values()]
    apart = [abs(a - b) > 4e-6 for i, a in enumerate(values) for b in values[i + 1 :]]
    assert sum(apart) > 0.7 * len(apart)
    with httpx.Client(base_url=url, timeout=30) as client, ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda texts: client.post("/predict", json={"texts": texts}), requests))
        queue = client.get("/health").json()["queue"]
    for texts, answer in zip(requests, answers, strict=True):
        assert answer.status_code == 200
        got = answer.json()["predictions"]
        assert len(got) == len(texts)
        for text, prediction in zip(texts, got, strict=True):
            assert prediction["probabilities"]["positive"] == pytest.approx(
                expected[text].probabilities["positive"], abs=2e-6
            ), text
    assert queue["batches"] < sum(map(len, requests)) and queue["mean_batch"] > 1, queue


def test_a_full_queue_answers_429_with_retry_after_at_once(start_service):
    import httpx

    # After a batch of several texts the batcher waits 500 ms for a full batch, so the
    # queue (6 texts: 3 requests) fills meanwhile and the rest are refused.
    url, _ = start_service({"max_wait_ms": 500, "max_batch": 64, "max_queue": 6, "max_texts": 6})
    with httpx.Client(base_url=url, timeout=30) as client, ThreadPoolExecutor(max_workers=12) as pool:
        assert client.post("/predict", json={"texts": ["first", "batch"]}).status_code == 200
        answers = list(pool.map(lambda i: client.post("/predict", json={"texts": [f"a {i}", f"b {i}"]}), range(12)))
        health = client.get("/health").json()
    codes = [a.status_code for a in answers]
    assert set(codes) == {200, 429} and codes.count(200) <= 3, codes
    for answer in answers:
        if answer.status_code == 429:
            assert int(answer.headers["retry-after"]) >= 1 and "serve.max_queue" in answer.json()["detail"]
    assert health["queue"]["refused"] == codes.count(429)


def test_a_promotion_under_load_switches_each_client_once_and_fails_nothing(start_service, onnx_folder):
    import httpx

    url, registry = start_service({"max_wait_ms": 2})
    stop = threading.Event()

    def client_loop(i: int) -> list[tuple[int, str]]:
        seen = []
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                answer = client.post("/predict", json={"texts": [f"client {i}", "same text"]})
                seen.append((answer.status_code, answer.json().get("version")))
        return seen

    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(client_loop, i) for i in range(6)]
        time.sleep(0.5)
        promote(registry, onnx_folder)
        time.sleep(1.5)
        stop.set()
        results = [f.result() for f in futures]
    for seen in results:
        assert {code for code, _ in seen} == {200}
        versions = [version for _, version in seen]
        assert versions[0] == "v0001" and versions[-1] == "v0002"
        assert versions == sorted(versions), "a client saw the old version after the new one"


def test_sigterm_drains_the_queue_then_exits(registry, tmp_path):
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "tasks", "--root", str(tmp_path), "serve", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--max-wait-ms", "1500", "--max-batch", "64"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: _answers(url), seconds=60), "the server did not start"
        with ThreadPoolExecutor(max_workers=5) as pool:
            futures = [
                pool.submit(httpx.post, f"{url}/predict", json={"texts": [f"t {i}"]}, timeout=30) for i in range(5)
            ]
            time.sleep(0.5)  # queued: the batcher waits 1.5 s for a fuller batch
            server.send_signal(signal.SIGTERM)
            answers = [f.result() for f in futures]
        assert [a.status_code for a in answers] == [200] * 5
        assert server.wait(timeout=30) == -signal.SIGTERM  # uvicorn re-raises the signal once drained
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", timeout=2)
    finally:
        server.kill()
        server.wait()


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_slow_headers_and_slow_bodies_are_cut_off(start_service):
    url, _ = start_service({"header_timeout_seconds": 1, "body_timeout_seconds": 1})
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as half_headers:
        half_headers.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        assert half_headers.recv(1000) == b""  # closed by the server (else recv times out: 10 s)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as half_body:
        half_body.sendall(
            b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"te'
        )
        answer = _read_all(half_body)
        assert answer.startswith(b"HTTP/1.1 408") and b"serve.body_timeout_seconds" in answer


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_limits_apply_before_the_body_is_read_and_errors_never_echo_it(start_service):
    import httpx

    url, _ = start_service()  # max_texts 8, max_chars 100: the body limit is about 10 kB
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as declared:
        declared.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 200000000\r\n\r\n")
        answer = _read_all(declared)  # answered without sending a byte of the body
        assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()

    def chunks():
        for _ in range(100):
            yield b"x" * 1000

    with httpx.Client(base_url=url, timeout=10) as client:
        streamed = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413  # chunked: counted while it streams
        junk = "\u00e9" * 3000  # under the limit, not JSON
        refused = client.post("/predict", content=junk.encode(), headers={"content-type": "application/json"})
        assert refused.status_code == 422 and len(refused.content) < 500 and "\u00e9" not in refused.text


def test_openapi_documents_the_answers_and_the_answers_match_it(service):
    import httpx

    from tasks.apps.http_service import HealthResponse, PredictResponse

    url, _ = service
    with httpx.Client(base_url=url, timeout=10) as client:
        schema = client.get("/openapi.json")
        assert schema.status_code == 200
        paths = schema.json()["paths"]
        assert paths["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/PredictResponse"
        }
        assert {"413", "422", "429", "503"} <= set(paths["/predict"]["post"]["responses"])
        page = client.get("/docs")  # the API page names the service's own copies of its files, no CDN
        named = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
        assert page.status_code == 200 and sorted(named) == [
            "/docs/assets/favicon-32x32.png",
            "/docs/assets/swagger-ui-bundle.js",
            "/docs/assets/swagger-ui.css",
            "/openapi.json",
        ]
        assert all(client.get(address).status_code == 200 for address in named)
        assert client.get("/redoc").status_code == 404  # FastAPI's ReDoc page would load from a CDN
        PredictResponse.model_validate(client.post("/predict", json={"texts": ["fine"]}).json())
        health = HealthResponse.model_validate(client.get("/health").json())
        assert health.status == "ok" and health.queue.capacity == 256


def test_a_service_started_before_the_first_promotion_serves_it_once_it_comes(start_service, registry, onnx_folder):
    import httpx

    registry.pointer.unlink()  # no production model yet
    url, _ = start_service()
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/health").json()["status"] == "unavailable"
        assert client.post("/predict", json={"texts": ["x"]}).status_code == 503
        time.sleep(0.3)  # a few pointer checks find nothing; the watcher keeps going
        promote(registry, onnx_folder)
        assert wait_for(lambda: client.get("/health").json()["status"] == "ok")
        assert client.post("/predict", json={"texts": ["x"]}).json()["version"] == "v0002"


# Which registered variant serves (serve.variant)


@pytest.fixture
def two_variant_registry(make_params, onnx_folder: Path, tmp_path: Path) -> Registry:
    """A version holding two servable graphs, as promote registers them: fp32 (the gate's choice) and int8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = tmp_path / "candidate"
    shutil.copytree(onnx_folder, folder)
    shutil.move(folder / "model.onnx", folder / "model.fp32.onnx")
    quantize_dynamic(folder / "model.fp32.onnx", folder / "model.int8_dynamic.onnx", weight_type=QuantType.QInt8)
    variants = {"fp32": "model.fp32.onnx", "int8_dynamic": "model.int8_dynamic.onnx"}
    registry = Registry(make_params().path("registry"))
    record = {"model_md5": "two", "model_file": "model.fp32.onnx", "variant": "fp32", "serving_variants": variants}
    registry.set_production(registry.register(folder, record), "test")
    return registry


def test_serve_variant_gate_a_name_or_the_fastest_on_this_host(two_variant_registry):
    root = two_variant_registry.root
    gate = ProductionModel(root).status()
    assert gate["variant"] == "fp32" and gate["variant_chosen_by"] == "gate"
    named = ProductionModel(root, variant="int8_dynamic")
    assert named.status()["variant"] == "int8_dynamic"
    assert named.current()[1].model_file == "model.int8_dynamic.onnx"
    auto = ProductionModel(root, variant="auto").status()
    timings = auto["variant_timings_ms"]
    assert set(timings) == {"fp32", "int8_dynamic"} and all(t > 0 for t in timings.values())
    assert (
        auto["variant"] == min(timings, key=timings.__getitem__) and auto["variant_chosen_by"] == "fastest on this host"
    )
    missing = ProductionModel(root, variant="openvino").status()
    assert missing["status"] == "unavailable"
    assert "serve.variant 'openvino' is not registered in this version" in missing["error"]
    assert "['fp32', 'int8_dynamic']" in missing["error"]


def test_admission_refuses_only_beyond_a_batch_and_a_slow_batch_does_not_refuse(onnx_folder):
    import asyncio

    from tasks.apps.batcher import Batcher

    classifier = load_classifier(onnx_folder, verify=False, graph_file="model.onnx")

    async def queue_texts(batcher: Batcher, count: int) -> None:
        # The worker is not started: queued texts stay queued, so the queue is exactly `count`.
        for i in range(count):
            asyncio.get_running_loop().create_task(batcher.predict("v0001", classifier, [f"text {i}"]))
        await asyncio.sleep(0)

    async def scenario() -> None:
        batcher = Batcher(max_batch=4, max_wait_ms=0, max_queue=100, max_queue_ms=50)
        for _ in range(3):
            batcher.measured(0.04, 4)  # 10 ms a text
        await queue_texts(batcher, 3)
        assert batcher.refusal() is None  # fits in the next batch
        await queue_texts(batcher, 2)  # 5 queued: 50 ms ahead
        assert batcher.refusal() is None
        await queue_texts(batcher, 1)  # 6 queued: 60 ms ahead
        refused = batcher.refusal()
        assert refused is not None and "serve.max_queue_ms 50" in str(refused)
        batcher.measured(3.0, 1)  # one slow batch among fast ones moves the median little
        batcher.measured(0.004, 4)
        assert batcher.refusal() is not None and batcher.status().estimated_wait_ms == 60.0
        for _ in range(3):
            batcher.measured(0.004, 4)  # faster batches: the estimate follows them
        assert batcher.refusal() is None

    asyncio.run(scenario())


def test_an_idle_worker_gives_back_the_memory_of_its_batches_and_answers_the_same(onnx_folder: Path):
    """After release_idle_seconds with nothing queued, the worker shrinks ONNX Runtime's arena and trims the heap
    once (not again while idle), and the model answers as before."""
    import asyncio

    from tasks.apps.batcher import Batcher
    from tasks.lib.inference.production_model import replies

    classifier = load_classifier(onnx_folder, verify=False, graph_file="model.onnx")
    texts = ["a long text about a film " * 20, "short", "another text"]
    before = [reply.as_dict() for reply in replies(classifier, texts)]

    async def scenario() -> list[dict[str, object]]:
        batcher = Batcher(max_batch=4, max_wait_ms=0, max_queue=100, max_queue_ms=1000, release_idle_seconds=0.2)
        batcher.start()
        try:
            await batcher.predict("v0001", classifier, texts)
            assert batcher.status().memory_releases == 0
            await asyncio.sleep(1.0)
            assert batcher.status().memory_releases == 1  # once per idle spell
            _, again = await batcher.predict("v0001", classifier, texts)
            await asyncio.sleep(1.0)
            assert batcher.status().memory_releases == 2
            return [reply.as_dict() for reply in again]
        finally:
            batcher.stop(5)

    for want, got in zip(before, asyncio.run(scenario()), strict=True):
        assert got["label"] == want["label"]
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-5)


def test_onnx_runtime_threads_follow_omp_num_threads_unless_set(monkeypatch: pytest.MonkeyPatch):
    """A process limited to one core by OMP_NUM_THREADS (as PyTorch reads it) gets one ONNX Runtime thread."""
    from tasks.lib.inference.onnx_classifier import session_options

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert session_options().intra_op_num_threads == 1
    assert session_options(3).intra_op_num_threads == 3  # serve.threads / quantize.benchmark.threads win
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert session_options().intra_op_num_threads == 0  # ONNX Runtime's default: one per core


# Every way a body can fail to parse is the client's mistake: 422 with the reason, never a 500.

MALFORMED_BODIES = {
    "a 5000-digit integer": b'{"texts": [' + b"7" * 5000 + b"]}",
    "a 5000-digit integer as a label": b'{"texts": ["ok"], "labels": [' + b"7" * 5000 + b"]}",
    "a float that overflows": b'{"texts": [1e999]}',
    "a 5000-digit float": b'{"texts": [0.' + b"1" * 5000 + b"]}",
    "NaN": b'{"texts": [NaN]}',
    "Infinity": b'{"texts": ["ok"], "labels": -Infinity}',
    "deep nesting": b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "invalid UTF-8": b'{"texts": ["\xff\xfe ok"]}',
    "a UTF-8 surrogate": b'{"texts": ["\xed\xa0\x80"]}',
    "a byte-order mark": b'\xef\xbb\xbf{"texts": ["ok"]}',
    "a duplicate key": b'{"texts": ["ok"], "texts": [1]}',
    "UTF-16": '{"texts": ["ok"]}'.encode("utf-16"),
    "not an object": b'["ok"]',
    "nothing": b"",
}


@pytest.mark.parametrize("route", ["/predict", "/feedback"])
def test_bodies_that_do_not_parse_are_422_with_the_reason_never_500(start_service, route):
    import httpx

    url, _ = start_service({"max_texts": 8, "max_chars": 30_000})  # a body limit over the deep nesting's 200 kB
    with httpx.Client(base_url=url, timeout=30) as client:
        for content_type in ("application/json", "application/problem+json; charset=utf-8"):
            for why, body in MALFORMED_BODIES.items():
                answer = client.post(route, content=body, headers={"content-type": content_type})
                assert answer.status_code == 422, (route, content_type, why, answer.status_code, answer.text[:300])
                assert len(answer.content) < 600 and "7777" not in answer.text, why
        assert client.post("/predict", json={"texts": ["still serving"]}).status_code == 200


def test_errors_name_the_allowed_fields_and_labels_not_the_clients_input(start_service):
    import httpx

    url, _ = start_service()
    with httpx.Client(base_url=url, timeout=10) as client:
        field = "<script>alert(1)</script>" + "x" * 300
        extra = client.post("/predict", json={"texts": ["ok"], field: 1})
        assert extra.status_code == 422 and "the fields are texts, labels" in extra.text
        assert "<script>" not in extra.text and len(extra.content) < 500
        conflict = client.post("/predict", json={"texts": ["ok"], "labels": ["<b>mine</b>", "negative"]})
        assert conflict.status_code == 409 and "<b>" not in conflict.text and conflict.json()["labels"] == LABELS


def test_textclf_serve_started_while_production_is_tampered_serves_its_rollback_target(registry, onnx_folder, tmp_path):
    import httpx

    promote(registry, onnx_folder)
    info = registry.versions / "v0002" / "classifier.json"
    info.write_text(info.read_text().replace("negative", "NEGATIVE"))  # changed after promotion
    port = free_port()
    command = [sys.executable, "-m", "tasks", "--root", str(tmp_path), "serve", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: _answers(url), seconds=60), "the server did not start"
        health = httpx.get(f"{url}/health", timeout=5).json()
        assert (health["status"], health["version"], health["fallback_for"]) == ("degraded", "v0001", "v0002")
        assert httpx.post(f"{url}/predict", json={"texts": ["fine"]}, timeout=10).json()["version"] == "v0001"
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "production v0002 cannot be served; serving v0001 instead" in output


def test_probes_answer_on_their_own_port_while_the_event_loop_is_held(start_service):
    """Issue 44: under a flood /health waited its turn on the event loop (up to 4 s); a liveness probe with a
    1 s timeout would restart the server when it is busiest. serve.probe_port's listener has its own thread."""
    import httpx

    probe_port = free_port()
    url, _ = start_service({"probe_port": probe_port})
    probes = f"http://127.0.0.1:{probe_port}"
    for base in (url, probes):
        assert httpx.get(f"{base}/livez").json() == {"status": "alive"}
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "version": "v0001"}
    assert httpx.get(f"{probes}/predict").status_code == 404  # the probes only

    # The service's event loop held, as a flood of requests holds it: its port cannot answer, the probe
    # listener does.
    loop = next(server for server, _ in start_service.servers).servers[0].get_loop()
    loop.call_soon_threadsafe(time.sleep, 4)
    time.sleep(0.2)
    assert httpx.get(f"{probes}/livez", timeout=2).status_code == 200
    assert httpx.get(f"{probes}/readyz", timeout=2).status_code == 200
    with pytest.raises(httpx.TimeoutException):
        httpx.get(f"{url}/livez", timeout=1)


def test_readiness_says_why_it_is_not_ready():
    from tasks.apps.batcher import QueueStatus
    from tasks.apps.probes import readiness

    def queue(**changes: object) -> QueueStatus:
        fields = {"texts": 0, "capacity": 256, "estimated_wait_ms": 0.0, "batches": 0, "mean_batch": 0.0}
        fields |= {"refused": 0, "draining": False, "worker_alive": True, "memory_releases": 0}
        return QueueStatus(**(fields | changes))  # type: ignore[arg-type]

    ok = {"status": "ok", "version": "v0003", "error": None}
    assert readiness(ok, queue()) == (200, {"status": "ready", "version": "v0003"})
    assert readiness({**ok, "status": "degraded"}, queue())[0] == 200  # the rollback target answers
    for model, state, reason in (
        ({"status": "unavailable", "version": None, "error": "no production version"}, {}, "no model is loaded"),
        (ok, {"draining": True}, "shutting down"),
        (ok, {"worker_alive": False}, "worker thread has stopped"),
        (ok, {"texts": 256}, "the queue is full (256 of 256 texts)"),
    ):
        code, body = readiness(model, queue(**state))
        assert code == 503 and body["status"] == "not ready" and reason in body["reason"]


def test_a_probe_port_that_is_taken_stops_the_start(make_params, registry):
    import uvicorn

    from tasks.apps.http_service import create_app, server_config

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        params = make_params({"serve": {"probe_port": taken.getsockname()[1]}})
        model = ProductionModel(params.path("registry"), params.serve.threads)
        config = server_config(create_app(model, params.serve), params.serve, "127.0.0.1", free_port())
        config.log_level = "critical"
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        thread.join(timeout=60)
    assert not thread.is_alive() and not server.started


def test_json_logs_give_every_access_line_its_request_id_and_never_a_text(registry, tmp_path):
    import httpx

    port = free_port()
    env = {**os.environ, "TEXTCLF_SERVE_ACCESS_LOG": "true", "TEXTCLF_LOG_LEVEL": "info"}
    serve = ["--log-format", "json", "serve", "--registry", str(registry.root), "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "tasks", *serve], cwd=tmp_path, env=env, stderr=out)
    secret = "a text only the client may see"
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert wait_for(lambda: _ready(client), 60), log.read_text()
            answer = client.post("/predict", json={"texts": [secret]})
            refused = client.post("/predict", json={"texts": [secret, 5]})  # 422: the error names no text
            label = answer.json()["predictions"][0]["label"]
            feedback = client.post("/feedback", json={"request_id": answer.json()["request_id"], "label": label})
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    access = {line["request_id"]: line for line in lines if line["logger"] == "textclf.access"}
    assert answer.headers["x-request-id"] == answer.json()["request_id"]  # the id /feedback takes
    for sent in (answer, refused, feedback):
        line = access[sent.headers["x-request-id"]]
        assert (line["method"], line["path"], line["status"]) == ("POST", sent.request.url.path, sent.status_code)
    assert refused.status_code == 422 and feedback.status_code == 202
    assert secret not in log.read_text()  # monitor.log_text is off by default, and no log line carries texts


def _ready(client: Any) -> bool:
    import httpx

    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:  # not listening yet
        return False
