# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Filters that make templates quote (or refuse) what they render.

Defence in depth: every value is validated before it reaches a template (service_plan), and
the templates still never let a value start a new directive. nginx strings are quoted and
escaped; uWSGI ini values cannot be quoted (the rest of the line is the value), so a value
with a line break or one of uWSGI's expansions stops the run instead.
"""

from __future__ import annotations

import unicodedata

from ansible.errors import AnsibleFilterError

UWSGI_MAGIC = ("$(", "@(", "%(", "=(", "{{", "{%")


def _control(text):
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def nginx_quote(value, variables=False):
    """One nginx argument in double quotes, backslashes and quotes escaped. Control characters
    are refused; so is '$' unless ``variables`` (nginx expands variables even in quotes)."""
    text = str(value)
    if _control(text):
        raise AnsibleFilterError("nginx_quote: refused a value with a control character or line break")
    if "$" in text and not variables:
        raise AnsibleFilterError("nginx_quote: refused %r: '$' would start an nginx variable" % text[:60])
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


def uwsgi_value(value):
    """A value of an ini line uWSGI reads: one line, without uWSGI's readers and expansions.
    Booleans become true/false. The value is never echoed (it may be a secret)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if _control(text):
        raise AnsibleFilterError("uwsgi_value: refused a value with a control character or line break")
    if any(seq in text for seq in UWSGI_MAGIC):
        raise AnsibleFilterError("uwsgi_value: refused a value with one of %s, which uWSGI would expand"
                                 % ", ".join(UWSGI_MAGIC))
    return text


def systemd_quote(value):
    """One argument of a systemd ExecStart= line: in double quotes, with backslashes and quotes
    escaped, '%' doubled (systemd's specifiers) and '$' doubled (its variable expansion), so the
    program gets exactly the text. Control characters are refused (a line break would end the
    setting)."""
    text = str(value)
    if _control(text):
        raise AnsibleFilterError("systemd_quote: refused a value with a control character or line break")
    return '"%s"' % (text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$"))


def systemd_value(value):
    """A value of a systemd unit setting that is not a command line (Description=): one line,
    '%' doubled so no specifier is expanded."""
    text = str(value)
    if _control(text):
        raise AnsibleFilterError("systemd_value: refused a value with a control character or line break")
    return text.replace("%", "%%")


class FilterModule:
    def filters(self):
        return {"nginx_quote": nginx_quote, "uwsgi_value": uwsgi_value, "systemd_quote": systemd_quote,
                "systemd_value": systemd_value}
