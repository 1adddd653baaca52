"""ASGI services: the plan's interface rules, the gateway's proxy_pass route, and the host side's
web unit marker and socket unit (plugins/module_utils/asgi.py)."""

from __future__ import annotations

import os

import pytest
from ansible_collections.microsvc.deploy.plugins.module_utils import asgi, paths
from ansible_collections.microsvc.deploy.plugins.plugin_utils import service_plan

from tests.unit.test_gateway_locations import TEMPLATES, gateway_vars, locations, templar  # noqa: F401
from tests.unit.test_render_property import render

UNIT = "# microsvc-web: shop root=/opt/www/shop group=www-data\n[Unit]\n"


def test_interface_fields_are_refused_on_the_other_interface():
    assert service_plan._interface_fields("wsgi", {"websocket_grace": 3, "harakiri": 5}) == [
        ("websocket_grace", "only for an ASGI service (interface: asgi); this service is WSGI (interface: wsgi)")]
    refused = [field for field, _msg in service_plan._interface_fields(
        "asgi", {"uwsgi_options": {}, "threads": 2, "websocket_grace": 3, "module": "a:b"})]
    assert refused == ["threads", "uwsgi_options"]


def test_an_asgi_service_gets_the_server_in_its_requirements_and_the_link_as_its_socket():
    planner = service_plan.Planner.__new__(service_plan.Planner)
    planner.root, planner.route_prefix, planner.base_dir = "/opt/www", "/api/", "/"
    svc = planner._complete({"name": "shop", "interface": "asgi", "requirements": ["starlette"], "env": {},
                             "schedules": [], "module": "shop.asgi:app", "read_timeout": None,
                             "websocket_timeout": None, "source": None, "health": None})
    assert svc["requirements"][0] == "starlette"
    assert [r.split("==")[0] for r in svc["requirements"][1:]] == ["uvicorn", "httptools", "websockets"]
    assert svc["socket"] == "/opt/www/shop/asgi.sock"
    assert svc["websocket_timeout"] == 3600


def test_the_web_unit_is_the_ini_of_an_asgi_service():
    assert paths.ini_path("/etc/uwsgi/vassals", "shop") == "/etc/uwsgi/vassals/shop.ini"
    path = paths.ini_path("/etc/uwsgi/vassals", "shop", "asgi")
    assert path == "/etc/systemd/system/microsvc-shop.web@.service"
    assert asgi.is_web_unit(path) and not asgi.is_web_unit("/etc/uwsgi/vassals/shop.ini")
    assert not asgi.is_web_unit("/etc/systemd/system/microsvc-../x.web@.service")


def test_the_socket_unit_comes_from_a_checked_marker():
    meta = asgi.read_meta(UNIT)
    text = asgi.socket_unit(meta)
    assert "ListenStream=/opt/www/shop/asgi-%i.sock" in text
    assert "SocketUser=shop" in text and "SocketGroup=www-data" in text and "SocketMode=0660" in text
    assert "RemoveOnStop=true" in text


@pytest.mark.parametrize("marker", [
    "# microsvc-web: shop root=/opt/www/../etc group=www-data",
    "# microsvc-web: shop root=/opt/www/shop\nListenStream=/etc/x group=www-data",
    "# microsvc-web: shop root=/opt/www/shop group=www data",
    "# microsvc-web: Shop root=/opt/www/shop group=www-data",
    "# microsvc-web: shop root=relative group=www-data",
    "[Unit]",
])
def test_a_bad_marker_is_refused(marker):
    with pytest.raises(asgi.AsgiError):
        asgi.read_meta(marker + "\n[Unit]\n")


def test_the_live_slot_is_read_from_roots_link_only(tmp_path):
    assert asgi.live_slot(str(tmp_path)) is None
    os.symlink("asgi-2.sock", tmp_path / "asgi.sock")
    assert asgi.live_slot(str(tmp_path)) == 2
    asgi.swap_link(str(tmp_path), 1)
    assert os.readlink(tmp_path / "asgi.sock") == "asgi-1.sock" and asgi.live_slot(str(tmp_path)) == 1
    os.unlink(tmp_path / "asgi.sock")
    os.symlink("/etc/passwd", tmp_path / "asgi.sock")
    assert asgi.live_slot(str(tmp_path)) is None


def test_the_slot_started_at_boot_is_the_live_one_and_only_it(tmp_path, monkeypatch):
    """systemctl enable/disable as systemd does them: a link in multi-user.target.wants."""
    wants = tmp_path / "multi-user.target.wants"
    wants.mkdir()
    calls = []

    def systemctl(args, check=True, timeout=120):
        calls.append(args[0])
        for unit in args[2:]:
            if args[0] == "enable":
                os.symlink("../microsvc-shop.web@.service", wants / unit)
            elif args[0] == "disable":
                os.unlink(wants / unit)

    monkeypatch.setattr(asgi, "_systemctl", systemctl)
    path = str(tmp_path / "microsvc-shop.web@.service")
    assert not asgi.boots("shop", path, 1)
    asgi.boot_slot("shop", path, 1)
    assert sorted(os.listdir(wants)) == ["microsvc-shop.web@1.service"]
    assert asgi.boots("shop", path, 1) and not asgi.boots("shop", path, 2)
    asgi.boot_slot("shop", path, 2)  # a deploy moved the link to slot 2
    assert sorted(os.listdir(wants)) == ["microsvc-shop.web@2.service"]
    calls.clear()
    asgi.boot_slot("shop", path, 2)  # nothing to do: no systemctl call
    assert calls == []


def test_http_answers_needs_a_status_line(tmp_path):
    import socket
    import threading

    path = str(tmp_path / "s.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(2)

    def answer(replies):
        for reply in replies:
            conn, _ = server.accept()
            conn.recv(1024)
            conn.sendall(reply)
            conn.close()

    thread = threading.Thread(target=answer, args=([b"HTTP/1.1 404 Not Found\r\n\r\n", b"garbage\r\n"],))
    thread.start()
    assert asgi.http_answers(path)
    assert not asgi.http_answers(path)
    thread.join()
    server.close()
    assert not asgi.http_answers(path)


def asgi_item(**extra):
    return dict(interface="asgi", socket="/opt/www/shop/asgi.sock", strip_route=True, websocket_timeout=900,
                members=["gw"], **extra)


def test_the_asgi_route_proxies_with_websockets_and_the_gateways_headers(templar):  # noqa: F811
    text = render(templar, TEMPLATES + "routes.conf.j2", gateway_vars(**asgi_item()))
    live = locations(text)['"/api/shop/"']
    for directive in ("proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                      "proxy_set_header Connection $microsvc_connection_upgrade;",
                      "proxy_set_header X-Forwarded-For $remote_addr;",
                      "proxy_set_header X-Request-ID $microsvc_request_id;",
                      "proxy_read_timeout 900s;", "proxy_hide_header X-Request-ID;",
                      "proxy_pass http://microsvc_shop/;"):
        assert directive in live, (directive, live)
    assert any(d.startswith("proxy_ignore_headers X-Accel-Redirect") for d in live), live
    assert not [d for d in live if d.startswith("uwsgi_")], live
    # The gateway's own error answers, as for a WSGI route.
    assert "@microsvc_error_shop" in text


def test_without_strip_route_the_whole_path_goes_to_the_app(templar):  # noqa: F811
    text = render(templar, TEMPLATES + "routes.conf.j2", gateway_vars(**dict(asgi_item(), strip_route=False)))
    assert "proxy_pass http://microsvc_shop;" in locations(text)['"/api/shop/"']


def test_the_check_server_passes_what_the_route_passes(templar):  # noqa: F811
    item = dict(asgi_item(), maintenance=True)
    check = locations(render(templar, TEMPLATES + "checks.conf.j2", gateway_vars(**item)))['"/__microsvc/gw/api/shop/"']
    assert check[0].startswith('rewrite "^/__microsvc/gw/api/shop(/.*)$" $1 break;'), check
    assert check[-1] == 'proxy_pass "http://unix:/opt/www/shop/asgi.sock:";', check
