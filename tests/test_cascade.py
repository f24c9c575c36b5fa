import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.core.params import PipelineError
from pipeline.vision.cascade import CASCADE_ENV, CASCADE_SHA256, load_detector, resolve_cascade


@pytest.fixture
def cascade_server(cascade_path):
    """A real local server standing in for raw.githubusercontent.com; counts its requests."""
    state = {"body": cascade_path.read_bytes(), "requests": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            state["requests"] += 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(state["body"])))
            self.end_headers()
            self.wfile.write(state["body"])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/lbpcascade_animeface.xml"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(CASCADE_ENV, raising=False)


def test_the_cascade_in_use_has_the_known_hash(cascade_path):
    assert hashlib.sha256(cascade_path.read_bytes()).hexdigest() == CASCADE_SHA256


def test_param_then_environment(cascade_path, monkeypatch):
    assert resolve_cascade(str(cascade_path)) == cascade_path
    monkeypatch.setenv(CASCADE_ENV, str(cascade_path))
    assert resolve_cascade(None) == cascade_path


def test_download_once_then_cache(cascade_server, tmp_path):
    path = resolve_cascade(None, url=cascade_server["url"])
    assert path == tmp_path / "cache" / "anime-face-dcgan" / "lbpcascade_animeface.xml"
    assert resolve_cascade(None, url=cascade_server["url"]) == path
    assert cascade_server["requests"] == 1
    assert not load_detector(path).empty()


def test_download_with_wrong_hash_is_refused(cascade_server, tmp_path):
    cascade_server["body"] = b"<opencv_storage>tampered</opencv_storage>"
    with pytest.raises(PipelineError, match="refusing it"):
        resolve_cascade(None, url=cascade_server["url"])
    assert not (tmp_path / "cache" / "anime-face-dcgan" / "lbpcascade_animeface.xml").exists()


def test_offline_without_local_copy_says_what_to_do():
    with pytest.raises(PipelineError) as error:
        resolve_cascade(None, url="http://127.0.0.1:9/lbpcascade_animeface.xml", timeout=2)
    assert "crop.cascade" in str(error.value) and CASCADE_ENV in str(error.value)


def test_local_copy_with_wrong_hash(tmp_path, monkeypatch):
    fake = tmp_path / "fake.xml"
    fake.write_text("<opencv_storage/>")
    with pytest.raises(PipelineError, match="crop.cascade points to"):
        resolve_cascade(str(fake))
    monkeypatch.setenv(CASCADE_ENV, str(tmp_path / "missing.xml"))
    with pytest.raises(PipelineError, match=f"{CASCADE_ENV} points to .* does not exist"):
        resolve_cascade(None)
