"""Labelling in a real Label Studio (docs/guides/labelling.md): the review queue pushed with the
model's answers pre-filled, annotated through Label Studio's API as a person would, pulled into the
landing folder, and from there checked and announced like any new file.

One Label Studio for the module (`make label-studio`), on loopback, with a temporary data folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from tasks.lib.config import Params, load_params
from tasks.lib.labelling.label_studio import Connection, LabelStudio
from tasks.lib.labelling.project_config import label_config
from tasks.lib.storage.registry import Registry
from tests.support.label_studio import label_studio
from tests.support.repo import REPO, copy_repo, deep_merge, repo_params
from tests.support.scoring import register
from tests.support.seaweedfs import free_port
from tests.unit.test_monitor_serving import MONITOR, serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    with label_studio(tmp_path_factory.mktemp("label-studio")) as connection:
        yield connection


@pytest.fixture
def environment(studio: Connection, monkeypatch: pytest.MonkeyPatch) -> Connection:
    """The server and token where `textclf label` reads them: the environment."""
    monkeypatch.setenv("LABEL_STUDIO_URL", studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", studio.token)
    return studio


def textclf(root: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    from tasks.apps.cli import main

    capsys.readouterr()
    code = main(["--root", str(root), *args])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    return out.out


def workspace(root: Path, overrides: dict[str, Any]) -> Params:
    (root / "params.yaml").write_text(yaml.safe_dump(deep_merge(repo_params(), overrides)))
    return load_params(root)


def served(params: Params, texts: list[str]) -> None:
    """The production model answers `texts` through `textclf serve`'s app; the log keeps them."""
    with serving(params, Registry(params.path("registry"))) as url:
        assert httpx.post(f"{url}/predict", json={"texts": texts}, timeout=30).status_code == 200


def only_task_of(tasks: list[dict[str, Any]], text: str) -> dict[str, Any]:
    (task,) = [t for t in tasks if t["data"]["text"] == text]
    return task


def test_a_classifiers_review_queue_is_labelled_in_label_studio_and_comes_back_as_new_data(
    tmp_path: Path, onnx_folder: Path, environment: Connection, capsys: pytest.CaptureFixture[str]
):
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deployments import runner_deployments
    from flows.ingest_new import DATA_ACCEPTED
    from flows.label_sync import label_sync
    from tasks.apps import service
    from tasks.lib.data.watcher import LandingWatcher

    root = copy_repo(tmp_path / "repo")
    project = "reviews to label (classifier)"
    params = workspace(root, {"monitor": {**MONITOR, "log_text": True}, "labelling": {"project": project}})
    register(params, onnx_folder)
    texts = [f"review {i}: the film was {'warm and kind' if i % 2 else 'dull and long'}" for i in range(8)]
    served(params, texts)

    assert "8 new tasks of 8 queued texts" in textclf(root, "label", "push", "--n", "8", capsys=capsys)
    assert "0 new tasks of 8 queued texts (8 already in the project)" in textclf(root, "label", "push", capsys=capsys)

    with LabelStudio(environment) as studio:
        made = studio.project_titled(project)
        assert made is not None and made["label_config"] == label_config(
            "sequence_classification", ["negative", "positive"]
        )
        tasks = list(studio.tasks(int(made["id"])))
        assert sorted(t["data"]["text"] for t in tasks) == sorted(texts)
        log = pd.read_parquet(params.root / "predictions")
        for task in tasks:  # the served answer, pre-filled, with why the text was chosen and its request id
            (answer,) = log[log["text"] == task["data"]["text"]].to_dict("records")
            (prediction,) = task["predictions"]
            assert prediction["result"][0]["value"]["choices"] == [answer["label"]]
            assert prediction["model_version"] == answer["version"] and task["data"]["reason"] == "least confident"
            assert prediction["score"] == pytest.approx(answer["confidence"], abs=1e-5)
            assert task["data"]["request_id"] == answer["request_id"]

        # A person labels: three answers accepted as pre-filled, two corrected, one skipped, one with a
        # label the team added in Label Studio but not to data.labels, one labelled twice, two ways.
        other = {"negative": "positive", "positive": "negative"}

        def choice(label: str) -> list[dict[str, Any]]:
            return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]

        def predicted(task: dict[str, Any]) -> str:
            return str(task["predictions"][0]["result"][0]["value"]["choices"][0])

        by_text = [only_task_of(tasks, text) for text in texts]
        for task in by_text[:3]:
            studio.annotate(
                task["id"], task["predictions"][0]["result"], parent_prediction=task["predictions"][0]["id"]
            )
        for task in by_text[3:5]:
            studio.annotate(task["id"], choice(other[predicted(task)]))
        studio.annotate(by_text[5]["id"], [], cancelled=True)
        studio.set_label_config(
            int(made["id"]), label_config("sequence_classification", ["negative", "positive", "neutral"])
        )
        studio.annotate(by_text[6]["id"], choice("neutral"))
        studio.annotate(by_text[7]["id"], choice("positive"))
        studio.annotate(by_text[7]["id"], choice("negative"))

    printed = textclf(root, "label", "pull", capsys=capsys)
    (landed,) = (root / "landing").glob("label-studio-*.csv")
    assert (
        f"label pull: 5 labelled texts into landing/{landed.name} (2 edited, 3 the model's answer accepted)" in printed
    )
    assert "not used: 1 skipped, 1 conflicting, 1 unknown label, 0 unreadable" in printed
    assert f"task {by_text[6]['id']}: unknown label: label 'neutral' is not in data.labels" in printed
    assert f"task {by_text[7]['id']}: conflicting: 2 annotations disagree" in printed
    rows = pd.read_csv(landed)
    expected = {t["data"]["text"]: predicted(t) for t in by_text[:3]} | {
        t["data"]["text"]: other[predicted(t)] for t in by_text[3:5]
    }
    assert dict(zip(rows["text"], rows["label"], strict=True)) == expected
    # Pulled once: a second pull finds nothing new and writes no file.
    assert "label pull: 0 labelled texts (0 edited" in textclf(root, "label", "pull", capsys=capsys)
    assert len(list((root / "landing").glob("label-studio-*"))) == 1

    # From landing/, as the service's watcher takes it: checked in a child `textclf ingest-new`, accepted,
    # announced; the `on-new-data` deployment's trigger (prefect.yaml, on a real Prefect server) fires once.
    with (
        service.local_server(free_port(), home=tmp_path / "prefect-home") as api,
        temporary_settings(updates={PREFECT_API_URL: api}),
    ):
        (on_new_data,) = [d for d in runner_deployments(params) if d.name == "on-new-data"]
        deployment_id = on_new_data.apply()
        watcher = LandingWatcher(root / "landing", lambda path: service.ingest_landed(params, path), 0.01, 0)
        assert watcher.poll_once() + watcher.poll_once() == 1
        (receipt,) = [json.loads(p.read_text()) for p in (root / "landing" / "archive").glob("*/receipt.json")]
        assert receipt["accepted"] and receipt["rows"] == 5, receipt
        with get_client(sync_client=True) as client:
            runs: list[Any] = []
            deadline = time.monotonic() + 60
            while not runs and time.monotonic() < deadline:
                time.sleep(1)
                runs = [r for r in client.read_flow_runs() if r.deployment_id == deployment_id]
            time.sleep(5)  # a second run, were there one, would be made by now
            runs = [r for r in client.read_flow_runs() if r.deployment_id == deployment_id]
            events = client.read_events(EventFilter(event=EventNameFilter(name=[DATA_ACCEPTED])), limit=50).events
        # Deployment `label-sync`'s flow, run once: every queued text is in the project, nothing new is annotated.
        report = label_sync(root=str(root))
        assert report.judged == [] and report.file is None
    assert len(runs) == 1, runs
    assert [event.payload["rows"] for event in events] == [5]


def tagger_folder(tiny_model_dir: Path, folder: Path, tags: list[str]) -> Path:
    """A random tiny tagger, exported and servable (as the export stage leaves one)."""
    import shutil

    from transformers import BertForTokenClassification

    from tasks.lib.export.onnx_export import export_onnx
    from tasks.lib.inference.onnx_classifier import ClassifierInfo

    model = BertForTokenClassification.from_pretrained(
        tiny_model_dir, num_labels=len(tags), ignore_mismatched_sizes=True
    )
    model.save_pretrained(folder / "hf")
    (folder / "onnx").mkdir()
    export_onnx(folder / "hf", folder / "onnx" / "model.onnx", 17, "token_classification")
    shutil.copy(tiny_model_dir / "tokenizer.json", folder / "onnx")
    ClassifierInfo(tags, 64, "token_classification").save(folder / "onnx")
    return folder / "onnx"


def test_a_taggers_queue_comes_back_as_words_and_tags_in_the_projects_scheme(
    tmp_path: Path, tiny_model_dir: Path, environment: Connection, capsys: pytest.CaptureFixture[str]
):
    from tasks.lib.data.landing import check_file

    recipe = yaml.safe_load((REPO / "recipes" / "conll2003.yaml").read_text())
    project = "sentences to tag"
    params = workspace(
        tmp_path,
        deep_merge(recipe, {"monitor": {**MONITOR, "log_text": True}, "labelling": {"project": project}}),
    )
    types = ["PER", "ORG", "LOC", "MISC"]
    register(
        params, tagger_folder(tiny_model_dir, tmp_path / "tagger", ["O", *(f"{p}-{t}" for t in types for p in "BI")])
    )
    texts = [
        "John Smith moved to Paris last year .",
        "The council of Lyon met on Monday .",
        "Anna Berg works for Acme in Oslo .",
        "Nothing happened here at all .",
    ]
    served(params, texts)
    assert "4 new tasks of 4 queued texts" in textclf(tmp_path, "label", "push", capsys=capsys)

    with LabelStudio(environment) as studio:
        made = studio.project_titled(project)
        assert made is not None and "<Labels" in made["label_config"] and 'granularity="word"' in made["label_config"]
        tasks = list(studio.tasks(int(made["id"])))
        log = pd.read_parquet(params.root / "predictions")
        for task in tasks:  # the served entities, pre-filled as spans
            (answer,) = log[log["text"] == task["data"]["text"]].to_dict("records")
            served_spans = [(e["start"], e["end"], e["type"]) for e in json.loads(answer["entities"])]
            spans = [
                (r["value"]["start"], r["value"]["end"], r["value"]["labels"][0])
                for r in task["predictions"][0]["result"]
            ]
            assert spans == served_spans

        def span(text: str, words: str, kind: str, extra: str = "") -> dict[str, Any]:
            start = text.index(words)
            value = {"start": start, "end": start + len(words + extra), "text": words + extra, "labels": [kind]}
            return {"from_name": "label", "to_name": "text", "type": "labels", "value": value}

        first, second, third, fourth = (only_task_of(tasks, text) for text in texts)
        # Corrected: two entities, one dragged a space too far (trimmed: it still means the words).
        studio.annotate(first["id"], [span(texts[0], "John Smith", "PER", " "), span(texts[0], "Paris", "LOC")])
        studio.annotate(second["id"], second["predictions"][0]["result"])  # the model's answer accepted
        studio.annotate(third["id"], [span(texts[2], "Ann", "PER")])  # half a word: not words, reported
        studio.annotate(fourth["id"], [span(texts[3], "here", "DATE")])  # not an entity type of data.labels

    printed = textclf(tmp_path, "label", "pull", capsys=capsys)
    assert "label pull: 2 labelled texts into landing/" in printed and "1 unknown label, 1 unreadable" in printed
    assert "does not begin and end at word boundaries" in printed
    (landed,) = (tmp_path / "landing").glob("label-studio-*.jsonl")
    rows = {row["text"]: row for row in map(json.loads, landed.read_text().splitlines())}
    assert rows[texts[0]]["tokens"] == ["John", "Smith", "moved", "to", "Paris", "last", "year", "."]
    assert rows[texts[0]]["tags"] == ["B-PER", "I-PER", "O", "O", "B-LOC", "O", "O", "O"]
    assert len(rows[texts[1]]["tags"]) == len(rows[texts[1]]["tokens"]) == 8
    assert check_file(landed, params).reason is None  # what the landing checks accept
