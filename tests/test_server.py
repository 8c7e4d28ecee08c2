"""``purrsight serve`` for real: a subprocess on 127.0.0.1 serving the tiny bundle of
tests/test_inference.py, sent real PNG/JPEG/WAV/MP4 files over HTTP, broken and
oversized ones too; the web page driven in headless Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from purrsight.inference.predictor import Predictor
from purrsight.inference.reading import CUE_MODALITY, UNCLEAR
from purrsight.inference.server.limits import ServerLimits
from purrsight.inference.server.run import apply_limits
from purrsight.inference.server.worker import Busy, PredictorWorker
from purrsight.report import Evidence, Report
from server_fixture import ServerProcess, huge_png
from test_inference import bundle, trained  # noqa: F401 - fixtures: the tiny trained bundle
from video_fixture import write_test_video

KEY = "test-key-123"
AUTH = {"X-API-Key": KEY}
UPLOAD_CAP = 300_000
REQUEST_CAP = 700_000
CHROMIUM = "/usr/bin/chromium"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):  # noqa: F811
    """The real server with small caps (bytes, pixels, seconds) and an API key."""
    proc = ServerProcess(
        bundle,
        tmp_path_factory.mktemp("server") / "server.log",
        "--max-upload-mb",
        str(UPLOAD_CAP / 2**20),
        "--max-request-mb",
        str(REQUEST_CAP / 2**20),
        "--max-image-pixels",
        "4000000",
        "--max-audio-seconds",
        "5",
        api_key=KEY,
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def cue_bundle(trained, tmp_path_factory) -> tuple[Path, Path]:  # noqa: F811
    """(bundle, data): the tiny bundle with reading heads fitted on demo data whose reports
    have every cue (the tiny training data's answers are plain text: no cue heads)."""
    from purrsight.data.demo import generate_demo_dataset
    from purrsight.inference.export import export_bundle
    from purrsight.inference.reading_export import fit_reading

    _, checkpoint, config = trained
    root = tmp_path_factory.mktemp("cues")
    data = root / "data"
    generate_demo_dataset(data, n=42, seed=3, image_size=32, audio_seconds=0.5, workers=1)
    export_bundle(checkpoint, root / "bundle")
    info = fit_reading(root / "bundle", config, data)
    assert info is not None and {"ears", "eyes", "tail", "posture"} <= {h.name for h in info.heads}
    return root / "bundle", data


@pytest.fixture(scope="module")
def read_server(cue_bundle, tmp_path_factory):
    """The real server (no key, default caps) on the bundle with cue heads."""
    proc = ServerProcess(cue_bundle[0], tmp_path_factory.mktemp("read_server") / "server.log")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    picture.save(root / "cat.png")
    picture.save(root / "cat.jpg", quality=90)
    _wav(root / "meow.wav", 1.0)
    _wav(root / "long.wav", 6.0, rate=8000)  # over the 5 s audio limit
    (root / "notes.png").write_bytes(b"these are not the pixels you are looking for" * 20)
    (root / "big.png").write_bytes(
        rng.integers(0, 255, UPLOAD_CAP + 5000, dtype=np.uint8).tobytes()
    )
    write_test_video(root / "clip.mp4", seconds=1.0)
    return {p.name: p for p in root.iterdir()}


def _wav(path: Path, seconds: float, rate: int = 16000, hz: float = 600.0) -> None:
    t = np.arange(int(rate * seconds)) / rate
    samples = (0.5 * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())


def _post(server, uploads: dict[str, Path | bytes], headers=AUTH, **fields) -> httpx.Response:
    """A multipart POST: files as file parts, ``fields`` as plain form parts."""
    parts = [
        (key, (value.name, value.read_bytes()) if isinstance(value, Path) else ("x.bin", value))
        for key, value in uploads.items()
    ]
    parts += [(key, (None, value)) for key, value in fields.items()]
    return httpx.post(f"{server.url}/v1/analyze", files=parts, headers=headers, timeout=120.0)


def _assert_error(response: httpx.Response, status: int, match: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and match in body["error"], body
    return body


# ----------------------------------------------------------------------------- happy paths


def test_health_docs_and_a_self_contained_page(server) -> None:
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["status"] == "ok" and health["auth_required"] is True
    assert health["limits"]["max_upload_bytes"] == pytest.approx(UPLOAD_CAP, abs=2)
    assert httpx.get(f"{server.url}/docs").status_code == 200
    assert "/v1/analyze" in httpx.get(f"{server.url}/openapi.json").json()["paths"]
    page = httpx.get(f"{server.url}/").text
    assert 'id="image-input"' in page and 'id="audio-input"' in page and 'id="emotion"' in page
    # It asks for the details, to show each cue's confidence and unclear cues as unclear.
    assert '"v1/analyze?details=true"' in page and "body.cue_confidence" in page
    assert 'const UNCLEAR = "unclear"' in page
    # One self-contained page: no external script, style sheet or font.
    assert "<script src" not in page and "<link" not in page and "//cdn" not in page


@pytest.mark.parametrize(
    ("uploads", "listed"),
    [
        ({"image": "cat.png"}, ["image"]),
        ({"image": "cat.jpg"}, ["image"]),
        ({"audio": "meow.wav"}, ["audio"]),
        ({"image": "cat.jpg", "audio": "meow.wav"}, ["image", "audio"]),
        ({"video": "clip.mp4"}, ["video"]),
    ],
)
def test_each_modality_gives_a_valid_report(server, files, uploads, listed) -> None:
    response = _post(server, {k: files[v] for k, v in uploads.items()}, mode="labels")
    assert response.status_code == 200, response.text
    report = Report.model_validate(response.json())
    assert report.modalities == listed
    assert response.headers["X-Purrsight-Status"] == "labels"


def test_report_mode_with_text_and_details(server, files) -> None:
    response = httpx.post(
        f"{server.url}/v1/analyze?details=true",
        files={"image": ("c.png", files["cat.png"].read_bytes())},
        data={"text": "she hides under the bed"},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=120.0,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    report = Report.model_validate(body["report"])
    assert report.modalities == ["image", "text"]
    assert body["status"] in ("valid", "repaired", "invalid")
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_details_carry_each_cues_confidence_beside_the_thresholded_report(
    read_server, cue_bundle, files
) -> None:
    """With cue heads, ``details=true`` gives each read cue's probability; a cue whose
    probability is under the bundle's ``cue_threshold`` is ``unclear`` in the report, one
    at or above it is a value; the plain answer stays exactly a report."""
    bundle_dir, data = cue_bundle
    manifest = json.loads((bundle_dir / "purrsight.json").read_text())
    threshold = manifest["reading"]["cue_threshold"]
    for mode in ("report", "labels"):
        response = _post(read_server, {"image": files["cat.png"]}, headers={}, mode=mode)
        assert response.status_code == 200, response.text
        Report.model_validate(response.json())  # extra="forbid": nothing else in it
    seen = set()
    for photo in _test_photos(data)[:4]:
        image = {"image": (photo.name, photo.read_bytes())}
        url = f"{read_server.url}/v1/analyze?details=true"
        body = httpx.post(url, files=image, timeout=120.0).json()
        report = Report.model_validate(body["report"])
        confidence = body["cue_confidence"]
        # A photo alone: its four cues are read, the sound's never; a confidence for
        # exactly the cues the report shows (none that the range check left out).
        shown = {cue for cue, value in report.evidence.model_dump().items() if value is not None}
        assert set(confidence) == shown
        assert shown <= {c for c, m in CUE_MODALITY.items() if m == "image"}
        assert all(0.0 < p <= 1.0 for p in confidence.values()), confidence
        assert report.evidence.vocalization is None
        for cue, value in report.evidence.model_dump().items():
            if value is None:  # not given, or dropped by the subject / range check
                continue
            assert (value == UNCLEAR) == (confidence[cue] < threshold), (cue, value, confidence)
            seen.add(value == UNCLEAR)
    assert seen == {True, False}  # both a confident cue and an unclear one were checked


def _test_photos(data: Path) -> list[Path]:
    """The demo test split's photos (the heads were fitted on train and val)."""
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    return [data / row["image"] for row in rows if row["image"]]


def test_concurrent_requests_are_all_answered(server, files) -> None:
    def one(i: int) -> int:
        kind = ("image", "audio")[i % 2]
        name = "cat.png" if kind == "image" else "meow.wav"
        return _post(server, {kind: files[name]}, mode="labels").status_code

    with ThreadPoolExecutor(12) as pool:
        assert list(pool.map(one, range(12))) == [200] * 12


# ----------------------------------------------------------------------------- refusals


def test_api_key_is_required(server, files) -> None:
    _assert_error(_post(server, {"image": files["cat.png"]}, headers={}), 401, "API key")
    wrong = {"X-API-Key": "nope"}
    _assert_error(_post(server, {"image": files["cat.png"]}, headers=wrong), 401, "API key")
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # health stays open


def test_bad_uploads_are_refused_and_the_server_keeps_answering(server, files) -> None:
    body = _assert_error(_post(server, {"image": files["big.png"]}), 413, "over the limit")
    assert body["detail"]["field"] == "image"
    body = _assert_error(_post(server, {"image": files["notes.png"]}), 422, "not a decodable image")
    assert body["detail"]["kind"] == "undecodable_media"
    _assert_error(_post(server, {"audio": files["long.wav"]}), 413, "over the limit of 5.0 s")
    _assert_error(_post(server, {"audio": files["cat.png"]}), 422, "not decodable audio")
    _assert_error(_post(server, {"video": files["meow.wav"]}), 422, "video")
    _assert_error(_post(server, {}, text="hello"), 422, "nothing to look at")
    _assert_error(_post(server, {"image": files["cat.png"]}, mode="poem"), 422, "mode")
    _assert_error(_post(server, {"picture": files["cat.png"]}), 422, "unknown field")
    _assert_error(_post(server, {"image": b""}), 422, "empty")
    twice = [("image", ("a.png", files["cat.png"].read_bytes()))] * 2
    twice_response = httpx.post(f"{server.url}/v1/analyze", files=twice, headers=AUTH)
    _assert_error(twice_response, 422, "given twice")
    _assert_error(_post(server, {"image": files["cat.png"]}, text="x" * 501), 422, "over the limit")
    # A path (or URL) where a file belongs is refused, never opened.
    _assert_error(_post(server, {}, image="/etc/passwd"), 422, "must be an uploaded file")
    json_body = httpx.post(f"{server.url}/v1/analyze", json={"image": "x"}, headers=AUTH)
    _assert_error(json_body, 422, "multipart/form-data")
    assert server.alive()
    assert _post(server, {"image": files["cat.png"]}, mode="labels").status_code == 200


def test_a_body_over_the_request_cap_is_refused_before_it_is_read(server) -> None:
    """A Content-Length over the cap is answered 413 at once (nothing read); raw socket,
    since a client still sending its body may see the connection close under it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 5000000000\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(4096):  # the server closes the connection after answering
            answer += chunk
        answer = answer.decode()
    assert answer.startswith("HTTP/1.1 413") and "over the limit of" in answer
    assert server.alive()


def test_a_chunked_body_is_cut_off_at_the_request_cap(server) -> None:
    """No Content-Length (chunked): the bytes are counted as they stream in and the
    request is answered 413 once they pass the cap."""
    boundary = b"b0undary"
    head = (
        b"--"
        + boundary
        + b'\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
    )
    body = head + b"\x00" * (REQUEST_CAP + 100_000)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            for start in range(0, len(body), 65536):
                piece = body[start : start + 65536]
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        answer = b""
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
    text = answer.decode(errors="replace")
    assert text.startswith("HTTP/1.1 413") and "request body is over the limit" in text, text
    assert server.alive()


def test_a_15000_pixel_square_png_is_refused_without_growing_the_server(server) -> None:
    """225 M pixels, ~30 KB on disk: decoding it would take >= 225 MB (675 MB as RGB).
    The header check refuses it first; the server's peak RSS must not grow by 100 MB."""
    bomb = huge_png(15000, 15000)
    assert len(bomb) < UPLOAD_CAP
    before = server.memory_kib()
    response = _post(server, {"image": bomb}, mode="labels")
    after = server.memory_kib()
    body = _assert_error(response, 413, "225000000 pixels")
    assert body["detail"]["kind"] == "too_large"
    grown_mib = (after["VmHWM"] - max(before["VmHWM"], before["VmRSS"])) / 1024
    assert grown_mib < 100, (before, after)
    assert (after["VmRSS"] - before["VmRSS"]) / 1024 < 100, (before, after)
    assert server.alive()


# ----------------------------------------------------------------------------- the worker


def test_worker_batches_waiting_requests_and_refuses_a_full_queue(bundle, files) -> None:  # noqa: F811
    """In process: jobs queued before the thread starts are gathered into one batch and
    answer what one-at-a-time prediction answers; the bounded queue refuses the next."""
    predictor = Predictor.from_bundle(bundle)
    apply_limits(predictor, ServerLimits())
    worker = PredictorWorker(predictor, queue_size=3, max_batch=8)
    requests = [
        {"image": files["cat.png"].read_bytes()},
        {"audio": files["meow.wav"].read_bytes()},
        {"image": b"broken"},
    ]
    futures = [worker.submit(r, "labels", timeout=60) for r in requests]
    with pytest.raises(Busy, match="3 requests are already waiting"):
        worker.submit(requests[0], "labels", timeout=60)
    worker.start()
    try:
        results = [f.exception(timeout=60) or f.result() for f in futures]
    finally:
        worker.stop()
    assert (worker.batches, worker.largest_batch) == (1, 3)
    alone = [predictor.predict(**r, mode="labels") for r in requests[:2]]
    for got, want in zip(results[:2], alone, strict=True):
        assert_same_answer(got.report.model_dump(), want.report.model_dump())
    assert "not a decodable image" in str(results[2])


def assert_same_answer(got, want, path: str = "report") -> None:
    """Equal texts, labels and flags; probabilities within 2e-3. Where the CPU does bf16
    natively the LLM scores in bf16, and a padded batch of two rounds its sums in another
    order than one prompt alone: the same answer, not the same last digit."""
    if isinstance(want, float):
        assert got == pytest.approx(want, abs=2e-3), path
    elif isinstance(want, dict):
        assert set(got) == set(want), path
        for key in want:
            assert_same_answer(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same_answer(g, w, f"{path}[{i}]")
    else:
        assert got == want, path


def test_worker_drops_a_job_past_its_deadline(bundle, files) -> None:  # noqa: F811
    worker = PredictorWorker(Predictor.from_bundle(bundle), queue_size=2, max_batch=2)
    late = worker.submit({"image": files["cat.png"].read_bytes()}, "labels", timeout=-1.0)
    worker.start()
    try:
        with pytest.raises(Busy, match="past its time limit"):
            late.result(timeout=30)
    finally:
        worker.stop()


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="queue_size must be >= 1"):
        ServerLimits(queue_size=0)
    with pytest.raises(ValueError, match="max_request_bytes .* must be at least max_upload"):
        ServerLimits(max_upload_bytes=10, max_request_bytes=5)


# ----------------------------------------------------------------------------- the page

BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def browser_page(**options) -> Iterator[Any]:
    """A page of Debian's chromium driven by playwright, closed after the block; the test
    is skipped where chromium is not installed (CI installs it: `make browser`)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"browser test needs Debian's chromium at {CHROMIUM} (CI: `make browser`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield browser.new_page(**options)
        finally:
            browser.close()


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"browser test needs Debian's chromium at {CHROMIUM} (CI: `make browser`)",
)
def test_the_page_shows_the_report_for_a_dropped_photo(server, files, tmp_path) -> None:
    shot = tmp_path / "serve_page.png"
    with browser_page(viewport={"width": 1100, "height": 900}) as page:
        page.goto(server.url + "/")
        page.wait_for_selector("#api-key", state="visible")  # healthz: a key is required
        page.fill("#api-key", KEY)
        page.set_input_files("#image-input", str(files["cat.jpg"]))
        page.set_input_files("#audio-input", str(files["meow.wav"]))
        page.select_option("#mode", "report")
        page.click("#analyze")
        page.wait_for_selector("#result", state="visible", timeout=120_000)
        emotion = page.text_content("#emotion").strip().replace(" ", "_")
        width = page.eval_on_selector("#confidence-bar", "e => e.style.width")
        evidence_rows = page.locator("#evidence tr").count()
        advice = page.inner_text("#advice").strip()
        page.screenshot(path=str(shot), full_page=True)
    health = httpx.get(f"{server.url}/healthz").json()
    assert emotion in [*health["labels"], "unsure"]
    assert width.endswith("%") and evidence_rows == 5 and advice
    assert shot.stat().st_size > 10_000
    if os.environ.get("PURRSIGHT_SCREENSHOT_DIR"):  # e.g. outputs/ for the integrator
        out = Path(os.environ["PURRSIGHT_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / shot.name)


def test_the_page_shows_each_cues_confidence_and_unclear_cues_as_unclear(server, files) -> None:
    """The page renders a details answer (here a canned one, so every case is in it): a
    cue's value with its confidence, an unclear cue as "unclear" (not its top guess), a
    cue of an input not given as not observed, with no confidence."""

    evidence = Evidence(ears="flattened", eyes=UNCLEAR, tail="puffed", posture="crouched")
    report = Report(emotion="fearful", arousal="high", evidence=evidence, confidence=0.7)
    details = {
        "report": report.model_dump(mode="json"),
        "status": "valid",
        # vocalization is read but dropped from the report: its confidence is not shown
        "cue_confidence": {"ears": 0.82, "eyes": 0.31, "tail": 0.5, "vocalization": 0.9},
    }
    asked = []

    def answer(route) -> None:
        asked.append(route.request.url)
        route.fulfill(status=200, content_type="application/json", body=json.dumps(details))

    with browser_page() as page:
        page.route("**/v1/analyze*", answer)
        page.goto(server.url + "/")
        page.wait_for_selector("#api-key", state="visible")  # the route answers, not the server
        page.set_input_files("#image-input", str(files["cat.png"]))
        page.click("#analyze")
        page.wait_for_selector("#result", state="visible", timeout=30_000)
        rows = {
            row.get_attribute("data-cue"): [c.text_content().strip() for c in cells]
            for row in page.locator("#evidence tr").all()
            for cells in [row.locator("td").all()]
        }
        unclear_class = page.get_attribute('#evidence tr[data-cue="eyes"] td:nth-child(2)', "class")
        emotion = page.text_content("#emotion")
    assert asked and all(url.endswith("/v1/analyze?details=true") for url in asked)
    assert emotion == "fearful"
    assert rows["ears"] == ["ears", "flattened", "82% sure"]
    assert rows["tail"] == ["tail", "puffed", "50% sure"]
    assert rows["eyes"][1] == "unclear" and "31%" in rows["eyes"][2] and unclear_class == "unclear"
    assert rows["posture"] == ["posture", "crouched", ""]  # no confidence given: none shown
    assert rows["vocalization"] == ["vocalization", "not observed", ""]


def test_the_page_shows_the_cue_confidence_of_a_bundle_with_cue_heads(
    read_server, cue_bundle
) -> None:
    """End to end: each cue the server reports from a photo shows its confidence."""

    photo = _test_photos(cue_bundle[1])[0]
    with browser_page() as page:
        page.goto(read_server.url + "/")
        page.set_input_files("#image-input", str(photo))
        page.click("#analyze")
        page.wait_for_selector("#result", state="visible", timeout=60_000)
        rows = [
            [c.text_content().strip() for c in row.locator("td").all()]
            for row in page.locator("#evidence tr").all()
        ]
    shown = [row for row in rows if row[1] != "not observed"]
    assert shown, rows  # the photo is in range: its cues are kept
    for _cue, value, confidence in shown:
        assert confidence.endswith("% sure") if value != UNCLEAR else "best reading" in confidence
    assert ["vocalization", "not observed", ""] in rows  # no sound given


def test_the_page_shows_a_server_error_clearly(server, files, tmp_path) -> None:
    """Without the key the page shows the server's error message, not a blank result."""

    with browser_page() as page:
        page.goto(server.url + "/")
        page.wait_for_selector("#api-key", state="visible")  # the route answers, not the server
        page.set_input_files("#image-input", str(files["cat.png"]))
        page.click("#analyze")
        page.wait_for_selector("#error", state="visible", timeout=30_000)
        message = page.inner_text("#error")
    assert "API key" in message


# ----------------------------------------------------------------------------- decode sandbox


def test_a_decode_over_its_time_limit_is_killed_and_the_next_one_works(tmp_path) -> None:
    """The sandbox child is killed when a decode runs past ``seconds`` (422, not a hang),
    restarted, and decodes the next upload; a crashed child is replaced the same way."""
    from purrsight.data.media import MediaError, MediaTooLarge
    from purrsight.inference.server.sandbox import DecodeSandbox

    limits = {"pixels": 40_000_000, "bytes": 50_000_000, "audio_seconds": 5, "video_seconds": 5}
    big = io_bytes(Image.new("RGB", (6000, 4000), (120, 80, 40)), "JPEG")  # ~0.2 s to decode
    small = io_bytes(Image.new("RGB", (32, 32), (1, 2, 3)), "PNG")
    sandbox = DecodeSandbox(limits, seconds=0.001, memory_mb=2048)
    try:
        with pytest.raises(MediaError, match="decoding took longer than the limit of 0.001 s"):
            sandbox.check({"image": big})
        assert sandbox.restarts == 1
        sandbox.seconds = 30.0
        sandbox.check({"image": small, "audio": None})  # decodes: no exception
        with pytest.raises(MediaTooLarge, match="over the limit of 5 s"):
            sandbox.check({"audio": _wav_bytes(6.0)})
        with pytest.raises(MediaError, match="not a decodable image") as err:
            sandbox.check({"image": b"\x89PNG but not really"})
        assert err.value.kind == "undecodable_media"
        sandbox._process.kill()  # a decoder crash takes down only the child
        sandbox._process.join()
        sandbox.check({"image": small})
        assert sandbox.restarts == 2
    finally:
        sandbox.close()


def io_bytes(picture: Image.Image, fmt: str) -> bytes:
    import io

    buffer = io.BytesIO()
    picture.save(buffer, format=fmt)
    return buffer.getvalue()


def _wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    import io

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(b"\x00\x00" * int(rate * seconds))
    return buffer.getvalue()
