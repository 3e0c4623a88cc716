"""``prefkit kaggle download/submit`` and ``prefkit kernel push/status`` without network: the
calls and metadata they would send (the kaggle API object replaced by a recorder), and one
line when credentials are missing, Kaggle is unreachable, or the submission is invalid."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from prefkit.cli import main
from prefkit.kernel import kaggle_cli

COMPETITION = "llm-classification-finetuning"


class FakeApi:
    """Records what prefkit asks of the kaggle API; answers as the real one does."""

    def __init__(self, dataset_exists=False, fail=None):
        self.calls = []
        self.dataset_exists = dataset_exists
        self.fail = fail

    def _record(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))
        if self.fail is not None:
            raise self.fail

    def competition_download_files(self, competition, path=None, force=False, quiet=True):
        self._record("competition_download_files", competition, path=path)
        with zipfile.ZipFile(f"{path}/{competition}.zip", "w") as zf:
            zf.writestr("train.csv", "id\n1\n")
            zf.writestr("sample_submission.csv", "id,winner_model_a,winner_model_b,winner_tie\n1,0.3,0.3,0.4\n")

    def competition_submit(self, file_name, message, competition):
        self._record("competition_submit", file_name, message, competition)
        return SimpleNamespace(message="Successfully submitted")

    def dataset_status(self, ref):
        if not self.dataset_exists:
            raise RuntimeError("404 Not Found")
        return "ready"

    def dataset_create_new(self, folder, **kwargs):
        self._record("dataset_create_new", folder, **kwargs)

    def dataset_create_version(self, folder, notes, **kwargs):
        self._record("dataset_create_version", folder, notes, **kwargs)

    def kernels_push(self, folder):
        meta = json.loads((Path(folder) / "kernel-metadata.json").read_text())
        self._record("kernels_push", folder, metadata=meta)
        return SimpleNamespace(error=None, version_number=3, url=f"https://www.kaggle.com/code/{meta['id']}")

    def kernels_status(self, kernel):
        self._record("kernels_status", kernel)
        return SimpleNamespace(status="KernelWorkerStatus.ERROR", failure_message="CUDA out of memory")


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def fake_api(no_credentials, tmp_path, monkeypatch):
    (tmp_path / "kaggle-config").mkdir()
    (tmp_path / "kaggle-config" / "kaggle.json").write_text(json.dumps({"username": "alice", "key": "k"}))
    api = FakeApi()
    monkeypatch.setattr(kaggle_cli, "kaggle_api", lambda: api)
    return api


@pytest.mark.parametrize(
    "args",
    [
        ["kaggle", "download", COMPETITION],
        ["kaggle", "submit", "sub.csv", "-m", "first", "--competition", COMPETITION, "--kernel", "a/b", "--version", "1"],
        ["kernel", "status", "alice/my-kernel"],
    ],
)
def test_without_credentials_each_command_says_so_in_one_line(no_credentials, capsys, args):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {kaggle_cli.NO_CREDENTIALS}"]


def test_credentials_are_found_where_the_kaggle_package_looks(no_credentials, tmp_path, monkeypatch):
    assert kaggle_cli.find_credentials() is None
    monkeypatch.setenv("KAGGLE_USERNAME", "bob")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    assert kaggle_cli.find_credentials().username == "bob"
    monkeypatch.delenv("KAGGLE_KEY")
    (tmp_path / "kaggle-config").mkdir()
    (tmp_path / "kaggle-config" / "kaggle.json").write_text('{"username": "carol"}')
    with pytest.raises(kaggle_cli.InputError, match="needs both"):
        kaggle_cli.find_credentials()
    (tmp_path / "kaggle-config" / "kaggle.json").write_text('{"username": "carol", "key": "k"}')
    assert kaggle_cli.find_credentials().username == "carol"


def test_download_unzips_into_data_competition(fake_api, tmp_path):
    assert main(["kaggle", "download", COMPETITION]) == 0
    assert fake_api.calls[0][:2] == ("competition_download_files", (COMPETITION,))
    assert sorted(p.name for p in (tmp_path / "data" / COMPETITION).iterdir()) == ["sample_submission.csv", "train.csv"]


def test_submit_validates_before_upload(fake_api, tmp_path, capsys):
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("id,winner_model_a,winner_model_b,winner_tie\n1,0.3,0.3,0.4\n2,0.3,0.3,0.4\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,winner_model_a,winner_model_b,winner_tie\n1,0.5,0.5,0.4\n2,0.3,0.3,0.4\n")
    assert main(["kaggle", "submit", str(bad), "-m", "v1", "--competition", COMPETITION, "--sample", str(sample)]) == 2
    assert "probabilities sum to 1.4" in capsys.readouterr().err
    assert main(["kaggle", "submit", str(bad), "-m", "v1", "--competition", COMPETITION]) == 2  # no sample to check against
    assert "prefkit kaggle download" in capsys.readouterr().err
    assert fake_api.calls == []  # nothing was sent

    good = tmp_path / "good.csv"
    pd.read_csv(sample).to_csv(good, index=False)
    assert main(["kaggle", "submit", str(good), "-m", "v1", "--competition", COMPETITION, "--sample", str(sample)]) == 0
    assert fake_api.calls == [("competition_submit", (str(good), "v1", COMPETITION), {})]


def test_push_uploads_the_dataset_then_the_kernel_with_the_users_ids(fake_api, tmp_path):
    from prefkit.kernel.build import OWNER_PLACEHOLDER

    kernel = tmp_path / "kernels" / "my-kernel"
    (kernel / "dataset").mkdir(parents=True)
    (kernel / "kernel-metadata.json").write_text(json.dumps({"id": f"{OWNER_PLACEHOLDER}/my-kernel", "enable_internet": False,
                                                             "dataset_sources": [f"{OWNER_PLACEHOLDER}/my-kernel-data"]}))  # fmt: skip
    (kernel / "dataset" / "dataset-metadata.json").write_text(json.dumps({"id": f"{OWNER_PLACEHOLDER}/my-kernel-data"}))
    assert main(["kernel", "push", str(kernel)]) == 0
    names = [c[0] for c in fake_api.calls]
    assert names == ["dataset_create_new", "kernels_push"]
    assert fake_api.calls[0][1] == (str(kernel / "dataset"),) and fake_api.calls[0][2]["dir_mode"] == "zip"
    sent = fake_api.calls[1][2]["metadata"]
    assert sent["id"] == "alice/my-kernel" and sent["dataset_sources"] == ["alice/my-kernel-data"]
    fake_api.dataset_exists = True
    assert main(["kernel", "push", str(kernel)]) == 0
    assert [c[0] for c in fake_api.calls[2:]] == ["dataset_create_version", "kernels_push"]


def test_status_and_an_unreachable_network(fake_api, capsys):
    assert main(["kernel", "status", "alice/my-kernel"]) == 0
    assert capsys.readouterr().out.strip() == "alice/my-kernel: error (CUDA out of memory)"
    assert main(["kernel", "status", "my-kernel"]) == 2
    assert "owner/slug" in capsys.readouterr().err

    class ConnectionError(OSError):  # what requests raises when there is no route to Kaggle
        pass

    fake_api.fail = ConnectionError("Max retries exceeded with url: /api/v1/...")
    assert main(["kernel", "status", "alice/my-kernel"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: status of alice/my-kernel: Kaggle is unreachable (ConnectionError): check the network"]

    fake_api.kernels_status = lambda kernel: {"status": "running", "failureMessage": ""}  # kaggle < 1.7 answers a dict
    assert main(["kernel", "status", "alice/my-kernel"]) == 0
    assert capsys.readouterr().out.strip() == "alice/my-kernel: running"
