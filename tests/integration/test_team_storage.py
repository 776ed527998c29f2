"""The DAG with its registry in object storage (a real S3 server, SeaweedFS), through `dvc repro`."""

import pytest

from tasks.lib.inference.production_model import ProductionModel
from tasks.lib.storage.registry import Registry
from tests.support.repo import UP_TO_DATE, deep_merge, dvc, ran_stages, set_params, tiny_overrides


@pytest.mark.slow
def test_dvc_repro_promotes_into_a_bucket_and_a_host_with_only_the_url_serves_it(
    repo_copy, tiny_model_dir, s3_url, tmp_path
):
    repo = repo_copy
    set_params(repo, deep_merge(tiny_overrides(tiny_model_dir), {"paths": {"registry": s3_url}}))
    assert ran_stages(dvc(repo, "repro").stdout)[-1] == "promote"
    registry = Registry(s3_url)
    assert registry.production()["version"] == "v0001" and not (repo / "registry").exists()
    # The pointer in the bucket is promote's DVC output (external, uncached): DVC sees it.
    assert UP_TO_DATE in dvc(repo, "status").stdout
    assert ran_stages(dvc(repo, "repro").stdout) == []

    # Another host: no workspace, only the URL (and the store's credentials).
    host = ProductionModel(s3_url)
    host.registry.cache = tmp_path / "host-b-cache"
    version, predictions = host.predict(["a warm, clever film"])
    assert version == "v0001" and predictions[0].label in ("negative", "positive")

    # The pointer wiped in the bucket: DVC re-runs promote, which re-points production at the same version.
    registry.store.delete("production.json")
    assert "promote" in dvc(repo, "status").stdout
    assert ran_stages(dvc(repo, "repro").stdout) == ["promote"]
    assert registry.production()["version"] == "v0001" and registry.list_versions() == ["v0001"]
