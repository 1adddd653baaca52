# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Recognise values that came, unchanged, from an AWS secret store lookup (controller only).

Under ``microsvc_require_vault`` an env value named like a secret must come from a trusted
store: ansible-vault, or AWS SSM Parameter Store / Secrets Manager read with the amazon.aws
lookups. ansible-core 2.19 tags every value with its ``Origin``; the amazon.aws lookups add no
tag of their own, so their result carries the origin (file, line, column) of the template that
called them. Any template that computes a new string (concatenation, a filter, a slice, a
fallback ``default``) gives its result *its own* origin. So a value came unchanged from such a
lookup exactly when its origin is the origin of a raw inventory template that is nothing but
one call of an allowed lookup with literal arguments. ``lookup_only`` decides the latter on
Jinja's syntax tree (never with a regular expression); ``TemplateIndex`` maps origins to the
raw templates found in the play's variables.
"""

from __future__ import annotations

from jinja2 import Environment, nodes

# The lookups (and their older names) that read a secret store, and the keyword arguments
# each may take. Everything is a literal; nothing in them can inject a value.
LOOKUPS = {
    "amazon.aws.ssm_parameter": {"region", "profile", "aws_profile", "decrypt"},
    "amazon.aws.aws_ssm": {"region", "profile", "aws_profile", "decrypt"},
    "amazon.aws.secretsmanager_secret": {"region", "profile", "aws_profile", "version_id", "version_stage"},
    "amazon.aws.aws_secret": {"region", "profile", "aws_profile", "version_id", "version_stage"},
}

_ENV = Environment()


def lookup_only(template):
    """The lookup's name when ``template`` is exactly ``{{ lookup('<allowed>', '<name>', k=literal) }}``
    (whitespace inside the braces allowed, nothing outside them), else None."""
    if not isinstance(template, str) or "\n" in template.strip("\n") or "{{" not in template:
        return None
    try:
        tree = _ENV.parse(str(template))
    except Exception:  # noqa: BLE001 - anything Jinja cannot parse is not a lookup
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output) or len(tree.body[0].nodes) != 1:
        return None
    call = tree.body[0].nodes[0]
    if not (isinstance(call, nodes.Call) and isinstance(call.node, nodes.Name) and call.node.name == "lookup"):
        return None
    if call.dyn_args is not None or call.dyn_kwargs is not None or len(call.args) != 2:
        return None
    if not all(isinstance(arg, nodes.Const) and isinstance(arg.value, str) for arg in call.args):
        return None
    plugin, term = call.args[0].value, call.args[1].value
    if plugin not in LOOKUPS or not term or any(ord(c) < 32 or ord(c) == 127 for c in term):
        return None
    for keyword in call.kwargs:
        if keyword.key not in LOOKUPS[plugin]:
            return None
        if not (isinstance(keyword.value, nodes.Const) and isinstance(keyword.value.value, (str, bool))):
            return None
    return plugin


def origin_key(origin):
    """What identifies where a value was written: file, line, column (or a description)."""
    if origin is None:
        return None
    return (getattr(origin, "path", None), getattr(origin, "description", None),
            getattr(origin, "line_num", None), getattr(origin, "col_num", None))


class TemplateIndex:
    """Raw strings of the play's variables (as the action plugin receives them in task_vars,
    before templating), grouped by origin."""

    def __init__(self, variables, get_origin, is_template, max_items=200000):
        self._by_origin = {}
        self._get_origin = get_origin
        self._budget = max_items
        seen = set()
        stack = [variables]
        while stack and self._budget > 0:
            value = stack.pop()
            self._budget -= 1
            if isinstance(value, str):
                # Only strings Ansible renders as templates (not !unsafe ones) make lookups.
                key = origin_key(get_origin(value)) if is_template(value) else None
                if key is not None:
                    self._by_origin.setdefault(key, set()).add(str(value))
            elif isinstance(value, (dict, list, tuple)) and id(value) not in seen:
                seen.add(id(value))
                stack.extend(value.values() if isinstance(value, dict) else value)

    def from_lookup(self, value):
        """Whether ``value`` is, unchanged, the result of an allowed secret store lookup."""
        if not isinstance(value, str):
            return False
        key = origin_key(self._get_origin(value))
        raw = self._by_origin.get(key)
        if not raw:
            return False
        # Several raw strings may share an origin without a position (extra vars): every one of
        # them must be a lookup call, or the value may come from the one that is not.
        return all(lookup_only(template) for template in raw)
