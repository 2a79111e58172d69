"""Offline stand-ins for the Hugging Face Hub: a cache laid out exactly as huggingface_hub writes it, a
dataset repository laid out like JaineLi/VL-MIA-image, and an in-process fake Hub server behind
huggingface_hub's own HTTP client hook (no socket is ever opened).

    <cache>/models--ORG--NAME/blobs/<sha256 or git sha1>
    <cache>/models--ORG--NAME/snapshots/<40-hex commit>/<path> -> ../../blobs/<hash>
    <cache>/models--ORG--NAME/refs/<branch or tag>              the commit, no newline
    <cache>/datasets--ORG--NAME/...                             the same for dataset repositories
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".parquet", ".arrow", ".ckpt")


def fake_commit(label: str) -> str:
    """A deterministic 40-hex commit id."""
    return hashlib.sha1(label.encode()).hexdigest()


def _blob_name(path: str, data: bytes) -> str:
    """huggingface_hub names a blob by the file's ETag: sha256 for LFS files, the git blob sha1 otherwise."""
    if path.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_snapshot(cache: Path, repo_id: str, files: dict[str, bytes], commit: str,
                 refs: tuple[str, ...] = ("main",), repo_type: str = "model") -> Path:
    """Write `files` as snapshot `commit` of `repo_id`; point each ref (branch or tag) at it."""
    repo = Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for rel, data in files.items():
        blob = repo / "blobs" / _blob_name(rel, data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by its posix path relative to it."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------
def png_bytes(seed: int, size: int = 16) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
README = """---
license: cc-by-4.0
configs:
- config_name: img_Flickr
  data_files:
  - split: train
    path: img_Flickr/train-*.parquet
- config_name: img_dalle
  data_files:
  - split: train
    path: img_dalle/train-*.parquet
---
# A dataset laid out like JaineLi/VL-MIA-image, written by a test
"""


def image_table(images: list[bytes], names: list[str], labels: list[int], label_names: list[str] | None) -> pa.Table:
    """Parquet rows as `push_to_hub` writes them: the Image struct {bytes, path}, features in the metadata."""
    label = {"names": label_names, "_type": "ClassLabel"} if label_names else {"dtype": "int64", "_type": "Value"}
    features = {"image": {"_type": "Image"}, "label": label}
    schema = pa.schema([("image", IMAGE_TYPE), ("label", pa.int64())],
                       metadata={b"huggingface": json.dumps({"info": {"features": features}}).encode()})
    cells = pa.array([{"bytes": b, "path": n} for b, n in zip(images, names)], type=IMAGE_TYPE)
    return pa.Table.from_arrays([cells, pa.array(labels, pa.int64())], schema=schema)


def write_config(root: Path, folder: str, rows: int, shards: int, seed: int, label_names: list[str] | None = None,
                 size: int = 16, row_group_size: int = 100) -> list[dict]:
    """`rows` images (even rows members) in `shards` Parquet files; returns the rows in order."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    written, per = [], -(-rows // shards)
    for shard in range(shards):
        index = list(range(shard * per, min(rows, (shard + 1) * per)))
        images = [png_bytes(seed * 1_000_003 + i, size) for i in index]
        names = [f"{folder}_{i:06d}.png" for i in index]
        labels = [int(i % 2 == 0) for i in index]
        stored = [1 - v for v in labels] if label_names == ["member", "non_member"] else labels
        pq.write_table(image_table(images, names, stored, label_names),
                       root / folder / f"train-{shard:05d}-of-{shards:05d}.parquet", row_group_size=row_group_size)
        written += [{"name": n, "bytes": b, "label": v} for n, b, v in zip(names, images, labels)]
    return written


def write_vlmia_like(root: Path, flickr_rows: int = 24, dalle_rows: int = 12, size: int = 16) -> dict[str, list[dict]]:
    """Two configs as in JaineLi/VL-MIA-image: img_Flickr (int labels, 2 shards) and img_dalle (a ClassLabel
    whose index 0 is 'member', so a stored index is not LOGAN's label)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text(README)
    return {"img_Flickr": write_config(root, "img_Flickr", flickr_rows, 2, seed=1, size=size),
            "img_dalle": write_config(root, "img_dalle", dalle_rows, 1, seed=2, label_names=["member", "non_member"],
                                      size=size)}


# ---------------------------------------------------------------------------------------------------------
@dataclass
class _Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)   # commit -> files
    refs: dict[str, str] = field(default_factory=dict)                   # branch / tag -> commit


class FakeHub:
    """Answers huggingface_hub's requests in-process: repository info, file listings and downloads, and the
    Hub's error answers (status + X-Error-Code, from which huggingface_hub picks its exception)."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], _Repo] = {}
        self.denied: dict[tuple[str, str], tuple[int, str | None]] = {}
        self.requests: list[str] = []

    def add_repo(self, repo_id: str, files: dict[str, bytes], commit: str, refs: tuple[str, ...] = ("main",),
                 repo_type: str = "model") -> None:
        repo = self.repos.setdefault((repo_type, repo_id), _Repo())
        repo.commits[commit] = files
        repo.refs.update({ref: commit for ref in refs})

    def deny(self, repo_id: str, status: int, error_code: str | None = None, repo_type: str = "model") -> None:
        """Answer every request about `repo_id` with `status` (private: 401; gated: 403 GatedRepo)."""
        self.denied[(repo_type, repo_id)] = (status, error_code)

    def handle(self, request):
        import httpx2

        self.requests.append(f"{request.method} {request.url}")
        path = request.url.path
        api = re.match(r"^/api/(models|datasets)/([^/]+/[^/]+)(?:/(revision|tree)/(.+?))?/?$", path)
        download = re.match(r"^/(?:(datasets)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if api:
            kind, repo_id, action, rest = api.groups()
            repo, commit, error = self._lookup(request, kind[:-1], repo_id, rest.split("/")[0] if rest else None)
            if error:
                return error
            files = repo.commits[commit]
            if action == "tree":
                return httpx2.Response(200, request=request, json=[
                    {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                    for p, b in files.items()])
            return httpx2.Response(200, request=request, json={
                "id": repo_id, "sha": commit, "private": False, "siblings": [{"rfilename": p} for p in files]})
        if download:
            kind, repo_id, revision, filename = download.groups()
            repo, commit, error = self._lookup(request, "dataset" if kind else "model", repo_id, revision)
            if error:
                return error
            data = repo.commits[commit].get(filename)
            if data is None:
                return self._error(request, 404, "EntryNotFound")
            headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                       "Content-Length": str(len(data))}
            return httpx2.Response(200, headers=headers, request=request,
                                   content=b"" if request.method == "HEAD" else data)
        raise AssertionError(f"FakeHub: unexpected request {request.method} {request.url}")

    def _error(self, request, status: int, code: str | None):
        import httpx2

        headers = {"X-Error-Message": "FakeHub"} | ({"X-Error-Code": code} if code else {})
        return httpx2.Response(status, headers=headers, json={"error": "FakeHub"}, request=request)

    def _lookup(self, request, repo_type: str, repo_id: str, revision: str | None):
        if (repo_type, repo_id) in self.denied:
            return None, None, self._error(request, *self.denied[(repo_type, repo_id)])
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            return None, None, self._error(request, 401, "RepoNotFound")
        revision = revision or "main"
        commit = revision if revision in repo.commits else repo.refs.get(revision)
        if commit is None:
            return repo, None, self._error(request, 404, "RevisionNotFound")
        return repo, commit, None

    @contextmanager
    def installed(self, monkeypatch):
        """Online mode against this fake Hub; the default client factory is restored afterwards."""
        import httpx2
        import huggingface_hub
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True, raising=False)
        huggingface_hub.set_client_factory(
            lambda: httpx2.Client(transport=httpx2.MockTransport(self.handle), follow_redirects=True))
        try:
            yield self
        finally:
            huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)
