"""Per-service lifecycle on one host: add, redeploy under load, break, roll back, remove.

The scenario converges the four demo services; these tests then act as an operator does:
edit the service list (a fresh inventory per step, pointing at copies of the sample code)
and run site.yml or rollback.yml from the controller. The tests run in file order; each
step starts from the state the previous one left.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import (
    PROJECT,
    Load,
    demo_services,
    http,
    master_pid,
    recap_changed,
    run_playbook,
    vassal_processes,
    write_inventory,
)

HOST = "microsvc-lifecycle"
OTHERS = ["service1", "service3", "service4"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("lifecycle")


@pytest.fixture(scope="module")
def code(workdir):
    """Editable copies of the sample code, as an operator's working trees."""
    base = workdir / "code"
    for name in ("service1", "service2", "service3", "service4"):
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


def new_services(code):
    return [
        {"name": "service5", "source": {"type": "git", "repo": "file://%s" % (code / "service5"), "version": "v1.0"},
         "module": "hello", "health": {"path": ""}},
        {"name": "service6", "source": {"type": "archive", "path": str(code / "service6-1.0.tar.gz")},
         "module": "hello", "health": {"path": ""}},
    ]


def masters(host, names):
    return {name: master_pid(host, name) for name in names}


def set_body(code, text):
    app = code / "service2" / "app.py"
    source = app.read_text()
    start = source.index('lines = ["') + len('lines = ["')
    end = source.index('"]', start)
    app.write_text(source[:start] + text + source[end:])


def test_adding_a_service_by_inventory_edit_leaves_the_others_alone(host, workdir, code, state):
    before = masters(host, ["service1", "service2", "service3", "service4"])
    assert all(before.values()), before
    rc, out = deploy(workdir, "add", services_with(add=new_services(code)))
    assert rc == 0, out
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
    before = masters(host, ["service1", "service2", "service3", "service4", "service5", "service6"])
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
    before = masters(host, ["service1", "service2", "service3", "service4", "service5", "service6"])
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
    assert "RUNNING HANDLER [microsvc.deploy.nginx_gateway : Reload nginx]" not in out
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
    # Dropped from the inventory: a reload keeps the master's environment, so only the unset
    # list makes the variable leave the running service.
    rc, out = deploy(workdir, "env-none", state["release_b_services"], ["-e", "deploy_services=service2"])
    assert rc == 0, out
    body = http(host, "/api/service2/")["body"]
    assert "release B" in body and "greeting:" not in body, body
    assert host.file("/opt/www/service2/env.unset").content_string == "GREETING\n"
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
    """New code for every service at once: one batch, no failed request, no master restarted."""
    services = []
    for svc in state["release_b_services"]:
        svc = dict(svc)
        if svc["name"] in ("service1", "service2", "service3", "service4"):
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
    before, currents_before = masters(host, names), currents(host, names)
    paths = ["/api/%s/" % name for name in names]
    with Load(host, paths, concurrency=6, duration=240) as load:
        rc, out = deploy(workdir, "everything", services)
    result = load.result()
    assert rc == 0, out
    for path in paths:
        stats = result["urls"]["http://127.0.0.1" + path]
        assert stats["requests"] > 20 and stats["errors"] == 0 and stats["non_2xx"] == 0, (path, stats)
    assert masters(host, before) == before
    after = currents(host, names)
    assert all(after[n].split()[-2] != currents_before[n].split()[-2] for n in names), (currents_before, after)
    state["release_b_services"] = services


def test_removing_a_service_stops_it_and_its_route_only(host, workdir, state):
    services = [dict(s) for s in state["release_b_services"]]
    for svc in services:
        if svc["name"] == "service3":
            svc["state"] = "absent"
    others = masters(host, ["service1", "service2", "service4", "service5", "service6"])
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
        "service1.conf", "service2.conf", "service4.conf"]
