"""Unit tests of the sample services in samples/.

Each app is called the way uWSGI calls it behind the gateway: nginx passes
SCRIPT_NAME=/api/<name> and uWSGI (manage-script-name) strips it from PATH_INFO, so the app
sees SCRIPT_NAME=/api/<name> and a PATH_INFO relative to its route. The stdlib apps are
called in-process through wsgiref's validator (any WSGI protocol slip fails the test). Django
keeps its settings process-wide, so service1 runs in subprocesses whose working directory is
the release directory, as under uWSGI.
"""

import importlib
import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import types
import warnings
from pathlib import Path
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import WSGIWarning, validator

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
# Variables the apps read; each test starts without them and sets what it needs.
APP_ENV = ("GREETING", "MICROSVC_RELEASE", "MICROSVC_ROUTE", "MICROSVC_SERVICE")


class Response(types.SimpleNamespace):
    def json(self):
        return json.loads(self.body)

    @property
    def text(self):
        return self.body.decode("utf-8")


def call(app, service, path, method="GET", query="", body=b"", script_name=None):
    """Call ``app`` as uWSGI does for a request to /api/<service><path>?<query>."""
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": f"/api/{service}" if script_name is None else script_name,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(body),
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["CONTENT_TYPE"] = "application/octet-stream"
    setup_testing_defaults(environ)
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = status
        captured["headers"] = headers

    with warnings.catch_warnings():
        warnings.simplefilter("error", WSGIWarning)
        result = validator(app)(environ, start_response)
        try:
            payload = b"".join(result)
        finally:
            result.close()
    return Response(
        status=int(captured["status"].split()[0]),
        headers={name.lower(): value for name, value in captured["headers"]},
        body=payload,
    )


def import_release_module(release, module):
    """Import ``module`` as uWSGI's ``module =`` does, with the release directory first on
    sys.path, without leaving the (generic) module names or bytecode behind."""
    top = module.partition(".")[0]

    def owned(name):
        return name == top or name.startswith(top + ".")

    shadowed = {name: mod for name, mod in sys.modules.items() if owned(name)}
    saved_path, saved_flag = list(sys.path), sys.dont_write_bytecode
    for name in shadowed:
        del sys.modules[name]
    sys.path.insert(0, str(release))
    sys.dont_write_bytecode = True
    try:
        loaded = importlib.import_module(module)
    finally:
        sys.path[:] = saved_path
        sys.dont_write_bytecode = saved_flag
        for name in [name for name in sys.modules if owned(name)]:
            del sys.modules[name]
        sys.modules.update(shadowed)
    assert Path(loaded.__file__).resolve().is_relative_to(release)
    return loaded


def load_wsgi_file(path, name):
    """Load a file as uWSGI's ``wsgi-file =`` does (executed as a fresh module)."""
    saved_flag = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
    finally:
        sys.dont_write_bytecode = saved_flag
    return loaded


@pytest.fixture(autouse=True)
def _clean_app_env(monkeypatch):
    for name in APP_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def service2():
    return import_release_module(SAMPLES / "service2", "app").application


@pytest.fixture(scope="module")
def service3():
    return load_wsgi_file(
        SAMPLES / "service3" / "wsgi.py", "uwsgi_file_service3_wsgi"
    ).application


@pytest.fixture(scope="module")
def service4_module():
    return import_release_module(SAMPLES / "service4", "svc4.web")


@pytest.fixture(scope="module")
def service4(service4_module):
    return service4_module.application


# --- layout ---------------------------------------------------------------------------


def test_layout_matches_deployment_entries():
    assert (SAMPLES / "service1" / "requirements.txt").read_text().splitlines() == [
        "Django>=5.2,<5.3"
    ]
    assert (SAMPLES / "service1" / "api" / "migrations" / "0001_initial.py").is_file()
    for service in ("service2", "service3"):
        assert not (SAMPLES / service / "requirements.txt").exists(), service
    # service4's is hash-locked: every requirement pinned and hashed, markers kept.
    locked = (SAMPLES / "service4" / "requirements.txt").read_text()
    assert "async-timeout==5.0.1 ; python_full_version < '3.11.3'" in locked
    assert locked.count("--hash=sha256:") == 6
    assert (SAMPLES / "service2" / "app.py").is_file()
    assert (SAMPLES / "service3" / "wsgi.py").is_file()
    assert (SAMPLES / "service4" / "svc4" / "__init__.py").is_file()
    assert (SAMPLES / "service4" / "svc4" / "web.py").is_file()


# --- service2: plain text, module app ---------------------------------------------------


def test_service2_index(service2):
    response = call(service2, "service2", "/")
    assert response.status == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "service2: hello from a plain WSGI app\n"


def test_service2_index_at_bare_route(service2):
    # A request for exactly the route leaves uWSGI with an empty PATH_INFO.
    assert call(service2, "service2", "").text.startswith("service2: hello")


def test_service2_index_greeting_and_release(service2, monkeypatch):
    monkeypatch.setenv("GREETING", "hi from the tests")
    monkeypatch.setenv("MICROSVC_RELEASE", "20250101T000000Z")
    lines = call(service2, "service2", "/").text.splitlines()
    assert lines == [
        "service2: hello from a plain WSGI app",
        "greeting: hi from the tests",
        "release: 20250101T000000Z",
    ]


@pytest.mark.parametrize("path", ["/health", "/health/"])
def test_service2_health(service2, path):
    response = call(service2, "service2", path)
    assert (response.status, response.text) == (200, "ok\n")


def test_service2_not_found(service2):
    response = call(service2, "service2", "/missing")
    assert response.status == 404
    assert "service2" in response.text
    assert "/missing" in response.text


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/"), ("PUT", "/health"), ("DELETE", "/")]
)
def test_service2_method_not_allowed(service2, method, path):
    response = call(service2, "service2", path, method=method)
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"


def test_service2_head(service2):
    get = call(service2, "service2", "/")
    head = call(service2, "service2", "/", method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert (
        head.headers["content-length"]
        == get.headers["content-length"]
        == str(len(get.body))
    )


# --- service3: JSON, wsgi_file app --------------------------------------------------------


def test_service3_index(service3, monkeypatch):
    monkeypatch.setenv("GREETING", "hello service3")
    monkeypatch.setenv("MICROSVC_ROUTE", "/api/service3/")
    response = call(service3, "service3", "/")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["service"] == "service3"
    assert data["greeting"] == "hello service3"
    assert data["route"] == "/api/service3/"
    assert data["release"] is None


def test_service3_health(service3):
    response = call(service3, "service3", "/health")
    assert response.status == 200
    assert response.json() == {"service": "service3", "status": "ok"}


def test_service3_echo_shows_prefix_split(service3):
    response = call(service3, "service3", "/echo", query="x=1&y=two")
    assert response.status == 200
    assert response.json() == {
        "service": "service3",
        "method": "GET",
        "script_name": "/api/service3",
        "path_info": "/echo",
        "query_string": "x=1&y=two",
        "body_length": 0,
        "forwarded_for": None,
        "forwarded_proto": None,
        "real_ip": None,
    }


def test_service3_echo_post_body_length(service3):
    response = call(service3, "service3", "/echo", method="POST", body=b"x" * 1234)
    assert response.status == 200
    assert response.json()["method"] == "POST"
    assert response.json()["body_length"] == 1234


@pytest.mark.parametrize("script_name", ["/api/service3", "/custom/route"])
def test_service3_redirect_keeps_prefix(service3, script_name):
    response = call(service3, "service3", "/redirect", script_name=script_name)
    assert response.status == 302
    assert response.headers["location"] == script_name + "/"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/", "GET, HEAD"),
        ("POST", "/health", "GET, HEAD"),
        ("PUT", "/echo", "GET, HEAD, POST"),
    ],
)
def test_service3_method_not_allowed(service3, method, path, allow):
    response = call(service3, "service3", path, method=method)
    assert response.status == 405
    assert response.headers["allow"] == allow
    assert response.json()["service"] == "service3"


def test_service3_not_found(service3):
    response = call(service3, "service3", "/nope")
    assert response.status == 404
    assert response.json() == {
        "service": "service3",
        "error": "not found",
        "path": "/nope",
    }


def test_service3_head(service3):
    response = call(service3, "service3", "/health", method="HEAD")
    assert (response.status, response.body) == (200, b"")
    assert int(response.headers["content-length"]) > 0


# --- service4: HTML, package module app -----------------------------------------------------


def test_service4_index(service4):
    response = call(service4, "service4", "/")
    assert response.status == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>service4</title>" in response.text
    assert "<h1>service4</h1>" in response.text
    assert 'href="/api/service4/health"' in response.text


def test_service4_index_escapes_greeting(service4, monkeypatch):
    monkeypatch.setenv("GREETING", "<b>hi</b> & bye")
    text = call(service4, "service4", "/").text
    assert "&lt;b&gt;hi&lt;/b&gt; &amp; bye" in text
    assert "<b>hi</b>" not in text


def test_service4_health(service4):
    response = call(service4, "service4", "/health")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok", "service": "service4"}


def test_service4_pid(service4):
    assert call(service4, "service4", "/pid").json() == {
        "service": "service4",
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }


@pytest.mark.parametrize(
    ("query", "slept"), [("ms=150", 150), ("ms=999999", 2000), ("", 0)]
)
def test_service4_slow(service4_module, service4, monkeypatch, query, slept):
    sleeps = []
    monkeypatch.setattr(
        service4_module, "time", types.SimpleNamespace(sleep=sleeps.append)
    )
    response = call(service4, "service4", "/slow", query=query)
    assert response.status == 200
    assert response.json() == {"service": "service4", "slept_ms": slept}
    assert sleeps == [slept / 1000]


@pytest.mark.parametrize("query", ["ms=abc", "ms=-5"])
def test_service4_slow_rejects_bad_ms(service4, query):
    assert call(service4, "service4", "/slow", query=query).status == 400


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/slow"), ("PUT", "/"), ("DELETE", "/pid")]
)
def test_service4_method_not_allowed(service4, method, path):
    response = call(service4, "service4", path, method=method)
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"


def test_service4_not_found(service4):
    response = call(service4, "service4", "/missing")
    assert response.status == 404
    assert "service4" in response.text


# --- service1: Django, in subprocesses -------------------------------------------------------

SERVICE1 = SAMPLES / "service1"

# Runs inside the release directory: optionally migrates and adds items, then calls the
# project's WSGI application (service1.wsgi, what uWSGI loads) and writes the responses out.
DJANGO_DRIVER = """
import json
import os
import sys
from wsgiref.util import setup_testing_defaults

sys.path.insert(0, os.getcwd())
plan = json.loads(sys.argv[1])

import django
from django.core.management import call_command

django.setup()
if plan["migrate"]:
    call_command("migrate", interactive=False, verbosity=0)
    from api.models import Item

    for name in plan["items"]:
        Item.objects.create(name=name)

from service1.wsgi import application

responses = {}
for label, method, path in plan["requests"]:
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "/api/service1",
        "PATH_INFO": path,
        "QUERY_STRING": "",
    }
    setup_testing_defaults(environ)
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = status
        seen["headers"] = headers

    result = application(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        result.close()
    responses[label] = {
        "status": int(seen["status"].split()[0]),
        "headers": {name.lower(): value for name, value in seen["headers"]},
        "body": body.decode("utf-8"),
    }
with open(plan["output"], "w", encoding="utf-8") as out:
    json.dump(responses, out)
"""

REQUESTS = [
    ("home", "GET", "/"),
    ("health", "GET", "/health/"),
    ("health_no_slash", "GET", "/health"),
    ("health_post", "POST", "/health/"),
    ("go", "GET", "/go/"),
    ("items", "GET", "/items/"),
    ("missing", "GET", "/missing/"),
]


def django_env(**overrides):
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DJANGO_", "MICROSVC_")) and name not in APP_ENV
    }
    env.update(PYTHONDONTWRITEBYTECODE="1", DJANGO_SETTINGS_MODULE="service1.settings")
    env.update({name: str(value) for name, value in overrides.items()})
    return env


def run_in_release(args, env):
    return subprocess.run(
        [sys.executable, *args],
        cwd=SERVICE1,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_django(tmp_path, env, requests=REQUESTS, migrate=True, items=()):
    output = tmp_path / "responses.json"
    plan = {
        "migrate": migrate,
        "items": list(items),
        "requests": requests,
        "output": str(output),
    }
    proc = run_in_release(["-c", DJANGO_DRIVER, json.dumps(plan)], env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(output.read_text())


@pytest.fixture(scope="module")
def service1_responses(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("service1")
    env = django_env(
        MICROSVC_DATA_DIR=tmp / "data",
        GREETING="hello from the tests",
        MICROSVC_RELEASE="20250101T000000Z",
    )
    (tmp / "data").mkdir()
    responses = run_django(tmp, env, items=["first", "second"])
    assert (tmp / "data" / "db.sqlite3").is_file()
    return responses


def test_service1_home(service1_responses):
    response = service1_responses["home"]
    assert response["status"] == 200
    assert response["headers"]["content-type"] == "application/json"
    assert "service1" in response["body"]
    assert json.loads(response["body"]) == {
        "service": "service1",
        "framework": "django",
        "release": "20250101T000000Z",
        "greeting": "hello from the tests",
        "links": {
            "health": "/api/service1/health/",
            "items": "/api/service1/items/",
            "go": "/api/service1/go/",
            "stylesheet": "/api/service1/static/api/style.css",
        },
    }


def test_service1_health(service1_responses):
    response = service1_responses["health"]
    assert response["status"] == 200
    assert json.loads(response["body"]) == {"status": "ok", "service": "service1"}


def test_service1_append_slash_redirect_keeps_prefix(service1_responses):
    response = service1_responses["health_no_slash"]
    assert response["status"] == 301
    assert response["headers"]["location"] == "/api/service1/health/"


def test_service1_health_rejects_post(service1_responses):
    assert service1_responses["health_post"]["status"] == 405


def test_service1_go_redirects_through_gateway(service1_responses):
    response = service1_responses["go"]
    assert response["status"] == 302
    assert response["headers"]["location"] == "/api/service1/"


def test_service1_items_after_migrate(service1_responses):
    response = service1_responses["items"]
    assert response["status"] == 200
    data = json.loads(response["body"])
    assert data["service"] == "service1"
    assert data["count"] == 2
    assert [item["name"] for item in data["items"]] == ["first", "second"]


def test_service1_unknown_path(service1_responses):
    assert service1_responses["missing"]["status"] == 404


def test_service1_health_reports_database_failure(tmp_path):
    # The data directory does not exist, so sqlite cannot open the database.
    env = django_env(MICROSVC_DATA_DIR=tmp_path / "absent")
    responses = run_django(
        tmp_path, env, requests=[("health", "GET", "/health/")], migrate=False
    )
    assert responses["health"]["status"] == 503
    assert json.loads(responses["health"]["body"])["status"] == "error"


def test_service1_allowed_hosts_from_env(tmp_path):
    env = django_env(
        MICROSVC_DATA_DIR=tmp_path, DJANGO_ALLOWED_HOSTS="service1.example.org"
    )
    responses = run_django(
        tmp_path, env, requests=[("health", "GET", "/health/")], migrate=False
    )
    # wsgiref's test environ sends Host: 127.0.0.1, which is not allowed.
    assert responses["health"]["status"] == 400


def test_service1_manage_check_and_migrations_in_sync(tmp_path):
    env = django_env(MICROSVC_DATA_DIR=tmp_path)
    check = run_in_release(["manage.py", "check"], env)
    assert check.returncode == 0, check.stderr
    assert "no issues" in check.stdout
    # The committed migration matches the models.
    makemigrations = run_in_release(
        ["manage.py", "makemigrations", "--check", "--dry-run"], env
    )
    assert makemigrations.returncode == 0, makemigrations.stdout + makemigrations.stderr
    assert "No changes detected" in makemigrations.stdout


def test_service1_collectstatic(tmp_path):
    # collectstatic runs in its own process, as the deployment runs it.
    static_root = tmp_path / "static"
    env = django_env(MICROSVC_DATA_DIR=tmp_path, MICROSVC_STATIC_ROOT=static_root)
    proc = run_in_release(["manage.py", "collectstatic", "--noinput"], env)
    assert proc.returncode == 0, proc.stderr
    assert "service1" in (static_root / "api" / "style.css").read_text()


def test_service1_collectstatic_needs_static_root_from_env(tmp_path):
    proc = run_in_release(
        ["manage.py", "collectstatic", "--noinput"],
        django_env(MICROSVC_DATA_DIR=tmp_path),
    )
    assert proc.returncode != 0
    assert "STATIC_ROOT" in proc.stderr


# --- jobs: a web process that enqueues into Redis, an RQ worker, schedules, a release command ---
# The web process reaches RQ through two functions (queue, fetch) that the tests replace with
# fakes; RQ itself is exercised by the lifecycle scenario, with Redis and real workers.


class FakeJob:
    def __init__(self, job_id, status="queued", value=None):
        self.id, self._status, self._value = job_id, status, value

    def get_status(self):
        return types.SimpleNamespace(value=self._status)

    def return_value(self):
        return self._value


class FakeQueue:
    def __init__(self):
        self.enqueued = []

    def enqueue(self, func, *args):
        self.enqueued.append((func, args))
        return FakeJob("job-%d" % len(self.enqueued))


@pytest.fixture()
def jobs_web(monkeypatch, tmp_path):
    module = import_release_module(SAMPLES / "jobs", "jobsvc.web")
    queue = FakeQueue()
    jobs = {"done-1": FakeJob("done-1", "finished", {"result": "HELLO", "release": "r1"}),
            "wait-1": FakeJob("wait-1", "started")}
    monkeypatch.setattr(module, "queue", lambda: queue)
    monkeypatch.setattr(module, "fetch", jobs.get)
    release = tmp_path / "3f2a9c1e77aa"
    release.mkdir()
    monkeypatch.chdir(release)  # as under uWSGI: every worker runs in its release
    return module.application, queue


def test_jobs_layout_matches_its_entry():
    for path in ("requirements.txt", "jobsvc/__init__.py", "jobsvc/web.py", "jobsvc/tasks.py", "jobsvc/worker.py",
                 "jobsvc/tick.py", "jobsvc/release.py"):
        assert (SAMPLES / "jobs" / path).is_file(), path
    requirements = (SAMPLES / "jobs" / "requirements.txt").read_text().split()
    assert "rq==2.6.1" in requirements and "redis==6.4.0" in requirements


def test_jobs_index_names_version_and_release(jobs_web):
    app, _ = jobs_web
    response = call(app, "jobs", "/")
    assert response.status == 200 and response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["service"] == "jobs" and data["version"] == "1" and data["release"] == "3f2a9c1e77aa"
    assert call(app, "jobs", "/health").json() == {"status": "ok", "service": "jobs"}
    assert call(app, "jobs", "/", method="HEAD").body == b""


def test_jobs_post_enqueues_the_task(jobs_web):
    app, queue = jobs_web
    response = call(app, "jobs", "/jobs", method="POST", query="word=abc&seconds=1.5")
    assert response.status == 202 and response.json() == {"id": "job-1"}
    assert queue.enqueued == [("jobsvc.tasks.process", ("abc", 1.5))]


@pytest.mark.parametrize("query", ["word=a%20b", "word=" + "x" * 65, "seconds=-1", "seconds=100", "seconds=1e3"])
def test_jobs_post_refuses_bad_input(jobs_web, query):
    app, queue = jobs_web
    assert call(app, "jobs", "/jobs", method="POST", query=query).status == 400
    assert queue.enqueued == []


def test_jobs_result_is_read_back(jobs_web):
    app, _ = jobs_web
    assert call(app, "jobs", "/jobs/done-1").json() == {
        "id": "done-1", "status": "finished", "result": {"result": "HELLO", "release": "r1"}}
    assert call(app, "jobs", "/jobs/wait-1").json() == {"id": "wait-1", "status": "started", "result": None}
    assert call(app, "jobs", "/jobs/nope").status == 404
    assert call(app, "jobs", "/jobs/bad_id!").status == 404


@pytest.mark.parametrize("method, path, allow", [("GET", "/jobs", "POST"), ("POST", "/jobs/done-1", "GET, HEAD")])
def test_jobs_method_not_allowed(jobs_web, method, path, allow):
    app, _ = jobs_web
    response = call(app, "jobs", path, method=method)
    assert response.status == 405 and response.headers["allow"] == allow


class FakeClock:
    """time for a job: sleep advances the clock; ``on_sleep`` runs after each sleep."""

    def __init__(self, now=1700000000.5, on_sleep=None):
        self.now, self.slept, self.on_sleep = now, [], on_sleep

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.slept))


def test_jobs_task_names_the_release_that_ran_it(monkeypatch, tmp_path):
    tasks = import_release_module(SAMPLES / "jobs", "jobsvc.tasks")
    clock = FakeClock()
    monkeypatch.setattr(tasks, "time", clock)
    monkeypatch.delenv("MICROSVC_DATA_DIR", raising=False)
    (tmp_path / "b0ccdb73c0fe").mkdir()
    monkeypatch.chdir(tmp_path / "b0ccdb73c0fe")
    result = tasks.process("hello", 999)
    assert result["result"] == "HELLO" and result["word"] == "hello"
    assert result["release"] == "b0ccdb73c0fe" and result["version"] == "1" and result["pid"] == os.getpid()
    assert result["started"] == 1700000000.5 and result["worker_pid"] == os.getppid()
    assert result["ended"] - result["started"] == pytest.approx(99.0, abs=0.3)
    assert result["ended"] - result["started"] >= 99.0


def test_a_waiting_job_says_where_it_runs_and_ends_when_released(monkeypatch, tmp_path):
    tasks = import_release_module(SAMPLES / "jobs", "jobsvc.tasks")
    clock = FakeClock(on_sleep=lambda n: (tmp_path / "release-held").touch() if n == 10 else None)
    monkeypatch.setattr(tasks, "time", clock)
    monkeypatch.setenv("MICROSVC_DATA_DIR", str(tmp_path))
    result = tasks.process("held", 90)
    assert (tmp_path / "started-held").read_text() == "%d\n" % os.getppid()
    assert len(clock.slept) == 10 and result["ended"] - result["started"] == pytest.approx(2.0)
    assert tasks.process("quick", 0)["ended"] == clock.now and not (tmp_path / "started-quick").exists()


def test_jobs_tick_writes_a_start_and_an_end_line(monkeypatch, tmp_path):
    tick = import_release_module(SAMPLES / "jobs", "jobsvc.tick")
    monkeypatch.setattr(tick, "time", types.SimpleNamespace(sleep=lambda s: None))
    monkeypatch.setenv("MICROSVC_DATA_DIR", str(tmp_path))
    assert tick.main(["slow", "5"]) == 0
    lines = (tmp_path / "ticks-slow.log").read_text().splitlines()
    assert [line.split()[1:3] for line in lines] == [["slow", "start"], ["slow", "end"]]
    assert all("version=1" in line and "pid=%d" % os.getpid() in line for line in lines)


def test_jobs_release_command_records_its_release(monkeypatch, tmp_path):
    release = import_release_module(SAMPLES / "jobs", "jobsvc.release")
    monkeypatch.setenv("MICROSVC_DATA_DIR", str(tmp_path))
    (tmp_path / "r9").mkdir()
    monkeypatch.chdir(tmp_path / "r9")
    assert release.main() == 0
    assert (tmp_path / "release-commands.log").read_text().startswith("release=r9 version=1 host=")


def test_jobs_worker_class_says_which_release_starts(monkeypatch):
    started = []

    class Worker:
        log = types.SimpleNamespace(info=lambda fmt, args: started.append(fmt % args))

        def work(self, *args, **kwargs):
            return "worked"

    monkeypatch.setitem(sys.modules, "rq", types.SimpleNamespace(Worker=Worker))
    worker = import_release_module(SAMPLES / "jobs", "jobsvc.worker")
    assert worker.Worker().work() == "worked"
    assert started and "version 1" in started[0]


# --- shop: Django with a Celery worker and beat, in a subprocess ---------------------------------
# Celery itself (and Redis) is exercised by the lifecycle scenario; here a stand-in ``celery``
# package records how the project configures its app, and the task's function is called with a
# stand-in for Celery's bound task (its name and request).

SHOP = SAMPLES / "shop"

FAKE_CELERY = '''
class Celery:
    def __init__(self, main, include=()):
        self.main, self.include, self.config_source, self.tasks = main, list(include), None, {}
        self.conf = type("Conf", (), {})()

    def config_from_object(self, source, namespace=None):
        self.config_source = (source, namespace)

    def task(self, bind=False):
        def register(function):
            self.tasks["%s.%s" % (function.__module__, function.__name__)] = bind
            return function
        return register
'''

SHOP_DRIVER = """
import json
import os
import sys
import types
from wsgiref.util import setup_testing_defaults

sys.path.insert(0, os.getcwd())
import django
from django.conf import settings
from django.core.management import call_command

import shop
django.setup()
call_command("migrate", interactive=False, verbosity=0)
from shop.tasks import record
from shop.wsgi import application

app = shop.celery_app
task = types.SimpleNamespace(name="shop.tasks.record",
                             request=types.SimpleNamespace(id="t-1", hostname="celery@node1"))
returned = record(task, "beat")
if sys.argv[1]:  # a half-written last line and a cut first line are skipped by runs/
    with open(settings.SHOP_TASK_RECORD, "a", encoding="utf-8") as handle:
        handle.write(sys.argv[1])

def get(path):
    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/api/shop", "PATH_INFO": path, "QUERY_STRING": ""}
    setup_testing_defaults(environ)
    seen = {}
    body = b"".join(application(environ, lambda status, headers, exc_info=None: seen.update(status=status)))
    return {"status": int(seen["status"].split()[0]), "body": json.loads(body)}

print(json.dumps({
    "broker": settings.CELERY_BROKER_URL,
    "config_source": app.config_source,
    "include": app.include,
    "tasks": app.tasks,
    "beat_schedule": app.conf.beat_schedule,
    "returned": returned,
    "record": open(settings.SHOP_TASK_RECORD, encoding="utf-8").read(),
    "pid": os.getpid(), "ppid": os.getppid(),
    "home": get("/"), "health": get("/health/"), "runs": get("/runs/"),
}))
"""


def run_shop(tmp_path, extra_line="", **env):
    fake = tmp_path / "fake"
    (fake / "celery").mkdir(parents=True)
    (fake / "celery" / "__init__.py").write_text(FAKE_CELERY)
    release = tmp_path / "6d1f0c2ab934"
    shutil.copytree(SHOP, release, ignore=shutil.ignore_patterns("__pycache__", "data-local"))
    (tmp_path / "data").mkdir()
    environ = django_env(PYTHONPATH=fake, MICROSVC_DATA_DIR=tmp_path / "data", **env)
    environ.pop("DJANGO_SETTINGS_MODULE")  # the project sets it itself (shop/celery.py, shop/wsgi.py)
    proc = subprocess.run([sys.executable, "-c", SHOP_DRIVER, extra_line], cwd=release, env=environ,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_shop_layout_matches_its_entry():
    for path in ("manage.py", "shop/__init__.py", "shop/celery.py", "shop/settings.py", "shop/tasks.py",
                 "shop/urls.py", "shop/views.py", "shop/wsgi.py"):
        assert (SHOP / path).is_file(), path
    assert (SHOP / "requirements.txt").read_text().splitlines() == ["Django==5.2.20", "celery[redis]==5.6.3"]


def test_shop_celery_app_reads_the_broker_from_the_environment_and_beat_sends_the_task(tmp_path):
    seen = run_shop(tmp_path, CELERY_BROKER_URL="redis://10.0.3.7:6379/4")
    assert seen["broker"] == "redis://10.0.3.7:6379/4"
    assert seen["config_source"] == ["django.conf:settings", "CELERY"]
    assert seen["include"] == ["shop.tasks"] and seen["tasks"] == {"shop.tasks.record": True}
    assert seen["beat_schedule"] == {
        "record-every-2-seconds": {"task": "shop.tasks.record", "schedule": 2.0, "args": ["beat"]}}


def test_shop_task_records_who_ran_it(tmp_path):
    seen = run_shop(tmp_path)
    assert seen["broker"] == "redis://127.0.0.1:6379/0"
    line = json.loads(seen["record"])
    assert line == seen["returned"]
    assert line["task"] == "shop.tasks.record" and line["id"] == "t-1" and line["sender"] == "beat"
    assert line["hostname"] == "celery@node1" and line["host"] == socket.gethostname()
    assert line["release"] == "6d1f0c2ab934" and line["pid"] == seen["pid"] and line["worker_pid"] == seen["ppid"]


def test_shop_web_answers_home_health_and_the_last_runs(tmp_path):
    seen = run_shop(tmp_path, extra_line='{"task": "shop.tasks.rec')
    assert seen["home"] == {"status": 200, "body": {
        "service": "shop", "release": "6d1f0c2ab934",
        "links": {"health": "/api/shop/health/", "runs": "/api/shop/runs/"}}}
    assert seen["health"] == {"status": 200, "body": {"status": "ok", "service": "shop"}}
    assert seen["runs"]["status"] == 200
    assert seen["runs"]["body"] == {"service": "shop", "runs": [seen["returned"]]}
