"""ASGI services: the plan's interface rules, the gateway's proxy_pass route, and the host side's
web unit marker and socket unit (plugins/module_utils/asgi.py)."""

from __future__ import annotations

import os

import pytest
import yaml
from ansible_collections.microsvc.deploy.plugins.module_utils import asgi, paths, units
from ansible_collections.microsvc.deploy.plugins.plugin_utils import service_plan

from tests.unit.test_gateway_locations import TEMPLATES, gateway_vars, locations, templar  # noqa: F401
from tests.unit.test_render_property import render

UNIT = "# microsvc-web: shop root=/opt/www/shop group=www-data\n[Unit]\n"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _yaml(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


VASSAL_VARS = _yaml("roles/uwsgi_vassal/vars/main.yml")


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


def test_maintenance_rate_limit_and_body_size_apply_to_an_asgi_route(templar):  # noqa: F811
    """The gateway's per-route settings are the interface's concern of neither side: maintenance
    answers 503 without reaching the server, and the limits stand in the proxied location."""
    down = locations(render(templar, TEMPLATES + "routes.conf.j2", gateway_vars(**asgi_item(maintenance=True))))
    live = down['"/api/shop/"']
    assert any(d.startswith("return 503") for d in live), live
    assert not [d for d in live if d.startswith("proxy_pass")], live
    limited = locations(render(templar, TEMPLATES + "routes.conf.j2", gateway_vars(**asgi_item(
        rate_limit={"rate": "5r/s", "burst": 5, "nodelay": True}, client_max_body_size="1k"))))['"/api/shop/"']
    for directive in ("limit_req zone=microsvc_shop burst=5 nodelay;", "limit_req_status 429;",
                      'client_max_body_size "1k";'):
        assert directive in limited, (directive, limited)


def test_the_check_server_passes_what_the_route_passes(templar):  # noqa: F811
    item = dict(asgi_item(), maintenance=True)
    check = locations(render(templar, TEMPLATES + "checks.conf.j2", gateway_vars(**item)))['"/__microsvc/gw/api/shop/"']
    assert check[0].startswith('rewrite "^/__microsvc/gw/api/shop(/.*)$" $1 break;'), check
    assert check[-1] == 'proxy_pass "http://unix:/opt/www/shop/asgi.sock:";', check


# --- the split layout: the service's TCP port, carried to the live slot by systemd's proxy ---------

TCP_UNIT = ("# microsvc-web: shop root=/opt/www/shop group=www-data listen=10.0.0.5:18112 "
            "proxy=/lib/systemd/systemd-socket-proxyd\n[Unit]\n")


def unit_settings(text):
    """{key: [values]} of a unit's text (comments and section lines aside)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _sep, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_the_marker_names_the_tcp_address_and_the_proxy():
    meta = asgi.read_meta(TCP_UNIT)
    assert meta == {"service": "shop", "root": "/opt/www/shop", "group": "www-data", "listen": "10.0.0.5:18112",
                    "proxy": "/lib/systemd/systemd-socket-proxyd"}
    six = asgi.read_meta(TCP_UNIT.replace("10.0.0.5:18112", "[fd00::5]:18112"))
    assert six["listen"] == "[fd00::5]:18112"
    # Without them (a gateway host), no TCP listener.
    assert asgi.tcp_units(asgi.read_meta(UNIT)) == {}


@pytest.mark.parametrize("listen", [
    "0.0.0.0:18112",                  # the wildcard: every address of the host
    "[::]:18112",
    "10.0.0.5:80",                    # below 1024
    "10.0.0.5:65536", "10.0.0.5:0",
    "10.0.0.5", "10.0.0.5:", ":18112",
    "host.example:18112",             # not an address
    "10.0.0.256:18112", "10.0.0.5:18112:1",
    "fd00::5:18112",                  # IPv6 without brackets
    "[10.0.0.5]:18112",               # IPv4 in brackets
    "[fd00:0::5]:18112",              # not the canonical form
    "224.0.0.1:18112",                # multicast
    "10.0.0.5:18112\nExecStartPre=/bin/sh",
    "/run/x.sock",
])
def test_a_tcp_address_that_is_not_one_private_address_and_port_is_refused(listen):
    with pytest.raises(asgi.AsgiError):
        asgi.read_meta(TCP_UNIT.replace("10.0.0.5:18112", listen))


@pytest.mark.parametrize("marker", [
    # extra words, unknown or repeated fields
    "# microsvc-web: shop root=/opt/www/shop group=www-data listen=10.0.0.5:18112 proxy=/lib/systemd/systemd-socket-proxyd x",
    ("# microsvc-web: shop root=/opt/www/shop group=www-data listen=10.0.0.5:18112 "
     "proxy=/lib/systemd/systemd-socket-proxyd exec=/bin/sh"),
    ("# microsvc-web: shop root=/opt/www/shop group=www-data listen=10.0.0.5:18112 listen=10.0.0.6:18112 "
     "proxy=/lib/systemd/systemd-socket-proxyd"),
    "# microsvc-web: shop root=/opt/www/shop root=/etc group=www-data",
    "# microsvc-web: shop root=/opt/www/shop  group=www-data",
    # the listener needs both fields; the proxy is systemd's, at one of its platform paths
    "# microsvc-web: shop root=/opt/www/shop group=www-data listen=10.0.0.5:18112",
    "# microsvc-web: shop root=/opt/www/shop group=www-data proxy=/lib/systemd/systemd-socket-proxyd",
    "# microsvc-web: shop root=/opt/www/shop group=www-data listen=10.0.0.5:18112 proxy=/opt/www/shop/proxy",
    "# microsvc-web: shop root=/opt/www/shop group=www-data listen=10.0.0.5:18112 proxy=/bin/sh",
])
def test_a_bad_tcp_marker_is_refused(marker):
    with pytest.raises(asgi.AsgiError):
        asgi.read_meta(marker + "\n[Unit]\n")


def test_the_tcp_socket_is_roots_on_the_private_address_for_the_proxy_service():
    units_ = asgi.tcp_units(asgi.read_meta(TCP_UNIT))
    assert sorted(units_) == ["microsvc-shop.web-tcp.service", "microsvc-shop.web-tcp.socket"]
    sock = unit_settings(units_["microsvc-shop.web-tcp.socket"])
    assert sock["ListenStream"] == ["10.0.0.5:18112"]
    assert sock["Service"] == ["microsvc-shop.web-tcp.service"]
    # systemd (root) binds it: no SocketUser=, no Accept= (one proxy process for all connections).
    assert "SocketUser" not in sock and "Accept" not in sock


def test_the_proxy_runs_as_the_service_in_its_slice_without_a_network_through_roots_link():
    text = asgi.tcp_units(asgi.read_meta(TCP_UNIT))["microsvc-shop.web-tcp.service"]
    values = unit_settings(text)
    argv = values["ExecStart"][0].split()
    assert argv[0] == "/lib/systemd/systemd-socket-proxyd" and argv[-1] == "/opt/www/shop/asgi.sock", argv
    assert values["User"] == ["shop"] and values["Group"] == ["shop"]
    assert values["Slice"] == ["microsvc-shop.slice"]
    assert values["PrivateNetwork"] == ["true"] and values["RestrictAddressFamilies"] == ["AF_UNIX"]
    assert values["CapabilityBoundingSet"] == [""]
    # The collection's sandbox, each setting once.
    for line in units.SANDBOX:
        key, _sep, value = line.partition("=")
        assert values[key] == [value], key
    assert values["InaccessiblePaths"] == [" ".join("-" + s for s in VASSAL_VARS["__uwsgi_vassal_control_sockets"])]
    assert "Requires=microsvc-shop.web-tcp.socket" in text
    # The texts are only from checked values: nothing else starts a setting.
    assert all(line.startswith(("#", "[")) or not line or "=" in line for line in text.splitlines())


def test_a_service_with_a_dash_gets_its_own_slice_for_the_proxy():
    meta = asgi.read_meta(TCP_UNIT.replace("shop root=/opt/www/shop", "shop-api root=/opt/www/shop-api"))
    values = unit_settings(asgi.tcp_units(meta)["microsvc-shop-api.web-tcp.service"])
    assert values["Slice"] == ["microsvc-shop\\x2dapi.slice"]


def test_the_proxy_hides_the_control_sockets_the_vassals_hide():
    assert list(asgi.CONTROL_SOCKETS) == VASSAL_VARS["__uwsgi_vassal_control_sockets"]


def test_each_platform_names_a_proxy_path_the_marker_accepts():
    for name in ("default.yml", "RedHat.yml"):
        path = _yaml("roles/uwsgi_vassal/vars/" + name)["__uwsgi_vassal_socket_proxyd"]
        assert path in asgi.PROXIES, (name, path)


@pytest.mark.parametrize("tcp", [False, True])
def test_the_web_unit_template_writes_a_marker_asgi_py_reads(templar, tcp):  # noqa: F811
    svc = {"name": "shop", "group": "shop", "root": "/opt/www/shop", "log_dir": "/opt/www/shop/shared/log", "port": 18112,
           "module": "shop.asgi:app", "script_name": "/api/shop", "strip_route": True, "processes": 2,
           "websocket_grace": 3}
    variables = dict(ansible_managed="Ansible managed", __uwsgi_vassal_svc=svc, __uwsgi_vassal_tcp=tcp,
                     __uwsgi_vassal_socket_group="www-data", uwsgi_vassal_bind_address="10.0.0.5",
                     __uwsgi_vassal_socket_proxyd="/lib/systemd/systemd-socket-proxyd",
                     __uwsgi_vassal_helper="/usr/local/sbin/microsvc-run", microsvc_plan={"root": "/opt/www"},
                     __uwsgi_vassal_slice="microsvc-shop.slice", uwsgi_vassal_hardening=False)
    meta = asgi.read_meta(render(templar, "roles/uwsgi_vassal/templates/web.service.j2", variables))
    assert meta.get("listen") == ("10.0.0.5:18112" if tcp else None)
    # Where no nginx runs (a TCP host) the slots' sockets are for the service's own group.
    assert meta["group"] == ("shop" if tcp else "www-data")
    assert bool(asgi.tcp_units(meta)) == tcp


class FakeSystemd:
    """systemctl as the tests see it: every call recorded; units listed in ``active`` are active."""

    def __init__(self, monkeypatch, active=()):
        self.calls, self.active = [], set(active)
        monkeypatch.setattr(asgi, "_systemctl", lambda args, check=True, timeout=120: self.calls.append(args))
        monkeypatch.setattr(asgi, "tcp_active", lambda name: asgi.tcp_names(name)[0] in self.active)


def test_removal_stops_the_port_first_and_leaves_no_unit(tmp_path, monkeypatch):
    fake = FakeSystemd(monkeypatch)
    root = tmp_path / "www" / "shop"
    root.mkdir(parents=True)
    web = tmp_path / "microsvc-shop.web@.service"
    web.write_text(TCP_UNIT.replace("/opt/www/shop", str(root)))
    for name, text in asgi.tcp_units(asgi.read_meta(web.read_text())).items():
        (tmp_path / name).write_text(text)
    (tmp_path / "microsvc-shop.web@.socket").write_text("x")
    (tmp_path / "microsvc-other.web-tcp.socket").write_text("another service's")
    for wants, unit in (("multi-user.target.wants", "microsvc-shop.web@2.service"),
                        ("sockets.target.wants", "microsvc-shop.web-tcp.socket"),
                        ("sockets.target.wants", "microsvc-other.web-tcp.socket")):
        (tmp_path / wants).mkdir(exist_ok=True)
        os.symlink("../" + unit.replace("@2", "@"), tmp_path / wants / unit)
    os.symlink("asgi-1.sock", root / "asgi.sock")
    assert asgi.stop("shop", str(web))
    assert sorted(os.listdir(tmp_path)) == ["microsvc-other.web-tcp.socket", "multi-user.target.wants",
                                            "sockets.target.wants", "www"]
    # Nothing of the service starts at boot any more; another service's link stays.
    assert os.listdir(tmp_path / "multi-user.target.wants") == []
    assert os.listdir(tmp_path / "sockets.target.wants") == ["microsvc-other.web-tcp.socket"]
    assert not os.path.lexists(root / "asgi.sock")
    stops = [c for c in fake.calls if c[0] == "stop"]
    assert stops[0] == ["stop", "--", "microsvc-shop.web-tcp.socket", "microsvc-shop.web-tcp.service"], stops
    assert "microsvc-shop.web-tcp.service" in fake.calls[-1] and fake.calls[-1][0] == "reset-failed"


def test_removal_finds_a_tcp_listener_left_without_its_web_unit(tmp_path, monkeypatch):
    fake = FakeSystemd(monkeypatch)
    (tmp_path / "microsvc-shop.web-tcp.service").write_text("left by a run cut short")
    assert asgi.stop("shop", str(tmp_path / "microsvc-shop.web@.service"))
    assert os.listdir(tmp_path) == [] and ["daemon-reload"] in fake.calls
    assert not asgi.stop("shop", str(tmp_path / "microsvc-shop.web@.service"))


@pytest.fixture()
def host(tmp_path, monkeypatch):
    """A fake host for asgi.apply: units in tmp_path, the service directory below it, a proxy
    binary, and slots that start at once."""
    root = tmp_path / "www" / "shop"
    root.mkdir(parents=True)
    proxy = "/lib/systemd/systemd-socket-proxyd"
    monkeypatch.setattr(asgi.os.path, "isfile", lambda p, _real=os.path.isfile: p == proxy or _real(p))
    monkeypatch.setattr(asgi, "start_slot", lambda name, root_, slot, timeout, log_file=None: 4242)
    monkeypatch.setattr(asgi, "SWAP_DRAIN", 0)
    return tmp_path, root


def test_a_first_deploy_writes_both_tcp_units_and_starts_the_port_after_the_slot(host, monkeypatch):
    units_dir, root = host
    fake = FakeSystemd(monkeypatch)
    monkeypatch.setattr(asgi, "running", lambda name, root_: (None, None))
    content = TCP_UNIT.replace("/opt/www/shop", str(root))
    result = asgi.apply("shop", str(units_dir / "microsvc-shop.web@.service"), content)
    assert result["action"] == "start"
    wanted = asgi.tcp_units(asgi.read_meta(content))
    for name, text in wanted.items():
        assert (units_dir / name).read_text() == text
    assert os.readlink(root / "asgi.sock") == "asgi-1.sock"
    start = ["start", "--", "microsvc-shop.web-tcp.socket"]
    # After the slot is live; then what starts at boot: the live slot and the port, not the other slot.
    assert ["enable", "--", "microsvc-shop.web@1.service"] in fake.calls
    enable = ["enable", "--no-reload", "--", "microsvc-shop.web-tcp.socket"]
    assert fake.calls.index(start) < fake.calls.index(enable)
    assert not [c for c in fake.calls if c[0] == "enable" and "microsvc-shop.web@2.service" in c]
    units_ = asgi.tcp_units(asgi.read_meta(content))
    assert "[Install]\nWantedBy=sockets.target" in units_["microsvc-shop.web-tcp.socket"]


def test_a_redeploy_leaves_a_running_port_alone_and_a_stopped_one_is_started(host, monkeypatch):
    units_dir, root = host
    content = TCP_UNIT.replace("/opt/www/shop", str(root))
    path = units_dir / "microsvc-shop.web@.service"
    path.write_text(content)
    (units_dir / "microsvc-shop.web@.socket").write_text(asgi.socket_unit(asgi.read_meta(content)))
    for name, text in asgi.tcp_units(asgi.read_meta(content)).items():
        (units_dir / name).write_text(text)
    os.symlink("asgi-1.sock", root / "asgi.sock")
    # Converged: the live slot and the port are enabled at boot.
    for wants, unit in (("multi-user.target.wants", "microsvc-shop.web@1.service"),
                        ("sockets.target.wants", "microsvc-shop.web-tcp.socket")):
        (units_dir / wants).mkdir(exist_ok=True)
        os.symlink("../" + unit.replace("@1", "@"), units_dir / wants / unit)
    monkeypatch.setattr(asgi, "running", lambda name, root_: (1, 100))
    fake = FakeSystemd(monkeypatch, active=["microsvc-shop.web-tcp.socket"])
    assert asgi.apply("shop", str(path), content)["action"] == "none"
    assert fake.calls == []
    result = asgi.apply("shop", str(path), content, code_changed=True)
    assert result["action"] == "swap" and os.readlink(root / "asgi.sock") == "asgi-2.sock"
    assert ["disable", "--", "microsvc-shop.web@1.service"] in fake.calls
    assert ["enable", "--", "microsvc-shop.web@2.service"] in fake.calls
    # Units unchanged: the proxy keeps running (it connects through the link), nothing reloaded.
    assert ["daemon-reload"] not in fake.calls
    assert not [c for c in fake.calls if c[0] == "stop" and "microsvc-shop.web-tcp.service" in c]
    # A listener that is not running (a reboot, a stop by hand) is what makes the probe call: it starts.
    fake = FakeSystemd(monkeypatch, active=[])
    assert asgi.apply("shop", str(path), content)["action"] == "swap"
    assert ["start", "--", "microsvc-shop.web-tcp.socket"] in fake.calls


def test_a_new_port_restarts_the_listener_after_the_swap_and_a_gateway_host_removes_it(host, monkeypatch):
    units_dir, root = host
    content = TCP_UNIT.replace("/opt/www/shop", str(root))
    path = units_dir / "microsvc-shop.web@.service"
    path.write_text(content)
    for name, text in asgi.tcp_units(asgi.read_meta(content)).items():
        (units_dir / name).write_text(text)
    monkeypatch.setattr(asgi, "running", lambda name, root_: (1, 100))
    fake = FakeSystemd(monkeypatch, active=["microsvc-shop.web-tcp.socket"])
    moved = content.replace(":18112", ":18113")
    asgi.apply("shop", str(path), moved)
    assert "ListenStream=10.0.0.5:18113" in (units_dir / "microsvc-shop.web-tcp.socket").read_text()
    stop = ["stop", "--", "microsvc-shop.web-tcp.socket", "microsvc-shop.web-tcp.service"]
    start = ["start", "--", "microsvc-shop.web-tcp.socket"]
    assert fake.calls.index(stop) < fake.calls.index(start)
    # The host became a gateway host: no listen= in the marker, the listener goes.
    fake = FakeSystemd(monkeypatch, active=["microsvc-shop.web-tcp.socket"])
    local = UNIT.replace("/opt/www/shop", str(root))
    asgi.apply("shop", str(path), local)
    assert not [n for n in os.listdir(units_dir) if "web-tcp" in n]
    assert ["enable", "--", "microsvc-shop.web@2.service"] in fake.calls
    assert stop in fake.calls and start not in fake.calls


def test_a_host_without_the_proxy_fails_before_any_change(tmp_path, monkeypatch):
    fake = FakeSystemd(monkeypatch)
    monkeypatch.setattr(asgi.os.path, "isfile", lambda p: False)
    with pytest.raises(asgi.AsgiError, match="systemd-socket-proxyd is not on this host"):
        asgi.apply("shop", str(tmp_path / "microsvc-shop.web@.service"), TCP_UNIT)
    assert os.listdir(tmp_path) == [] and fake.calls == []


def upstream(text):
    return [line.strip() for line in text.split("upstream microsvc_shop {", 1)[1].split("}", 1)[0].splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_the_upstream_of_an_asgi_service_on_app_hosts_lists_their_ports_and_keeps_connections(templar):  # noqa: F811
    def two_app_hosts(**item):
        variables = gateway_vars(**dict(item, members=["app1", "app2"], port=18112))
        variables["hostvars"]["app2"] = {"microsvc_private_address": "10.0.0.6"}
        return variables

    lines = upstream(render(templar, TEMPLATES + "upstream.conf.j2", two_app_hosts(**asgi_item())))
    servers = [line.split()[1:] for line in lines if line.startswith("server ")]
    assert [s[0] for s in servers] == ['"10.0.0.5:18112"', '"10.0.0.6:18112"'], lines
    # Balanced and failed over like a WSGI service's members (no backup entry).
    assert all(s[1].startswith("max_fails=") and "backup;" not in s for s in servers), lines
    assert "keepalive 32;" in lines
    # A WSGI service's upstream keeps none (uwsgi_pass opens one connection per request).
    wsgi = upstream(render(templar, TEMPLATES + "upstream.conf.j2", two_app_hosts()))
    assert len([line for line in wsgi if line.startswith("server ")]) == 2, wsgi
    assert not [line for line in wsgi if line.startswith("keepalive")], wsgi


def test_the_upstream_of_an_asgi_service_on_the_gateway_host_is_roots_link(templar):  # noqa: F811
    lines = upstream(render(templar, TEMPLATES + "upstream.conf.j2", gateway_vars(**asgi_item())))
    assert lines[0].startswith('server "unix:/opt/www/shop/asgi.sock" max_fails=0'), lines
    assert "keepalive 32;" in lines


def test_the_check_server_reaches_an_app_hosts_asgi_port_directly(templar):  # noqa: F811
    variables = gateway_vars(**dict(asgi_item(), members=["app1"], port=18112))
    checks = locations(render(templar, TEMPLATES + "checks.conf.j2", variables))
    check = checks['"/__microsvc/app1/api/shop/"']
    assert check[0].startswith('rewrite "^/__microsvc/app1/api/shop(/.*)$" $1 break;'), check
    assert check[-1] == 'proxy_pass "http://10.0.0.5:18112";', check
    assert "proxy_set_header Upgrade $http_upgrade;" in check


def test_asgi_services_get_tcp_ports_by_the_rules_of_vassals(tmp_path):
    """The split layout: an ASGI service's port is assigned with the WSGI services' (derived from
    its name, distinct from every other service's), and an operator's port is checked alike."""
    with open(os.path.join(ROOT, "roles/service_plan/meta/argument_specs.yml"), encoding="utf-8") as handle:
        spec = service_plan.load_service_spec(yaml.safe_load(handle))
    planner = service_plan.Planner(spec, root="/opt/www", base_dir=str(tmp_path))
    listed = [{"name": "shop", "source": "code", "interface": "asgi", "module": "shop.asgi:app"},
              {"name": "cart", "source": "code", "module": "app"},
              {"name": "chat", "source": "code", "interface": "asgi", "module": "chat.asgi:app", "port": 18200}]
    plan = planner.plan(listed, check_sources=False)
    ports = {s["name"]: s["port"] for s in plan["services"]}
    assert ports["chat"] == 18200 and len(set(ports.values())) == 3
    assert all(10000 <= ports[name] < 30000 for name in ("shop", "cart"))
    # The same name gets the same port whatever the rest of the list is.
    alone = planner.plan(listed[:1], check_sources=False)["services"][0]["port"]
    assert alone == ports["shop"]
    # A derived port makes way for an operator's; two operators' ports may not meet.
    moved = {s["name"]: s["port"] for s in planner.plan([dict(listed[0], port=ports["cart"]), listed[1]],
                                                          check_sources=False)["services"]}
    assert moved["shop"] == ports["cart"] and moved["cart"] != ports["cart"]
    with pytest.raises(service_plan.PlanError, match="'port'"):
        planner.plan([dict(listed[0], port=18200), listed[2]], check_sources=False)


def test_a_listener_that_does_not_start_fails_the_deploy_after_the_old_slot_stopped(host, monkeypatch):
    from ansible_collections.microsvc.deploy.plugins.module_utils.units import UnitsError
    from ansible_collections.microsvc.deploy.plugins.module_utils.vassal import VassalError

    units_dir, root = host
    calls = []

    def systemctl(args, check=True, timeout=120):
        calls.append(args)
        if args[0] == "start" and check:
            raise UnitsError("systemd", "Address already in use")

    monkeypatch.setattr(asgi, "_systemctl", systemctl)
    monkeypatch.setattr(asgi, "tcp_active", lambda name: False)
    monkeypatch.setattr(asgi, "running", lambda name, root_: (1, 100))
    with pytest.raises(VassalError, match="TCP listener .*did not start: Address already in use"):
        asgi.apply("shop", str(units_dir / "microsvc-shop.web@.service"), TCP_UNIT.replace("/opt/www/shop", str(root)))
    assert ["stop", "--", "microsvc-shop.web@1.socket"] in calls
