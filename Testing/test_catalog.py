"""The model catalog: its schema, run-time checks, downloads (real local HTTP) and imports."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import jsonschema
import pytest
import torch
from LiverXAILib.errors import Cancelled, CheckpointError
from LiverXAILib.models.catalog import (
    CATALOG,
    SCHEMA,
    CatalogError,
    read_catalog,
    register_model,
    resolve_model,
    sha256_file,
    validate_catalog,
)
from LiverXAILib.models.checkpoints import (
    CheckpointMetadata,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from LiverXAILib.models.download import download_model, import_model
from LiverXAILib.models.networks import build_model

DEMO = CATALOG.parent / "unet_demo.pt"


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    """A real LiverXAI checkpoint that no catalog lists."""
    network = build_model("unet", in_channels=1, num_classes=3, features=(4, 8, 16, 32, 64))
    metadata = CheckpointMetadata(
        "unet", {"features": [4, 8, 16, 32, 64]}, (64, 64), training_data=["case 1"]
    )
    path = tmp_path_factory.mktemp("checkpoints") / "My small U-Net.pt"
    save_checkpoint(path, network, metadata)
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a copy of the demo checkpoint."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copyfile(DEMO, served / "unet_demo.pt")
    handler = functools.partial(_QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def listed(name: str, url: str, sha256: str, **extra) -> dict:
    """A complete download entry."""
    return {
        "name": name,
        "architecture": "unet",
        "input_size": [128, 128],
        "num_slices": 1,
        "classes": ["background", "liver", "tumor"],
        "training_data": ["test"],
        "description": "A downloadable test model.",
        "metrics": {},
        "url": url,
        "sha256": sha256,
        **extra,
    }


def write_user_catalog(folder: Path, *entries: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.json").write_text(json.dumps({"models": list(entries)}))
    return folder / "models.json"


def schema_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


# --- Schema and run-time checks -----------------------------------------------------------


def test_bundled_catalog_follows_its_schema():
    data = json.loads(CATALOG.read_text())
    assert (CATALOG.parent / data["$schema"]).resolve() == SCHEMA.resolve()
    schema_validator().validate(data)
    validate_catalog(data)
    entries = read_catalog(CATALOG)
    assert [e["source"] for e in entries] == ["bundled"] * len(entries)
    assert all(e["available"] and Path(e["path"]).is_file() for e in entries)


def test_user_catalog_and_download_entries_follow_the_schema(models_dir, small_checkpoint):
    metadata = read_checkpoint(small_checkpoint)["metadata"]
    register_model(small_checkpoint, "trained", metadata, "from training")
    register_model(small_checkpoint, "bare", {"architecture": "unet"})  # defaults filled in
    data = json.loads((models_dir / "models.json").read_text())
    validator = schema_validator()
    validator.validate(data)
    assert data["models"][0]["input_size"] == [64, 64]
    assert data["models"][1]["input_size"] == [128, 128]
    url = "https://example.org/models/big.pt"
    validator.validate({"models": [listed("big", url, "a" * 64, size_bytes=1000)]})
    with pytest.raises(ValueError, match="names no architecture"):
        register_model(small_checkpoint, "nothing", {})


BROKEN = {
    "no checksum": ({"sha256": None}, "field 'sha256' is missing"),
    "checksum not hex": ({"sha256": "Z" * 64}, "field 'sha256' is 'Z+': give the file's SHA"),
    "name with a folder": ({"name": "../evil"}, "field 'name' is '../evil': use up to 64"),
    "file in a folder": ({"url": None, "file": "../m.pt"}, "field 'file' is '../m.pt'"),
    "file and url": ({"file": "m.pt"}, "give exactly one of 'file'"),
    "neither file nor url": ({"url": None}, "give exactly one of 'file'"),
    "plain http": ({"url": "http://example.org/m.pt"}, "field 'url': .* only https://"),
    "ftp": ({"url": "ftp://example.org/m.pt"}, "field 'url': .* only https://"),
    "input size": ({"input_size": [128]}, r"field 'input_size' is \[128\]; expected two"),
    "slices": ({"num_slices": 0}, "field 'num_slices' is 0; expected a positive integer"),
    "classes": ({"classes": "liver"}, "field 'classes' is 'liver'; expected a list"),
    "metrics": ({"metrics": [0.9]}, r"field 'metrics' is \[0.9\]; expected an object"),
    "size with a file": ({"url": None, "file": "m.pt", "size_bytes": 5}, "field 'size_bytes'"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_broken_entries_are_refused_naming_entry_and_field(case):
    change, message = BROKEN[case]
    good = listed("first", "https://example.org/a.pt", "a" * 64)
    entry = {k: v for k, v in {**good, **change}.items() if v is not None}
    entry["name"] = change.get("name", "second")
    data = {"models": [good, entry]}
    with pytest.raises(CatalogError, match=rf"my\.json: model #2 \(.*\): {message}"):
        validate_catalog(data, "my.json")
    with pytest.raises(jsonschema.ValidationError):  # the schema agrees
        schema_validator().validate(data)


def test_catalog_files_that_cannot_be_used_are_refused(tmp_path):
    catalog = tmp_path / "models.json"
    catalog.write_text('{"models": [')
    with pytest.raises(CatalogError, match="models.json: not valid JSON"):
        read_catalog(catalog)
    twice = listed("twice", "https://example.org/a.pt", "a" * 64)
    catalog.write_text(json.dumps({"models": [twice, twice]}))
    with pytest.raises(CatalogError, match=r"model #2 \('twice'\): the name is listed twice"):
        read_catalog(catalog)
    catalog.write_text(json.dumps([twice]))
    with pytest.raises(CatalogError, match="'models' list"):
        read_catalog(catalog)


# --- Downloads ----------------------------------------------------------------------------


def test_download_reports_progress_verifies_caches_and_works_offline(models_dir, server):
    url = f"{server.base_url}/unet_demo.pt"
    entry = listed("remote-unet", url, sha256_file(DEMO), size_bytes=DEMO.stat().st_size)
    write_user_catalog(models_dir, entry)
    [before] = [e for e in read_catalog() if e["name"] == "remote-unet"]
    assert (before["source"], before["available"], before["path"]) == ("download", False, None)
    with pytest.raises(CheckpointError, match="not downloaded yet: download it first"):
        resolve_model("remote-unet")

    reports = []
    path = download_model("remote-unet", progress=lambda f, m: reports.append((f, m)))
    assert path.parent == models_dir / "downloads"
    assert sha256_file(path) == entry["sha256"]
    assert list(path.parent.iterdir()) == [path]  # no temporary file left
    fractions = [fraction for fraction, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(reports) > 3
    assert any(" MB of 7.8 MB" in message for _, message in reports)
    [after] = [e for e in read_catalog() if e["name"] == "remote-unet"]
    assert after["available"] and after["path"] == str(path)
    model, metadata = load_checkpoint(resolve_model("remote-unet"))
    assert metadata.architecture == "unet"

    server.shutdown()  # the cache answers without network
    again = []
    assert download_model(entry, progress=lambda f, m: again.append(m)) == path
    assert again == ["remote-unet: already downloaded and verified"]


def test_checksum_mismatch_leaves_nothing(models_dir, server):
    entry = listed("wrong", f"{server.base_url}/unet_demo.pt", "0" * 64)
    cache = models_dir / "cache"
    actual = sha256_file(DEMO)
    with pytest.raises(CheckpointError, match=f"expected {'0' * 64}, got {actual}"):
        download_model(entry, cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_cancel_leaves_nothing(models_dir, server):
    entry = listed("cancelled", f"{server.base_url}/unet_demo.pt", sha256_file(DEMO))
    cancel = threading.Event()

    def progress(fraction, _message):
        if fraction > 0:
            cancel.set()

    with pytest.raises(Cancelled, match="cancelled"):
        download_model(entry, progress=progress, cancel=cancel)
    assert list((models_dir / "downloads").iterdir()) == []


def test_failed_and_refused_downloads(models_dir, server):
    missing = listed("missing", f"{server.base_url}/nothing.pt", "a" * 64)
    with pytest.raises(CheckpointError, match="HTTP 404"):
        download_model(missing)
    assert list((models_dir / "downloads").iterdir()) == []
    for url in ("http://example.org/m.pt", "ftp://127.0.0.1/m.pt", "file:///etc/passwd"):
        with pytest.raises(CatalogError, match="only https:// addresses"):
            download_model(listed("insecure", url, "a" * 64))
    with pytest.raises(ValueError, match="nothing to download"):
        download_model("unet-demo")
    small = listed("small", f"{server.base_url}/unet_demo.pt", "a" * 64, size_bytes=1000)
    with pytest.raises(CheckpointError, match="more than the"):
        download_model(small)
    assert list((models_dir / "downloads").iterdir()) == []


# --- Imports ------------------------------------------------------------------------------


def test_import_of_the_listed_file_makes_the_download_available(models_dir, small_checkpoint):
    unreachable = "http://127.0.0.1:9/never-contacted.pt"
    write_user_catalog(models_dir, listed("listed", unreachable, sha256_file(small_checkpoint)))
    entry = import_model(small_checkpoint)
    assert (entry["name"], entry["source"], entry["available"]) == ("listed", "download", True)
    path = resolve_model("listed")
    assert path.parent == models_dir / "downloads"
    assert load_checkpoint(path)[1].input_size == (64, 64)
    assert [e["name"] for e in read_catalog(models_dir / "models.json")] == ["listed"]


def test_import_of_a_new_checkpoint_registers_it(models_dir, small_checkpoint):
    entry = import_model(small_checkpoint)
    assert (entry["name"], entry["source"]) == ("My-small-U-Net", "user")
    assert entry["sha256"] == sha256_file(small_checkpoint)
    assert entry["description"] == "Imported from My small U-Net.pt."
    schema_validator().validate(json.loads((models_dir / "models.json").read_text()))
    model, metadata = load_checkpoint(resolve_model("My-small-U-Net"))
    assert metadata.architecture == "unet" and metadata.training_data == ["case 1"]
    assert import_model(small_checkpoint)["name"] == "My-small-U-Net"  # already there
    named = import_model(DEMO)  # a bundled file is not listed twice
    assert named["name"] == "unet-demo" and named["source"] == "bundled"
    assert [e["name"] for e in read_catalog(models_dir / "models.json")] == ["My-small-U-Net"]


def test_import_of_something_else_is_refused(models_dir, tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a network")
    with pytest.raises(CheckpointError, match="not a readable LiverXAI checkpoint"):
        import_model(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="is not a LiverXAI checkpoint"):
        import_model(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        import_model(tmp_path / "absent.pt")
    assert not (models_dir / "models.json").exists()


def test_models_command_lists_imports_and_names_errors(models_dir, small_checkpoint, capsys):
    """``python -m LiverXAILib models``: the same catalog functions from a shell."""
    from LiverXAILib.cli.main import main

    assert main(["models", "import", str(small_checkpoint), "--name", "ward-unet"]) == 0
    assert "ward-unet:" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "source", "available", "architecture", "sha256"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["unet-demo"][1:3] == ["bundled", "yes"]
    assert rows["ward-unet"][1:3] == ["user", "yes"]
    assert rows["ward-unet"][-1] == sha256_file(small_checkpoint)
    assert main(["models", "download", "unet-demo"]) == 2  # bundled: nothing to download
    assert "nothing to download" in capsys.readouterr().err
