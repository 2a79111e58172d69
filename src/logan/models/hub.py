"""Model files by Hugging Face Hub name: every `target_model.*` path key made local once, before a run starts.

    target_model.model_path=/models/llava-1.5-7b-hf          a local folder (an existing path always wins)
    target_model.model_path=llava-hf/llava-1.5-7b-hf         a Hub repository, at target_model.revision (main)
    target_model.model_path=hf://llava-hf/llava-1.5-7b-hf@v1.0           ... its revision pinned in the value
    target_model.ckpt=hf://Vision-CAIR/MiniGPT-4@main/pretrained_minigpt4.pth   one file of a repository

Folder keys (model_path, model_base, vision_tower, llama_model) take a folder, `ORG/NAME` or
`hf://ORG/NAME[@REV]`; file keys (ckpt, vit_model, q_former_model) a file or `hf://ORG/NAME[@REV]/FILE`
(huggingface_hub's own URI: `hf download` takes the same string). Resolution goes through huggingface_hub
only, as the user configured it (HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN; `path.cache_dir`):
`resolve_revision` turns the revision into a commit, `snapshot_download` / `hf_hub_download` fetch that
commit (offline: read it from the cache). The families then receive local paths (`local_model`), the
run records the commit of every file set (`RunConfig.resolved`), and every failure is one line saying
what is missing and the command or setting that fixes it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logan.errors import LoganError

if TYPE_CHECKING:
    from logan.config import ModelConfig, RunConfig

log = logging.getLogger(__name__)

URI = "hf://"
FOLDER_KEYS = ("model_path", "model_base", "vision_tower", "llama_model")
FILE_KEYS = ("ckpt", "vit_model", "q_former_model")
# every target_model key that names model files, in the order run fingerprints list them
MODEL_PATH_KEYS = (
    "model_path",
    "model_base",
    "ckpt",
    "vision_tower",
    "llama_model",
    "vit_model",
    "q_former_model",
)
# files a model folder never needs: other frameworks' weights; pickled weights beside safetensors (every
# loader here prefers safetensors, as transformers does)
IGNORED = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "*.gguf", "*.mlmodel", "coreml/*", "onnx/*"]
PICKLED = ["*.bin", "*.pth", "*.pt", "*.ckpt"]
HEX = set("0123456789abcdef")


@dataclass(frozen=True)
class HubRef:
    """A setting that points into the Hub: a repository, a revision and, for file keys, a file in it."""

    repo_id: str
    revision: str | None  # None: the caller's default (target_model.revision, else main)
    filename: str | None = None
    repo_type: str = "model"

    def uri(self, revision: str | None = None) -> str:
        """huggingface_hub's URI of this reference (with `revision` in place of the asked one)."""
        rev = revision or self.revision
        kind = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        return (
            f"{URI}{kind}{self.repo_id}"
            + (f"@{rev}" if rev else "")
            + (f"/{self.filename}" if self.filename else "")
        )


@dataclass(frozen=True)
class Resolved:
    """A setting made local: the path to load and, for Hub values, the repository and the commit."""

    value: str
    path: Path
    ref: HubRef | None = None
    commit: str | None = None

    def provenance(self) -> str:
        """What identifies these files in a run fingerprint: `hf://ORG/NAME@<commit>[/FILE]` for Hub files
        (never the branch, never this machine's cache path), the resolved path for local ones."""
        return self.ref.uri(self.commit) if self.ref else str(self.path.expanduser().resolve())

    def record(self) -> dict[str, Any]:
        """The entry of config.json's `resolved` block and of provenance.json."""
        if self.ref is None:
            return {"value": self.value, "path": str(self.path.expanduser().resolve())}
        return {
            "value": self.value,
            "repo": self.ref.repo_id,
            "revision": self.ref.revision,
            "commit": self.commit,
            "file": self.ref.filename,
            "uri": self.provenance(),
            "path": str(self.path),
        }


def parse(value: str, key: str, repo_type: str = "model") -> Path | HubRef:
    """A local path, or a Hub reference. An existing path wins over a look-alike id; values starting with
    / . ~ or with other than one '/' are paths; `hf://` is always the Hub."""
    from huggingface_hub import parse_hf_uri
    from huggingface_hub.errors import HfUriError

    if value.startswith(URI):
        try:
            uri = parse_hf_uri(value)
        except HfUriError as error:
            raise LoganError(
                f"{key}={value} is not a Hub address ({error}); write hf://ORG/NAME[@REVISION][/FILE]."
            ) from None
        if uri.type != repo_type:
            raise LoganError(
                f"{key}={value} names a {uri.type} repository; {key} takes a {repo_type} repository: "
                f"hf://{'' if repo_type == 'model' else repo_type + 's/'}ORG/NAME[@REVISION]."
            )
        return HubRef(uri.id, uri.revision, uri.path_in_repo or None, repo_type)
    path = Path(value).expanduser()
    if path.exists() or not looks_like_repo_id(value):
        return path
    return HubRef(value, None, None, repo_type)


def looks_like_repo_id(text: str) -> bool:
    """`ORG/NAME` as the Hub spells repository ids (not a path starting with / . ~)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def resolve(
    value: str, key: str, *, want: str = "folder", revision: str | None = None, cache_dir: str | None = None
) -> Resolved:
    """Make a model setting local. `want`: 'folder' or 'file'. `revision`: the default for a Hub value that
    pins none (target_model.revision for model_path)."""
    parsed = parse(value, key)
    if isinstance(parsed, Path):
        if not (parsed.is_dir() if want == "folder" else parsed.is_file()):
            hint = "ORG/NAME or hf://ORG/NAME@REVISION" if want == "folder" else "hf://ORG/NAME@REVISION/FILE"
            raise LoganError(f"{key}={value} is not a local {want} (nor a Hub address: write {hint}).")
        return Resolved(value, parsed)
    if parsed.revision and revision and parsed.revision != revision:
        raise LoganError(
            f"{key}={value} pins revision {parsed.revision}, but target_model.revision={revision}; "
            "give the revision once."
        )
    ref = replace(parsed, revision=parsed.revision or revision or "main")
    if want == "file" and not ref.filename:
        raise LoganError(
            f"{key}={value} names a repository, not a file in it: write "
            f"hf://{ref.repo_id}@{ref.revision}/FILE."
        )
    if want == "folder" and ref.filename:
        raise LoganError(f"{key}={value} names a file, but {key} takes a model folder: drop /{ref.filename}.")
    path, commit = download(ref, key, cache_dir)
    log.info("%s=%s: %s at commit %s", key, value, ref.repo_id, commit)
    return Resolved(value, path, ref, commit)


def download(
    ref: HubRef, key: str, cache_dir: str | None, allow: list[str] | None = None
) -> tuple[Path, str]:
    """(local path, commit) of a Hub reference: the file, or the repository's snapshot (only the `allow`
    patterns, if given); offline from the cache. Failures are one LoganError line."""
    import huggingface_hub as hh

    offline = hh.constants.is_offline_mode()
    try:
        commit = hh.resolve_revision(
            ref.repo_id,
            revision=ref.revision,
            local_files_only=offline,
            repo_type=ref.repo_type,
            cache_dir=cache_dir,
        )
        if ref.filename:
            path = hh.hf_hub_download(
                ref.repo_id,
                ref.filename,
                revision=commit,
                local_files_only=offline,
                repo_type=ref.repo_type,
                cache_dir=cache_dir,
            )
        elif offline:
            path = _cached_snapshot(ref, commit, allow, cache_dir)
        else:
            ignore = None
            if allow is None:
                ignore = skipped(
                    hh.HfApi().list_repo_files(ref.repo_id, revision=commit.resolved, repo_type=ref.repo_type)
                )
            path = hh.snapshot_download(
                ref.repo_id,
                revision=commit,
                allow_patterns=allow,
                ignore_patterns=ignore,
                repo_type=ref.repo_type,
                cache_dir=cache_dir,
            )
    except Exception as error:  # noqa: BLE001 - mapped to one line, or re-raised unchanged
        raise hub_error(error, ref, key, offline, cache_dir) from None
    return Path(path), commit.resolved


def skipped(files: list[str]) -> list[str]:
    """ignore_patterns for a repository's files: other frameworks, and .bin / .pth beside safetensors."""
    return IGNORED + (PICKLED if any(f.endswith(".safetensors") for f in files) else [])


def _cached_snapshot(ref: HubRef, commit: Any, allow: list[str] | None, cache_dir: str | None) -> str:
    """Offline: the cached snapshot folder. One downloaded in part (`hf download ... --include
    '*.safetensors'`) is used as it is: the family's own checks name any file it really lacks."""
    import huggingface_hub as hh

    try:
        return hh.snapshot_download(
            ref.repo_id,
            revision=commit,
            local_files_only=True,
            allow_patterns=allow,
            repo_type=ref.repo_type,
            cache_dir=cache_dir,
        )
    except hh.errors.IncompleteSnapshotError as error:
        log.debug("%s: using the partial snapshot %s (%s)", ref.uri(), error.snapshot_path, error)
        return error.snapshot_path


def fix_command(ref: HubRef) -> str:
    """The `hf download` command that puts a reference into the cache."""
    if ref.filename:
        return f"hf download {ref.uri()}"
    kind = "" if ref.repo_type == "model" else f" --repo-type {ref.repo_type}"
    return f"hf download{kind} {ref.repo_id}" + (
        f" --revision {ref.revision}" if ref.revision != "main" else ""
    )


def hub_error(error: Exception, ref: HubRef, key: str, offline: bool, cache_dir: str | None) -> Exception:
    """One line for each way a Hub look-up fails; anything unexpected is returned unchanged (re-raised)."""
    from huggingface_hub import errors as he

    what = f"{key}={ref.uri()}"
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, he.GatedRepoError):  # a subclass of RepositoryNotFoundError: first
        return LoganError(
            f"{what}: {ref.repo_id} is gated: accept its terms on https://huggingface.co/"
            f"{'' if ref.repo_type == 'model' else ref.repo_type + 's/'}{ref.repo_id}, then log in "
            "(hf auth login, or set HF_TOKEN)."
        )
    if isinstance(error, he.RepositoryNotFoundError):
        return LoganError(
            f"{what}: the Hub has no repository {ref.repo_id} that this token may read (HTTP {status}); "
            "check the name, or log in for a private one (hf auth login, or set HF_TOKEN)."
        )
    if isinstance(error, he.RevisionNotFoundError):
        return LoganError(
            f"{what}: {ref.repo_id} has no revision {ref.revision}; give a branch, tag or full commit "
            "hash that exists (target_model.revision, or @REVISION in the value)."
        )
    if isinstance(error, he.RemoteEntryNotFoundError):
        return LoganError(f"{what}: {ref.repo_id} at {ref.revision} has no file {ref.filename}.")
    if isinstance(error, (he.RevisionResolutionError, he.LocalEntryNotFoundError)):
        if "403" in str(error):
            return LoganError(
                f"{what}: the Hub refused this token (HTTP 403); use a token that may read "
                f"{ref.repo_id} (hf auth login, or HF_TOKEN)."
            )
        cached = cached_revisions(ref.repo_id, ref.repo_type, cache_dir)
        revision = ref.revision or "main"
        if (
            len(revision) < 40
            and set(revision) <= HEX
            and any(c.startswith(revision) for c in cached.values())
        ):
            return LoganError(
                f"{what}: offline, a short commit hash cannot be resolved; give the full 40-character "
                "commit hash."
            )
        have = f"; cached: {', '.join(sorted(cached))}" if cached else ""
        missing = f"file {ref.filename} of " if ref.filename else ""
        reason = "offline (HF_HUB_OFFLINE=1)" if offline else "the Hub could not be reached"
        return LoganError(
            f"{what}: {missing}{ref.repo_id} at {revision} is not in the Hub cache "
            f"({cache_dir or _hub_cache()}) and {reason}{have}; run `{fix_command(ref)}` where the Hub "
            "is reachable, or point HF_HUB_CACHE / HF_HOME (or path.cache_dir) at the cache that holds it."
        )
    if isinstance(error, he.HFValidationError):
        return LoganError(f"{what} is not a valid repository id ({error}).")
    if isinstance(error, he.HfHubHTTPError) and status == 403:
        return LoganError(
            f"{what}: the Hub refused this token (HTTP 403); use a token that may read "
            f"{ref.repo_id} (hf auth login, or HF_TOKEN)."
        )
    return error


def _hub_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def cached_revisions(repo_id: str, repo_type: str = "model", cache_dir: str | None = None) -> dict[str, str]:
    """{ref or short commit: commit} of a repository in the Hub cache (for messages only)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:  # scan_cache_dir's default is bound at import: pass the cache in use now
        info = scan_cache_dir(cache_dir or _hub_cache())
    except CacheNotFound:
        return {}
    out: dict[str, str] = {}
    for repo in info.repos:
        if repo.repo_id == repo_id and repo.repo_type == repo_type:
            for rev in repo.revisions:
                for name in rev.refs or [rev.commit_hash[:12]]:
                    out[name] = rev.commit_hash
    return out


# ---------------------------------------------------------------------------------------------------------
def resolve_models(cfg: RunConfig) -> None:
    """Resolve every model path setting of `cfg` once (Hub values downloaded or read from the cache) and
    record the results in `cfg.resolved` (target_model.KEY -> Resolved.record()). Idempotent: settings
    already resolved to the same value are not looked up again."""
    m, cache = cfg.target_model, cfg.path.cache_dir
    wanted = {
        f"target_model.{k}": (getattr(m, k), "folder" if k in FOLDER_KEYS else "file")
        for k in (*FOLDER_KEYS, *FILE_KEYS)
    }
    wanted |= {
        f"target_model.model.{k}": (v, "folder" if k in FOLDER_KEYS else "file")
        for k, v in (m.model or {}).items()
        if k in (*FOLDER_KEYS, *FILE_KEYS) and isinstance(v, str)
    }
    done = {}
    for key, (value, want) in wanted.items():
        if not value:
            continue
        old = cfg.resolved.get(key)
        if old and old.get("value") == value and Path(old["path"]).exists():
            done[key] = old
            continue
        revision = m.revision if key == "target_model.model_path" else None
        done[key] = resolve(str(value), key, want=want, revision=revision, cache_dir=cache).record()
    tower = _implicit_vision_tower(m, done, cache, cfg.resolved.get("target_model.vision_tower"))
    if tower:
        done["target_model.vision_tower"] = tower
    cfg.resolved = done


def _implicit_vision_tower(
    m: ModelConfig, done: dict[str, dict], cache: str | None, previous: dict | None
) -> dict | None:
    """The original LLaVA config names its CLIP tower by Hub id (`mm_vision_tower`); with
    target_model.vision_tower unset that id is resolved like any other setting."""
    if m.vision_tower or "target_model.model_path" not in done:
        return None
    config = Path(done["target_model.model_path"]["path"]) / "config.json"
    try:
        tower = json.loads(config.read_text()).get("mm_vision_tower") if config.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(tower, str) or Path(tower).expanduser().is_dir() or not looks_like_repo_id(tower):
        return None
    if previous and previous.get("value") == tower and Path(previous["path"]).exists():
        return previous
    try:
        record = resolve(
            tower, "target_model.vision_tower (the checkpoint's mm_vision_tower)", cache_dir=cache
        )
    except LoganError as error:
        raise LoganError(f"{error} Or set target_model.vision_tower=CLIP_DIR.") from None
    return record.record() | {"implicit": "mm_vision_tower"}


def local_model(cfg: RunConfig) -> ModelConfig:
    """cfg.target_model with every path setting replaced by its local path (what the families load)."""
    resolve_models(cfg)
    m = cfg.target_model
    flat = {k.split(".")[-1]: r["path"] for k, r in cfg.resolved.items() if k.count(".") == 1}
    nested = {
        k.split(".")[-1]: r["path"] for k, r in cfg.resolved.items() if k.startswith("target_model.model.")
    }
    return replace(m, **flat, model={**(m.model or {}), **nested}) if nested else replace(m, **flat)


def provenance(cfg: RunConfig, key: str) -> str | None:
    """What the fingerprint records for target_model.KEY: `hf://ORG/NAME@<commit>[/FILE]` or the resolved path."""
    resolve_models(cfg)
    record = cfg.resolved.get(f"target_model.{key}")
    if record is None:
        return None
    return record.get("uri") or record["path"]


def moved_revision(old: dict[str, Any], new: dict[str, Any], out: Path) -> str | None:
    """The one line for a run folder computed at one commit of a Hub model whose revision now resolves to
    another (fingerprint values `hf://ORG/NAME@<commit>[/FILE]`), else None."""
    for key in sorted(set(old) & set(new)):
        a, b = _pinned(old[key]), _pinned(new[key])
        if a and b and a[0] == b[0] and a[2] == b[2] and a[1] != b[1]:
            pin = (
                f"target_model.revision={a[1]}"
                if key == "model_path"
                else f"target_model.{key}={URI}{a[0]}@{a[1]}{a[2]}"
            )
            return (
                f"{out} holds results computed with {a[0]} at commit {a[1]}, but the revision now resolves to "
                f"{b[1]}; to resume, pin the old commit ({pin}), or choose a new path.output_dir."
            )
    return None


def _pinned(value: Any) -> tuple[str, str, str] | None:
    """(repo, commit, '/FILE' or '') of a fingerprint value `hf://ORG/NAME@<commit>[/FILE]`."""
    if not isinstance(value, str) or not value.startswith(URI) or "@" not in value:
        return None
    repo, _, rest = value[len(URI) :].partition("@")
    commit, _, file = rest.partition("/")
    return (repo, commit, f"/{file}" if file else "") if len(commit) == 40 and set(commit) <= HEX else None
