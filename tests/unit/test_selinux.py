"""SELinux decisions (plugins/filter/selinux.py): what is labelled and switched, and when nothing is."""

import importlib.util
import os
import re

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_spec = importlib.util.spec_from_file_location("selinux", os.path.join(ROOT, "plugins/filter/selinux.py"))
se = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(se)


@pytest.mark.parametrize("result,mode", [
    ({"rc": 0, "stdout": "Enforcing\n"}, "enforcing"),
    ({"rc": 0, "stdout": "Permissive"}, "permissive"),
    ({"rc": 0, "stdout": "Disabled"}, "disabled"),
    ({"rc": 2, "stdout": "", "msg": "[Errno 2] No such file or directory: b'getenforce'"}, "absent"),
    ({"rc": 0, "stdout": "something else"}, "absent"),
    ({"skipped": True}, "absent"),
    (None, "absent"),
])
def test_mode_from_getenforce(result, mode):
    assert se.selinux_mode(result) == mode


@pytest.mark.parametrize("mode", ["disabled", "absent"])
def test_nothing_is_done_without_selinux(mode):
    plan = se.selinux_plan(mode, root="/opt/www", sockets=["/opt/www/a/uwsgi.sock"], static_dirs=["/opt/www/a/s"],
                           log_dir="/srv/log", tcp_upstreams=True, listen_ports=[8099])
    assert plan["enabled"] is False
    assert plan["fcontexts"] == [] and plan["booleans"] == [] and plan["ports"] == []
    assert plan["restore"] == {"flat": [], "recursive": []}


@pytest.mark.parametrize("mode", ["enforcing", "permissive"])
def test_app_host_labels_socket_directories_and_static_files(mode):
    plan = se.selinux_plan(mode, root="/opt/www",
                           sockets=["/opt/www/a/uwsgi.sock", "/opt/www/b/run/b.sock"],
                           static_dirs=["/opt/www/a/shared/static"])
    assert plan["enabled"] is True
    assert plan["fcontexts"] == [
        {"target": "/opt/www", "setype": "httpd_var_run_t", "ftype": "d"},
        {"target": "/opt/www/[^/]+", "setype": "httpd_var_run_t", "ftype": "d"},
        {"target": "/opt/www/b/run", "setype": "httpd_var_run_t", "ftype": "d"},
        {"target": "/opt/www/a/shared/static(/.*)?", "setype": "httpd_sys_content_t", "ftype": "a"},
    ]
    assert plan["restore"] == {"flat": ["/opt/www", "/opt/www/a", "/opt/www/b/run"],
                               "recursive": ["/opt/www/a/shared/static"]}
    assert plan["booleans"] == [] and plan["ports"] == []


def test_fcontext_targets_match_exactly_the_path():
    plan = se.selinux_plan("enforcing", root="/srv/my.apps/", sockets=[], static_dirs=["/srv/my.apps/x-1/shared/static"])
    root_rule, service_rule, static_rule = (f["target"] for f in plan["fcontexts"])
    assert re.fullmatch(root_rule, "/srv/my.apps") and not re.fullmatch(root_rule, "/srv/myXapps")
    assert re.fullmatch(service_rule, "/srv/my.apps/x-1") and not re.fullmatch(service_rule, "/srv/my.apps/x/y")
    assert re.fullmatch(static_rule, "/srv/my.apps/x-1/shared/static/css/a.css")
    assert not re.fullmatch(static_rule, "/srv/my.apps/x-1/shared/staticx")


def test_split_gateway_may_connect_and_listen_on_its_check_port():
    plan = se.selinux_plan("enforcing", log_dir="/var/log/nginx/microsvc", tcp_upstreams=True,
                           listen_ports=[80, 443, 8099, 8099])
    assert plan["booleans"] == [{"name": "httpd_can_network_connect", "state": True}]
    assert plan["ports"] == [{"port": 8099, "proto": "tcp", "setype": "http_port_t"}]
    assert plan["fcontexts"] == [{"target": "/var/log/nginx/microsvc(/.*)?", "setype": "httpd_log_t", "ftype": "a"}]
    assert plan["restore"]["recursive"] == ["/var/log/nginx/microsvc"]


def test_one_host_gateway_needs_no_network_boolean():
    plan = se.selinux_plan("enforcing", log_dir="/var/log/nginx/microsvc", tcp_upstreams=False, listen_ports=[80])
    assert plan["booleans"] == [] and plan["ports"] == []


@pytest.mark.parametrize("kwargs,message", [
    ({"root": "relative/path"}, "absolute"),
    ({"root": "/opt/www\n/x"}, "control"),
    ({"log_dir": "/var/log/\x00x"}, "control"),
    ({"listen_ports": [70000]}, "out of range"),
    ({"listen_ports": [0]}, "out of range"),
])
def test_hostile_input_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        se.selinux_plan("enforcing", **kwargs)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown SELinux mode"):
        se.selinux_plan("Enforcing")
