"""What the sources say about themselves stays true: comments, docstrings, test names and docs describe
behaviour and never point at the project's tracker ("(issue 13)"), and every plugin or role file they name
exists (a module renamed or merged leaves no docstring pointing at its old file)."""

import os
import re

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TREES = ("plugins", "roles", "tests", "molecule", "tools", "playbooks", "benchmarks", "samples", "inventories",
         "docs", "meta", ".github")
TOP_FILES = ("Makefile", "README.md", "site.yml", "galaxy.yml")
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".cache", "node_modules"}
SUFFIXES = (".py", ".yml", ".yaml", ".j2", ".md", ".rst", ".txt", ".cfg", ".toml", ".ini", ".sh", ".conf", ".json")
HERE = os.path.abspath(__file__)

# An upstream project's tracker may be cited by name ("uwsgi issue 2210"): the reference explains why
# the code works around that project. Any other "issue N" is this project's tracker.
UPSTREAM = ("uwsgi", "nginx", "ansible", "ansible-core", "ansible-lint", "molecule", "systemd", "pip", "cpython",
            "python", "django", "celery", "rq", "redis", "certbot", "pebble", "docker", "podman", "setuptools")
ISSUE = re.compile(r"\bissues?[\s_-]?#?\d+|(?<![\w&])#\d+\b", re.IGNORECASE)
LAST_WORD = re.compile(r"([\w-]+)\s*$")


def text_files():
    paths = [os.path.join(ROOT, name) for name in TOP_FILES if os.path.isfile(os.path.join(ROOT, name))]
    for tree in TREES:
        for folder, dirs, files in os.walk(os.path.join(ROOT, tree)):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            paths += [os.path.join(folder, f) for f in sorted(files) if f.endswith(SUFFIXES) or "." not in f]
    for path in paths:
        if os.path.abspath(path) == HERE or not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                yield os.path.relpath(path, ROOT), handle.read()
        except UnicodeDecodeError:
            continue


FILES = dict(text_files())


def project_issue_numbers(text):
    """The "issue N" mentions of a text that are not an upstream project's issue."""
    found = []
    for match in ISSUE.finditer(text):
        if match.group(0).startswith("#"):
            # "#1" in "service #1" is an ordinal; only "#N" right after "issue" or on its own as a
            # reference ("see #12", "(#12)") points at a tracker.
            before = text[:match.start()].rstrip()
            if not before.endswith(("(", "see", "See", "in", "of", "by", "fixes", "Fixes", "closes", "Closes")):
                continue
        project = LAST_WORD.search(text, max(0, match.start() - 40), match.start())
        if project and project.group(1).lower() in UPSTREAM:
            continue
        found.append(match.group(0))
    return found


@pytest.mark.parametrize("text,numbers", [
    ("a reload touches the whole vassal (uwsgi issue 2210)", []),
    ("the nginx issue 1234 and the uWSGI issue #706", []),
    ("errors name the item: service #1", []),
    ("# --- schedules: one app host runs them (issue 13) ---", ["13"]),
    ("Every feature of issue 14 on", ["14"]),
    ("the deploy lock (issues 17 and 18)", ["17"]),
    ("Targets of Issue12", ["12"]),
    ("fixed (see #12)", ["12"]),
])
def test_issue_number_detection(text, numbers):
    assert [re.search(r"\d+", hit).group(0) for hit in project_issue_numbers(text)] == numbers


def test_no_project_issue_numbers_in_sources():
    found = ["%s: %s" % (path, ", ".join(hits)) for path, text in FILES.items() if (hits := project_issue_numbers(text))]
    assert not found, "describe the behaviour instead of naming the issue:\n" + "\n".join(found)


# A plugin file: plugins/<dir>/<name>.py (or the short form module_utils/<name>.py, as docstrings
# write it); a role file: roles/<role>/<path>. Patterns (<name>, *, {{ }}) are not paths.
PLUGIN_DIRS = ("action", "modules", "module_utils", "plugin_utils", "filter", "lookup", "callback", "inventory",
               "doc_fragments", "test", "connection", "become", "cache", "vars", "strategy")
# The short form only for the directories that no role has (a role has vars/, not a vars plugin).
SHORT_DIRS = ("action", "modules", "module_utils", "plugin_utils", "filter", "doc_fragments")
PLUGIN_PATH = re.compile(r"(?<![\w/.-])(?:plugins/(?:%s)|%s)/[A-Za-z0-9_]+\.(?:py|yml)\b"
                         % ("|".join(PLUGIN_DIRS), "|".join(SHORT_DIRS)))
ROLE_PATH = re.compile(r"(?<![\w/.-])roles/[a-z_]+(?:/[A-Za-z0-9_.<>*{}$ -]*[A-Za-z0-9_>*}])*")


def named_paths(text):
    for match in PLUGIN_PATH.finditer(text):
        path = match.group(0)
        yield path if path.startswith("plugins/") else "plugins/" + path
    for match in ROLE_PATH.finditer(text):
        path = match.group(0).split(" ")[0].rstrip(".")
        if not re.search(r"[<>*{}$]", path):
            yield path


@pytest.mark.parametrize("text,expected", [
    ("Used on hosts (modules/release_unpack.py: the archive)", ["plugins/modules/release_unpack.py"]),
    ("see plugins/plugin_utils/settings.py.", ["plugins/plugin_utils/settings.py"]),
    ("the defaults (roles/nginx_gateway/defaults/main.yml) and roles/<role>/vars/<family>.yml",
     ["roles/nginx_gateway/defaults/main.yml"]),
    ("ansible_collections/microsvc/deploy/plugins/modules/x.py", []),
])
def test_named_path_detection(text, expected):
    assert list(named_paths(text)) == expected


def test_every_named_plugin_and_role_file_exists():
    missing = sorted({"%s names %s" % (path, named) for path, text in FILES.items() for named in named_paths(text)
                      if not os.path.exists(os.path.join(ROOT, named))})
    assert not missing, "\n".join(missing)
