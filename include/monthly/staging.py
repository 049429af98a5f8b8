"""Staging: list a month's images and write the shard manifests the scoring tasks read.

A manifest is a UTF-8 text blob with one input blob name per line ("\\n"); a
scoring task scores exactly the names in its manifest. Staging is idempotent:
a retry rewrites only manifests whose content changed, and removes whatever a
previous attempt left that no longer matches (stale manifests, and the results
and logs of shards whose content changed), so a merge can never mix attempts.

Memory: the month's image names are held in one list, because they must be
sorted to make shards deterministic (about 100 bytes per name: ~100 MB for a
million images). A manifest's bytes exist only while it is hashed or uploaded
(a few at a time, by STAGE_UPLOAD_THREADS threads). Skipped blobs are only
counted, plus the first few names.

The record (`stage.json`) grows with the month's shards, so it stays in Blob
storage: Airflow's XCom carries `StageResult.reference()`, its location and
counts, and each task that needs the shards reads the record back.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator
from urllib.parse import quote, unquote, urlencode
from xml.etree import ElementTree

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.storage.blob import ContainerClient, ContentSettings

from include.monthly.config import MAX_LISTED_NAMES, STAGE_UPLOAD_THREADS
from include.monthly.layout import Month, RunPaths, parse_month, shard_id
from include.scoring.yolo_scoring import contract

log = logging.getLogger(__name__)

_RUN_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
# Every character str.splitlines() breaks on: a name holding one cannot be a manifest line.
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_MANIFEST_DIGEST_KEY = "sha256"


@dataclass(frozen=True)
class SkippedBlob:
    """A blob of the month folder that is not scored, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class Shard:
    """One scoring task's share of the month."""

    id: str
    image_count: int
    manifest: str  # blob name in the work container
    sha256: str | None = None  # hex digest of the manifest's bytes, recorded by staging


@dataclass(frozen=True)
class StageResult:
    """What staging wrote; also stored as `stage.json` and passed to the merge."""

    month: Month
    run_key: str
    source_container: str
    source_prefix: str
    shard_size: int
    image_count: int
    shards: tuple[Shard, ...]
    skipped_count: int = 0
    skipped: tuple[SkippedBlob, ...] = ()  # the first MAX_LISTED_NAMES

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.month, self.run_key)

    @property
    def shard_ids(self) -> list[str]:
        return [shard.id for shard in self.shards]

    @property
    def manifest_blobs(self) -> list[str]:
        return [shard.manifest for shard in self.shards]

    def reference(self) -> dict[str, Any]:
        """Where the record is and what it counts: what XCom carries (its size does not grow with the month)."""
        return {
            "month": str(self.month), "run_key": self.run_key, "stage_record": self.paths.stage_record,
            "source_prefix": self.source_prefix, "image_count": self.image_count,
            "shard_count": len(self.shards), "skipped_count": self.skipped_count,
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (the content of stage.json)."""
        data = asdict(self)
        data["month"] = str(self.month)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageResult:
        return cls(
            month=parse_month(data["month"]),
            run_key=data["run_key"],
            source_container=data["source_container"],
            source_prefix=data["source_prefix"],
            shard_size=int(data["shard_size"]),
            image_count=int(data["image_count"]),
            shards=tuple(Shard(**shard) for shard in data["shards"]),
            skipped_count=int(data.get("skipped_count", 0)),
            skipped=tuple(SkippedBlob(**item) for item in data.get("skipped", ())),
        )


def validate_run_key(run_key: str) -> str:
    """Reject a run key that could escape its folder or break a Batch id."""
    if not isinstance(run_key, str) or not _RUN_KEY_RE.match(run_key):
        raise ValueError(
            f"run_key {run_key!r} must be 1-64 characters of a-z, 0-9 and '-' "
            "(build it with include.monthly.layout.run_key)"
        )
    return run_key


def validate_shard_size(shard_size: int) -> int:
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size <= 0:
        raise ValueError(f"shard_size must be a positive whole number of images, got {shard_size!r}")
    return shard_size


def is_image_name(name: str) -> bool:
    """Whether a blob is an image to score: not a folder marker, and a suffix of the scoring contract's."""
    return not name.endswith("/") and contract.is_image_name(name)


def skip_reason(name: str) -> str | None:
    """Why a blob of the month folder is not scored, or None if it is an image to score."""
    if name.endswith("/"):
        return "folder marker"
    if not is_image_name(name):
        return "not an image file (by extension)"
    if any(char in _LINE_BREAKS for char in name):
        return "name contains a line break, so it cannot be listed in a manifest"
    return None


def list_month_images(
    input_container: ContainerClient, month: Month
) -> tuple[list[str], int, list[SkippedBlob]]:
    """The month's image names (sorted), the number of skipped blobs, and the first few skipped."""
    images: list[str] = []
    skipped_count = 0
    skipped: list[SkippedBlob] = []
    try:
        for name in list_names(input_container, month.prefix):
            reason = skip_reason(name)
            if reason is None:
                images.append(name)
                continue
            skipped_count += 1
            if len(skipped) < MAX_LISTED_NAMES:
                skipped.append(SkippedBlob(name, reason))
    except ResourceNotFoundError as error:
        raise LookupError(
            f"input container {input_container.container_name!r} does not exist"
        ) from error
    images.sort()
    return images, skipped_count, skipped


def list_names(container: ContainerClient, prefix: str, page_size: int = 5000) -> Iterator[str]:
    """Every blob name under `prefix`, by List Blobs pages of 5,000 (the most Azure returns), reading only `Name`.

    The SDK's `list_blobs` builds a full `BlobProperties` for each blob (about
    1.5 ms of CPU per blob here, 25 minutes for a million names); staging needs
    only the names. The request goes through the container client's own
    pipeline (its credential, retries and API version), and the page is
    parsed as the List Blobs REST reference describes it: `Blobs/Blob/Name`,
    percent-encoded when `Encoded="true"`, and `NextMarker` (empty on the last page).
    """
    marker = ""
    while True:
        params = {"restype": "container", "comp": "list", "prefix": prefix, "maxresults": str(page_size)}
        if marker:
            params["marker"] = marker
        # azure-core sends `params` as given: encode each value (a marker may hold any character).
        query = urlencode(params, quote_via=quote, safe="")
        url = container.url + ("&" if "?" in container.url else "?") + query
        request = HttpRequest("GET", url, headers={"x-ms-version": container.api_version, "Accept": "application/xml"})
        response = container._client._send_request(request)  # noqa: SLF001 - the generated client's documented send_request
        if response.status_code == 404:
            raise ResourceNotFoundError(response=response)
        if response.status_code != 200:
            raise HttpResponseError(response=response)
        names, marker = _page_names(response.content)
        yield from names
        if not marker:
            return


def _page_names(body: bytes) -> tuple[list[str], str]:
    """The blob names and the NextMarker of one List Blobs page, parsed as a stream (each blob dropped once read)."""
    names: list[str] = []
    marker = ""
    path: list[str] = []
    for event, element in ElementTree.iterparse(io.BytesIO(body), events=("start", "end")):
        if event == "start":
            path.append(element.tag)
            continue
        path.pop()
        if element.tag == "Name" and path[-2:] == ["Blobs", "Blob"]:
            text = element.text or ""
            names.append(unquote(text) if element.get("Encoded", "").lower() == "true" else text)
        elif element.tag == "NextMarker" and len(path) == 1:
            marker = element.text or ""
        elif element.tag == "Blob":
            element.clear()
    return names, marker


def manifest_bytes(names: Iterable[str]) -> bytes:
    """The manifest format: UTF-8, one blob name per line, each line ending in "\\n"."""
    return "".join(f"{name}\n" for name in names).encode("utf-8")


def manifest_digest(body: bytes) -> str:
    """The digest staging records for a manifest (Shard.sha256 and the blob's metadata)."""
    return hashlib.sha256(body).hexdigest()


def read_manifest(work_container: ContainerClient, blob_name: str) -> list[str]:
    """The blob names a manifest lists, in order."""
    text = work_container.get_blob_client(blob_name).download_blob().readall().decode("utf-8")
    return text.split("\n")[:-1] if text else []


def stage_month(
    input_container: ContainerClient,
    work_container: ContainerClient,
    month: Month,
    run_key: str,
    shard_size: int,
) -> StageResult:
    """List the month's images and write shard manifests and `stage.json` for one run.

    Images are the blobs under `YYYYMM/` (nested folders included) with an image
    extension, sorted by name and cut into shards of `shard_size`. Every other
    blob is counted as skipped, with a reason, and logged. `stage.json` is
    written last, so its presence means the manifests are complete.
    """
    validate_shard_size(shard_size)
    validate_run_key(run_key)
    if not work_container.exists():
        raise LookupError(f"work container {work_container.container_name!r} does not exist")
    paths = RunPaths(month, run_key)
    _delete(work_container, paths.stage_record)

    images, skipped_count, skipped = list_month_images(input_container, month)
    if skipped_count:
        log.warning(
            "Skipping %d blob(s) under %s/%s that are not scorable images, e.g. %s",
            skipped_count, input_container.container_name, month.prefix,
            "; ".join(f"{item.name!r} ({item.reason})" for item in skipped[:5]),
        )

    starts = range(0, len(images), shard_size)
    ids = [shard_id(index) for index in range(len(starts))]

    def body(index: int) -> bytes:
        return manifest_bytes(images[starts[index] : starts[index] + shard_size])

    digests = {shard: manifest_digest(body(index)) for index, shard in enumerate(ids)}
    existing = _existing_manifest_digests(work_container, paths)
    unchanged = {shard for shard, digest in digests.items() if existing.get(shard) == digest}

    # Remove what a previous attempt left before writing anything new, so a crash
    # in between never leaves an old result next to a new manifest.
    _delete_shard_outputs(work_container, paths, keep=unchanged)
    for shard in existing.keys() - digests.keys():
        _delete(work_container, paths.manifest(shard))

    def upload(index: int) -> None:
        shard = ids[index]
        work_container.get_blob_client(paths.manifest(shard)).upload_blob(
            body(index),
            overwrite=True,
            metadata={_MANIFEST_DIGEST_KEY: digests[shard]},
            content_settings=ContentSettings(content_type="text/plain; charset=utf-8"),
        )

    _map(upload, [index for index, shard in enumerate(ids) if shard not in unchanged])

    shards = tuple(
        Shard(shard, min(shard_size, len(images) - index * shard_size), paths.manifest(shard), digests[shard])
        for index, shard in enumerate(ids)
    )
    result = StageResult(
        month=month,
        run_key=run_key,
        source_container=input_container.container_name,
        source_prefix=month.prefix,
        shard_size=shard_size,
        image_count=len(images),
        shards=shards,
        skipped_count=skipped_count,
        skipped=tuple(skipped),
    )
    work_container.get_blob_client(paths.stage_record).upload_blob(
        json.dumps(result.to_dict(), separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
        overwrite=True,
        content_settings=ContentSettings(content_type="application/json"),
    )
    if not images:
        log.warning("No images under %s/%s: nothing to score for %s",
                    input_container.container_name, month.prefix, month)
    log.info("Staged %d image(s) of %s in %d shard(s) under %s",
             len(images), month, len(shards), paths.prefix)
    return result


def load_stage(work_container: ContainerClient, month: Month, run_key: str) -> StageResult:
    """Read back the `stage.json` a completed staging wrote."""
    blob = work_container.get_blob_client(RunPaths(month, run_key).stage_record)
    try:
        data = json.loads(blob.download_blob().readall())
    except ResourceNotFoundError as error:
        raise LookupError(f"no staging record at {blob.blob_name!r}: staging did not complete") from error
    result = StageResult.from_dict(data)
    if (result.month, result.run_key) != (month, run_key):
        raise ValueError(f"staging record {blob.blob_name!r} is for {result.month} run {result.run_key!r}")
    return result


def load_staged(work_container: ContainerClient, reference: dict[str, Any]) -> StageResult:
    """The record a `StageResult.reference()` points at, checked against the counts it carries."""
    result = load_stage(work_container, parse_month(reference["month"]), reference["run_key"])
    counts = (result.image_count, len(result.shards))
    if counts != (reference["image_count"], reference["shard_count"]):
        raise ValueError(f"staging record {result.paths.stage_record!r} holds {counts[0]} images in {counts[1]} "
                         f"shards, but the run staged {reference['image_count']} in {reference['shard_count']}: "
                         "it was rewritten by another attempt")
    return result


def _map(action, items) -> list:
    """`action` over `items` in a few threads (storage round trips overlap), results in order."""
    items = list(items)
    if len(items) < 2:
        return [action(item) for item in items]
    with ThreadPoolExecutor(STAGE_UPLOAD_THREADS, thread_name_prefix="stage") as pool:
        return list(pool.map(action, items))


def _existing_manifest_digests(work_container: ContainerClient, paths: RunPaths) -> dict[str, str]:
    """Shard id -> content digest of manifests already present (empty digest if unknown)."""
    found: dict[str, str] = {}
    for blob in work_container.list_blobs(name_starts_with=paths.manifests_prefix, include=["metadata"]):
        shard = blob.name[len(paths.manifests_prefix):].removesuffix(".txt")
        found[shard] = (blob.metadata or {}).get(_MANIFEST_DIGEST_KEY, "")
    return found


def _delete_shard_outputs(work_container: ContainerClient, paths: RunPaths, keep: set[str]) -> None:
    """Delete results and logs of every shard not in `keep`."""
    logs_root = f"{paths.prefix}logs/"
    for prefix in (paths.results_prefix, logs_root):
        for blob in work_container.list_blobs(name_starts_with=prefix):
            rest = blob.name[len(prefix):]
            shard = rest.split("/", 1)[0].removesuffix(".csv")
            if shard not in keep:
                _delete(work_container, blob.name)


def _delete(container: ContainerClient, blob_name: str) -> None:
    try:
        container.delete_blob(blob_name)
    except ResourceNotFoundError:
        pass
