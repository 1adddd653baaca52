# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Allow-list checks for every value a user gives (service fields and global settings).

A check is a callable that returns ``None`` when the value is allowed and otherwise a
message saying what is wrong and what is allowed. Each check also has ``rule``, a short
text of what it allows: the messages and docs/variables.md (tools/gen-docs) use it, so
the documentation of a refusal is the code that refuses.

Rules of the house:
- patterns match the FULL string (``re.fullmatch``); ``$`` in ``re.match`` also matches
  before a trailing newline, which is how a newline once reached a template;
- no control characters anywhere (Unicode categories Cc, Cf, Zl, Zp);
- paths are absolute (or relative where said) and normalised: no ``.``/``..`` segments, no ``//``;
- every number has an upper bound, stated in the message;
- a value that may be a secret is never echoed back (``secret=True``).

Kept free of Ansible's plugin machinery so that unit tests import it directly.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import unicodedata

CONTROL_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")


def has_control(text):
    """Whether a string holds a control, format or line/paragraph separator character."""
    return any(unicodedata.category(ch) in CONTROL_CATEGORIES for ch in text)


def kind_of(value):
    """A user-facing name for a value's type (never a Python class name)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return "a value of another kind"


def show(value, secret=False):
    """The value as it may appear in a message: repr escapes control characters."""
    if secret:
        return "the value"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Check:
    rule = ""
    max_len = 200
    secret = False

    def __call__(self, value):  # pragma: no cover - interface
        raise NotImplementedError

    def text_problem(self, value, lines_allowed=False):
        """What every text check refuses first: not a string, a control character or line break
        (only line breaks where ``lines_allowed``), more than max_len characters."""
        if not isinstance(value, str):
            return "must be a string (%s), got %s" % (self.rule, kind_of(value))
        if has_control(value.replace("\r\n", "").replace("\n", "") if lines_allowed else value):
            return "%s contains a control character or line break; allowed: %s" % (
                show(value, self.secret), self.rule)
        if len(value) > self.max_len:
            return "is %d characters long; at most %d are allowed" % (len(value), self.max_len)
        return None


class Int(Check):
    def __init__(self, low, high, note=""):
        self.low, self.high = low, high
        self.rule = "an integer from %d to %d%s" % (low, high, note)

    def __call__(self, value):
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be %s, got %s" % (self.rule, kind_of(value))
        if not self.low <= value <= self.high:
            return "must be %s, got %d" % (self.rule, value)
        return None


class Bool(Check):
    rule = "true or false"

    def __call__(self, value):
        if not isinstance(value, bool):
            return "must be true or false, got %s" % kind_of(value)
        return None


class Str(Check):
    """A string matching ``pattern`` in full, at most ``max_len`` characters."""

    def __init__(self, pattern, rule, max_len=200, secret=False, empty=False, extra=None, multiline=False):
        self.regex = re.compile(pattern)
        self.rule = rule
        self.max_len = max_len
        self.secret = secret
        self.empty = empty
        self.extra = extra  # a further predicate: value -> message or None
        # Multi-line text (PEM): line breaks are allowed, other control characters are not.
        self.multiline = multiline

    def __call__(self, value):
        if value == "" and self.empty:
            return None
        problem = self.text_problem(value, lines_allowed=self.multiline)
        if problem:
            return problem
        if not self.regex.fullmatch(value):
            return "%s is not allowed: must be %s" % (show(value, self.secret), self.rule)
        if self.extra:
            return self.extra(value)
        return None


class Anything(Check):
    """For containers whose values another check reads (e.g. the uWSGI option allow-list)."""
    rule = "see the field's own rules"

    def __call__(self, value):
        return None


class Scalar(Check):
    """A string, number or boolean whose text is one line of at most ``max_len`` characters."""

    def __init__(self, max_len=8192, secret=False, extra=None):
        self.max_len = max_len
        self.secret = secret
        self.extra = extra
        self.rule = "a string, number or boolean on one line (no control characters), at most %d characters" % max_len

    def __call__(self, value):
        if isinstance(value, (dict, list, tuple)) or value is None:
            return "must be a string, number or boolean, got %s" % kind_of(value)
        text = str(value)
        if has_control(text):
            return "%s contains a control character or line break; allowed: %s" % (
                show(text, self.secret), self.rule)
        if len(text) > self.max_len:
            return "is %d characters long; at most %d are allowed" % (len(text), self.max_len)
        if self.extra:
            return self.extra(text)
        return None


class Choice(Check):
    def __init__(self, *choices):
        self.choices = choices
        self.rule = "one of " + ", ".join(repr(c) for c in choices)

    def __call__(self, value):
        if value not in self.choices or isinstance(value, bool):
            return "%s is not allowed: must be %s" % (show(value), self.rule)
        return None


class ListOf(Check):
    def __init__(self, item, max_items=100, min_items=0):
        self.item, self.max_items, self.min_items = item, max_items, min_items
        self.rule = "a list of at most %d items, each %s" % (max_items, item.rule)

    def __call__(self, value):
        if not isinstance(value, (list, tuple)):
            return "must be a list (%s), got %s" % (self.rule, kind_of(value))
        if len(value) > self.max_items:
            return "has %d items; at most %d are allowed" % (len(value), self.max_items)
        if len(value) < self.min_items:
            return "must list at least %d item%s" % (self.min_items, "" if self.min_items == 1 else "s")
        for index, entry in enumerate(value):
            msg = self.item(entry)
            if msg:
                return "item %d: %s" % (index + 1, msg)
        return None


class MapOf(Check):
    def __init__(self, key, value, max_items=100):
        self.key, self.value, self.max_items = key, value, max_items
        self.rule = "a mapping of at most %d entries; names %s; values %s" % (max_items, key.rule, value.rule)

    def __call__(self, value):
        if not isinstance(value, dict):
            return "must be a mapping (%s), got %s" % (self.rule, kind_of(value))
        if len(value) > self.max_items:
            return "has %d entries; at most %d are allowed" % (len(value), self.max_items)
        for key, entry in value.items():
            msg = self.key(key)
            if msg:
                return "name %s" % msg
            msg = self.value(entry)
            if msg:
                return "%s: %s" % (show(key), msg)
        return None


class AnyOf(Check):
    def __init__(self, *checks, rule=None):
        self.checks = checks
        self.rule = rule or " or ".join(c.rule for c in checks)

    def __call__(self, value):
        messages = [c(value) for c in self.checks]
        if all(messages):
            if isinstance(value, str) and has_control(value):
                return messages[0]
            return "%s is not allowed: must be %s" % (show(value), self.rule)
        return None


class Argv(Check):
    """A command as a list of arguments (never a shell string): the program is a name looked up
    on the PATH, a path relative to the release or an absolute normalised path; every argument
    is one line without control characters. Templates quote each argument for the file that
    carries it (microsvc.deploy.systemd_quote)."""

    PROGRAM = r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,99}"

    def __init__(self, max_items=64, max_len=1000, max_total=8000):
        self.max_items, self.max_len, self.max_total = max_items, max_len, max_total
        self.rule = ("a list of 1 to %d arguments (no shell): the program a name of letters, digits and ._+- "
                     "(looked up in the virtualenv's bin, then /usr/local/bin, /usr/bin, /bin), a path relative to "
                     "the release or an absolute path; each argument one line without control characters, at most "
                     "%d characters, %d in all" % (max_items, max_len, max_total))
        self._relative = RelPath()
        self._absolute = AbsPath(max_len=255)

    def __call__(self, value):
        if not isinstance(value, (list, tuple)):
            return "must be a list of arguments (%s), got %s" % (self.rule, kind_of(value))
        if not value:
            return "must name at least the program; allowed: %s" % self.rule
        if len(value) > self.max_items:
            return "has %d arguments; at most %d are allowed" % (len(value), self.max_items)
        for index, arg in enumerate(value):
            if not isinstance(arg, str):
                return "argument %d must be a string, got %s" % (index + 1, kind_of(arg))
            if has_control(arg):
                return "argument %d %s contains a control character or line break; allowed: %s" % (
                    index + 1, show(arg), self.rule)
            if len(arg) > self.max_len:
                return "argument %d is %d characters long; at most %d are allowed" % (index + 1, len(arg), self.max_len)
        if sum(len(arg) for arg in value) > self.max_total:
            return "is %d characters long in all; at most %d are allowed" % (sum(len(a) for a in value), self.max_total)
        program = value[0]
        if program.startswith("/"):
            if self._absolute(program):
                return "the program %s" % self._absolute(program)
        elif "/" in program:
            if self._relative(program):
                return "the program %s" % self._relative(program)
        elif not re.fullmatch(self.PROGRAM, program):
            return "the program %s is not allowed: must be %s" % (show(program), self.rule)
        return None


def dot_segments(path):
    """The '.'/'..'/empty segments of a path (relative or absolute; a query is ignored), as a
    message, or None."""
    path = path.split("?", 1)[0]
    if path == "":
        return None
    parts = path.split("/")
    inner = parts[1:] if path.startswith("/") else parts
    if path.endswith("/"):
        inner = inner[:-1]
    if any(p in (".", "..") for p in inner):
        return "has a '.' or '..' segment"
    if any(p == "" for p in inner):
        return "has an empty segment ('//')"
    return None


PATH_CHARS = r"[A-Za-z0-9._+@-]"


class AbsPath(Check):
    """An absolute, normalised path of safe characters, optionally never a system directory."""

    # Directories that must never be (or, for the first set, contain) a service tree.
    SYSTEM_TOP = frozenset(["bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "root",
                            "run", "sbin", "sys", "tmp", "usr", "lost+found", "snap"])
    SYSTEM_EXACT = frozenset(["/", "/home", "/opt", "/srv", "/var", "/mnt", "/media", "/var/lib", "/var/log",
                              "/var/cache", "/var/spool", "/var/tmp", "/var/mail", "/var/run", "/var/lock",
                              "/var/backups", "/var/opt", "/var/local", "/var/www", "/var/lib/microsvc"])

    def __init__(self, max_len=255, not_system=False, min_depth=1, trailing_slash=False):
        self.max_len = max_len
        self.not_system = not_system
        self.min_depth = min_depth
        self.trailing_slash = trailing_slash
        self.rule = "an absolute, normalised path of letters, digits and ._+@- (no '.' or '..' segments)"
        if min_depth > 1:
            self.rule += ", at least %d levels deep" % min_depth
        if not_system:
            self.rule += ", not a system directory (%s, or below /%s)" % (
                ", ".join(sorted(self.SYSTEM_EXACT)), ", /".join(sorted(self.SYSTEM_TOP)))

    def __call__(self, value):
        problem = self.text_problem(value)
        if problem:
            return problem
        body = value[:-1] if self.trailing_slash and value.endswith("/") and value != "/" else value
        if not re.fullmatch(r"/(?:%s+(?:/%s+)*)?" % (PATH_CHARS, PATH_CHARS), body):
            return "%s is not allowed: must be %s" % (show(value), self.rule)
        bad = dot_segments(body)
        if bad:
            return "%s %s; must be %s" % (show(value), bad, self.rule)
        depth = len([p for p in body.split("/") if p])
        if depth < self.min_depth:
            return "%s is not allowed: must be %s" % (show(value), self.rule)
        if self.not_system:
            top = body.split("/")[1] if depth else ""
            if body in self.SYSTEM_EXACT or top in self.SYSTEM_TOP:
                return "%s is a system directory; must be %s" % (show(value), self.rule)
        return None


class RelPath(Check):
    """A relative, normalised path inside a release, optionally with one of ``suffixes``."""

    def __init__(self, suffixes=(), max_len=255):
        self.suffixes = tuple(suffixes)
        self.max_len = max_len
        self.rule = "a relative path inside the release, of letters, digits and ._+@- (no '.' or '..' segments)"
        if suffixes:
            self.rule += ", ending in " + " or ".join(suffixes)

    def __call__(self, value):
        problem = self.text_problem(value)
        if problem:
            return problem
        if not re.fullmatch(r"%s+(?:/%s+)*" % (PATH_CHARS, PATH_CHARS), value):
            return "%s is not allowed: must be %s" % (show(value), self.rule)
        bad = dot_segments(value)
        if bad:
            return "%s %s; must be %s" % (show(value), bad, self.rule)
        if self.suffixes and not value.endswith(self.suffixes):
            return "%s is not allowed: must be %s" % (show(value), self.rule)
        return None


class IpAddress(Check):
    def __init__(self, wildcard=False, network=False):
        self.wildcard = wildcard
        self.network = network
        self.rule = ("an IPv4 or IPv6 address or network (CIDR)" if network else "an IPv4 or IPv6 address")
        if not wildcard:
            self.rule += ", not a wildcard (0.0.0.0, ::, 0.0.0.0/0, ::/0)"

    def __call__(self, value):
        if not isinstance(value, str):
            return "must be a string (%s), got %s" % (self.rule, kind_of(value))
        if has_control(value) or not re.fullmatch(r"[0-9A-Fa-f.:/]{2,49}", value):
            return "%s is not allowed: must be %s" % (show(value), self.rule)
        try:
            parsed = ipaddress.ip_network(value, strict=False) if self.network else ipaddress.ip_address(value)
        except ValueError:
            return "%s is not allowed: must be %s" % (show(value), self.rule)
        if not self.wildcard and not self.network and parsed.is_unspecified:
            return "%s is a wildcard address; must be %s" % (show(value), self.rule)
        if not self.wildcard and self.network and parsed.prefixlen == 0:
            return "%s is every address; must be %s" % (show(value), self.rule)
        return None


class Url(Check):
    """http(s) URL without spaces or control characters; credentials only when allowed."""

    def __init__(self, schemes=("https",), credentials=False, max_len=500, secret=False):
        self.schemes = tuple(schemes)
        self.credentials = credentials
        self.max_len = max_len
        self.secret = secret
        userinfo = r"(?:[A-Za-z0-9._~%!$&'()*+,;=:-]+@)?" if credentials else ""
        self.regex = re.compile(
            r"(?:%s)://%s(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
            r"(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%%!$&'()*+,;=:@/-]*)?" % ("|".join(self.schemes), userinfo))
        self.rule = "a %s URL of host, optional port and path%s" % (
            " or ".join(self.schemes), "" if credentials else ", without credentials")

    def __call__(self, value):
        problem = self.text_problem(value)
        if problem:
            return problem
        if not self.regex.fullmatch(value):
            return "%s is not allowed: must be %s" % (show(value, self.secret), self.rule)
        return None


def normalised(path):
    return posixpath.normpath(path) == path


# --- shared patterns ---------------------------------------------------------------------
NAME_PATTERN = r"[a-z][a-z0-9_-]{0,31}"
HOSTNAME_PATTERN = r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"
MODULE_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
SIZE_PATTERN = r"0|[1-9][0-9]{0,9}[kKmMgG]?"
UWSGI_MAGIC = ("$(", "@(", "%(", "=(", "{{", "{%")


def size_bytes(text):
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    if text[-1].lower() in units:
        return int(text[:-1]) * units[text[-1].lower()]
    return int(text)


def size_check(max_bytes=64 << 30):
    def limit(value):
        if size_bytes(value) > max_bytes:
            return "%r is more than %dG" % (value, max_bytes >> 30)
        return None
    return Str(SIZE_PATTERN, "an nginx size such as 75M, 512k or 0 (no limit), at most 64G", 12, extra=limit)


def no_uwsgi_magic(value):
    """uWSGI expands these sequences in any value it reads: $() environment, @() a file's
    content, %() magic variables, =() and {{ }} its own templating."""
    for seq in UWSGI_MAGIC:
        if seq in value:
            return "contains %r, which uWSGI would expand (%s are refused)" % (seq, ", ".join(UWSGI_MAGIC))
    return None
