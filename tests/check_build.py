"""Check a built collection tarball: what users need is in it, what they do not is not."""

import glob
import os
import sys
import tarfile

REQUIRED = [
    "MANIFEST.json",
    "FILES.json",
    "README.md",
    "LICENSE",
    "meta/runtime.yml",
    "playbooks/site.yml",
    "roles/service_plan/meta/argument_specs.yml",
    "roles/nginx_gateway/tasks/main.yml",
    "roles/uwsgi_emperor/tasks/main.yml",
    "roles/uwsgi_vassal/tasks/main.yml",
    "plugins/action/service_plan.py",
    "plugins/modules/nginx_config.py",
    # The uwsgi_emperor role installs it on hosts for its metrics writer.
    "plugins/module_utils/uwsgi_stats.py",
]
# The README links into the manual, so every page of docs/ ships with it.
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
REQUIRED += sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
FORBIDDEN_PREFIXES = ["samples/", "tests/", "molecule/", "tools/", ".ci/", "collections/", "benchmarks/",
                      "inventories/demo/", ".venv/", "dist/"]


def main(path):
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
    errors = ["missing: %s" % n for n in REQUIRED if n not in names]
    errors += ["should not be shipped: %s" % n for n in sorted(names)
               if any(n.startswith(p) for p in FORBIDDEN_PREFIXES) or "__pycache__" in n
               or any(part.startswith(".") for part in n.split("/"))]
    for role in ("service_plan", "nginx_gateway", "uwsgi_emperor", "uwsgi_vassal"):
        for part in ("meta/argument_specs.yml", "meta/main.yml", "README.md"):
            if "roles/%s/%s" % (role, part) not in names:
                errors.append("missing: roles/%s/%s" % (role, part))
    if errors:
        print("\n".join(errors))
        return 1
    print("%s: %d files, roles, playbooks and docs present, nothing extra" % (path, len(names)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
