# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Render a role's templates on the controller, many files in one task.

The built-in template module costs one remote call per file; the gateway and the
probe render one file per service, so they render here and ship the results in a
single module call. Templates are looked up like the template module does (the
role's templates/ first) and get the same variables, plus ``ansible_managed``.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail, AnsibleError

try:  # ansible-core >= 2.19: template text must be marked as trusted
    from ansible.template import trust_as_template
except ImportError:  # pragma: no cover - older ansible-core
    def trust_as_template(value):
        return value

from ansible.template import generate_ansible_template_vars


def _cache_compiled(templar):
    """Compile each distinct template text once per templar. ansible-core compiles a template
    string on every call (for a role's file, with trim_blocks, in a fresh overlay environment
    that also recompiles its includes): most of the time of rendering one file per service.
    Compiling does not depend on the variables, and the trust check runs before it, so a
    compiled template is reused as it is. Where ansible-core's engine differs, nothing is cached."""
    engine = getattr(templar, "_engine", None)
    compile_template = getattr(engine, "_compile_template", None)
    if compile_template is None:  # pragma: no cover - another ansible-core layout
        return
    compiled = {}

    def cached(template, options):
        key = (str(template), options)
        if key not in compiled:
            compiled[key] = compile_template(template, options)
        return compiled[key]

    engine._compile_template = cached


class Renderer:
    """Render templates of the running role with the task's variables."""

    def __init__(self, action, task_vars):
        self._action = action
        self._task_vars = task_vars
        self._cache = {}
        self._templars = {}

    def _source(self, name):
        if name not in self._cache:
            try:
                path = self._action._find_needle("templates", name)
            except AnsibleError as exc:
                raise AnsibleActionFail("template %s not found: %s" % (name, exc)) from None
            data = self._action._loader.get_text_file_contents(path)
            self._cache[name] = (path, trust_as_template(data))
        return self._cache[name]

    def render(self, name, extra_vars=None, dest=None):
        path, data = self._source(name)
        variables = dict(self._task_vars)
        variables.update(self._managed_vars(name, path, dest))
        if extra_vars:
            variables.update(extra_vars)
        # One templar per templates directory, reused with each file's variables: building a
        # new one per file costs more than rendering the file.
        directory = os.path.dirname(path)
        templar = self._templars.get(directory)
        if templar is None:
            templar = self._action._templar.copy_with_new_env(searchpath=[directory], available_variables=variables)
            _cache_compiled(templar)
            self._templars[directory] = templar
        else:
            templar.available_variables = variables
        # The template module's defaults, so a file rendered here is byte-identical to
        # the same template written by ansible.builtin.template.
        out = templar.template(data, escape_backslashes=False, overrides=dict(trim_blocks=True, lstrip_blocks=False))
        return "" if out is None else str(out)

    def _managed_vars(self, name, path, dest):
        out = generate_ansible_template_vars(name, fullpath=path, dest_path=dest)
        if "ansible_managed" in self._task_vars:  # never clobber the user's own value
            out.pop("ansible_managed", None)
        return out


def file_entries(action, renderer, entries):
    """Files to write on a host, each with its ``content``: an entry may give ``template`` (a name in
    the role's templates/, rendered with the entry's own ``vars`` added to the task's) or ``src`` (a
    name in its files/) instead."""
    files = []
    for entry in entries or []:
        entry = dict(entry)
        extra = entry.pop("vars", None)
        if "template" in entry:
            entry["content"] = renderer.render(entry.pop("template"), extra_vars=extra, dest=entry["dest"])
        elif "src" in entry:
            try:
                path = action._find_needle("files", entry.pop("src"))
            except AnsibleError as exc:
                raise AnsibleActionFail(str(exc)) from None
            with open(path, encoding="utf-8") as handle:
                entry["content"] = handle.read()
        elif "content" not in entry:
            raise AnsibleActionFail("%s: give template, src or content" % entry.get("dest"))
        files.append(entry)
    return files
