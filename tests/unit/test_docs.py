"""Reference documentation stays in sync with the argument specs, and every role documents itself."""

import glob
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_variables_reference_is_up_to_date():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen-docs"), "--check"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_every_default_is_declared_in_argument_specs():
    for defaults in glob.glob(os.path.join(ROOT, "roles", "*", "defaults", "main.yml")):
        role_dir = os.path.dirname(os.path.dirname(defaults))
        with open(defaults, encoding="utf-8") as handle:
            names = set((yaml.safe_load(handle) or {}).keys())
        with open(os.path.join(role_dir, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
            declared = set(yaml.safe_load(handle)["argument_specs"]["main"]["options"])
        assert names == declared, (role_dir, names ^ declared)


def test_every_role_readme_mentions_each_variable():
    for spec in glob.glob(os.path.join(ROOT, "roles", "*", "meta", "argument_specs.yml")):
        role_dir = os.path.dirname(os.path.dirname(spec))
        with open(spec, encoding="utf-8") as handle:
            declared = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
        with open(os.path.join(role_dir, "README.md"), encoding="utf-8") as handle:
            readme = handle.read()
        missing = [name for name in declared if name not in readme]
        assert not missing, (role_dir, missing)


# The README is the front door; the manual lives in docs/. Links between them are checked the
# way GitHub renders them: a relative link names an existing file, and its #anchor a heading there.

DOC_FILES = (["README.md"]
             + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
             + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "roles", "*", "README.md"))))
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")


def _outside_code(path):
    """The lines of a Markdown file outside fenced code blocks."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    fenced = False
    for line in lines:
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            yield line


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path):
    seen, anchors = {}, set()
    for line in _outside_code(path):
        match = re.match(r"#{1,6} (.*)", line)
        if match:
            slug = _slug(match.group(1))
            anchors.add(slug if slug not in seen else "%s-%d" % (slug, seen[slug]))
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(path):
    for line in _outside_code(path):
        # Inline code is no link, but may be a link's text: keep a placeholder.
        for target in LINK.findall(re.sub(r"`[^`]*`", "code", line)):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):
                yield target


def test_readme_is_a_front_door():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    assert len(lines) <= 300, "README.md has %d lines; move the detail to a page of docs/" % len(lines)


def test_every_relative_link_resolves_to_a_file_and_a_heading():
    broken = []
    for path in DOC_FILES:
        for target in _links(path):
            file_part, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(ROOT, os.path.dirname(path), file_part)) if file_part \
                else os.path.join(ROOT, path)
            if not os.path.exists(resolved):
                broken.append("%s: %s (no such file)" % (path, target))
            elif anchor and resolved.endswith(".md") and anchor not in _anchors(os.path.relpath(resolved, ROOT)):
                broken.append("%s: %s (no such heading)" % (path, target))
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme_or_the_index():
    linked = set()
    for path in ("README.md", os.path.join("docs", "index.md")):
        for target in _links(path):
            file_part = target.partition("#")[0]
            if file_part:
                linked.add(os.path.normpath(os.path.join(ROOT, os.path.dirname(path), file_part)))
    pages = glob.glob(os.path.join(ROOT, "docs", "*.md"))
    assert pages
    orphans = sorted(os.path.relpath(p, ROOT) for p in pages if os.path.normpath(p) not in linked)
    assert not orphans, orphans


def test_the_performance_page_holds_the_summary_make_bench_writes():
    with open(os.path.join(ROOT, "docs", "performance.md"), encoding="utf-8") as handle:
        text = handle.read()
    assert text.count("<!-- bench:start -->") == 1 and text.count("<!-- bench:end -->") == 1
    assert text.index("<!-- bench:start -->") < text.index("<!-- bench:end -->")
    with open(os.path.join(ROOT, "benchmarks", "run.py"), encoding="utf-8") as handle:
        assert '"docs", "performance.md"' in handle.read()
