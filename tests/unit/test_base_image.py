"""Unit tests for tools/base-image (pure parts only; no docker needed)."""

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "base-image"


def _load():
    loader = importlib.machinery.SourceFileLoader("base_image", str(SCRIPT))
    spec = importlib.util.spec_from_loader("base_image", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


bi = _load()

DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

DEB822_TRICKY = """\
# security first, a disabled stanza, an inline key, several URIs
Types: deb deb-src
URIs: https://security.example.org/debian-security
Suites: trixie-security
Components: main

Types: deb
URIs: http://disabled.example.org/debian
Suites: trixie
Components: main
Enabled: no

types: deb-src
uris: http://srconly.example.org/debian
suites: trixie
components: main

Types: deb
URIs: cdrom:[Debian GNU/Linux]/ http://mirror.example.org/debian/ http://second.example.org/debian
Suites: trixie trixie-updates
Components: main contrib
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGPL0BUBEADmW5NlOEtQW0rQ9Vw5qwnNBHpgv1CvYC6XA3N4C4o6fMBKFhYf
 Suites: not-a-real-field
 -----END PGP PUBLIC KEY BLOCK-----
"""

CLASSIC_LIST = """\
# deb http://commented.example.org/debian bookworm main
deb-src http://src.example.org/debian bookworm main
deb http://security.debian.org/debian-security bookworm-security main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://ftp.de.debian.org/debian/ bookworm main contrib  # trailing comment
deb http://ftp.de.debian.org/debian bookworm-updates main
"""


# ---------------------------------------------------------------- deb822

def test_deb822_this_machine():
    assert bi.parse_apt_mirror(DEBIAN_SOURCES) == "http://deb.debian.org/debian"


def test_deb822_parse_entries():
    entries = bi.parse_deb822(DEBIAN_SOURCES)
    assert len(entries) == 2
    assert entries[0]["suites"] == ["bookworm", "bookworm-updates"]
    assert entries[1]["uris"] == ["http://deb.debian.org/debian-security"]
    assert all(e["enabled"] for e in entries)


def test_deb822_skips_security_disabled_src_cdrom_and_key_block():
    entries = bi.parse_deb822(DEB822_TRICKY)
    assert [e["enabled"] for e in entries] == [True, False, True, True]
    # the continuation line "Suites: not-a-real-field" belongs to Signed-By
    assert entries[3]["suites"] == ["trixie", "trixie-updates"]
    assert bi.parse_apt_mirror(DEB822_TRICKY) == "http://mirror.example.org/debian"


def test_deb822_security_only_gives_none():
    text = DEBIAN_SOURCES.split("\n\n")[1]
    assert bi.parse_apt_mirror(text) is None


def test_deb822_updates_only_is_accepted_as_fallback():
    text = ("Types: deb\nURIs: http://m.example.org/debian\n"
            "Suites: bookworm-updates\nComponents: main\n")
    assert bi.parse_apt_mirror(text) == "http://m.example.org/debian"


def test_non_debian_suites_are_ignored():
    ubuntu = ("Types: deb\nURIs: http://archive.ubuntu.com/ubuntu/\n"
              "Suites: noble noble-updates\nComponents: main\n")
    assert bi.parse_apt_mirror(ubuntu) is None
    assert bi.parse_apt_mirror(
        "deb http://archive.ubuntu.com/ubuntu jammy main\n") is None


# ---------------------------------------------------------------- classic

def test_classic_list():
    assert bi.parse_apt_mirror(CLASSIC_LIST) == "http://ftp.de.debian.org/debian"


def test_classic_list_entries():
    entries = bi.parse_sources_list(CLASSIC_LIST)
    assert [e["types"][0] for e in entries] == ["deb-src", "deb", "deb", "deb"]
    assert entries[2]["components"] == ["main", "contrib"]


def test_classic_file_uri_and_garbage_ignored():
    text = ("deb file:/srv/repo bookworm main\n"
            "this is not a source line\n"
            "deb https://mirror.example.net/debian stable main\n")
    assert bi.parse_apt_mirror(text) == "https://mirror.example.net/debian"


def test_empty_text():
    assert bi.parse_apt_mirror("") is None
    assert bi.parse_apt_mirror("# only a comment\n") is None


# ---------------------------------------------------------------- files

def test_parse_path_uses_suffix(tmp_path):
    f = tmp_path / "debian.sources"
    f.write_text(DEBIAN_SOURCES)
    assert bi.parse_apt_mirror(f) == "http://deb.debian.org/debian"
    g = tmp_path / "mirror.list"
    g.write_text(CLASSIC_LIST)
    assert bi.parse_apt_mirror(g) == "http://ftp.de.debian.org/debian"


def test_detect_mirror_order(tmp_path):
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(DEBIAN_SOURCES)
    (apt / "sources.list.d" / "zz-other.list").write_text(
        "deb http://late.example.org/debian bookworm main\n")
    (apt / "sources.list.d" / "ignored.save").write_text(
        "deb http://ignored.example.org/debian bookworm main\n")
    # sources.list without usable entries: falls through to sources.list.d
    (apt / "sources.list").write_text("# empty\n")
    assert bi.detect_mirror(apt) == "http://deb.debian.org/debian"
    # sources.list is read first
    (apt / "sources.list").write_text(CLASSIC_LIST)
    assert bi.detect_mirror(apt) == "http://ftp.de.debian.org/debian"


def test_detect_mirror_default(tmp_path):
    assert bi.detect_mirror(tmp_path / "does-not-exist") == bi.DEFAULT_MIRROR
    assert bi.DEFAULT_MIRROR == "http://deb.debian.org/debian"


# ---------------------------------------------------------------- CLI

def _run(*args):
    # PATH without docker: --print must not need it
    env = {**os.environ, "PATH": "/nonexistent"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env,
                          capture_output=True, text=True, timeout=30,
                          check=False)


@pytest.mark.parametrize("args, tag", [
    ([], "microsvc-test/debian:bookworm"),
    (["--suite", "bookworm"], "microsvc-test/debian:bookworm"),
    (["--suite", "trixie"], "microsvc-test/debian:trixie"),
    (["--suite", "trixie", "--tag", "example/img:x"], "example/img:x"),
])
def test_print(args, tag):
    res = _run("--print", *args)
    assert res.returncode == 0, res.stderr
    assert res.stdout == tag + "\n"


def test_print_in_process(capsys):
    assert bi.main(["--print", "--suite", "trixie"]) == 0
    assert capsys.readouterr().out == "microsvc-test/debian:trixie\n"


def test_bad_suite_rejected():
    res = _run("--print", "--suite", "jessie")
    assert res.returncode == 2
    assert res.stdout == ""


def test_script_is_executable():
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3")


# ---------------------------------------------------------------- build inputs

def test_cache_key_depends_on_mirror_and_suite(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    a = bi.rootfs_tarball("bookworm", "http://a.example.org/debian")
    b = bi.rootfs_tarball("bookworm", "http://b.example.org/debian")
    c = bi.rootfs_tarball("trixie", "http://a.example.org/debian")
    assert len({a, b, c}) == 3
    assert a == bi.rootfs_tarball("bookworm", "http://a.example.org/debian")
    assert a.parent == tmp_path / "microsvc"
    assert a.name.startswith("debian-bookworm-")


def test_dockerfile_pull_path():
    df = bi.dockerfile("debian:trixie", "trixie")
    assert df.startswith("FROM debian:trixie\n")
    for pkg in bi.PACKAGES:
        assert pkg in df
    assert f'{bi.LABEL_VERSION}="{bi.IMAGE_VERSION}"' in df
    assert "ENV container=docker" in df
    assert 'CMD ["/lib/systemd/systemd"]' in df
    assert "rm -rf /var/lib/apt/lists/*" in df
