"""Property: for any service entry and settings (hostile strings included), either validation
refuses the input, or the generated files hold exactly what a benign entry of the same shape
gives — the nginx files parse (crossplane) into one upstream and one location per service and
nothing else, and the vassal ini into the expected keys, without duplicates or privilege options.

The files are rendered by the roles' own templates, with Ansible's templating and this
collection's filters, exactly as the roles render them."""

import os
import re

import crossplane
import pytest
import yaml
from ansible_collections.microsvc.deploy.plugins.module_utils import units
from ansible_collections.microsvc.deploy.plugins.plugin_utils import service_plan
from ansible_collections.microsvc.deploy.plugins.plugin_utils import settings as global_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
with open(os.path.join(ROOT, "roles/service_plan/meta/argument_specs.yml"), encoding="utf-8") as _f:
    SPEC = service_plan.load_service_spec(yaml.safe_load(_f))


def _yaml(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


@pytest.fixture(scope="module")
def templar():
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    return Templar(loader=DataLoader())


def render(templar, template, variables):
    from ansible.template import trust_as_template

    with open(os.path.join(ROOT, template), encoding="utf-8") as handle:
        text = handle.read()
    engine = templar.copy_with_new_env(available_variables=variables,
                                       searchpath=[os.path.join(ROOT, os.path.dirname(template))])
    return engine.template(trust_as_template(text), escape_backslashes=False,
                           overrides=dict(trim_blocks=True, lstrip_blocks=False))


# --- strategies -----------------------------------------------------------------------------
PAYLOADS = ["\n", "\r\n", "\r", "\x00", "\u2028", "\u0085", ";", "{", "}", '"', "'", "\\", "$", "$(HOME)",
            "@(/etc/shadow)", "%(_)", "=(x)", "{{ 1 }}", " ", "#", "/../", "..", "%2e", "\nuid = 0\n",
            ";\nlocation /x { alias /etc/; }\n", "\" always; add_header X \"", "*", "?", "&", ":"]


def hostile(valid):
    """Mostly the valid value (so that whole entries are often accepted and their files checked),
    else one with a payload inserted at a random place, or any text."""
    inserted = st.builds(lambda pos, p: valid[:pos] + p + valid[pos:], st.integers(0, len(valid)),
                         st.sampled_from(PAYLOADS))
    return st.integers(0, 19).flatmap(
        lambda roll: st.just(valid) if roll < 17 else (inserted if roll < 19 else st.text(max_size=20)))


@st.composite
def service_entries(draw, index):
    name = draw(hostile("svc%d" % index))
    entry = {"name": name, "source": "code"}
    if draw(st.booleans()):
        entry["module"] = draw(hostile("pkg.wsgi"))
    else:
        entry["wsgi_file"] = draw(hostile("wsgi.py"))
    optional = {
        "route": hostile("/api/r%d/" % index),
        "socket": hostile("/opt/www/%s/uwsgi.sock" % name),
        "python": hostile("/usr/bin/python3"),
        "client_max_body_size": hostile("75M"),
        "env": st.dictionaries(hostile("KEY"), hostile("value"), max_size=3),
        "health": st.fixed_dictionaries({"path": hostile("health/")}),
        "rate_limit": st.fixed_dictionaries({"rate": hostile("10r/s")}),
        "django": st.fixed_dictionaries({"settings": hostile("pkg.settings"), "manage": hostile("manage.py"),
                                         "static_url": hostile("static/")}),
        "uwsgi_options": st.dictionaries(st.sampled_from(["max-worker-lifetime", "listen", "add-header",
                                                          "max-worker-lifetime", "listen", "add-header", "set",
                                                          "exec-as-root", "cheaper-algo"]),
                                         st.one_of(st.integers(-5, 5000), hostile("X-A: b"), st.booleans()),
                                         max_size=3),
        "accel_redirect": st.one_of(st.booleans(), hostile("/etc/")),
        "processes": st.integers(-2, 300),
        "limits": st.fixed_dictionaries({"memory": hostile("256M")}, optional={"tasks": st.integers(-1, 200000),
                                                                               "cpu_weight": st.integers(-1, 20000)}),
        "read_timeout": st.integers(-1, 100000),
        "workers": st.lists(st.fixed_dictionaries(
            {"name": hostile("w"), "argv": st.lists(hostile("arg"), min_size=1, max_size=3),
             "count": st.integers(0, 3)}), max_size=2),
        "schedules": st.lists(st.one_of(
            st.fixed_dictionaries({"name": hostile("s"), "argv": st.lists(hostile("arg"), min_size=1, max_size=3),
                                   "cron": hostile("*/5 * * * *")}),
            st.fixed_dictionaries({"name": hostile("t"), "argv": st.lists(hostile("arg"), min_size=1, max_size=3),
                                   "interval": st.integers(-1, 100)})), max_size=2),
    }
    for field, strategy in optional.items():
        if draw(st.booleans()):
            entry[field] = draw(strategy)
    return entry


@st.composite
def inputs(draw):
    services = [draw(service_entries(i)) for i in range(draw(st.integers(1, 3)))]
    knobs = {
        "microsvc_root": draw(hostile("/opt/www")),
        "microsvc_route_prefix": draw(hostile("/api/")),
        "nginx_gateway_server_names": [draw(hostile("api.example.com"))],
        "nginx_gateway_security_headers": {draw(hostile("X-Frame-Options")): draw(hostile("DENY"))},
        "nginx_gateway_uwsgi_params": {draw(hostile("HTTP_X_A")): draw(hostile("$host"))},
        "nginx_gateway_real_ip_from": [draw(hostile("10.0.0.0/8"))],
    }
    return services, knobs


# --- what a benign entry gives ----------------------------------------------------------------
ROUTE_DIRECTIVES = {"include", "uwsgi_param", "client_max_body_size", "uwsgi_connect_timeout", "uwsgi_read_timeout",
                    "uwsgi_send_timeout", "limit_req", "limit_req_status", "access_log", "error_log",
                    "uwsgi_next_upstream", "uwsgi_pass",
                    # the log fields service and route, the request id, the gateway's own JSON errors
                    "set", "uwsgi_hide_header", "error_page",
                    # accel_redirect: X-Accel-Redirect followed, the other X-Accel-* headers ignored
                    "uwsgi_ignore_headers"}
ERROR_DIRECTIVES = {"access_log", "error_log", "default_type", "return"}
STATIC_DIRECTIVES = {"alias", "access_log", "expires", "disable_symlinks"}
ACCEL_DIRECTIVES = {"internal", "if", "alias", "disable_symlinks", "access_log", "error_log"}
ACCEL_IGNORED = ["X-Accel-Expires", "X-Accel-Limit-Rate", "X-Accel-Buffering", "X-Accel-Charset"]
INI_SINGLE = {"strict", "plugins", "procname-prefix-spaced", "master", "processes", "thunder-lock", "threads",
              "enable-threads", "socket", "chmod-socket", "chown-socket", "stats", "uid", "gid", "umask", "chdir",
              "pythonpath", "home", "hook-post-fork", "lazy-apps", "mount", "manage-script-name", "module",
              "wsgi-file", "need-app", "die-on-term", "vacuum", "touch-chain-reload", "harakiri", "max-requests",
              "buffer-size", "logto2", "disable-logging", "log-reopen", "env", "import", "hook-as-root"}
INI_LOOP = set()


def nginx_tree(tmp, files):
    for rel, text in files.items():
        path = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    for stub in ("mime.types", "uwsgi_params"):
        with open(os.path.join(tmp, stub), "w") as handle:
            handle.write("")
    parsed = crossplane.parse(os.path.join(tmp, "nginx.conf"), combine=True, check_ctx=True, check_args=True)
    assert parsed["status"] == "ok", parsed["errors"]
    return parsed["config"][0]["parsed"]


def walk(block, name):
    for directive in block:
        if directive["directive"] == name:
            yield directive
        yield from walk(directive.get("block", []), name)


def check_nginx(config, plan):
    present = [s for s in plan["services"] if s["state"] == "present"]
    http = next(walk(config, "http"))["block"]
    upstreams = sorted(d["args"][0] for d in walk(http, "upstream"))
    assert upstreams == sorted("microsvc_" + s["name"] for s in present)
    for upstream in walk(http, "upstream"):
        svc = next(s for s in present if "microsvc_" + s["name"] == upstream["args"][0])
        assert [(d["directive"], d["args"]) for d in upstream["block"]] == [
            ("server", ["unix:" + svc["socket"], "max_fails=0"]),
            ("server", ["unix:" + svc["socket"], "max_fails=0", "backup"])]
    (server,) = [d for d in walk(http, "server") if d.get("block")]
    locations = {tuple(d["args"]): d for d in server["block"] if d["directive"] == "location"}
    expected = {("/",)}
    for svc in present:
        expected.add((svc["route"],))
        expected.add(("@microsvc_error_" + svc["name"],))
        if svc["django"] and svc["django"]["collectstatic"]:
            expected.add((svc["route"] + svc["django"]["static_url"],))
        if svc["accel_redirect"]:
            expected.add(("^~", "/_accel/%s/" % svc["name"]))
    assert set(locations) == expected
    assert len([d for d in server["block"] if d["directive"] == "location"]) == len(expected)
    for svc in present:
        loc = locations[(svc["route"],)]
        assert {d["directive"] for d in loc["block"]} <= ROUTE_DIRECTIVES
        assert [d["args"] for d in loc["block"] if d["directive"] == "uwsgi_pass"] == [["microsvc_" + svc["name"]]]
        assert [d["args"] for d in loc["block"] if d["directive"] == "error_page"] == [
            ["502", "503", "504", "@microsvc_error_" + svc["name"]]]
        error = locations[("@microsvc_error_" + svc["name"],)]
        assert {d["directive"] for d in error["block"]} == ERROR_DIRECTIVES
        if svc["django"] and svc["django"]["collectstatic"]:
            static = locations[(svc["route"] + svc["django"]["static_url"],)]
            assert {d["directive"] for d in static["block"]} <= STATIC_DIRECTIVES
            assert [d["args"] for d in static["block"] if d["directive"] == "alias"] == [[svc["static_dir"] + "/"]]
            assert [d["args"] for d in static["block"] if d["directive"] == "disable_symlinks"] == [
                ["on", "from=" + svc["static_dir"]]]
        # X-Accel-* ignored at http level for every route; a route of accel_redirect follows only
        # X-Accel-Redirect, and marks its requests for its own internal location, which checks the mark.
        ignored = [d["args"] for d in loc["block"] if d["directive"] == "uwsgi_ignore_headers"]
        if svc["accel_redirect"]:
            assert ignored == [ACCEL_IGNORED]
            assert ["$microsvc_accel_from", svc["name"]] in [d["args"] for d in loc["block"] if d["directive"] == "set"]
            accel = locations[("^~", "/_accel/%s/" % svc["name"])]
            assert {d["directive"] for d in accel["block"]} == ACCEL_DIRECTIVES
            (check,) = [d for d in accel["block"] if d["directive"] == "if"]
            assert check["args"] == ["$microsvc_accel_from", "!=", svc["name"]]
            assert [(d["directive"], d["args"]) for d in check["block"]] == [("return", ["404"])]
            protected = svc["shared_dir"] + "/protected"
            assert [d["args"] for d in accel["block"] if d["directive"] == "alias"] == [[protected + "/"]]
            assert [d["args"] for d in accel["block"] if d["directive"] == "disable_symlinks"] == [
                ["on", "from=" + protected]]
        else:
            assert ignored == []
    assert [d["args"] for d in http if d["directive"] == "uwsgi_ignore_headers"] == [["X-Accel-Redirect"] + ACCEL_IGNORED]
    assert not list(walk(http, "root"))
    assert len(list(walk(config, "alias"))) == sum(1 for s in present if s["django"] and s["django"]["collectstatic"]) \
        + sum(1 for s in present if s["accel_redirect"])


HELPER = "/usr/local/sbin/microsvc-run"
UNIT_KEYS = {
    "worker": {"Description", "Wants", "After", "StartLimitIntervalSec", "Type", "ExecStart", "KillMode", "KillSignal",
               "TimeoutStopSec", "Restart", "RestartSec", "SyslogIdentifier", "WantedBy", "Slice"},
    "timer": {"Description", "OnActiveSec", "OnUnitActiveSec", "OnCalendar", "AccuracySec", "Unit", "WantedBy"},
    "tick": {"Description", "Type", "ExecStart", "Slice"},
    "run": {"Description", "Type", "ExecStart", "RuntimeMaxSec", "KillMode", "TimeoutStopSec", "Slice"},
    "slice": {"Description", "Before", "MemoryAccounting", "MemoryMax", "MemorySwapMax", "TasksAccounting", "TasksMax",
              "CPUAccounting", "CPUWeight"},
}
HARDENING = {"NoNewPrivileges", "CapabilityBoundingSet", "ProtectSystem", "ReadWritePaths", "ProtectHome", "PrivateTmp",
             "PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
             "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictSUIDSGID", "RestrictRealtime",
             "RestrictNamespaces", "LockPersonality", "SystemCallArchitectures", "RestrictAddressFamilies",
             "InaccessiblePaths"}


def exec_words(value):
    """ExecStart= split as systemd splits it: every argument the templates write is in double
    quotes with C escapes; %% and $$ stand for % and $ (no other specifier or variable may be
    left)."""
    words, i = [], 0
    while i < len(value):
        if value[i] == " ":
            i += 1
            continue
        if value[i] == '"':
            i += 1
            word = ""
            while value[i] != '"':
                if value[i] == "\\":
                    i += 1
                    assert value[i] in '\\"', value  # only the escapes systemd_quote writes
                word += value[i]
                i += 1
            i += 1
        else:
            end = value.find(" ", i)
            end = len(value) if end < 0 else end
            word, i = value[i:end], end
            assert "$" not in word and "\\" not in word and '"' not in word, word
        assert "%" not in word.replace("%%", "").replace("%i", ""), word  # a specifier systemd would expand
        assert "$" not in word.replace("$$", ""), word  # a variable systemd would expand
        words.append(word.replace("%%", "%").replace("$$", "$"))
    return words


def parse_unit(text):
    """[(section, key, value)] of a systemd unit file (comments aside); every line belongs to one."""
    entries, section = [], None
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, sep, value = line.partition("=")
        assert sep and section in ("[Unit]", "[Service]", "[Timer]", "[Install]", "[Slice]"), raw
        entries.append((section, key, value))
    return entries


def check_unit(text, kind, svc, proc, root):
    entries = parse_unit(text)
    keys = [k for _s, k, _v in entries]
    assert set(keys) <= UNIT_KEYS[kind] | HARDENING, set(keys) - UNIT_KEYS[kind] - HARDENING
    singles = [k for k in keys if k != "OnCalendar"]
    assert len(singles) == len(set(singles)), keys
    assert text.count("\n# microsvc-service: %s\n" % svc["name"]) == 1
    values = {k: v for _s, k, v in entries}
    if kind in ("worker", "run"):
        words = exec_words(values["ExecStart"])
        assert words[0] == HELPER and words[words.index("--") + 1:] == proc["argv"], words
        assert words[words.index("--") - 1] == svc["name"] and "--root" in words and words[words.index("--root") + 1] == root
    if kind == "tick":
        words = exec_words(values["ExecStart"])
        assert words[0] == HELPER and words[-1] == svc["name"] and "--" not in words
    if kind == "timer":
        assert ("OnCalendar" in values) == bool(proc["cron"])
    if kind in ("worker", "tick", "run"):
        assert values["Slice"] == units.slice_name(svc["name"])
    if kind in ("worker", "run"):
        # Service code runs here: none of the control sockets is reachable.
        assert "-/run/systemd/private" in values["InaccessiblePaths"].split()
        assert "-/run/dbus" in values["InaccessiblePaths"].split()
    if kind == "slice":
        limits = svc.get("limits") or {}
        assert values["MemoryMax"] == (limits.get("memory") or "50%")
        assert values["TasksMax"] == str(limits.get("tasks") or 512)
        assert values["CPUWeight"] == str(limits.get("cpu_weight") or 100)


def parse_ini(text):
    """(key, value) of the [uwsgi] section, as uWSGI reads them (comments and blank lines aside)."""
    pairs, section = [], None
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line.startswith((";", "#")):
            continue
        if line.startswith("["):
            section = line
            continue
        assert section == "[uwsgi]", raw
        key, sep, value = line.partition("=")
        assert sep, raw
        pairs.append((key.strip(), value.strip()))
    return pairs


def check_ini(text, svc):
    pairs = parse_ini(text)
    keys = [k for k, _ in pairs]
    singles = [k for k in keys if k not in INI_LOOP and k != "add-header"]
    assert len(singles) == len(set(singles)), keys
    allowed = INI_SINGLE | INI_LOOP | set(svc["uwsgi_options"])
    assert set(keys) <= allowed, set(keys) - allowed
    values = dict(pairs)
    assert values["uid"] == svc["name"] and values["gid"] == svc["name"]
    assert values["socket"] == svc["socket"] and values["chdir"] == svc["root"]
    for key in ("exec-as-root", "immediate-uid", "immediate-gid", "set", "http-socket", "http11-socket"):
        assert key not in keys
    # The one command run as root: the master moves itself into its service's slice.
    assert values["hook-as-root"] == "exec:/usr/local/sbin/microsvc-attach " + svc["name"]
    # uWSGI never reads the service's environment file as configuration: only its path is
    # passed, to the root-owned loader each worker imports.
    for key in ("for-readline", "for-glob", "endfor", "unenv", "include", "inherit"):
        assert key not in keys
    assert values["env"] == "MICROSVC_ENV_FILE=" + svc["env_file"]
    assert values["import"].startswith("/usr/local/lib/microsvc/")


OUTCOMES = {"refused": 0, "accepted": 0}


def check_inputs(templar, tmp, services, knobs):
    """'refused' (with reasons) or 'accepted' once the rendered files were checked."""
    errors = global_settings.check_settings(knobs)
    planner = service_plan.Planner(SPEC, root=knobs["microsvc_root"], route_prefix=knobs["microsvc_route_prefix"],
                                   base_dir=tmp)
    try:
        plan = planner.plan(services, check_sources=False, errors=errors)
    except service_plan.PlanError as exc:
        assert exc.errors
        assert all(re.match(r"(service |setting '|microsvc_|deploy_services)", e) for e in exc.errors), exc.errors
        return "refused"
    variables = {}
    for path in ("roles/nginx_gateway/defaults/main.yml", "roles/nginx_gateway/vars/default.yml",
                 "roles/uwsgi_vassal/vars/default.yml", "roles/uwsgi_vassal/vars/main.yml"):
        variables.update(_yaml(path))
    # The shared settings' role defaults read the plan's settings (as Ansible would template them).
    shared = global_settings.shared_settings(knobs, plan["root"])
    for name, value in list(variables.items()):
        found = re.fullmatch(r"\{\{ microsvc_plan\.settings\.(\w+) \}\}", str(value))
        if found:
            variables[name] = shared[found.group(1)]
    variables.update(knobs)
    present = [dict(s, members=["gw"]) for s in plan["services"] if s["state"] == "present"]
    variables.update(
        ansible_managed="Ansible managed", inventory_hostname="gw", hostvars={},
        microsvc_plan=dict(plan, settings=shared),
        __nginx_gateway_owned_dir="microsvc", __nginx_gateway_services=present, __nginx_gateway_checked=[],
        __nginx_gateway_tls_live=False, __nginx_gateway_acme_peers=[], __nginx_gateway_http2_legacy=True, __nginx_gateway_brotli_on=False,
        __nginx_gateway_log_format="microsvc", nginx_gateway_metrics_enabled=False,
        __nginx_gateway_tls_dir="/etc/nginx/microsvc-tls", __uwsgi_vassal_tcp=False,
        __uwsgi_vassal_socket_group="www-data", uwsgi_vassal_log_requests=False, uwsgi_vassal_bind_address="",
        __uwsgi_vassal_helper=HELPER, __uwsgi_vassal_env_loader="/usr/local/lib/microsvc/microsvc_env.py",
        uwsgi_vassal_hardening=True, uwsgi_vassal_read_write_paths=[plan["root"]],
        uwsgi_vassal_limits=True, uwsgi_vassal_memory_max="50%", uwsgi_vassal_tasks_max=512, uwsgi_vassal_cpu_weight=100,
    )
    files = {"nginx.conf": render(templar, "roles/nginx_gateway/templates/nginx.conf.j2", variables),
             "microsvc/gateway.conf": render(templar, "roles/nginx_gateway/templates/gateway.conf.j2", variables),
             "microsvc/headers.conf": render(templar, "roles/nginx_gateway/templates/headers.conf.j2", variables)}
    for svc in present:
        item = dict(variables, item=svc)
        files["microsvc/upstreams/%s.conf" % svc["name"]] = render(
            templar, "roles/nginx_gateway/templates/upstream.conf.j2", item)
        files["microsvc/routes/%s.conf" % svc["name"]] = render(
            templar, "roles/nginx_gateway/templates/routes.conf.j2", item)
    check_nginx(nginx_tree(os.path.join(tmp, "nginx"), files), plan)
    for svc in present:
        own = dict(variables, __uwsgi_vassal_svc=svc)
        check_ini(render(templar, "roles/uwsgi_vassal/templates/vassal.ini.j2", own), svc)
        env_lines = [line for line in render(templar, "roles/uwsgi_vassal/templates/env.j2", own).split("\n")
                     if line]
        expected = 5 + len(svc["env"]) + (1 if svc["django"] and svc["django"]["settings"] else 0)
        assert len(env_lines) == expected and all("=" in line for line in env_lines)
        check_unit(render(templar, "roles/uwsgi_vassal/templates/slice.j2", own), "slice", svc, None, plan["root"])
        for proc in svc["workers"]:
            own = dict(variables, __uwsgi_vassal_svc=svc, __uwsgi_vassal_proc=proc,
                       __uwsgi_vassal_slice=units.slice_name(svc["name"]))
            check_unit(render(templar, "roles/uwsgi_vassal/templates/worker.service.j2", own), "worker", svc, proc,
                       plan["root"])
        for proc in svc["schedules"]:
            own = dict(variables, __uwsgi_vassal_svc=svc, __uwsgi_vassal_proc=proc,
                       __uwsgi_vassal_units=units.schedule_units(svc["name"], proc["name"]),
                       __uwsgi_vassal_slice=units.slice_name(svc["name"]))
            for kind, template in (("timer", "schedule.timer.j2"), ("tick", "schedule.service.j2"),
                                   ("run", "schedule-run.service.j2")):
                check_unit(render(templar, "roles/uwsgi_vassal/templates/" + template, own), kind, svc, proc,
                           plan["root"])
    return "accepted"


@settings(max_examples=int(os.environ.get("MICROSVC_PROPERTY_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(data=inputs())
def test_validation_refuses_or_the_files_are_exactly_the_benign_ones(templar, tmp_path_factory, data):
    services, knobs = data
    tmp = str(tmp_path_factory.mktemp("case"))
    OUTCOMES[check_inputs(templar, tmp, services, knobs)] += 1


def test_the_property_saw_both_outcomes():
    """Runs after the property: it must have checked rendered files, not only refusals."""
    assert OUTCOMES["accepted"] >= 10 and OUTCOMES["refused"] >= 10, OUTCOMES


BENIGN_KNOBS = {"microsvc_root": "/opt/www", "microsvc_route_prefix": "/api/",
                "nginx_gateway_server_names": ["api.example.com"],
                "nginx_gateway_security_headers": {"X-Frame-Options": "DENY"},
                "nginx_gateway_uwsgi_params": {"HTTP_X_A": "$host"}, "nginx_gateway_real_ip_from": ["10.0.0.0/8"]}


def test_a_benign_entry_renders_and_a_hostile_one_is_refused(templar, tmp_path):
    benign = {"name": "svc0", "source": "code", "module": "pkg.wsgi", "django": {"settings": "pkg.settings"},
              "env": {"KEY": "value"}, "uwsgi_options": {"add-header": "X-A: b", "listen": 100},
              "workers": [{"name": "w", "argv": ["rq", "worker", "--format=%(message)s", "$HOME", ";", 'a"b\\c']}],
              "schedules": [{"name": "s", "argv": ["python", "-m", "x"], "cron": "30 2 1 * mon"},
                            {"name": "t", "argv": ["x"], "interval": 5}]}
    assert check_inputs(templar, str(tmp_path), [benign], BENIGN_KNOBS) == "accepted"
    hostile_prefix = dict(BENIGN_KNOBS, microsvc_route_prefix="/api/;\nlocation /x { alias /etc/; }\n")
    assert check_inputs(templar, str(tmp_path), [benign], hostile_prefix) == "refused"
