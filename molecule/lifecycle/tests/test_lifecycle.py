"""Per-service lifecycle on one host: add, redeploy under load, break, roll back, remove; then
a service's workers, schedules and release commands (the jobs sample, with Redis); last, a
Django service with a Celery worker and beat (the shop sample, docs/processes.md's example).

The scenario converges the four demo services; these tests then act as an operator does:
edit the service list (a fresh inventory per step, pointing at copies of the sample code)
and run site.yml or rollback.yml from the controller. The tests run in file order; each
step starts from the state the previous one left.
"""

import concurrent.futures
import datetime
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import (
    PROJECT,
    Load,
    demo_services,
    http,
    recap_changed,
    run_playbook,
    server_pid,
    vassal_processes,
    write_inventory,
)

HOST = "microsvc-lifecycle"
OTHERS = ["service1", "service3", "service4", "service7"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("lifecycle")


@pytest.fixture(scope="module")
def code(workdir):
    """Editable copies of the sample code, as an operator's working trees."""
    base = workdir / "code"
    for name in ("service1", "service2", "service3", "service4", "service7", "jobs"):
        shutil.copytree(os.path.join(PROJECT, "samples", name), base / name,
                        ignore=shutil.ignore_patterns("__pycache__", "data-local"))
    # service5 comes from a git repository at a tag, service6 from a release tarball.
    for name, text in (("service5", "added by an inventory edit, from git"),
                       ("service6", "added by an inventory edit, from an archive")):
        (base / name).mkdir()
        (base / name / "hello.py").write_text(
            "def application(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            "    return [b'%s: %s\\n']\n" % (name, text))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(git + ["init", "-q", "-b", "main"], cwd=base / "service5", check=True)
    subprocess.run(git + ["add", "-A"], cwd=base / "service5", check=True)
    subprocess.run(git + ["commit", "-q", "-m", "v1"], cwd=base / "service5", check=True)
    subprocess.run(git + ["tag", "v1.0"], cwd=base / "service5", check=True)
    with tarfile.open(base / "service6-1.0.tar.gz", "w:gz") as tar:
        tar.add(base / "service6", arcname="service6-1.0")
    return base


@pytest.fixture(scope="module")
def state():
    """Expectations carried from one step to the next."""
    return {}


def services_with(changes=(), drop=(), add=()):
    services = [dict(s) for s in demo_services() if s["name"] not in drop]
    for name, fields in changes:
        for svc in services:
            if svc["name"] == name:
                svc.update(fields)
    return services + list(add)


def deploy(workdir, step, services, args=(), playbook="playbooks/site.yml"):
    inv = write_inventory(str(workdir / ("inv-" + step)), HOST, services)
    return run_playbook(inv, playbook, args)


def gateway_write(out):
    """What the run's gateway configuration call reported: ok (nothing changed, nginx not
    reloaded) or changed (installed and reloaded in the same call)."""
    found = re.findall(r"TASK \[microsvc\.deploy\.nginx_gateway : Gateway \| Write the gateway's files[^\n]*\n"
                       r"(ok|changed): ", out)
    assert len(found) == 1, out
    return found[0]


def reload_handler_ran(out):
    """Whether the gateway's reload handler ran (it is listed, and skipped, when the configuration
    call reloaded nginx itself)."""
    return re.search(r"RUNNING HANDLER \[microsvc\.deploy\.nginx_gateway : Reload nginx\][^\n]*\n(ok|changed):",
                     out) is not None


def new_services(code):
    return [
        {"name": "service5", "source": {"type": "git", "repo": "file://%s" % (code / "service5"), "version": "v1.0"},
         "module": "hello", "health": {"path": ""}},
        {"name": "service6", "source": {"type": "archive", "path": str(code / "service6-1.0.tar.gz")},
         "module": "hello", "health": {"path": ""}},
    ]


def masters(host, names):
    """Each service's web server: its uWSGI master, or its ASGI service's live slot's server."""
    return {name: server_pid(host, name) for name in names}


def set_body(code, text):
    app = code / "service2" / "app.py"
    source = app.read_text()
    start = source.index('lines = ["') + len('lines = ["')
    end = source.index('"]', start)
    app.write_text(source[:start] + text + source[end:])


def test_adding_a_service_by_inventory_edit_leaves_the_others_alone(host, workdir, code, state):
    before = masters(host, ["service1", "service2", "service3", "service4", "service7"])
    assert all(before.values()), before
    rc, out = deploy(workdir, "add", services_with(add=new_services(code)))
    assert rc == 0, out
    # The new routes went live in the call that installed them: no reload was left to the handler.
    assert gateway_write(out) == "changed", out
    assert not reload_handler_ran(out), out
    for name, origin in (("service5", "from git"), ("service6", "from an archive")):
        resp = http(host, "/api/%s/" % name)
        assert resp["status"] == 200 and "%s: added by an inventory edit, %s" % (name, origin) in resp["body"], resp
    marker = host.file("/opt/www/service5/current/.microsvc-release").content_string
    assert '"revision": "' in marker and "file://" in marker
    assert masters(host, before) == before
    state["added"] = new_services(code)


def currents(host, names):
    """Each service's current release and when the link last moved."""
    return {name: host.check_output("stat -c '%%N %%Y' /opt/www/%s/current" % name) for name in names}


def test_six_new_services_in_one_run_one_broken(host, workdir, code, state):
    """Six services added in one run, one of which cannot import: the five others serve, the
    broken one never goes live and leaves no route, and the play fails naming only it."""
    before = masters(host, ["service1", "service2", "service3", "service4", "service5", "service6", "service7"])
    batch = []
    for index in range(6):
        name = "batch%d" % index
        (code / name).mkdir()
        body = ("def application(environ, start_response):\n"
                "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                "    return [b'%s answers from a batch\\n']\n" % name)
        if index == 3:
            body = "import module_that_does_not_exist\n" + body
        (code / name / "app.py").write_text(body)
        batch.append({"name": name, "source": str(code / name), "module": "app", "health": {"path": ""}})
    rc, out = deploy(workdir, "six", services_with(add=state["added"] + batch))
    assert rc != 0, out
    failures = out[out.index("service 'batch3': deploy of release"):]
    assert "module_that_does_not_exist" in failures[:2000], failures[:2000]
    for name in ("batch0", "batch1", "batch2", "batch4", "batch5"):
        assert "service '%s': deploy of release" % name not in out, out
        answer = http(host, "/api/%s/" % name)
        assert answer["status"] == 200 and "%s answers from a batch" % name in answer["body"], answer
    assert http(host, "/api/batch3/")["status"] == 404
    assert not host.file("/etc/nginx/microsvc/routes/batch3.conf").exists
    assert not host.file("/etc/nginx/microsvc/upstreams/batch3.conf").exists
    assert not host.file("/etc/uwsgi/vassals/batch3.ini").exists
    assert vassal_processes(host, "batch3") == []
    assert masters(host, before) == before
    # Dropped from the list again: removed by set difference, the others untouched.
    rc, out = deploy(workdir, "six-gone", services_with(add=state["added"]))
    assert rc == 0, out
    for entry in batch:
        assert http(host, "/api/%s/" % entry["name"])["status"] == 404
    assert masters(host, before) == before
    state["currents"] = currents(host, OTHERS + ["service5", "service6"])


def test_code_redeploy_under_load_fails_no_request(host, workdir, code, state):
    set_body(code, "service2: release B")
    services = services_with(changes=[("service2", {"source": str(code / "service2"), "keep_releases": 3})],
                             add=state["added"])
    before = masters(host, ["service1", "service2", "service3", "service4", "service5", "service6", "service7"])
    with Load(host, ["/api/service2/", "/api/service4/"], concurrency=6, duration=120) as load:
        rc, out = deploy(workdir, "release-b", services, ["-e", "deploy_services=service2"])
    result = load.result()
    assert rc == 0, out
    for path in ("/api/service2/", "/api/service4/"):
        stats = result["urls"]["http://127.0.0.1" + path]
        assert stats["requests"] > 100, stats
        assert stats["errors"] == 0, stats
        assert stats["non_2xx"] == 0, stats
    bodies = result["urls"]["http://127.0.0.1/api/service2/"]["bodies"]
    assert any("release B" in b for b in bodies) and any("plain WSGI app" in b for b in bodies), bodies
    assert "release B" in http(host, "/api/service2/")["body"]
    # A chain reload replaces workers, not the vassal: every master, service2's included, stayed.
    assert masters(host, before) == before
    # Only service2's work was done: the gateway did not change and no other service was deployed.
    assert gateway_write(out) == "ok", out
    assert not reload_handler_ran(out), out
    assert currents(host, OTHERS + ["service5", "service6"]) == state["currents"], out
    state["release_b_services"] = services


def test_code_only_deploy_reuses_the_virtualenv(host, workdir, code, state):
    venvs_before = host.check_output("ls /opt/www/service1/venvs")
    marker_before = host.check_output("stat -c %Y /opt/www/service1/venvs/*/.microsvc-venv")
    views = code / "service1" / "api" / "views.py"
    views.write_text(views.read_text().replace('"framework": "django"', '"framework": "django (code-only deploy)"'))
    services = [dict(s) for s in state["release_b_services"]]
    for svc in services:
        if svc["name"] == "service1":
            svc["source"] = str(code / "service1")
    rc, out = deploy(workdir, "service1-code", services, ["-e", "deploy_services=service1"])
    assert rc == 0, out
    assert "code-only deploy" in http(host, "/api/service1/")["body"]
    assert host.check_output("ls /opt/www/service1/venvs") == venvs_before
    assert host.check_output("stat -c %Y /opt/www/service1/venvs/*/.microsvc-venv") == marker_before
    state["release_b_services"] = services


def with_fields(services, name, **fields):
    return [dict(s, **fields) if s["name"] == name else dict(s) for s in services]


def test_environment_change_reaches_the_service_and_dropped_names_leave_it(host, workdir, state):
    others = masters(host, OTHERS)
    services = with_fields(state["release_b_services"], "service2", env={"GREETING": "hello v1"})
    rc, out = deploy(workdir, "env-v1", services, ["-e", "deploy_services=service2"])
    assert rc == 0, out
    assert "greeting: hello v1" in http(host, "/api/service2/")["body"]
    # Dropped from the inventory: each worker reads the file itself and the master never holds
    # the service's environment, so the variable leaves the running service with the file.
    rc, out = deploy(workdir, "env-none", state["release_b_services"], ["-e", "deploy_services=service2"])
    assert rc == 0, out
    body = http(host, "/api/service2/")["body"]
    assert "release B" in body and "greeting:" not in body, body
    assert not host.file("/opt/www/service2/env.unset").exists
    assert not host.file("/opt/www/service2/env.previous").exists
    assert masters(host, OTHERS) == others


def test_broken_release_fails_naming_the_service_and_old_code_keeps_serving(host, workdir, code, state):
    others = masters(host, OTHERS)
    good = (code / "service2" / "app.py").read_text()
    (code / "service2" / "app.py").write_text("import module_that_does_not_exist\n" + good)
    try:
        rc, out = deploy(workdir, "broken", state["release_b_services"], ["-e", "deploy_services=service2"])
    finally:
        (code / "service2" / "app.py").write_text(good)
    assert rc != 0
    assert "service 'service2'" in out and "module_that_does_not_exist" in out, out
    assert "release B" in http(host, "/api/service2/")["body"]
    assert masters(host, OTHERS) == others
    for name in OTHERS:
        assert http(host, "/api/%s/" % name)["status"] == 200


def test_failed_service_is_judged_by_its_own_results_and_gets_its_environment_back(host, workdir, code, state):
    """service1 deploys fine, then service2 fails before its switch in the same run: service2's
    rescue must not act on service1's switch, and its new environment file must not stay."""
    env_before = host.file("/opt/www/service2/env").content_string
    views = code / "service1" / "api" / "views.py"
    views.write_text(views.read_text().replace("(code-only deploy)", "(deployed with a failing neighbour)"))
    services = with_fields(state["release_b_services"], "service2", env={"GREETING": "from a failed deploy"})
    good = (code / "service2" / "app.py").read_text()
    (code / "service2" / "app.py").write_text("import module_that_does_not_exist\n" + good)
    try:
        rc, out = deploy(workdir, "one-fails", services)
    finally:
        (code / "service2" / "app.py").write_text(good)
    assert rc != 0
    assert "deployed with a failing neighbour" in http(host, "/api/service1/")["body"]
    message = out[out.index("service 'service2': deploy of release"):]
    assert "was never switched away from and still serves; the environment file of the previous deploy was " \
           "put back" in " ".join(message.split()), message[:1500]
    assert "Rolled back" not in message[:1500]
    body = http(host, "/api/service2/")["body"]
    assert "release B" in body and "greeting:" not in body, body
    assert host.file("/opt/www/service2/env").content_string == env_before
    assert not host.file("/opt/www/service2/env.previous").exists


def test_unhealthy_release_is_rolled_back(host, workdir, code, state):
    good = (code / "service2" / "app.py").read_text()
    current_before = host.check_output("readlink /opt/www/service2/current")
    (code / "service2" / "app.py").write_text(good.replace('"/health": lambda: "ok\\n"', '"/health": None'))
    assert good != (code / "service2" / "app.py").read_text()
    # The new environment went live with the new release; it goes back with the release.
    services = with_fields(state["release_b_services"], "service2", env={"GREETING": "unhealthy release"})
    try:
        rc, out = deploy(workdir, "unhealthy", services, ["-e", "deploy_services=service2"])
    finally:
        (code / "service2" / "app.py").write_text(good)
    assert rc != 0
    assert "service 'service2'" in out and "health check saw HTTP 404" in out, out
    assert "Rolled back to release" in out and "and its environment, which is healthy again" in out, out
    assert host.check_output("readlink /opt/www/service2/current") == current_before
    body = http(host, "/api/service2/")["body"]
    assert "release B" in body and "greeting:" not in body, body
    assert "GREETING" not in host.file("/opt/www/service2/env").content_string


def test_rollback_playbook_returns_to_the_previous_release(host, workdir, state):
    # rollback_service is the name; service is the one of earlier versions, which keeps working.
    for names in (["-e", "rollback_service=service2"], ["-e", "service=service2"]):
        rc, out = deploy(workdir, "rollback", state["release_b_services"], names, playbook="playbooks/rollback.yml")
        assert rc == 0, out
        body = http(host, "/api/service2/")["body"]
        assert "plain WSGI app" in body and "release B" not in body
        # site.yml puts back what the inventory says.
        rc, out = deploy(workdir, "release-b-again", state["release_b_services"], ["-e", "deploy_services=service2"])
        assert rc == 0, out
        assert "release B" in http(host, "/api/service2/")["body"]


def test_redeploying_every_service_in_one_run_under_load(host, workdir, code, state):
    """New code for every service at once: one batch, no failed request, no master restarted (the
    ASGI service's new release starts in its other slot)."""
    services = []
    for svc in state["release_b_services"]:
        svc = dict(svc)
        if svc["name"] in ("service1", "service2", "service3", "service4", "service7"):
            svc["source"] = str(code / svc["name"])
            (code / svc["name"] / "REVISION").write_text("every service, one run\n")
        services.append(svc)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    (code / "service5" / "REVISION").write_text("every service, one run\n")
    subprocess.run(git + ["add", "-A"], cwd=code / "service5", check=True)
    subprocess.run(git + ["commit", "-q", "-m", "v1.1"], cwd=code / "service5", check=True)
    subprocess.run(git + ["tag", "v1.1"], cwd=code / "service5", check=True)
    (code / "service6" / "REVISION").write_text("every service, one run\n")
    with tarfile.open(code / "service6-1.1.tar.gz", "w:gz") as tar:
        tar.add(code / "service6", arcname="service6-1.1")
    for svc in services:
        if svc["name"] == "service5":
            svc["source"] = dict(svc["source"], version="v1.1")
        if svc["name"] == "service6":
            svc["source"] = dict(svc["source"], path=str(code / "service6-1.1.tar.gz"))
    names = [s["name"] for s in services]
    wsgi = [s["name"] for s in services if s.get("interface") != "asgi"]
    asgi_before = masters(host, ["service7"])
    before, currents_before = masters(host, wsgi), currents(host, names)
    paths = ["/api/%s/" % name for name in names]
    with Load(host, paths, concurrency=6, duration=240) as load:
        rc, out = deploy(workdir, "everything", services)
    result = load.result()
    assert rc == 0, out
    for path in paths:
        stats = result["urls"]["http://127.0.0.1" + path]
        assert stats["requests"] > 20 and stats["errors"] == 0 and stats["non_2xx"] == 0, (path, stats)
    assert masters(host, before) == before
    assert masters(host, ["service7"])["service7"] not in (None, asgi_before["service7"])
    after = currents(host, names)
    assert all(after[n].split()[-2] != currents_before[n].split()[-2] for n in names), (currents_before, after)
    state["release_b_services"] = services


def test_removing_a_service_stops_it_and_its_route_only(host, workdir, state):
    services = [dict(s) for s in state["release_b_services"]]
    for svc in services:
        if svc["name"] == "service3":
            svc["state"] = "absent"
    others = masters(host, ["service1", "service2", "service4", "service5", "service6", "service7"])
    rc, out = deploy(workdir, "remove", services)
    assert rc == 0, out
    assert http(host, "/api/service3/")["status"] == 404
    assert not host.file("/opt/www/service3/uwsgi.sock").exists
    assert not host.file("/etc/uwsgi/vassals/service3.ini").exists
    assert not host.file("/etc/nginx/microsvc/routes/service3.conf").exists
    assert not host.file("/etc/nginx/microsvc/upstreams/service3.conf").exists
    assert vassal_processes(host, "service3") == []
    assert host.file("/opt/www/service3/current").exists  # code stays without purge
    assert masters(host, others) == others
    for name in others:
        assert http(host, "/api/%s/" % name)["status"] == 200
    # Running again changes nothing.
    rc, out = deploy(workdir, "remove-again", services)
    assert rc == 0 and recap_changed(out) == 0, out
    state["after_remove"] = services


def test_purge_removes_code_and_user(host, workdir, state):
    services = [dict(s) for s in state["after_remove"]]
    for svc in services:
        if svc["name"] == "service3":
            svc["purge"] = True
    rc, out = deploy(workdir, "purge", services)
    assert rc == 0, out
    assert not host.file("/opt/www/service3").exists
    assert not host.user("service3").exists


def test_old_releases_are_pruned_to_keep_releases(host):
    # service2 (keep_releases: 3) went live with A, B, an unhealthy D (rolled back), A again
    # (rollback playbook), B again and B with a REVISION file (every service redeployed); a broken C
    # was unpacked but never went live. The three
    # that went live most recently stay; C is gone.
    releases = host.check_output("ls /opt/www/service2/releases").split()
    current = host.check_output("readlink /opt/www/service2/current").split("/")[-1]
    history = json.loads(host.file("/opt/www/service2/releases/.history").content_string)
    assert current in releases and len(releases) == 3, releases
    assert sorted(releases) == sorted(history[-3:]), (releases, history)


def test_service_dropped_from_the_list_is_removed_by_set_difference(host, workdir, state):
    services = [s for s in state["after_remove"] if s["name"] not in ("service5", "service6")]
    rc, out = deploy(workdir, "drop", services)
    assert rc == 0, out
    for name in ("service5", "service6"):
        assert http(host, "/api/%s/" % name)["status"] == 404
        assert not host.file("/etc/uwsgi/vassals/%s.ini" % name).exists
        assert not host.file("/etc/nginx/microsvc/routes/%s.conf" % name).exists
        assert vassal_processes(host, name) == []
        assert host.file("/opt/www/%s" % name).exists  # never purged without being asked
    assert sorted(host.check_output("ls /etc/nginx/microsvc/routes").split()) == [
        "service1.conf", "service2.conf", "service4.conf", "service7.conf"]
    state["final"] = services


# --- workers, schedules and release commands -----------------------------------------------------
# The jobs sample: its web process enqueues into Redis (installed by prepare.yml), an RQ worker
# (two processes) runs the jobs and says which release it runs, a schedule "tick" runs every 2
# seconds, "slow" every 2 seconds for 5, and a release command records each release.

WORKERS = ["microsvc-jobs.worker-default@1.service", "microsvc-jobs.worker-default@2.service"]
SCHEDULES = "/opt/www/jobs/shared/log/schedules"


def jobs_entry(code, **fields):
    entry = {"name": "jobs", "source": str(code / "jobs"), "module": "jobsvc.web", "health": {"path": "health"},
             "env": {"RQ_REDIS_URL": "redis://127.0.0.1:6379/0"},
             "workers": [{"name": "default", "argv": ["rq", "worker", "--worker-class", "jobsvc.worker.Worker", "jobs"],
                          "count": 2}],
             "schedules": [{"name": "tick", "argv": ["python", "-m", "jobsvc.tick", "tick"], "interval": 2,
                            "keep_logs": 3},
                           {"name": "slow", "argv": ["python", "-m", "jobsvc.tick", "slow", "5"], "interval": 2}],
             "release_commands": [{"name": "record", "argv": ["python", "-m", "jobsvc.release"]}]}
    entry.update(fields)
    return entry


def set_version(code, version, broken_worker=False):
    init = code / "jobs" / "jobsvc" / "__init__.py"
    init.write_text(re.sub(r'VERSION = "[^"]*"', 'VERSION = "%s"' % version, init.read_text()))
    worker = code / "jobs" / "jobsvc" / "worker.py"
    text = worker.read_text().replace('raise RuntimeError("this release of the worker cannot start")\n', "")
    worker.write_text(('raise RuntimeError("this release of the worker cannot start")\n' if broken_worker else "")
                      + text)


def enqueue(host, word, seconds=0):
    answer = http(host, "/api/jobs/jobs?word=%s&seconds=%s" % (word, seconds), method="POST")
    assert answer["status"] == 202, answer
    return json.loads(answer["body"])["id"]


def job_result(host, job_id, timeout=90):
    """The job once a worker finished it (through the gateway)."""
    deadline = time.time() + timeout
    while True:
        answer = http(host, "/api/jobs/jobs/" + job_id)
        data = json.loads(answer["body"])
        if data.get("status") in ("finished", "failed", "stopped", "canceled"):
            return data
        assert time.time() < deadline, data
        time.sleep(0.5)


def held_by(host, old, started_file, timeout=60):
    """The worker unit whose process runs the held job (the job wrote its worker's pid)."""
    deadline = time.time() + timeout
    while not host.file(started_file).exists:
        assert time.time() < deadline, "the held job did not start"
        time.sleep(0.5)
    pid = int(host.file(started_file).content_string.strip())
    units = [unit for unit, (main, _) in old.items() if main == pid]
    assert units, (pid, old)
    return units[0]


def wait_for_stopping(host, unit, since, running, timeout=240):
    """Until systemd logged that it stops ``unit`` (after ``since``), while the deploy runs."""
    deadline = time.time() + timeout
    while True:
        out = host.run("journalctl -u %s --since @%d -o cat --no-pager | grep -c '^Stopping ' || true" % (unit, since))
        if out.stdout.strip() not in ("", "0"):
            return
        assert not running.done(), running.result()
        assert time.time() < deadline, "the deploy never stopped %s" % unit
        time.sleep(0.5)


def release_of(host, name="jobs"):
    return host.check_output("readlink /opt/www/%s/current" % name).split("/")[-1]


def worker_mains(host):
    """{unit: (main pid, release it runs)} of the worker's processes, from systemd and ps (the
    command runs from the release's virtualenv: .../releases/<id>/.venv/bin/rq)."""
    out = {}
    for unit in WORKERS:
        pid = int(host.check_output("systemctl show -p MainPID --value %s" % unit) or 0)
        args = host.run("ps -o args= -p %d" % pid).stdout if pid else ""
        match = re.search(r"/releases/(\w+)/\.venv/bin/rq ", args)
        out[unit] = (pid, match.group(1) if match else args.strip())
    return out


def stamp(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC).timestamp()


def runs(host, schedule):
    """[(event, time, fields)] of a schedule's runs.log."""
    out = []
    for line in host.file("%s/%s/runs.log" % (SCHEDULES, schedule)).content_string.splitlines():
        moment, event, rest = line.split(" ", 2)
        out.append((event.rstrip(":"), stamp(moment), dict(w.split("=", 1) for w in rest.split() if "=" in w)))
    return out


def test_a_service_with_workers_schedules_and_a_release_command(host, workdir, code, state):
    set_version(code, "1")
    services = state["final"] + [jobs_entry(code)]
    rc, out = deploy(workdir, "jobs-add", services, ["-e", "deploy_services=jobs"])
    assert rc == 0, out
    release = release_of(host)
    # Two worker processes, as the service's user, in the current release.
    mains = worker_mains(host)
    assert all(pid and where == release for pid, where in mains.values()), mains
    assert {host.check_output("ps -o user= -p %d" % pid) for pid, _ in mains.values()} == {"jobs"}
    # A job enqueued through the gateway is run by a worker of this release.
    result = job_result(host, enqueue(host, "first"))
    assert result["status"] == "finished", result
    assert result["result"]["result"] == "FIRST" and result["result"]["release"] == release
    assert result["result"]["version"] == "1" and result["result"]["worker_pid"] in {p for p, _ in mains.values()}
    # The release command ran once, in the new release, before it went live.
    assert host.file("/opt/www/jobs/shared/data/release-commands.log").content_string == \
        "release=%s version=1 host=%s\n" % (release, host.check_output("hostname"))
    state["jobs"] = {"services": services, "release_1": release}


def test_schedules_run_at_their_interval_never_overlap_and_log_every_run(host, state):
    deadline = time.time() + 60
    while len([r for r in runs(host, "tick") if r[0] == "started"]) < 6 or \
            len([r for r in runs(host, "slow") if r[0] == "finished"]) < 2:
        assert time.time() < deadline, (runs(host, "tick"), runs(host, "slow"))
        time.sleep(1)
    # tick: due every 2 seconds (counted from the previous start, as systemd saw the timer fire),
    # and each time it ran; each run has its own log and the last three are kept (keep_logs: 3).
    due = [float(line.split()[0]) for line in host.check_output(
        "journalctl -u microsvc-jobs.schedule-tick.service -o short-unix --no-pager | grep ' Starting ' | tail -8"
    ).splitlines()]
    gaps = sorted(b - a for a, b in itertools.pairwise(due))
    assert len(gaps) >= 5 and gaps[0] > 1.5 and 1.8 < gaps[len(gaps) // 2] < 2.6, gaps
    assert len([r for r in runs(host, "tick") if r[0] == "started"]) >= len(due) - 2
    for _attempt in range(10):  # the schedule keeps running: a listing between two equal reads of runs.log
        before = runs(host, "tick")
        logs = host.check_output("ls %s/tick" % SCHEDULES).split()
        if runs(host, "tick") == before:
            break
    per_run = [name for name in logs if name != "runs.log"]
    finished = [f["log"] for event, _t, f in before if event == "finished"]
    assert "runs.log" in logs and 3 <= len(per_run) <= 4, logs  # a run may be starting
    assert set(finished[-3:]) <= set(per_run) and not set(finished[:-4]) & set(per_run), (finished, per_run)
    assert "tick: done" in host.file("%s/tick/%s" % (SCHEDULES, finished[-1])).content_string
    assert host.file("%s/tick/%s" % (SCHEDULES, finished[-1])).user == "jobs"
    # slow (5 s every 2 s): never two runs at once; the runs that fell due meanwhile were
    # skipped, and said so.
    events = runs(host, "slow")
    spans, open_run = [], None
    for event, moment, fields in events:
        if event == "started":
            assert open_run is None, events
            open_run = (moment, fields["log"])
        elif event == "finished":
            assert open_run and fields["log"] == open_run[1] and fields["exit"] == "0", events
            spans.append((open_run[0], moment))
            open_run = None
    skips = [moment for event, moment, _ in events if event == "skipped"]
    assert len(spans) >= 2 and skips, events
    assert any(start < skip < end for skip in skips for start, end in spans), events
    ticks = host.file("/opt/www/jobs/shared/data/ticks-slow.log").content_string.splitlines()
    assert all("release=%s" % state["jobs"]["release_1"] in line for line in ticks)


def test_status_shows_each_worker_process_and_each_schedule(host, workdir, state):
    rc, out = deploy(workdir, "jobs-status", state["jobs"]["services"], playbook="playbooks/status.yml")
    assert rc == 0, out
    mains = worker_mains(host)
    for index, unit in enumerate(WORKERS, 1):
        assert re.search(r"- jobs +default +%d +active +%d +\d+m\d+s +0\b" % (index, mains[unit][0]), out), out
    # (while the schedule's check runs, systemd has no next time yet: "due now")
    assert re.search(r"- jobs +tick +\d+m\d+s ago +(ok|running) +(in \d+m\d+s|due now)", out), out
    assert re.search(r"- jobs +slow +\d+m\d+s ago +(ok|running) +", out), out


def test_a_killed_worker_process_comes_back(host):
    unit = WORKERS[0]
    before = worker_mains(host)[unit][0]
    host.run("kill -KILL %d" % before)
    deadline = time.time() + 30
    while True:
        pid = worker_mains(host)[unit][0]
        if pid and pid != before and host.check_output("systemctl is-active %s || true" % unit) == "active":
            break
        assert time.time() < deadline, "worker process was not restarted"
        time.sleep(0.5)
    assert host.check_output("systemctl show -p NRestarts --value %s" % unit) == "1"
    assert job_result(host, enqueue(host, "again"))["status"] == "finished"


def test_a_code_deploy_moves_the_workers_and_lets_a_running_job_finish(host, workdir, code, state):
    old = worker_mains(host)
    # The job waits (up to 99 s) until the test releases it: the test releases it once systemd
    # began to stop the worker process running it, so it is in flight then whatever the deploy's
    # speed, and ends well within the worker's grace period (30 s).
    data = "/opt/www/jobs/shared/data"
    host.run("rm -f %s/started-inflight %s/release-inflight" % (data, data))
    since = int(host.check_output("date +%s"))
    in_flight = enqueue(host, "inflight", 99)
    ran_in = held_by(host, old, data + "/started-inflight")
    set_version(code, "2")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(deploy, workdir, "jobs-v2", state["jobs"]["services"], ["-e", "deploy_services=jobs"])
        wait_for_stopping(host, ran_in, since, running)
        host.run("touch %s/release-inflight" % data)
        rc, out = running.result()
    assert rc == 0, out
    release = release_of(host)
    assert release != state["jobs"]["release_1"]
    mains = worker_mains(host)
    assert all(where == release for _pid, where in mains.values()), mains
    assert not {p for p, _ in mains.values()} & {p for p, _ in old.values()}
    result = job_result(host, enqueue(host, "second"))["result"]
    assert result["version"] == "2" and result["release"] == release
    # The job that ran when the deploy asked its process to stop finished there, in the old
    # release, within the grace period: it ended after systemd began to stop that process.
    job = job_result(host, in_flight)
    assert job["status"] == "finished" and job["result"]["release"] == state["jobs"]["release_1"], job
    assert old[ran_in][0] == job["result"]["worker_pid"], (old, job)
    stopping = host.check_output("journalctl -u %s -o short-unix --no-pager | grep ' Stopping ' | tail -1" % ran_in)
    assert float(stopping.split()[0]) < job["result"]["ended"], (stopping, job)
    assert host.file("/opt/www/jobs/shared/data/release-commands.log").content_string.splitlines()[-1].startswith(
        "release=%s version=2" % release)
    state["jobs"]["release_2"] = release


def test_a_rollback_moves_the_workers_back(host, workdir, state):
    rc, out = deploy(workdir, "jobs-rollback", state["jobs"]["services"], ["-e", "service=jobs"],
                     playbook="playbooks/rollback.yml")
    assert rc == 0, out
    assert release_of(host) == state["jobs"]["release_1"]
    assert all(where == state["jobs"]["release_1"] for _pid, where in worker_mains(host).values())
    result = job_result(host, enqueue(host, "back"))["result"]
    assert result["version"] == "1" and result["release"] == state["jobs"]["release_1"]


def test_a_worker_that_cannot_start_fails_the_deploy_and_the_old_release_keeps_working(host, workdir, code, state):
    set_version(code, "3", broken_worker=True)
    # The worker fails when RQ imports its class, after RQ's own imports: on a loaded machine that
    # can take longer than the default 3 s, so this deploy gives the check 15 s.
    services = [dict(s, workers=[dict(w, start_seconds=15) for w in s["workers"]]) if s["name"] == "jobs" else s
                for s in state["jobs"]["services"]]
    try:
        rc, out = deploy(workdir, "jobs-broken", services, ["-e", "deploy_services=jobs"])
    finally:
        set_version(code, "1")
    assert rc != 0, out
    message = " ".join(out[out.index("service 'jobs': deploy of release"):].split())
    assert re.match(r"service 'jobs': deploy of release \w+ failed at worker 'default': worker 'default' did not "
                    r"stay up for 15s after its start", message), message[:500]
    assert "this release of the worker cannot start" in message[:5000]
    assert "Rolled back to release %s, its workers included, which is healthy again" % state["jobs"]["release_1"] \
        in message[:5000]
    assert release_of(host) == state["jobs"]["release_1"]
    assert json.loads(http(host, "/api/jobs/")["body"])["version"] == "1"
    assert all(where == state["jobs"]["release_1"] for _pid, where in worker_mains(host).values())
    result = job_result(host, enqueue(host, "still"))["result"]
    assert result["version"] == "1" and result["release"] == state["jobs"]["release_1"]


def test_a_worker_and_a_schedule_removed_from_the_list_stop(host, workdir, code, state):
    services = [s for s in state["jobs"]["services"] if s["name"] != "jobs"]
    services.append(jobs_entry(code, workers=[], schedules=jobs_entry(code)["schedules"][:1]))
    rc, out = deploy(workdir, "jobs-fewer", services, ["-e", "deploy_services=jobs"])
    assert rc == 0, out
    assert "rq worker" not in host.check_output("ps -eo args")
    assert not host.file("/etc/systemd/system/microsvc-jobs.worker-default@.service").exists
    assert not host.file("/etc/systemd/system/multi-user.target.wants/%s" % WORKERS[0]).exists
    assert not host.file("/etc/systemd/system/microsvc-jobs.schedule-slow.timer").exists
    assert host.check_output("systemctl is-active microsvc-jobs.schedule-tick.timer") == "active"
    slow_runs = len(runs(host, "slow"))
    time.sleep(5)
    assert len(runs(host, "slow")) == slow_runs
    assert http(host, "/api/jobs/health")["status"] == 200
    state["jobs"]["services"] = services


def test_a_service_dropped_from_the_list_leaves_no_unit_and_no_process(host, workdir, state):
    services = [s for s in state["jobs"]["services"] if s["name"] != "jobs"]
    rc, out = deploy(workdir, "jobs-gone", services)
    assert rc == 0, out
    assert host.run("ls /etc/systemd/system | grep -c '^microsvc-jobs\\.'").stdout.strip() == "0"
    assert host.check_output("systemctl list-units --all --plain --no-legend 'microsvc-jobs.*'") == ""
    tick_runs = len(runs(host, "tick"))
    time.sleep(4)
    assert len(runs(host, "tick")) == tick_runs
    assert host.check_output("ps -u jobs -o stat= | grep -vc '^Z' || true") == "0"  # zombies aside
    assert http(host, "/api/jobs/")["status"] == 404


# --- a Django service with a Celery worker and beat (docs/processes.md's worked example) ---------
# The shop sample: Celery's broker is Redis (database 1; the jobs sample used 0), beat sends
# shop.tasks.record every 2 seconds and the worker appends who ran it to the service's data
# directory, which GET /runs/ reads back through the gateway. Its requirements are Django and
# celery[redis], whose redis needs async-timeout below Python 3.11.3 only: Debian 12's 3.11.2 does,
# the controller's newer 3.11 does not.

SHOP_UNITS = {"celery": "microsvc-shop.worker-celery@1.service", "beat": "microsvc-shop.worker-beat@1.service"}
SHOP_DATA = "/opt/www/shop/shared/data"


def shop_entry():
    """The entry of docs/processes.md's example, with the sample as its source and a health path."""
    return {"name": "shop", "source": os.path.join(PROJECT, "samples", "shop"), "module": "shop.wsgi",
            "django": {"settings": "shop.settings"},
            "health": {"path": "health/", "body": '"status": "ok"'},
            "env": {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/1"},
            "workers": [
                {"name": "celery", "argv": ["celery", "-A", "shop", "worker", "-l", "info", "--concurrency", "2"],
                 "grace": 120},
                {"name": "beat", "argv": ["celery", "-A", "shop", "beat", "-l", "info",
                                          "--schedule", SHOP_DATA + "/celerybeat-schedule"],
                 "once": True},
            ]}


def shop_runs(host):
    answer = http(host, "/api/shop/runs/")
    assert answer["status"] == 200, answer
    return json.loads(answer["body"])["runs"]


def main_pid(host, unit):
    return int(host.check_output("systemctl show -p MainPID --value %s" % unit) or 0)


def test_a_django_service_with_a_celery_worker_and_beat(host, workdir, state):
    services = state["final"] + [shop_entry()]
    rc, out = deploy(workdir, "shop-add", services, ["-e", "deploy_services=shop", "-v"])
    assert rc == 0, out
    # Its virtualenv is new to the host: the wheelhouse went with the release, and uv installed it,
    # the uv the host already had (its 18 MB wheel was not sent again).
    batch = out.split("Deploy the services that need it, as one batch]", 1)[1].split("\nTASK [", 1)[0]
    sent = re.search(r"\n    sent:\n((?:    - .*\n)+)", batch)
    assert sent, batch[-3000:]
    assert "releases/shop.tar.gz" in sent.group(1) and "wheelhouses/" in sent.group(1), sent.group(1)
    assert "tools/" not in sent.group(1), sent.group(1)
    assert re.search(r"\n {12}installer: uv\n", batch), batch[-3000:]
    release = release_of(host, "shop")
    # The worker and beat run, as the service's user, the pool's processes too.
    mains = {name: main_pid(host, unit) for name, unit in SHOP_UNITS.items()}
    assert all(mains.values()), mains
    for unit in SHOP_UNITS.values():
        assert host.check_output("systemctl is-active %s || true" % unit) == "active", unit
    pool = [int(pid) for pid in host.check_output("ps -o pid= --ppid %d" % mains["celery"]).split()]
    assert len(pool) == 2, pool
    users = {host.check_output("ps -o user= -p %d" % pid) for pid in [*mains.values(), *pool]}
    assert users == {"shop"}, users
    # Within 30 s, beat sent the task three times and the worker ran it each time: every run names
    # a process of the worker's pool (its parent is the worker unit's main process), the worker's
    # node and the current release.
    deadline = time.time() + 30
    while len(runs := [r for r in shop_runs(host) if r["sender"] == "beat"]) < 3:
        assert time.time() < deadline, runs
        time.sleep(1)
    hostname = host.check_output("hostname")
    for run in runs:
        assert run["task"] == "shop.tasks.record" and run["release"] == release, run
        assert run["worker_pid"] == mains["celery"] and run["pid"] in pool, (run, mains, pool)
        assert run["hostname"] == "celery@" + hostname and run["host"] == hostname, run
    assert len({run["id"] for run in runs}) == len(runs), runs
    worker_log = host.file("/opt/www/shop/shared/log/worker-celery.log").content_string
    assert "Task shop.tasks.record[%s] succeeded" % runs[0]["id"] in worker_log, worker_log[-3000:]
    beat_log = host.file("/opt/www/shop/shared/log/worker-beat.log").content_string
    assert "Sending due task record-every-2-seconds (shop.tasks.record)" in beat_log, beat_log[-3000:]
    schedule = host.check_output("ls %s" % SHOP_DATA).split()
    assert any(name.startswith("celerybeat-schedule") for name in schedule), schedule
    assert {host.file("%s/%s" % (SHOP_DATA, n)).user for n in schedule if n.startswith("celerybeat")} == {"shop"}
    # The host's Python decides redis's async-timeout (python_full_version < "3.11.3"), not the
    # controller's: the virtualenv has it exactly when the host's Python needs it, and
    # redis.asyncio, which imports it there, imports.
    probe = host.run("runuser -u shop -- /opt/www/shop/current/.venv/bin/python -c %s" % (
        "'import importlib.util, json, sys, redis.asyncio; print(json.dumps([list(sys.version_info[:3]), "
        "importlib.util.find_spec(\"async_timeout\") is not None]))'"))
    assert probe.rc == 0, probe.stderr
    version, has_async_timeout = json.loads(probe.stdout)
    assert has_async_timeout == (tuple(version) < (3, 11, 3)), (version, has_async_timeout)
    state["shop"] = {"release": release}


def test_a_celery_service_dropped_from_the_list_leaves_nothing_running(host, workdir, state):
    rc, out = deploy(workdir, "shop-gone", state["final"])
    assert rc == 0, out
    assert host.check_output("systemctl list-units --all --plain --no-legend 'microsvc-shop.*'") == ""
    assert host.run("ls /etc/systemd/system | grep -c '^microsvc-shop\\.'").stdout.strip() == "0"
    assert host.check_output("ps -u shop -o stat= | grep -vc '^Z' || true") == "0"  # zombies aside
    assert "celery" not in host.check_output("ps -eo args")
    records = host.file(SHOP_DATA + "/task-runs.jsonl").content_string
    time.sleep(4)
    assert host.file(SHOP_DATA + "/task-runs.jsonl").content_string == records
    assert http(host, "/api/shop/")["status"] == 404
