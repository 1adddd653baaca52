# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Cron expressions (the five fields of crontab(5)) as systemd calendar events.

A schedule's ``cron`` is checked and converted on the controller; the timer unit gets the
``OnCalendar=`` lines. Every field is expanded to the explicit values it matches, so what
systemd sees is plain lists of numbers (and day names), whatever cron syntax was used:
``*``, ``a``, ``a-b``, ``*/n``, ``a-b/n``, ``a/n``, lists of these, month and day names, and the
macros ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly``, ``@yearly``
(``@annually``).

Cron's one surprise is kept: when both the day of the month and the day of the week are
restricted (neither starts with ``*``), a day matching EITHER runs the job. systemd's events
require both, so such an expression becomes two ``OnCalendar=`` lines.

Kept free of Ansible's plugin machinery so that unit tests import it directly.
"""

from __future__ import annotations

import re

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
SYSTEMD_DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
# (name, lowest, highest, names of the values from lowest on)
FIELDS = [
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, DAYS + ["sun"]),
]
RULE = ("five cron fields (minute hour day-of-month month day-of-week) separated by spaces, each '*', a number, "
        "a range a-b, a step */n or a-b/n, or a list of these (month and day names allowed), or one of "
        + ", ".join(sorted(MACROS)))
ITEM = re.compile(r"(\*|[0-9a-z]{1,3}(?:-[0-9a-z]{1,3})?)(?:/([0-9]{1,2}))?")


class CronError(ValueError):
    pass


def _value(text, field):
    name, low, high, names = field
    if text.isdigit():
        number = int(text)
    elif names and text in names:
        number = names.index(text) + low
    else:
        raise CronError("%s: %r is not a number%s" % (name, text, " or a name" if names else ""))
    if not low <= number <= high:
        raise CronError("%s: %d is outside %d-%d" % (name, number, low, high))
    return number


def _field(text, field):
    """The sorted values one field matches."""
    name, low, high, _names = field
    values = set()
    for item in text.split(","):
        match = ITEM.fullmatch(item)
        if not match:
            raise CronError("%s: %r is not '*', a value, a range or a step" % (name, item))
        base, step = match.group(1), match.group(2)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            start, end = (_value(part, field) for part in base.split("-"))
            if start > end:
                raise CronError("%s: range %r goes backwards" % (name, base))
        else:
            start = _value(base, field)
            end = high if step else start  # 'a/n' is a-<highest>/n, as in cronie
        if step is not None:
            step = int(step)
            if not 1 <= step <= high:
                raise CronError("%s: step %d is outside 1-%d" % (name, step, high))
        values.update(range(start, end + 1, step or 1))
    return sorted(values)


def parse(expression):
    """The five value lists of a cron expression, and whether each day field was restricted."""
    if not isinstance(expression, str):
        raise CronError("must be a string")
    if not re.fullmatch(r"[0-9A-Za-z*/,@ -]{1,200}", expression):
        raise CronError("only letters, digits, spaces and * / , - @ may appear")
    text = expression.strip().lower()
    text = MACROS.get(text, text)
    parts = text.split()
    if len(parts) != 5:
        raise CronError("has %d fields; cron has 5 (minute hour day-of-month month day-of-week)" % len(parts))
    values = [_field(part, field) for part, field in zip(parts, FIELDS)]
    values[4] = sorted({0 if day == 7 else day for day in values[4]})
    return values, (not parts[2].startswith("*"), not parts[4].startswith("*"))


def _list(values, low, high):
    if values == list(range(low, high + 1)):
        return "*"
    return ",".join(str(v) for v in values)


def on_calendar(expression):
    """The ``OnCalendar=`` values (one, or two for cron's either-day rule) of a cron expression."""
    (minutes, hours, days, months, weekdays), (days_set, weekdays_set) = parse(expression)
    time = "%s:%s:00" % (_list(hours, 0, 23), _list(minutes, 0, 59))
    month = _list(months, 1, 12)
    dom = _list(days, 1, 31)
    dow = "" if weekdays == list(range(7)) else ",".join(SYSTEMD_DAYS[d] for d in weekdays) + " "
    if days_set and weekdays_set:
        # Cron runs on a day that matches either field: one event for each.
        return ["*-%s-%s %s" % (month, dom, time), "%s*-%s-* %s" % (dow, month, time)]
    # Otherwise a day must match both (a field starting with '*', such as */2, still restricts).
    return ["%s*-%s-%s %s" % (dow, month, dom, time)]


def check(expression):
    """None when the expression is a cron expression this module converts, else a message."""
    try:
        on_calendar(expression)
    except CronError as exc:
        return "%r is not allowed (%s); must be %s" % (expression, exc, RULE)
    return None
