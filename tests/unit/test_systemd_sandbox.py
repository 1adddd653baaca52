"""The systemd side of run-time isolation, as rendered: the sandboxes keep the control sockets
out of reach, each service's slice carries its limits in the settings both cgroup versions
enforce, and the root-side pieces (the slice file, microsvc-attach) refuse what they must.

The isolation scenario proves them on a host with cgroup v1; the settings for v2 (MemoryMax=,
TasksMax=, CPUWeight=, MemorySwapMax=) are checked here, as rendered."""

from __future__ import annotations

import glob
import importlib.machinery
import importlib.util
import os

import pytest
import yaml
from ansible_collections.microsvc.deploy.plugins.module_utils import units

from tests.unit.test_render_property import render

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EMPEROR = "roles/uwsgi_emperor/templates/"
VASSAL = "roles/uwsgi_vassal/templates/"
GATEWAY = "roles/nginx_gateway/templates/"


def _yaml(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


EMPEROR_VARS = _yaml("roles/uwsgi_emperor/vars/main.yml")
VASSAL_VARS = _yaml("roles/uwsgi_vassal/vars/main.yml")
SOCKETS = EMPEROR_VARS["__uwsgi_emperor_control_sockets"]


@pytest.fixture(scope="module")
def templar():
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    return Templar(loader=DataLoader())


def settings(text):
    """{key: [values]} of a rendered unit (comments aside)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _sep, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def emperor_vars(**extra):
    return dict(ansible_managed="Ansible managed", uwsgi_emperor_vassals_dir="/etc/uwsgi/vassals",
                __uwsgi_emperor_binary="/usr/bin/uwsgi", uwsgi_emperor_config_dir="/etc/uwsgi",
                uwsgi_emperor_service_name="uwsgi-emperor", uwsgi_emperor_hardening=True,
                uwsgi_emperor_read_write_paths=["/opt/www"], uwsgi_emperor_allow_privileged_ports=False,
                __uwsgi_emperor_control_sockets=SOCKETS, __uwsgi_emperor_attach="/usr/local/sbin/microsvc-attach",
                __uwsgi_emperor_attach_socket="/run/microsvc/attach.sock",
                __uwsgi_emperor_metrics_writer="/usr/local/sbin/microsvc-uwsgi-metrics",
                __uwsgi_emperor_textfile_dir="/var/lib/prometheus/node-exporter",
                __uwsgi_emperor_exporter_binary="/usr/bin/prometheus-node-exporter",
                __uwsgi_emperor_metrics_listen="127.0.0.1:9100", __uwsgi_emperor_exporter_service="x", **extra)


def test_the_emperor_and_the_vassals_hide_the_same_control_sockets():
    assert VASSAL_VARS["__uwsgi_vassal_control_sockets"] == SOCKETS
    for path in ("/run/systemd/private", "/run/dbus", "/var/run/dbus"):
        assert path in SOCKETS
    # Kept: the emperor is Type=notify, and every unit logs to journald.
    assert not [s for s in SOCKETS if s.startswith(("/run/systemd/notify", "/run/systemd/journal"))]


@pytest.mark.parametrize("template", ["uwsgi-emperor.service.j2", "microsvc-uwsgi-metrics.service.j2",
                                      "node-exporter-override.conf.j2"])
def test_the_units_that_run_code_of_services_or_of_the_network_hide_the_control_sockets(templar, template):
    values = settings(render(templar, EMPEROR + template, emperor_vars()))
    assert values["InaccessiblePaths"] == [" ".join("-" + s for s in SOCKETS)], values.get("InaccessiblePaths")


def test_the_emperor_keeps_its_sandbox_in_one_place(templar):
    """The shared settings come from sandbox.conf.j2, once each; the emperor adds only its own."""
    emperor = settings(render(templar, EMPEROR + "uwsgi-emperor.service.j2", emperor_vars()))
    attach = settings(render(templar, EMPEROR + "microsvc-attach@.service.j2", emperor_vars()))
    shared = settings(render(templar, EMPEROR + "sandbox.conf.j2", emperor_vars()))
    for key, value in shared.items():
        assert emperor[key] == value, key
        if key != "InaccessiblePaths":
            assert attach[key] == value, key
    assert all(len(v) == 1 for v in emperor.values()), emperor
    # The attach handler talks to systemd: the one unit that keeps the control sockets; it has no
    # capability and no network instead.
    assert "InaccessiblePaths" not in attach
    assert attach["CapabilityBoundingSet"] == [""] and attach["PrivateNetwork"] == ["true"]
    assert attach["ExecStart"] == ["/usr/local/sbin/microsvc-attach --serve uwsgi-emperor.service"]


SANDBOXED = {  # every template of a unit that runs in the collection's sandbox, with its variables
    EMPEROR + "uwsgi-emperor.service.j2": "emperor", EMPEROR + "microsvc-attach@.service.j2": "emperor",
    EMPEROR + "microsvc-uwsgi-metrics.service.j2": "emperor", EMPEROR + "node-exporter-override.conf.j2": "emperor",
    VASSAL + "worker.service.j2": "vassal", VASSAL + "schedule-run.service.j2": "vassal",
    VASSAL + "schedule.service.j2": "vassal", GATEWAY + "nginx-override.conf.j2": "gateway",
    GATEWAY + "nginx-exporter-override.conf.j2": "gateway", GATEWAY + "certbot-override.conf.j2": "gateway",
}


def gateway_vars():
    return dict(ansible_managed="Ansible managed", __nginx_gateway_user="www-data",
                __nginx_gateway_log_dir="/var/log/nginx", nginx_gateway_service_log_dir="/var/log/nginx/microsvc",
                __nginx_gateway_state_dir="/var/lib/nginx", __nginx_gateway_pid_file="/run/nginx.pid",
                __nginx_gateway_metrics_listen="127.0.0.1:9113", __nginx_gateway_exporter_service="x",
                __nginx_gateway_exporter_binary="/usr/bin/x", nginx_gateway_stub_status_port=8098,
                nginx_gateway_acme_ca_bundle="", __nginx_gateway_acme_webroot="/var/lib/microsvc-acme")


@pytest.mark.parametrize("template", sorted(SANDBOXED))
def test_every_unit_runs_in_the_one_sandbox_once(templar, template):
    proc = {"name": "tick", "argv": ["x"], "count": 1, "start_seconds": 3, "stop_signal": "TERM", "grace": 10,
            "timeout": 60, "keep_logs": 5}
    variables = {"emperor": emperor_vars, "gateway": gateway_vars,
                 "vassal": lambda: vassal_vars(proc=proc)}[SANDBOXED[template]]()
    values = settings(render(templar, template, variables))
    for line in units.SANDBOX:
        key, _sep, value = line.partition("=")
        assert values[key] == [value], (template, key, values.get(key))


def test_the_sandbox_is_written_in_one_place():
    """units.SANDBOX alone lists the shared settings: no template sets one of them itself, and the
    virtualenv builds' transient units take them from there too."""
    keys = [line.partition("=")[0] for line in units.SANDBOX]
    found = []
    for path in glob.glob(os.path.join(ROOT, "roles", "*", "templates", "*.j2")):
        with open(path, encoding="utf-8") as handle:
            found += ["%s: %s" % (os.path.relpath(path, ROOT), line) for line in handle
                      if line.partition("=")[0] in keys]
    assert not found, found
    from ansible_collections.microsvc.deploy.plugins.module_utils import venvs

    argv = venvs.systemd_run_argv(venvs.BUILD_UID_BASE + 7, ["true"], "/opt/www/.microsvc/venvs/k",
                                  {}, "/opt/www", ["/opt/www/.microsvc/venvs/k"])
    props = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--property"]
    assert all(props.count(line) == 1 for line in units.SANDBOX), props


def test_the_attach_socket_is_root_s_alone(templar):
    values = settings(render(templar, EMPEROR + "microsvc-attach.socket.j2", emperor_vars()))
    assert values["SocketMode"] == ["0600"] and values["SocketUser"] == ["root"] and values["Accept"] == ["yes"]


def vassal_vars(limits=None, proc=None, name="shop-api"):
    svc = {"name": name, "limits": limits, "log_dir": "/opt/www/%s/shared/log" % name,
           "workers": [], "schedules": []}
    out = dict(ansible_managed="Ansible managed", uwsgi_vassal_memory_max="50%", uwsgi_vassal_tasks_max=512,
               uwsgi_vassal_cpu_weight=100, uwsgi_vassal_hardening=True, uwsgi_vassal_read_write_paths=["/opt/www"],
               __uwsgi_vassal_svc=svc, __uwsgi_vassal_helper="/usr/local/sbin/microsvc-run",
               __uwsgi_vassal_control_sockets=SOCKETS, microsvc_plan={"root": "/opt/www"},
               __uwsgi_vassal_slice=units.slice_name(name))
    if proc:
        out.update(__uwsgi_vassal_proc=proc, __uwsgi_vassal_units=units.schedule_units(name, proc["name"]))
    return out


@pytest.mark.parametrize("limits, memory, tasks, weight", [
    (None, "50%", "512", "100"),
    ({"memory": "256M", "tasks": 64, "cpu_weight": 20}, "256M", "64", "20"),
    ({"memory": None, "tasks": 2000, "cpu_weight": None}, "50%", "2000", "100"),
])
def test_the_slice_carries_the_limits_that_both_cgroup_versions_enforce(templar, limits, memory, tasks, weight):
    text = render(templar, VASSAL + "slice.j2", vassal_vars(limits))
    values = settings(text)
    assert "[Slice]" in text and text.count("# microsvc-service: shop-api\n") == 1
    # v2 names; systemd maps them on v1 (memory.limit_in_bytes, pids.max, cpu.shares). MemoryLimit=
    # and CPUShares= (v1 only, deprecated) would switch the mapping off.
    assert values["MemoryMax"] == [memory] and values["TasksMax"] == [tasks] and values["CPUWeight"] == [weight]
    assert values["MemorySwapMax"] == ["0"]
    assert "MemoryLimit" not in values and "CPUShares" not in values
    assert units.read_marker(text) == ("shop-api", {"kind": "slice", "name": "shop-api"})


def test_workers_and_schedules_share_the_service_s_slice_and_only_the_tick_reaches_systemd(templar):
    proc = {"name": "tick", "argv": ["python", "-m", "x"], "count": 1, "start_seconds": 3, "stop_signal": "TERM",
            "grace": 10, "timeout": 60, "keep_logs": 5}
    for template, hides in (("worker.service.j2", True), ("schedule-run.service.j2", True),
                            ("schedule.service.j2", False)):
        values = settings(render(templar, VASSAL + template, vassal_vars(proc=proc)))
        assert values["Slice"] == ["microsvc-shop\\x2dapi.slice"], template
        assert ("InaccessiblePaths" in values) == hides, template


def test_a_service_slice_name_never_nests_in_another_service_s():
    assert units.slice_name("shop-api") == "microsvc-shop\\x2dapi.slice"
    assert units.slice_name("shop") == "microsvc-shop.slice"
    assert units.slice_name("shop_api") != units.slice_name("shop-api")


# --- the slice file, written by root before a new vassal starts ------------------------------------

SLICE = "# Ansible managed\n# microsvc-service: shop\n# microsvc-unit: slice shop\n[Slice]\nTasksMax=64\n"


def test_a_missing_slice_is_written_once(tmp_path):
    assert units.write_missing("microsvc-shop.slice", SLICE, str(tmp_path))
    assert (tmp_path / "microsvc-shop.slice").read_text() == SLICE
    assert oct((tmp_path / "microsvc-shop.slice").stat().st_mode & 0o777) == "0o644"
    assert not units.write_missing("microsvc-shop.slice", SLICE + "x", str(tmp_path))
    assert (tmp_path / "microsvc-shop.slice").read_text() == SLICE


@pytest.mark.parametrize("name, content", [
    ("../microsvc-shop.slice", SLICE), ("microsvc-shop.service", SLICE), ("microsvc-shop/x.slice", SLICE),
    ("microsvc-shop.slice", "[Slice]\nTasksMax=64\n"),
])
def test_a_slice_file_outside_the_rules_is_refused(tmp_path, name, content):
    with pytest.raises(units.UnitsError):
        units.write_missing(name, content, str(tmp_path))
    assert not os.listdir(tmp_path)


def test_a_slice_path_that_is_a_symlink_is_not_written_through(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    os.symlink(target, tmp_path / "microsvc-shop.slice")
    assert not units.write_missing("microsvc-shop.slice", SLICE, str(tmp_path))
    assert target.read_text() == "keep" and os.path.islink(tmp_path / "microsvc-shop.slice")


def test_a_slice_path_that_is_a_hard_link_is_not_written_through(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    os.link(target, tmp_path / "microsvc-shop.slice")
    assert not units.write_missing("microsvc-shop.slice", SLICE, str(tmp_path))
    assert target.read_text() == "keep"


def test_a_process_outside_the_slice_is_seen_as_outside():
    assert not units.in_slice(os.getpid(), "shop")
    assert not units.in_slice(2 ** 22 + 7, "shop")  # no such process
    assert os.getpid() in units.descendants(os.getppid())


# --- microsvc-attach: who gets moved, and who may ask ----------------------------------------------

def _attach():
    path = os.path.join(ROOT, "roles/uwsgi_emperor/files/microsvc-attach")
    loader = importlib.machinery.SourceFileLoader("microsvc_attach", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("microsvc_attach", loader))
    loader.exec_module(module)
    return module


def test_attach_moves_the_emperor_s_child_and_nothing_else(monkeypatch):
    attach = _attach()
    parents = {300: 200, 200: 100, 100: 10, 10: 1, 400: 1}  # hook 300 <- sh 200 <- master 100 <- emperor 10
    monkeypatch.setattr(attach, "parent_of", parents.__getitem__)
    assert attach.master_of(300, emperor=10) == 100
    assert attach.master_of(100, emperor=10) == 100
    assert attach.master_of(400, emperor=10) is None  # not under the emperor
    assert attach.master_of(10, emperor=10) is None  # the emperor itself


def test_attach_refuses_a_peer_that_is_not_root(monkeypatch, capsys):
    import socket

    attach = _attach()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.sendall(b"shop\n")
    read, write = os.pipe()
    real_unpack = attach.struct.unpack
    monkeypatch.setattr(attach.struct, "unpack", lambda fmt, data: (real_unpack(fmt, data)[0], 1000, 1000))
    called = []
    monkeypatch.setattr(attach, "start_scope", lambda *a: called.append(a))
    saved = os.dup(0), os.dup(1)
    try:
        os.dup2(ours.fileno(), 0)
        os.dup2(write, 1)
        attach.serve("uwsgi-emperor.service")
    finally:
        os.dup2(saved[0], 0)
        os.dup2(saved[1], 1)
        os.close(write)
    answer = os.read(read, 4096).decode()
    assert answer.startswith("error refused: only root") and not called, answer


@pytest.mark.parametrize("argv", [["../x"], ["shop;id"], ["--serve", "x;y.service"], ["Shop"], []])
def test_attach_refuses_bad_arguments(argv):
    with pytest.raises(SystemExit) as exc:
        _attach().main(argv)
    assert exc.value.code not in (0, None)


def test_the_slice_is_one_of_the_service_s_files_so_a_removal_takes_it_too(tmp_path):
    """owned() is what the probe compares and what removal deletes: the slice must be in it."""
    assert units.write_missing("microsvc-shop.slice", SLICE, str(tmp_path))
    assert units.owned(str(tmp_path)) == {"shop": {"microsvc-shop.slice": {"kind": "slice", "name": "shop"}}}
    spec = {"files": {"microsvc-shop.slice": SLICE}, "workers": [], "timers": []}
    plan = units.decide("shop", spec, units.read_files(str(tmp_path), ["microsvc-shop.slice"]), {}, set())
    assert plan["write"] == [] and plan["remove"] == []
    assert units.decide("shop", {"files": {}}, {"microsvc-shop.slice": SLICE}, {}, set())["remove"] == [
        "microsvc-shop.slice"]
