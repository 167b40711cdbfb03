"""A PACS over DICOMweb (dicomweb-client): read a series by WADO-RS, list a study by QIDO-RS, store a
SEG by STOW-RS.

Addresses are written `dicomweb:<service root>[/studies/<StudyUID>[/series/<SeriesUID>]]`.
Credentials come only from the environment (KDSAM_DICOMWEB_USER + KDSAM_DICOMWEB_PASSWORD for basic
auth, or KDSAM_DICOMWEB_TOKEN for a bearer token), are handed to requests as an auth object, and are
never put in an address, a message, a log line or a sidecar. Every failure of the PACS (down, 401,
403, timeout, refusal) becomes one PacsError line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from kdsam.errors import KdsamError

if TYPE_CHECKING:
    import requests
    from dicomweb_client import DICOMwebClient
    from pydicom import Dataset

PREFIX = "dicomweb:"
USER, PASSWORD, TOKEN = "KDSAM_DICOMWEB_USER", "KDSAM_DICOMWEB_PASSWORD", "KDSAM_DICOMWEB_TOKEN"
TIMEOUT = "KDSAM_DICOMWEB_TIMEOUT"
DEFAULT_TIMEOUT = 60.0  # seconds a PACS may take to answer one request
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
# Series of these modalities hold no image to segment (reports, structure sets, earlier SEGs, ...).
NON_IMAGE_MODALITIES = frozenset({"SEG", "SR", "RTSTRUCT", "RTPLAN", "PR", "KO", "DOC", "REG", "FID", "RWV"})


class PacsError(KdsamError):
    """The PACS could not be reached, refused us, or refused the result: nothing else can go on."""


@dataclass(frozen=True)
class Target:
    """A DICOMweb address: the service root (`http(s)://host[:port]/path`), optionally a study and a
    series in it."""

    root: str
    study: str | None = None
    series: str | None = None

    def __str__(self) -> str:
        text = PREFIX + self.root
        if self.study:
            text += f"/studies/{self.study}"
        if self.series:
            text += f"/series/{self.series}"
        return text


def is_target(text: str) -> bool:
    return text.startswith(PREFIX)


def parse_target(text: str) -> Target:
    """`dicomweb:URL[/studies/S[/series/T]]` -> Target; one line naming what is wrong otherwise."""
    url = text[len(PREFIX) :].rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KdsamError(f"{text}: write dicomweb:http(s)://host[:port]/root[/studies/UID[/series/UID]]")
    if parts.username or parts.password:
        raise KdsamError(
            f"dicomweb:{parts.scheme}://{parts.hostname}: credentials do not go in the address; "
            f"set {USER} and {PASSWORD} (or {TOKEN}) in the environment"
        )
    if parts.query or parts.fragment:
        raise KdsamError(f"{text}: a DICOMweb address takes no ?query or #fragment")
    root, _, rest = url.partition("/studies/")
    fields = rest.split("/") if rest else []
    if len(fields) not in (0, 1, 3) or (len(fields) == 3 and fields[1] != "series"):
        raise KdsamError(f"{text}: expected .../studies/<StudyUID> or .../studies/<StudyUID>/series/<SeriesUID>")
    study, series = (fields[0], fields[2] if len(fields) == 3 else None) if fields else (None, None)
    for uid in (study, series):
        if uid is not None and not UID.match(uid):
            raise KdsamError(f"{text}: {uid!r} is not a DICOM UID (digits and dots)")
    return Target(root, study, series)


def _auth() -> requests.auth.AuthBase | None:
    """Basic or bearer auth from the environment; None when neither is set."""
    import requests

    user, password, token = (os.environ.get(k) for k in (USER, PASSWORD, TOKEN))
    if token and (user or password):
        raise KdsamError(f"set either {TOKEN} or {USER} + {PASSWORD}, not both")
    if token:
        return _Bearer(token)
    if bool(user) != bool(password):
        raise KdsamError(f"{USER} and {PASSWORD} go together: set both, or neither")
    return requests.auth.HTTPBasicAuth(user, password) if user else None


class _Bearer:
    """`Authorization: Bearer <token>` added as each request is sent (never stored in a URL or header
    dict that a library might log)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_Bearer(<hidden>)"


def timeout() -> float:
    """Seconds to wait for the PACS (KDSAM_DICOMWEB_TIMEOUT, default 60)."""
    text = os.environ.get(TIMEOUT, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        value = -1.0
    if not value > 0:
        raise KdsamError(f"{TIMEOUT}={text!r}: give a number of seconds above 0")
    return value


def connect(target: Target) -> DICOMwebClient:
    """A client for the target's service root, authenticated from the environment."""
    import logging

    import requests
    from dicomweb_client import DICOMwebClient

    # dicomweb-client logs each request's URL and headers at DEBUG; kdsam's logs never carry them.
    logging.getLogger("dicomweb_client").setLevel(logging.WARNING)
    session = requests.Session()
    session.auth = _auth()
    client = DICOMwebClient(target.root, session=session, timeout=timeout())
    # One attempt per request: its retry wrapper also retries refused connections and timeouts, 5 times
    # with 2-16 s pauses, which turned "the PACS is down" into 30 s of silence and a 60 s timeout into 5 min.
    client.set_http_retry_params(retry=False)
    return client


def redact(text: str) -> str:
    """`text` with every credential value from the environment blanked (a last line of defence)."""
    for name in (USER, PASSWORD, TOKEN):
        value = os.environ.get(name, "")
        if len(value) >= 4:  # a shorter value would blank ordinary letters of the message
            text = text.replace(value, "***")
    return text


@contextmanager
def pacs_errors(what: str, root: str, kept: Path | None = None) -> Iterator[None]:
    """Turn the ways a PACS fails into one PacsError line saying what failed, and where the result
    was kept when there is one (`kept`), so nothing is lost."""
    import requests

    try:
        yield
    except requests.exceptions.HTTPError as err:
        raise PacsError(_message(what, root, _http_reason(err.response), kept)) from None
    except requests.exceptions.Timeout:
        raise PacsError(_message(what, root, f"no answer within {timeout():g} s ({TIMEOUT})", kept)) from None
    except requests.exceptions.ConnectionError:
        raise PacsError(
            _message(what, root, "cannot connect: is the PACS running, and the address right?", kept)
        ) from None
    except requests.exceptions.RequestException as err:
        raise PacsError(_message(what, root, type(err).__name__, kept)) from None


def _http_reason(response: requests.Response | None) -> str:
    status = getattr(response, "status_code", None)
    if status == 401:
        return f"401 Unauthorized: set {USER} and {PASSWORD} (or {TOKEN}) to credentials the PACS accepts"
    if status == 403:
        return "403 Forbidden: these credentials may not do this on the PACS"
    if status == 404:
        return "404 Not Found: check the address and the study/series UIDs"
    return f"HTTP {status} {getattr(response, 'reason', '') or ''}".strip()


def _message(what: str, root: str, reason: str, kept: Path | None) -> str:
    text = f"{what} at {PREFIX}{root} failed: {reason}"
    if kept is not None:
        text += f"; the SEG is kept at {kept} (store it later: dicomweb_client --url {root} store instances {kept})"
    return redact(text)


def image_series(client: DICOMwebClient, target: Target) -> list[str]:
    """The study's series that hold images (QIDO-RS), in series-number order."""
    assert target.study is not None
    with pacs_errors(f"listing study {target.study}", target.root):
        found = client.search_for_series(target.study, fields=["Modality", "SeriesNumber"])
    rows = []
    for item in found:
        uid, modality = json_value(item, "0020000E"), json_value(item, "00080060")
        if uid and modality not in NON_IMAGE_MODALITIES:
            number = json_value(item, "00200011")
            rows.append((int(number) if str(number or "").lstrip("-").isdigit() else 0, uid))
    return [uid for _, uid in sorted(rows)]


def json_value(item: dict, tag: str) -> str | None:
    """The first value of a DICOM JSON attribute (QIDO-RS answers; a person's name as written), or None."""
    values = item.get(tag, {}).get("Value") or [None]
    value = values[0]
    if isinstance(value, dict):  # PN: {"Alphabetic": "Doe^John"}
        value = value.get("Alphabetic")
    return None if value is None else str(value)


def fetch_series(client: DICOMwebClient, target: Target, folder: Path) -> Path:
    """Retrieve a series (WADO-RS) into `folder`, to be read as local DICOM is: the folder of its
    slices (a volume), or `<SeriesUID>.dcm` when it holds one image (a 2D image)."""
    import pydicom

    assert target.study is not None and target.series is not None
    with pacs_errors(f"reading series {target.series}", target.root):
        datasets = client.retrieve_series(target.study, target.series)
    images = [ds for ds in datasets if _is_image(ds)]
    if not images:
        kinds = sorted({str(ds.get("Modality", "?")) for ds in datasets}) or ["none"]
        raise KdsamError(
            f"{target}: the series holds no images to segment ({len(datasets)} instance(s), modality "
            f"{', '.join(kinds)}); give an image series"
        )
    folder.mkdir(parents=True, exist_ok=True)
    if len(images) == 1:
        path = folder / f"{target.series}.dcm"
        pydicom.dcmwrite(path, images[0], enforce_file_format=True)
        return path
    series = folder / target.series
    series.mkdir()
    for ds in images:
        pydicom.dcmwrite(series / f"{ds.SOPInstanceUID}.dcm", ds, enforce_file_format=True)
    return series


def _is_image(ds: Dataset) -> bool:
    return "PixelData" in ds and str(ds.get("Modality", "")) not in NON_IMAGE_MODALITIES


def store_seg(client: DICOMwebClient, target: Target, path: Path) -> str:
    """Store the SEG at `path` (STOW-RS); its SOP Instance UID. On any failure the file stays where
    it is and the error line names it."""
    import pydicom

    seg = pydicom.dcmread(path)
    uid = str(seg.SOPInstanceUID)
    with pacs_errors("storing the SEG", target.root, kept=path):
        answer = client.store_instances([seg])
    failed = answer.get("FailedSOPSequence") or []
    stored = {str(item.get("ReferencedSOPInstanceUID", "")) for item in answer.get("ReferencedSOPSequence") or []}
    if failed or (answer and uid not in stored):
        reason = failed[0].get("FailureReason", "?") if failed else "the SEG is not among the stored instances"
        raise PacsError(_message("storing the SEG", target.root, f"the PACS refused it (reason {reason})", path))
    return uid
