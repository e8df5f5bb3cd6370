"""Pretrained weights named by timm's hub syntax, `hf-hub:<org>/<name>[@<revision>]`.

The file is resolved by huggingface_hub into the standard Hugging Face cache
(HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE are honoured), so every tool on the
machine shares one download. A snapshot already in the cache is used as it is,
without asking the hub, so a cluster node without network trains from a cache
filled elsewhere. On a cache miss one quick request tells whether the hub can
be reached before huggingface_hub is asked to download: its own retry loop
takes about 25 s per file when the network is down, and a run that cannot
start should say so at once.
"""

import hashlib
import json
import os
from dataclasses import dataclass

PREFIX = "hf-hub:"
# timm's own order: safetensors when the repo has it, else the pickled state dict.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PROBE_TIMEOUT_S = 10


class HubError(Exception):
    """A hub reference that cannot be resolved; the message says what to do."""


@dataclass
class Resolved:
    path: str  # the file inside the cache's snapshot
    repo_id: str
    revision: str  # the snapshot's commit hash
    file: str
    sha256: str
    # From the repo's config.json, read only when timm's registry does not know the tag.
    architecture: str | None
    pretrained_cfg: dict | None


def is_reference(weights):
    return weights is not None and weights.startswith(PREFIX)


def split(reference):
    """`hf-hub:timm/tresnet_l.miil_in1k_448@rev` → ('timm/tresnet_l.miil_in1k_448', 'rev' or None)."""
    repo_id, _, revision = reference[len(PREFIX):].partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise HubError(f"{reference}: expected {PREFIX}<org>/<name>[@<revision>], e.g. {PREFIX}timm/tresnet_l.miil_in1k_448")
    return repo_id, revision or None


def timm_tag(repo_id):
    """The timm model name with its pretrained tag (`tresnet_l.miil_in1k_448`) of a timm-hosted repo, else None."""
    org, name = repo_id.split("/")
    return name if org == "timm" else None


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached(repo_id, filename, revision):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return hf_hub_download(repo_id, filename, revision=revision, local_files_only=True)
    except LocalEntryNotFoundError:
        return None


def _offline_error(reference, repo_id, why):
    from huggingface_hub import constants

    return HubError(
        f"{reference}: {repo_id} is not in the Hugging Face cache {constants.HF_HUB_CACHE} and {why}. "
        f"Either connect once to fill the cache (run this again with network access, or "
        f"`hf download {repo_id} {WEIGHT_FILES[0]}` on a connected machine and copy its cache here), "
        f"or train from a local file: --set model.weights=/path/to/file"
    )


def _check_reachable(reference, repo_id):
    """One request without retries: any HTTP answer means the hub is there."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        raise _offline_error(reference, repo_id, "HF_HUB_OFFLINE is set")
    try:
        get_session().head(constants.ENDPOINT, timeout=PROBE_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001: any transport failure means the same thing here
        raise _offline_error(reference, repo_id, f"the hub at {constants.ENDPOINT} cannot be reached ({e})") from None


def _partial_downloads(repo_id):
    """The repo's half-downloaded blobs in the cache (huggingface_hub's `.incomplete` files)."""
    from huggingface_hub import constants

    blobs = os.path.join(constants.HF_HUB_CACHE, "models--" + repo_id.replace("/", "--"), "blobs")
    try:
        return {os.path.join(blobs, name) for name in os.listdir(blobs) if name.endswith(".incomplete")}
    except FileNotFoundError:
        return set()


def _download(reference, repo_id, revision):
    """The weight file, downloaded; a download stopped on request (SIGTERM, Ctrl-C) leaves no partial file."""
    before = _partial_downloads(repo_id)
    try:
        return _download_weights(reference, repo_id, revision)
    except (KeyboardInterrupt, SystemExit):
        for path in _partial_downloads(repo_id) - before:
            os.remove(path)
        raise


def _download_weights(reference, repo_id, revision):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    _check_reachable(reference, repo_id)
    for filename in WEIGHT_FILES:
        try:
            return hf_hub_download(repo_id, filename, revision=revision)
        except LocalEntryNotFoundError as e:
            raise _offline_error(reference, repo_id, f"the download failed ({e})") from None
        except EntryNotFoundError:
            continue
        except HfHubHTTPError as e:
            raise HubError(f"{reference}: {e}") from None
    raise HubError(f"{reference}: the repo has none of {', '.join(WEIGHT_FILES)}")


def _config(repo_id, revision, online):
    """The repo's config.json (architecture and pretrained_cfg), for tags timm does not know."""
    path = _cached(repo_id, "config.json", revision)
    if path is None and online:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id, "config.json", revision=revision)
    if path is None:
        return None
    with open(path) as f:
        return json.load(f)


def resolve(reference, read_config):
    """The weight file of `reference` in the cache (downloaded on a miss) and where it came from.

    `read_config`: the tag's pretrained config is not in timm's registry, so read the repo's config.json.
    """
    repo_id, revision = split(reference)
    path = next(filter(None, (_cached(repo_id, f, revision) for f in WEIGHT_FILES)), None)
    online = path is None
    if online:
        path = _download(reference, repo_id, revision)
    config = _config(repo_id, revision, online) if read_config else None
    return Resolved(
        path=path,
        repo_id=repo_id,
        # The cache keeps each file under snapshots/<commit hash>/.
        revision=os.path.basename(os.path.dirname(path)),
        file=os.path.basename(path),
        sha256=sha256_of(path),
        architecture=(config or {}).get("architecture"),
        pretrained_cfg=(config or {}).get("pretrained_cfg"),
    )
