"""The one command line: stages, the Prefect flow, the production model, the registry, new data.

    textclf stage <name>              run one stage (as dvc.yaml's `python -m tasks.stages.<name>` does)
    textclf run                       run the whole DAG as a Prefect flow
    textclf predict [TEXT ...]        classify (or tag) with the production model (or --file F, or stdin)
    textclf serve                     HTTP service over the production model
    textclf score INPUT OUTPUT        a registered version over a whole table (a file, folder or URL), into
                                      Parquet, CSV or JSON Lines; resumes a killed run (--engine spark: on Spark)
    textclf registry list|show|history|report|promote|rollback|archive
                                      model versions, their stages and lineage
    textclf ingest-new FILE ...       check new labelled data and add it (then retraining runs)
    textclf monitor [--hours H]       judge the served traffic against the model's reference profile, once
    textclf review export --n N       the served texts to label first (drifted, least confident), as a CSV
                                      (a tagger's: JSON Lines of words and tags to correct)
    textclf feedback export           the feedback's labelled texts, as a new file in the landing folder
    textclf label push|pull           the review queue as Label Studio tasks (the model's answers pre-filled);
                                      the finished labels as a new file in the landing folder
    textclf service                   serve the deployments and watch the landing folder
    textclf deploy --pool NAME        the same deployments on a work pool (prefect deploy);
              [--clone URL --ref REF]  workers on other hosts run them in a clone of URL at REF
    textclf remote URL                the team's DVC remote (data, models, run-cache, workspace state)
    textclf policies [--format F]     what each team role (worker, serving, landing) may do in the store
    textclf watch                     the landing watcher alone (with `deploy`)
    textclf deps [--fix]              check that dvc.yaml's deps name all the code each stage runs (--fix: rewrite them)
    textclf recipe [NAME] [--dvc-args] merge recipes/NAME.yaml into params.yaml (no NAME: list them);
                                      --dvc-args: print it as `dvc exp run` -S arguments instead
    textclf prune                     remove what params.yaml `retention` says is old (also after every run)
    textclf gc [--dry-run]            also the team's DVC remote: objects and run-cache entries nothing needs
    textclf tune [--trials N]         hyperparameter search (Optuna) over tune.space on the pipeline's splits;
                                      the best trial becomes recipes/tuned.yaml, to review and apply

(`textclf` is `python -m tasks`.)
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from tasks.lib.artifacts import VersionRecord
from tasks.lib.config import Params, load_params
from tasks.lib.errors import ConfigError, PipelineError
from tasks.lib.inference.serving_settings import (
    REGISTRY_VARIABLE,
    ServingSettings,
    registry_location,
    serving_settings,
)
from tasks.lib.logs import FORMAT_VARIABLE, FORMATS, LEVEL_VARIABLE, LEVELS, LogSettingError, configure_logging
from tasks.lib.stage_runner import report_failure, run_stage


def label_command(root: Path, args: argparse.Namespace) -> None:
    """`textclf label push|pull` against the Label Studio of LABEL_STUDIO_URL (or labelling.url_block)."""
    from tasks.lib.labelling.label_studio import LabelStudio, connection
    from tasks.lib.labelling.sync import pull, push

    params = load_params(root)
    with LabelStudio(connection(params.labelling), params.labelling.timeout_seconds) as studio:
        if args.action == "push":
            print(push(params.with_registry(args.registry), studio, args.n, args.days).summary())
            return
        report = pull(params, studio)
        print(report.summary())
        for task in report.judged:
            if task.outcome != "used":
                print(f"  task {task.task}: {task.outcome.replace('_', ' ')}: {task.detail}")


def stage_command(name: str, root: Path) -> int:
    """Run stage `name` as dvc.yaml does (`python -m tasks.stages.<name>`), in this process."""
    try:
        module = importlib.import_module(f"tasks.stages.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"tasks.stages.{name}":  # a package the stage needs is missing: say which
            raise ConfigError(
                f"stage '{name}' needs the Python package '{exc.name}', which {sys.executable} "
                "does not have (activate the project's environment: source .venv/bin/activate)"
            ) from None
        raise ConfigError(f"no stage module tasks/stages/{name}.py for stage '{name}'") from None
    return run_stage(module.run, root)


def _read_texts(texts: list[str], file: Path | None) -> list[str]:
    """Texts from arguments, else from a file (one per line), else from stdin."""
    if texts:
        return texts
    if file is not None and str(file) != "-":
        lines = file.read_text(encoding="utf-8").splitlines()
    else:
        lines = sys.stdin.read().splitlines()
    return [line for line in lines if line.strip()]


def predict_command(settings: ServingSettings, texts: list[str], file: Path | None, as_json: bool) -> None:
    """Print a label and its probability per text, or a tagger's entities (or JSON lines)."""
    import json

    from tasks.lib.inference.production_model import Prediction, ProductionModel, reply_record

    texts = _read_texts(texts, file)
    if not texts:
        raise PipelineError("no texts to classify: give them as arguments, with --file, or on stdin")
    serve = settings.serve
    version, predictions = ProductionModel(settings.registry, serve.threads, variant=serve.variant).predict(
        texts, serve.batch_size
    )
    for text, prediction in zip(texts, predictions, strict=True):
        if as_json:
            print(json.dumps(reply_record(text, version, prediction), ensure_ascii=False))
        elif isinstance(prediction, Prediction):
            print(f"{prediction.label}\t{prediction.probabilities[prediction.label]:.4f}\t{text}")
        else:  # a tagger's entities: TYPE start-end score mention, separated by "; " ("-": none)
            found = "; ".join(f"{e.type} {e.start}-{e.end} {e.score:.4f} {e.text}" for e in prediction.entities)
            print(f"{found or '-'}\t{text}")


def _short_commit(commit: str) -> str:
    return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")


def registry_command(location: Path | str, args: argparse.Namespace) -> None:
    """List, show, promote, roll back or archive registry versions."""
    import json

    from tasks.lib.storage.model_card import CARD_FILE
    from tasks.lib.storage.registry import Registry

    registry = Registry(location)
    for problem in registry.history_problems():
        print(f"warning: {problem}", file=sys.stderr)
    damaged = registry.pointer_problem()
    if damaged:
        # Said, not fatal: promote and rollback are how it is repaired, and list shows what to choose from.
        print(
            f"warning: {damaged}: no version is production until `textclf registry promote VERSION` or "
            "`textclf registry rollback --reason ...` replaces the pointer",
            file=sys.stderr,
        )
    if args.action == "list":
        stages, rollbacks = registry.stages(), registry.rollbacks()
        print(
            "version  stage       created                    variant        test acc  data (validated)  "
            f"{'commit':<18} labels"
        )
        for version, stage in stages.items():
            try:
                record = VersionRecord.parse(registry.record(version), registry.where(version))
            except PipelineError as exc:  # one damaged version must not hide the others
                print(f"{version:<8} {stage:<11} damaged: {exc}")
                continue
            note = f"  rolled back: {rollbacks[version]['reason']}" if version in rollbacks else ""
            accuracy = record.test_accuracy()
            print(
                f"{version:<8} {stage:<11} {record.created_at:<26} {record.variant:<14} "
                f"{'n/a' if accuracy is None else f'{accuracy:.4f}':<9} {record.data.validated_md5[:16]:<17} "
                f"{_short_commit(record.git_commit):<18} {','.join(registry.labels(version) or ['?'])}{note}"
            )
        if damaged:
            print(f"production pointer damaged: {damaged}")
    elif args.action == "show":
        shown = registry.record(args.version)
        card = registry.read_text(args.version, CARD_FILE)
        if args.json or card is None:  # versions registered before cards have only the record
            print(json.dumps({**shown, "stage": registry.stages()[args.version]}, indent=2))
        else:
            print(card, end="")
    elif args.action == "history":
        for event in registry.events():
            print(json.dumps(event))
    elif args.action == "report":
        from tasks.lib.reporting.registry_page import write_page

        print(f"registry page: {write_page(registry, args.out.resolve())}")
    elif args.action == "promote":
        previous = registry.promote(args.version, args.reason)
        was = previous or ("none: the pointer was damaged, now replaced" if damaged else "none")
        print(f"{args.version} is production (was {was})")
    elif args.action == "rollback":
        rolled_back, serving = registry.rollback(args.reason, args.to)
        print(f"rolled back {rolled_back}; {serving} is production")
    else:
        registry.archive(args.version, args.reason)
        print(f"{args.version} archived")


def ingest_new_command(params: Params, files: list[Path]) -> int:
    """Run `ingest-new-data` per file: files in the landing folder are moved, others copied.

    Returns:
        0 all accepted, 1 any rejected, NOT_STORED any that could not be stored (a full disk; notified),
        STILL_BEING_WRITTEN any left in place because it was changing.
    """
    from flows.deployments import configured_api_url
    from flows.ingest_new import ingest_new_data
    from tasks.lib.data.landing import (
        NOT_STORED,
        STILL_BEING_WRITTEN,
        NotStored,
        Receipt,
        StillBeingWritten,
        summary_line,
    )

    landing = params.path("landing").resolve()
    rejected = waiting = unstored = 0
    for file in (f.parent.resolve() / f.name for f in files):  # a link is judged as a link, never followed
        try:
            receipt = ingest_new_data(file=str(file), root=str(params.root), move=file.parent == landing)
            print(summary_line(Receipt(**receipt)))
        except StillBeingWritten as exc:
            print(f"note: {exc}", file=sys.stderr)
            waiting += 1
        except NotStored as exc:
            print(f"error: {exc}", file=sys.stderr)
            unstored += 1
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            rejected += 1
    if configured_api_url() is None and rejected + unstored < len(files):
        print(
            "note: no Prefect server configured (PREFECT_API_URL), so no retraining was triggered; "
            "the next run (`textclf run`, `dvc repro`, the schedule) trains on the new data"
        )
    return 1 if rejected else NOT_STORED if unstored else STILL_BEING_WRITTEN if waiting else 0


def remote_command(root: Path, url: str | None, endpoint_url: str | None, name: str) -> None:
    """Set the DVC default remote (`dvc remote add -d`), or print the current one. Credentials stay out:
    the environment or `.dvc/config.local` hold them, never the committed `.dvc/config`."""
    import subprocess

    dvc = str(Path(sys.executable).parent / "dvc")

    def run(*args: str) -> str:
        done = subprocess.run([dvc, *args], cwd=root, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PipelineError(f"`dvc {' '.join(args)}` exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout.strip()

    if url is None:
        print(run("remote", "list") or "no DVC remote: one machine (`textclf remote URL` sets the team's)")
        return
    if "@" in url.split("://", 1)[-1].split("/", 1)[0]:
        raise ConfigError(f"{url}: credentials in the URL would be committed in .dvc/config; use the environment")
    run("remote", "add", "--default", "--force", name, url)
    if endpoint_url:
        run("remote", "modify", name, "endpointurl", endpoint_url)
    print(
        f"DVC remote '{name}' = {url} is the default (.dvc/config: commit it, so every host uses it).\n"
        f"Credentials: the environment (AWS_ACCESS_KEY_ID, ...) or `dvc remote modify --local {name} "
        "access_key_id ...` (.dvc/config.local, which git ignores)."
    )


def policies_command(root: Path, style: Literal["aws", "seaweedfs"]) -> None:
    """Print each role's policy for this workspace's DVC remote and registry (docs/guides/team.md)."""
    import json

    from tasks.lib.storage.access_policies import policies
    from tasks.lib.storage.team_workspace import team_remote

    remote = team_remote(root)
    if remote is None:
        raise ConfigError("no DVC default remote: a team's store first (`textclf remote s3://bucket/dvc`)")
    print(json.dumps(policies(remote.url, str(load_params(root).location("registry")), style), indent=2))


def deps_command(root: Path, verbose: bool, fix: bool = False) -> int:
    """Each stage's import closure against dvc.yaml's deps; 1 if any stage's deps are off
    (with `fix`, dvc.yaml's code deps are rewritten first)."""
    from tasks.apps.code_deps import check_stages, fix_stages, report

    if fix:
        changed = fix_stages(root)
        print(f"dvc.yaml: code deps rewritten for {', '.join(changed)}" if changed else "dvc.yaml: nothing to fix")
    stages = check_stages(root)
    if verbose:
        for stage in stages:
            print(f"{stage.name} ({stage.module}) runs:\n" + "".join(f"  {p}\n" for p in sorted(stage.runs)))
    problems = report(stages)
    print(problems or f"dvc.yaml's deps name all the code of its {len(stages)} stages")
    return 1 if problems else 0


REGISTRY_HELP = "paths.registry for this command: a folder or a URL (s3://bucket/prefix); env TEXTCLF_REGISTRY"


def _registry_parser(sub: Any) -> None:
    registry = sub.add_parser(
        "registry", help="model versions: list, show, history, report, promote, rollback, archive"
    )
    registry.add_argument("--registry", help=REGISTRY_HELP)
    actions = registry.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every version with its stage and lineage summary")
    actions.add_parser("history", help="every registry event (JSON lines)")
    report = actions.add_parser(
        "report", help="one offline HTML page: every version, its metrics over time, lineage, gate report, card"
    )
    report.add_argument("--out", type=Path, default=Path("registry.html"), help="the page (default registry.html)")
    show = actions.add_parser("show", help="a version's model card (README.md), or its lineage record")
    show.add_argument("version")
    show.add_argument("--json", action="store_true", help="the full lineage record (version.json) instead")
    promote = actions.add_parser(
        "promote", help="make a version production (e.g. a manual-mode candidate); its files must verify"
    )
    promote.add_argument("version")
    promote.add_argument("--reason", default="promoted by hand")
    rollback = actions.add_parser(
        "rollback", help="restore the previous production model (the most recent whose files verify)"
    )
    rollback.add_argument("--reason", required=True, help="why (recorded in the history)")
    rollback.add_argument("--to", help="a specific version instead of the previous production one")
    archive = actions.add_parser("archive", help="retire a candidate")
    archive.add_argument("version")
    archive.add_argument("--reason", required=True)


def _score_parser(sub: Any) -> None:
    score = sub.add_parser(
        "score",
        help="a registered version over a whole table, into Parquet, CSV or JSON Lines (params.yaml score:)",
    )
    score.add_argument("input", help="CSV/TSV/TXT/JSONL/Parquet/XLSX (compressed, zipped), a folder of them, or a URL")
    score.add_argument("output", help="OUTPUT.parquet, .csv or .jsonl: a path or an object-store URL (s3://...)")
    score.add_argument("--text-column", help="the text column (default: the first of data.text_column the input has)")
    score.add_argument(
        "--keep", type=_names, help="the input columns to keep, comma-separated, in this order (default: all; '': none)"
    )
    score.add_argument("--version", default="production", help="the registered version, vNNNN (default: production's)")
    score.add_argument("--registry", help=REGISTRY_HELP)
    score.add_argument("--engine", choices=["local", "spark"], help="score.engine: this process, or Spark's executors")
    score.add_argument("--master", help="with --engine spark: Spark's master (default validate.spark.master)")
    score.add_argument("--batch-size", type=int, help="score.batch_size: texts per inference call")
    score.add_argument(
        "--window", type=int, help="score.window: rows sorted by length together (row groups: whole windows)"
    )
    score.add_argument("--variant", help="score.variant: auto (fastest here), gate, or a registered variant's name")
    score.add_argument(
        "--no-resume",
        action="store_true",
        help="start from the first row: drop a killed run's row groups, replace OUTPUT whatever it holds",
    )


def _names(text: str) -> list[str]:
    """Comma-separated column names ('' : none)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _utc_time(text: str) -> datetime:
    """An ISO 8601 time; one without an offset is UTC."""
    at = datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    """The `textclf` argument parser: one subcommand per line of the usage above."""
    parser = argparse.ArgumentParser(
        prog="textclf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=Path("."), help="repo root (holds params.yaml, dvc.yaml)")
    parser.add_argument(
        "--log-format", choices=FORMATS, help=f"log lines as text (default) or JSON (also {FORMAT_VARIABLE})"
    )
    parser.add_argument("--log-level", type=str.upper, choices=LEVELS, help=f"default INFO (also {LEVEL_VARIABLE})")
    sub = parser.add_subparsers(dest="command", required=True)
    stage = sub.add_parser("stage", help="run one pipeline stage")
    stage.add_argument("name")
    sub.add_parser("run", help="run the whole DAG as a Prefect flow")
    predict = sub.add_parser("predict", help="classify texts with the production model")
    predict.add_argument("texts", nargs="*", help="texts to classify (none: read --file or stdin)")
    predict.add_argument("--file", type=Path, help="one text per line ('-' for stdin)")
    predict.add_argument("--json", action="store_true", help="one JSON object per line, with all probabilities")
    serve = sub.add_parser("serve", help="HTTP service over the production model (params.yaml serve:, TEXTCLF_SERVE_*)")
    for command in (predict, serve):
        command.add_argument("--registry", help=REGISTRY_HELP)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--probe-port", type=int, help="serve.probe_port: /livez and /readyz on a listener of their own")
    serve.add_argument("--max-batch", type=int, help="serve.max_batch (1: no batching)")
    serve.add_argument("--max-wait-ms", type=float, help="serve.max_wait_ms")
    serve.add_argument("--threads", type=int, help="serve.threads (ONNX Runtime intra-op threads)")
    serve.add_argument("--variant", help="serve.variant: gate, auto (fastest here) or a registered variant's name")
    serve.add_argument(
        "--no-monitoring",
        action="store_true",
        help="no prediction log, no counting in /metrics (to measure their cost)",
    )
    _score_parser(sub)
    _registry_parser(sub)
    ingest = sub.add_parser("ingest-new", help="check files of new labelled data and add them to the dataset")
    ingest.add_argument("files", nargs="+", type=Path)
    service = sub.add_parser("service", help="serve the Prefect deployments and watch the landing folder")
    service.add_argument(
        "--port", type=int, default=4200, help="port of the Prefect server started when PREFECT_API_URL is not set"
    )
    deploy = sub.add_parser("deploy", help="prefect deploy --all with this workspace's values (work pools)")
    deploy.add_argument("--pool", help="the work pool (prefect work-pool create); default: textclf")
    deploy.add_argument("--clone", metavar="URL", help="workers run each flow in a fresh clone of this git repository")
    deploy.add_argument("--ref", default="main", help="the branch or tag --clone checks out (default: main)")
    monitor = sub.add_parser(
        "monitor", help="run the monitoring flow once (deployment `monitor` runs it on a schedule)"
    )
    window = monitor.add_mutually_exclusive_group()
    window.add_argument("--hours", type=float, help="the window, in hours back from now (default monitor.window_hours)")
    window.add_argument("--since", type=_utc_time, help="the window: from this time (ISO 8601; UTC if no offset)")
    monitor.add_argument("--registry", help=REGISTRY_HELP)
    feedback = sub.add_parser("feedback", help="the true labels served texts received (POST /feedback)")
    feedback_actions = feedback.add_subparsers(dest="action", required=True)
    feedback_export = feedback_actions.add_parser("export", help="feedback not exported yet, as labelled new data")
    feedback_export.add_argument(
        "--out", type=Path, help="the CSV (a tagger's: JSON Lines) to write (default: a new file in paths.landing)"
    )
    feedback_export.add_argument("--registry", help=REGISTRY_HELP)
    review = sub.add_parser("review", help="the served texts to label first (from the prediction log)")
    review_actions = review.add_subparsers(dest="action", required=True)
    export = review_actions.add_parser(
        "export", help="drifted and least confident served texts, one per text, as CSV (a tagger's: JSON Lines)"
    )
    export.add_argument("--n", type=int, default=200, help="how many texts (default 200)")
    export.add_argument("--out", type=Path, help="the file to write (default review.csv, a tagger's review.jsonl)")
    export.add_argument("--days", type=float, help="only answers of the last DAYS days")
    export.add_argument("--registry", help=REGISTRY_HELP)
    label = sub.add_parser(
        "label", help="Label Studio: the review queue as tasks, finished labels into landing (docs/guides/labelling.md)"
    )
    label_actions = label.add_subparsers(dest="action", required=True)
    label_push = label_actions.add_parser(
        "push", help="the review queue's texts not yet in the project, with the production model's answers"
    )
    label_push.add_argument("--n", type=int, help="how many texts (default labelling.queue_size)")
    label_push.add_argument(
        "--days", type=float, help="only answers of the last DAYS days (default labelling.queue_days)"
    )
    label_push.add_argument("--registry", help=REGISTRY_HELP)
    label_actions.add_parser(
        "pull", help="tasks annotated since the last pull: used ones as a new file in paths.landing, the rest reported"
    )
    remote = sub.add_parser("remote", help="the team's DVC default remote: set it (URL) or show it")
    remote.add_argument("url", nargs="?", help="s3://bucket/prefix, gs://..., azure://..., ssh://..., a folder")
    remote.add_argument("--endpoint-url", help="an S3-compatible server's endpoint (MinIO, SeaweedFS, Ceph)")
    remote.add_argument("--name", default="storage", help="the remote's name in .dvc/config (default: storage)")
    policies = sub.add_parser(
        "policies", help="what each team role may do in the store (worker, serving, landing), as policies"
    )
    policies.add_argument(
        "--format",
        choices=("aws", "seaweedfs"),
        default="aws",
        help="IAM policy documents (default), or SeaweedFS -s3.config identity actions",
    )
    sub.add_parser("watch", help="watch the landing folder only (deployments served elsewhere)")
    sub.add_parser("prune", help="remove old archives, rejected files, versions, log lines (params retention)")
    gc = sub.add_parser(
        "gc", help="remove what no longer serves: old registry versions, the team remote's unneeded objects"
    )
    gc.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    gc.add_argument(
        "--min-age-hours",
        type=float,
        default=24.0,
        help="never remove what was written more recently (a run pushing now; default 24)",
    )
    deps = sub.add_parser("deps", help="check that dvc.yaml's deps name all the code each stage runs")
    deps.add_argument("-v", "--verbose", action="store_true", help="also list the files each stage runs")
    deps.add_argument("--fix", action="store_true", help="rewrite dvc.yaml's code deps to what each stage runs")
    recipe = sub.add_parser("recipe", help="merge a params overlay (recipes/NAME.yaml) into params.yaml")
    recipe.add_argument("name", nargs="?", help="the recipe (none: list the recipes)")
    recipe.add_argument(
        "--dvc-args", action="store_true", help="print the change as -S arguments of `dvc exp run`; change nothing"
    )
    tune = sub.add_parser("tune", help="hyperparameter search over params.yaml tune.space (Optuna); proposes a recipe")
    tune.add_argument("--trials", type=int, help="finished trials the study should hold (default tune.trials)")
    tune.add_argument("--minutes", type=float, help="stop starting trials after this long (default tune.minutes)")
    return parser


def recipe_command(root: Path, name: str | None, dvc_args: bool) -> None:
    """List the recipes, merge one into params.yaml, or print it as `dvc exp run` arguments."""
    import shlex

    from tasks.lib.recipes import apply_recipe, load_recipe, recipe_arguments, recipe_names

    if name is None:
        for found in recipe_names(root):
            print(found)
    elif dvc_args:
        print(shlex.join(recipe_arguments(load_recipe(root, name))))
    else:
        changes = apply_recipe(root, name)
        print(f"params.yaml: recipe {name!r} " + (f"changed {len(changes)} keys:" if changes else "changed nothing"))
        for change in changes:
            print(f"  {change}")


# The commands that run flows, and so may start a Prefect server and stage processes.
FLOW_COMMANDS = {"run", "monitor", "ingest-new", "service", "watch"}


def prefect_defaults() -> None:
    """Settings for the Prefect servers this command starts (a temporary one for `run`, one for `service`).

    Offline by default: no usage telemetry (nothing could send it anyway; its first write
    to a fresh SQLite database is the one CI saw fail with "database is locked"). A
    temporary server gets 90 s instead of 20 to start: on a busy 2-core machine 20 was
    not always enough. Both yield to the environment's own settings.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # before Prefect is imported: it reads its log settings then
        configure_logging(args.log_format, args.log_level)
    except LogSettingError as exc:  # from the environment (the options are checked by argparse)
        return report_failure(exc)
    if getattr(args, "registry", False) is None:  # the commands with --registry; a serving host sets it once
        args.registry = os.environ.get(REGISTRY_VARIABLE) or None
    prefect_defaults()
    if args.command in FLOW_COMMANDS:
        from flows.watchdog import mark

        # Before Prefect starts a server (temporary or `service`'s): it, the stages and all they start end
        # with this process, however it ends (SIGKILL included).
        mark(os.environ)
    root = args.root.resolve()
    try:
        if args.command == "stage":
            return stage_command(args.name, root)
        elif args.command == "predict":
            predict_command(serving_settings(root, args.registry), args.texts, args.file, args.json)
        elif args.command == "score":
            from tasks.lib.scoring.run import ScoreRequest, score_table

            request = ScoreRequest(
                input=args.input,
                output=args.output,
                version=args.version,
                registry=args.registry,
                text_column=args.text_column,
                keep=args.keep,
                engine=args.engine,
                master=args.master,
                batch_size=args.batch_size,
                window=args.window,
                variant=args.variant,
                resume=not args.no_resume,
                progress=sys.stderr.isatty(),
            )
            score_table(load_params(root), request)
        elif args.command == "registry":
            params = load_params(root) if args.registry is None else None  # a serving host has no params.yaml
            registry_command(registry_location(root, args.registry, params), args)
        elif args.command == "serve":
            from tasks.apps import http_service

            settings = serving_settings(
                root,
                args.registry,
                max_batch=args.max_batch,
                max_wait_ms=args.max_wait_ms,
                threads=args.threads,
                variant=args.variant,
                probe_port=args.probe_port,
            )
            http_service.run(settings, args.host, args.port, monitoring=not args.no_monitoring)
        elif args.command == "deps":
            return deps_command(root, args.verbose, args.fix)
        elif args.command == "recipe":
            recipe_command(root, args.name, args.dvc_args)
        elif args.command == "tune":
            from tasks.apps.tune import tune

            _, recipe = tune(load_params(root), args.trials, args.minutes)
            print(
                f"the best trial's settings: {recipe}; review, then `textclf recipe tuned`"
                if recipe
                else "no trial completed: nothing to propose (see reports/tune/trials.csv)"
            )
        elif args.command == "review":
            from tasks.lib.monitoring.review_queue import export as export_review

            out, rows = export_review(load_params(root).with_registry(args.registry), args.n, args.out, args.days)
            fill = "correct its tags" if out.suffix == ".jsonl" else "fill its label column"
            print(f"{rows} texts to label in {out}: {fill}, then `textclf ingest-new {out}`")
        elif args.command == "monitor":
            from flows.monitor import monitor as monitor_flow

            run = monitor_flow(root=str(root), window_hours=args.hours, since=args.since, registry=args.registry)
            print(run.summary() if run is not None else "monitoring skipped: no production version yet")
        elif args.command == "feedback":
            from tasks.apps.feedback_export import export as export_feedback

            written, rows = export_feedback(load_params(root).with_registry(args.registry), args.out)
            print(f"{rows} labelled texts in {written}" if written else "no feedback since the last export")
        elif args.command == "label":
            label_command(root, args)
        elif args.command == "remote":
            remote_command(root, args.url, args.endpoint_url, args.name)
        elif args.command == "policies":
            policies_command(root, args.format)
        elif args.command == "gc":
            import json

            from tasks.lib.storage.remote_gc import garbage_collect

            print(json.dumps(garbage_collect(load_params(root), args.dry_run, args.min_age_hours), indent=2))
        elif args.command == "prune":
            import json

            from tasks.lib.storage.retention import prune

            print(json.dumps(prune(load_params(root)), indent=2))
        elif args.command == "ingest-new":
            return ingest_new_command(load_params(root), args.files)
        elif args.command in ("service", "deploy", "watch"):
            from flows import deployments
            from tasks.apps import service

            params = load_params(root)
            if args.command == "service":
                service.service(params, args.port)
            elif args.command == "deploy":
                clone = deployments.GitSource(args.clone, args.ref) if args.clone else None
                deployments.deploy(params, args.pool or deployments.DEFAULT_WORK_POOL, clone)
            else:
                service.watch(params)
        else:
            from flows.pipeline import pipeline

            pipeline(root=str(root))
    except (PipelineError, FileNotFoundError) as exc:  # the message is the whole story: no traceback
        return report_failure(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
