"""predict and serve over a real ONNX model in a real registry; no torch on the serving path."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tasks.lib.production_model import (
    ModelLoadError,
    ProductionModel,
    load_classifier,
    predict,
)
from tasks.lib.registry import Registry

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
        "import sys; from tasks.lib.production_model import predict; "
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def service(make_params, registry):
    """The app under uvicorn on a loopback port, in a thread; yields (base url, registry)."""
    import uvicorn

    from tasks.apps.http_service import create_app

    params = make_params({"serve": {"max_texts": 8, "max_chars": 100}})
    app = create_app(ProductionModel(params.path("registry")), params.serve)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", registry
    server.should_exit = True
    thread.join(timeout=10)


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
        assert client.post("/predict", json={"texts": ["x"]}).json()["version"] == "v0002"
        promote(registry, truncated_copy(onnx_folder, tmp_path / "broken"))
        answer = client.post("/predict", json={"texts": ["x"]})
        assert answer.status_code == 200 and answer.json()["version"] == "v0002"
        health = client.get("/health").json()
        assert health["status"] == "degraded" and "v0003/model.onnx: cannot load the model" in health["error"]
