#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Read, in one call, what the gateway's configuration depends on from the host."""

from __future__ import annotations

DOCUMENTATION = r"""
module: host_facts
short_description: Read the nginx version, its optional modules, the ACME certificate and bindable addresses
description:
  - One call for everything the gateway's templates depend on from the host, so that no file costs a call of
    its own. Changes nothing; runs in check mode too.
  - C(nginx_version) decides how HTTP/2 is switched on (C(listen ... http2) before nginx 1.25.1, C(http2 on)
    from then on); the module files say whether Brotli can be used; the ACME certificate (its names, serial,
    expiry and the ACME server it came from) says whether certbot has work to do.
  - C(bind) tells, for each address, whether a socket can be bound to it on this host (a metrics endpoint
    must use an address the host has).
version_added: 0.1.0
options:
  nginx_binary:
    description: The nginx executable.
    type: str
    default: nginx
  modules:
    description: Paths of dynamic module files whose presence is reported.
    type: list
    elements: path
    default: []
  acme_cert:
    description: The certificate of the ACME lineage (certbot's C(live/<name>/cert.pem)); empty skips it.
    type: path
    default: ""
  acme_renewal_conf:
    description: certbot's renewal configuration of the lineage, for the ACME server it was issued by.
    type: path
    default: ""
  bind:
    description: Addresses to try to bind a socket to (port 0, closed at once).
    type: list
    elements: str
    default: []
notes:
  - Why not a builtin - one read-only call replaces a C(command) task per question (nginx -v, the certificate, each
    address).
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Read the gateway's facts
  microsvc.deploy.host_facts:
    modules: [/usr/share/nginx/modules/ngx_http_brotli_filter_module.so]
    acme_cert: /etc/letsencrypt/live/microsvc-gateway/cert.pem
"""

RETURN = r"""
nginx_version:
  description: The installed nginx's version (C(1.22.1)), empty when nginx is not installed.
  returned: always
  type: str
modules:
  description: Module path to whether the file exists.
  returned: always
  type: dict
acme:
  description: C(present), and when present C(names) (sorted), C(serial), C(not_after) and C(server).
  returned: always
  type: dict
bind:
  description: Address to whether a socket could be bound to it.
  returned: always
  type: dict
"""

import os
import re
import socket
import ssl

from ansible.module_utils.basic import AnsibleModule


def nginx_version(module, binary):
    path = binary if os.path.isabs(binary) else module.get_bin_path(binary)
    if not path or not os.path.exists(path):
        return ""
    rc, out, err = module.run_command([path, "-v"])
    match = re.search(r"nginx/([0-9]+(?:\.[0-9]+)*)", (err or "") + (out or ""))
    return match.group(1) if rc == 0 and match else ""


def decode_cert(module, path):
    """names, serial and expiry of a PEM certificate: with the standard library's decoder,
    else with the openssl command."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is not None:
        try:
            info = decode(path)
            names = sorted(v for k, v in info.get("subjectAltName", ()) if k == "DNS")
            return names, info.get("serialNumber", ""), info.get("notAfter", "")
        except (ssl.SSLError, OSError, ValueError):
            pass
    openssl = module.get_bin_path("openssl")
    if not openssl:
        return None
    rc, out, _err = module.run_command([openssl, "x509", "-in", path, "-noout", "-serial", "-enddate",
                                        "-ext", "subjectAltName"])
    if rc != 0:
        return None
    serial = re.search(r"^serial=([0-9A-Fa-f]+)", out, re.MULTILINE)
    end = re.search(r"^notAfter=(.+)$", out, re.MULTILINE)
    names = sorted(re.findall(r"DNS:([^,\s]+)", out))
    return names, serial.group(1) if serial else "", end.group(1).strip() if end else ""


def renewal_server(path):
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                match = re.match(r"\s*server\s*=\s*(\S+)\s*$", line)
                if match:
                    return match.group(1)
    except OSError:
        pass
    return ""


def bindable(address):
    try:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
        return True
    except (OSError, ValueError):
        return False


def main():
    module = AnsibleModule(
        argument_spec=dict(
            nginx_binary=dict(type="str", default="nginx"),
            modules=dict(type="list", elements="path", default=[]),
            acme_cert=dict(type="path", default=""),
            acme_renewal_conf=dict(type="path", default=""),
            bind=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    acme = {"present": False}
    if p["acme_cert"] and os.path.isfile(p["acme_cert"]):
        decoded = decode_cert(module, p["acme_cert"])
        if decoded is not None:
            names, serial, not_after = decoded
            acme = {"present": True, "names": names, "serial": serial, "not_after": not_after,
                    "server": renewal_server(p["acme_renewal_conf"]) if p["acme_renewal_conf"] else ""}
    module.exit_json(
        changed=False,
        nginx_version=nginx_version(module, p["nginx_binary"]),
        modules={path: os.path.isfile(path) for path in p["modules"]},
        acme=acme,
        bind={address: bindable(address) for address in p["bind"]},
    )


if __name__ == "__main__":
    main()
