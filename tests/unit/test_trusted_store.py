"""Recognising a value that came unchanged from an AWS secret store lookup (microsvc_require_vault):
the raw template must be exactly one call of an allowed lookup with literal arguments, and the
value must carry that template's origin."""

import importlib.util
import os

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_spec = importlib.util.spec_from_file_location("trusted_store", os.path.join(ROOT, "plugins/plugin_utils/trusted_store.py"))
ts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ts)

ACCEPTED = [
    ("{{ lookup('amazon.aws.ssm_parameter', '/billing/db_password') }}", "amazon.aws.ssm_parameter"),
    ("{{lookup('amazon.aws.aws_ssm','/x')}}", "amazon.aws.aws_ssm"),
    ('{{ lookup("amazon.aws.secretsmanager_secret", "billing/api") }}', "amazon.aws.secretsmanager_secret"),
    ("{{ lookup('amazon.aws.aws_secret', 'x', region='eu-west-1', version_stage='AWSCURRENT') }}",
     "amazon.aws.aws_secret"),
    ("{{ lookup('amazon.aws.ssm_parameter', '/x', decrypt=true, region='eu-west-1') }}", "amazon.aws.ssm_parameter"),
]

REFUSED = [
    ("prefix", "x{{ lookup('amazon.aws.ssm_parameter', '/x') }}"),
    ("suffix", "{{ lookup('amazon.aws.ssm_parameter', '/x') }} "),
    ("two", "{{ lookup('amazon.aws.ssm_parameter', '/x') }}{{ lookup('amazon.aws.ssm_parameter', '/x') }}"),
    ("concat", "{{ lookup('amazon.aws.ssm_parameter', '/x') ~ 'y' }}"),
    ("filter", "{{ lookup('amazon.aws.ssm_parameter', '/x') | default('y', true) }}"),
    ("or", "{{ lookup('amazon.aws.ssm_parameter', '/x') or 'y' }}"),
    ("ternary", "{{ lookup('amazon.aws.ssm_parameter', '/x') if true else 'y' }}"),
    ("query", "{{ query('amazon.aws.ssm_parameter', '/x') }}"),
    ("short-name", "{{ lookup('ssm_parameter', '/x') }}"),
    ("other-plugin", "{{ lookup('ansible.builtin.pipe', 'echo x') }}"),
    ("computed-term", "{{ lookup('amazon.aws.ssm_parameter', '/x' ~ name) }}"),
    ("variable-term", "{{ lookup('amazon.aws.ssm_parameter', name) }}"),
    ("two-terms", "{{ lookup('amazon.aws.ssm_parameter', '/x', '/y') }}"),
    ("no-term", "{{ lookup('amazon.aws.ssm_parameter') }}"),
    ("empty-term", "{{ lookup('amazon.aws.ssm_parameter', '') }}"),
    ("control-char", "{{ lookup('amazon.aws.ssm_parameter', '/x\\x01') }}"),
    ("on-missing", "{{ lookup('amazon.aws.ssm_parameter', '/x', on_missing='skip') }}"),
    ("computed-kwarg", "{{ lookup('amazon.aws.ssm_parameter', '/x', region=r) }}"),
    ("star-args", "{{ lookup('amazon.aws.ssm_parameter', *terms) }}"),
    ("star-kwargs", "{{ lookup('amazon.aws.ssm_parameter', '/x', **opts) }}"),
    ("statement", "{% set a = 1 %}{{ lookup('amazon.aws.ssm_parameter', '/x') }}"),
    ("attribute", "{{ lookup('amazon.aws.ssm_parameter', '/x').upper() }}"),
    ("not-a-template", "lookup('amazon.aws.ssm_parameter', '/x')"),
    ("broken", "{{ lookup('amazon.aws.ssm_parameter', '/x' }}"),
    ("multi-line", "{{ lookup('amazon.aws.ssm_parameter', '/x') }}\nx"),
    ("not-a-string", 42),
]


@pytest.mark.parametrize("template,plugin", ACCEPTED)
def test_a_whole_lookup_call_is_recognised(template, plugin):
    assert ts.lookup_only(template) == plugin


@pytest.mark.parametrize("template", [c[1] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_anything_built_around_a_lookup_is_not(template):
    assert ts.lookup_only(template) is None


class Tagged(str):
    """A string with an origin, as ansible-core 2.19 tags every value (trusted: renders as a template)."""

    def __new__(cls, text, origin, trusted=True):
        obj = str.__new__(cls, text)
        obj.origin, obj.trusted = origin, trusted
        return obj


class Origin:
    def __init__(self, path=None, line_num=None, col_num=None, description=None):
        self.path, self.line_num, self.col_num, self.description = path, line_num, col_num, description


def index(variables):
    return ts.TemplateIndex(variables, lambda v: getattr(v, "origin", None), lambda v: getattr(v, "trusted", False))


LOOKUP = "{{ lookup('amazon.aws.ssm_parameter', '/x') }}"


def test_value_with_the_origin_of_a_lookup_template_is_trusted():
    here, there = Origin("/inv/a.yml", 3, 7), Origin("/inv/a.yml", 4, 7)
    idx = index({"svc": {"env": {"A": Tagged(LOOKUP, here), "B": Tagged("x{{ y }}", there)}}, "l": [Tagged("z", None)]})
    assert idx.from_lookup(Tagged("s3cret", Origin("/inv/a.yml", 3, 7)))
    assert not idx.from_lookup(Tagged("s3cret", there)), "a value built by another template"
    assert not idx.from_lookup(Tagged("s3cret", Origin("/inv/b.yml", 3, 7))), "an origin nobody wrote"
    assert not idx.from_lookup(Tagged("s3cret", None)), "no origin"
    assert not idx.from_lookup("s3cret"), "an untagged value"
    assert not idx.from_lookup(42)


def test_untrusted_lookup_text_is_no_lookup():
    """!unsafe text is rendered as itself: its origin proves nothing."""
    here = Origin("/inv/a.yml", 3, 7)
    idx = index({"A": Tagged(LOOKUP, here, trusted=False)})
    assert not idx.from_lookup(Tagged(LOOKUP, here, trusted=False))


def test_shared_origin_without_position_needs_every_template_to_be_a_lookup():
    extra = Origin(description="<extra vars>")
    only_lookups = index({"A": Tagged(LOOKUP, extra), "B": Tagged(LOOKUP.replace("/x", "/y"), extra)})
    assert only_lookups.from_lookup(Tagged("s3cret", Origin(description="<extra vars>")))
    mixed = index({"A": Tagged(LOOKUP, extra), "B": Tagged("{{ 'hunter2' }}", extra)})
    assert not mixed.from_lookup(Tagged("hunter2", Origin(description="<extra vars>")))
